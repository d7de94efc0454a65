"""Is this array on a CUDA device? Answered without importing numba, torch or cupy.

The CPU API asks this of its first array argument on every call, so a NumPy array must cost one
type check. Device arrays route the call to `gatedkernels.cuda`, which is imported only then (it
imports numba; the CPU package never does).
"""
from __future__ import annotations

import numpy as np

_KDL_CUDA, _KDL_CUDA_MANAGED = 2, 13


def device_kind(a):
    """'torch', 'cupy', 'numba' or 'cai' for an array on a CUDA device; None otherwise."""
    t = type(a)
    if t is np.ndarray or a is None:
        return None
    mod = t.__module__ or ""
    if mod.startswith("torch"):
        return "torch" if getattr(a, "is_cuda", False) else None
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith(("numba", "numba_cuda")) and hasattr(a, "copy_to_host"):
        return "numba"
    if hasattr(t, "__cuda_array_interface__"):
        return "cai"
    dl = getattr(a, "__dlpack_device__", None)
    if dl is not None:
        try:
            if dl()[0] in (_KDL_CUDA, _KDL_CUDA_MANAGED):
                return "cai"
        except Exception:  # noqa: BLE001 - a broken __dlpack_device__ is not a device array
            return None
    return None


def refuse_out(out):
    """Device calls allocate through the caller's library: out= buffers are NumPy-only."""
    if out is not None:
        raise TypeError("out: device calls return arrays of the caller's library; out= takes "
                        "NumPy buffers only")


def cuda_module():
    """gatedkernels.cuda, imported on first use (ImportError with an install hint without numba)."""
    from gatedkernels import cuda

    return cuda
