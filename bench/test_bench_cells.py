"""Step calls and whole sequences: gatedkernels (module, functional) vs the NumPy reference and
PyTorch (when installed), float32. Run: `pytest bench --benchmark-only`."""
import numpy as np
import pytest

import gatedkernels as gk
from gatedkernels import reference

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
STEP_SHAPES = [(1, 64, 64), (1, 128, 256), (8, 128, 256), (64, 256, 512)]
SEQ_SHAPES = [(100, 1, 128, 128), (100, 16, 256, 256), (100, 64, 256, 256)]
CELL = {"lstm": gk.LSTMCell, "gru": gk.GRUCell, "rnn": gk.RNNCell}
SEQ = {"lstm": gk.LSTM, "gru": gk.GRU, "rnn": gk.RNN}


def _torch():
    torch = pytest.importorskip("torch", reason="torch is not installed: its row is skipped")
    torch.set_num_threads(1)
    return torch


def _flops(kind, T, N, I, H):
    return 2 * T * N * GATES[kind] * H * (I + H)


@pytest.mark.parametrize("backend", ["gk_module", "gk_functional", "reference", "torch"])
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=lambda s: "N{}_I{}_H{}".format(*s))
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_step(benchmark, kind, shape, backend, rng):
    N, I, H = shape
    benchmark.group = f"step {kind} {shape}"
    benchmark.extra_info["flops"] = _flops(kind, 1, N, I, H)
    cell = CELL[kind](I, H, seed=0)
    sd = cell.state_dict()
    w = (sd["weight_ih"], sd["weight_hh"], sd["bias_ih"], sd["bias_hh"])
    x = rng.standard_normal((N, I)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    hx = (h, h.copy()) if kind == "lstm" else h
    if backend == "gk_module":
        fn, args = cell, (x, hx)
    elif backend == "gk_functional":
        fn, args = getattr(gk, f"{kind}_cell"), (x, hx, *w)
    elif backend == "reference":
        fn, args = getattr(reference, f"{kind}_cell"), (x, hx, *w)
    else:
        torch = _torch()
        tm = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[kind](I, H)
        tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
        thx = tuple(torch.from_numpy(a) for a in hx) if kind == "lstm" else torch.from_numpy(hx)
        tx = torch.from_numpy(x)

        def fn(a, b):
            with torch.no_grad():
                return tm(a, b)

        args = (tx, thx)
    benchmark.pedantic(fn, args=args, iterations=200 if N * H <= 2048 else 10, rounds=30,
                       warmup_rounds=2)


@pytest.mark.parametrize("backend", ["gk", "reference", "torch"])
@pytest.mark.parametrize("shape", SEQ_SHAPES, ids=lambda s: "T{}_N{}_I{}_H{}".format(*s))
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sequence(benchmark, kind, shape, backend, rng):
    T, N, I, H = shape
    benchmark.group = f"sequence {kind} {shape}"
    benchmark.extra_info["flops"] = _flops(kind, T, N, I, H)
    m = SEQ[kind](I, H, seed=0)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    if backend == "gk":
        fn = lambda: m(x)  # noqa: E731
    elif backend == "reference":
        if N * H > 16 * 256:
            pytest.skip("the NumPy reference is too slow at this size to be worth timing")
        sd = m.state_dict()
        fn = lambda: getattr(reference, kind)(x, None, sd)  # noqa: E731
    else:
        torch = _torch()
        tm = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H)
        tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
        tx = torch.from_numpy(x)

        def fn():
            with torch.no_grad():
                return tm(tx)

    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
