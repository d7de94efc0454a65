"""The one place that imports Numba: the `cuda` module the kernels are written against.

Kernels never import numba themselves; they take `cuda` from here, so moving to another
Numba-compatible CUDA front end (numba-cuda-mlir keeps the kernel language) is a change to this
file only. Importing it without numba-cuda installed raises an ImportError that says what to
install.
"""
from __future__ import annotations

import os
import warnings

INSTALL_HINT = (
    "the CUDA path needs numba-cuda: pip install 'gatedkernels[cuda12]' (CUDA 12 driver) or "
    "'gatedkernels[cuda13]' (CUDA 13 driver)"
)

# Small step grids are normal for an RNN at small H; numba warns for every launch below 128
# blocks unless told not to. Set before numba reads its configuration.
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")

try:
    import numba
    from numba import cuda
except ImportError as e:  # pragma: no cover - exercised in the CPU-only CI venv
    raise ImportError(f"{INSTALL_HINT} ({e})") from None

#: True under NUMBA_ENABLE_CUDASIM=1: kernels run in the Python simulator (CI without a GPU).
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

if not SIMULATOR and getattr(cuda, "implementation", "") != "NVIDIA":  # pragma: no cover
    warnings.warn(
        "numba.cuda is numba's deprecated built-in CUDA target; gatedkernels is tested with "
        "NVIDIA's numba-cuda (" + INSTALL_HINT + ")",
        RuntimeWarning,
        stacklevel=2,
    )


def is_available():
    """True when kernels can run: a CUDA GPU with a driver, or the simulator."""
    if SIMULATOR:
        return True
    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - no driver, no libcuda: simply not available
        return False


__all__ = ["cuda", "numba", "SIMULATOR", "INSTALL_HINT", "is_available"]
