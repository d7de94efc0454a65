"""Shared test configuration: the tolerance table (SPEC §6) and the comparison helpers.

Every numeric comparison in the suite goes through one of these, so the bounds live in one place:

* float64 kernels vs the float64 reference: per element |a - b| <= RTOL64 * |b| + ATOL64.
* float32 kernels: max |kernel - oracle| <= F32_FACTOR * max |reference32 - oracle| + F32_FLOOR,
  where the oracle is the float64 reference and reference32 is the same reference computed in
  float32: the bound is relative to what a plain float32 implementation gets (flash-attention's
  approach).
"""
import os

import numpy as np
import pytest


def _has_nvidia_gpu():
    """A GPU with a loaded driver, found without importing numba (its config is read once)."""
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


# The CUDA kernels run in numba's simulator on machines without a GPU (CI): set before anything
# imports numba. On a GPU machine they run for real; NUMBA_ENABLE_CUDASIM set by hand wins.
HAS_GPU = _has_nvidia_gpu()
if not HAS_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import gatedkernels as gk
from gatedkernels import _ext

RTOL64 = 1e-12
ATOL64 = 1e-14
F32_FACTOR = 2.0
F32_FLOOR = 1e-6


def _flat(outputs):
    """Concatenate an output structure (arrays, tuples of arrays, None) into one float64 vector."""
    if outputs is None:
        return np.zeros(0)
    if isinstance(outputs, (tuple, list)):
        parts = [_flat(o) for o in outputs]
        return np.concatenate(parts) if parts else np.zeros(0)
    return np.asarray(outputs, dtype=np.float64).ravel()


def assert_close64(got, oracle, what=""):
    """float64 result vs float64 oracle, per element (SPEC §6)."""
    g, o = _flat(got), _flat(oracle)
    assert g.shape == o.shape, f"{what}: {g.shape} vs {o.shape}"
    err = np.abs(g - o)
    bound = RTOL64 * np.abs(o) + ATOL64
    bad = ~(err <= bound)
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {g.size} elements off; worst |diff| {err.max():.3g} "
        f"(bound there {bound[np.argmax(err - bound)]:.3g})"
    )


def assert_close32(got, oracle, ref32, what=""):
    """float32 result vs float64 oracle, bounded by what the float32 reference achieves."""
    g, o, r = _flat(got), _flat(oracle), _flat(ref32)
    assert g.shape == o.shape == r.shape, f"{what}: shapes {g.shape} {o.shape} {r.shape}"
    assert np.isfinite(g).all() == np.isfinite(o).all(), f"{what}: non-finite values differ"
    err = np.abs(g - o).max(initial=0.0)
    base = np.abs(r - o).max(initial=0.0)
    bound = F32_FACTOR * base + F32_FLOOR
    assert err <= bound, f"{what}: max |diff| {err:.3g} > {bound:.3g} (float32 reference: {base:.3g})"


SUPPORTED_ISAS = _ext.supported_isas()


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Run the test once per kernel build this CPU can run (generic, avx2, avx512 ...), forcing
    each one; modules and functional calls made inside use it."""
    with gk.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id, so every parametrized case has its own data."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
