"""cell.stream(N, device="cuda"): the GPU streaming state, against the CPU stream and the
reference (in the simulator when there is no GPU)."""
import numpy as np
import pytest

import gatedkernels as gk
from gatedkernels import reference

from conftest import assert_close32, assert_close64

pytest.importorskip("numba", reason="numba-cuda is not installed (the test extras bring it)")
from numba import cuda  # noqa: E402

from gatedkernels.cuda import _kernels  # noqa: E402

CELLS = [
    (gk.LSTMCell, {}),
    (gk.GRUCell, {"linear_before_reset": True}),
    (gk.GRUCell, {"linear_before_reset": False}),
    (gk.RNNCell, {"nonlinearity": "relu"}),
]
# A batch on the tiled step kernels: two batch tiles, the last partial.
LARGE_N = _kernels.BN + 1


def _ref_step(m, x, h, c):
    p = m.state_dict()
    w = (p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"))
    if isinstance(m, gk.LSTMCell):
        return reference.lstm_cell(x, (h, c), *w)
    if isinstance(m, gk.GRUCell):
        return reference.gru_cell(x, h, *w, linear_before_reset=m.linear_before_reset), None
    return reference.rnn_cell(x, h, *w, nonlinearity=m.nonlinearity), None


@pytest.mark.parametrize("cls,kw", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N", [3, LARGE_N], ids=["N3", "tiled"])
def test_stream_matches_reference_over_steps(cls, kw, dtype, N, rng):
    assert _kernels.use_tiled(N) == (N == LARGE_N)
    I, H = 2, 3
    m = cls(I, H, seed=3, dtype=dtype, **kw)
    m64 = cls(I, H, seed=3, dtype=np.float64, **kw)
    h0 = rng.standard_normal((N, H))
    c0 = rng.standard_normal((N, H))
    lstm = cls is gk.LSTMCell
    s = m.stream(N, hx=(h0, c0) if lstm else h0, device="cuda")
    h, c = h0, c0
    h32, c32 = h0.astype(np.float32), c0.astype(np.float32)
    for _ in range(3):
        x = rng.standard_normal((N, I))
        got = s.step(cuda.to_device(x.astype(dtype))).copy_to_host()
        assert got.dtype == dtype
        h, c = _ref_step(m64, x, h, c)
        gc = s.c.copy_to_host() if lstm else None
        if dtype == np.float64:
            assert_close64((got, gc), (h, c if lstm else None), "stream step")
        else:
            h32, c32 = _ref_step(m, x.astype(np.float32), h32, c32)
            assert_close32((got, gc), (h, c if lstm else None), (h32, c32 if lstm else None),
                           "stream step")
    assert_close64(s.h.copy_to_host(), got, "s.h is the last result")


def test_stream_unbatched_reset_and_errors(rng):
    m = gk.LSTMCell(2, 3, seed=1, dtype=np.float64)
    s = m.stream(1, device="cuda")
    x = rng.standard_normal(2)
    h1 = s.step(cuda.to_device(x)).copy_to_host()
    ref_h, ref_c = reference.lstm_cell(x[None], None, *(m.state_dict()[k] for k in
                                       ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    assert_close64(h1, ref_h, "unbatched step")
    s.reset()  # zeros again: the same step gives the same bits
    assert np.array_equal(s.step(cuda.to_device(x)).copy_to_host(), h1)
    with pytest.raises(ValueError, match="x"):
        s.step(cuda.to_device(np.zeros((1, 5))))
    with pytest.raises(ValueError, match="h"):
        s.reset(np.zeros((2, 3)))
    g = gk.GRUCell(2, 3, seed=1).stream(2, device="cuda")
    with pytest.raises(ValueError, match="cell state"):
        g.reset(None, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="device array"):
        gk.GRUCell(2, 3, seed=1).stream(1, device="cuda").step(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="device"):
        m.stream(1, device="tpu")
