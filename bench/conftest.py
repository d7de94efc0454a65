"""pytest-benchmark suite (not collected by the test run): `pytest bench --benchmark-only`.

Each benchmark times one callable; groups put the backends of one cell and shape side by side.
`extra_info` carries the GEMM flop count (2*T*N*G*H*(I+H)) so GFLOP/s can be derived.
"""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
