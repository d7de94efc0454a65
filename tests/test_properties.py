"""Property-based checks (hypothesis): random configurations of every option at once, compiled
sequences and cells against the float64 reference (SPEC §6), and invariants that must hold for
any input: determinism, zero outputs past lengths, batch rows independent of each other."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _helpers
import gatedkernels as gk
from conftest import assert_close64
from gatedkernels import reference

KINDS = [("lstm", {}), ("gru", {"linear_before_reset": True}),
         ("gru", {"linear_before_reset": False}), ("rnn_tanh", {}), ("rnn_relu", {})]

configs = st.fixed_dictionaries({
    "kind": st.sampled_from(range(len(KINDS))),
    "T": st.integers(1, 7), "N": st.integers(1, 6), "I": st.integers(1, 20),
    "H": st.integers(1, 40), "L": st.integers(1, 3), "bidirectional": st.booleans(),
    "batch_first": st.booleans(), "bias": st.booleans(), "with_hx": st.booleans(),
    "with_lengths": st.booleans(), "proj": st.integers(0, 5), "seed": st.integers(0, 2**32 - 1),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs)
def test_random_sequence_configurations(cfg):
    kind, variant = KINDS[cfg["kind"]]
    rng = np.random.default_rng(cfg["seed"])
    T, N, I, H, L = cfg["T"], cfg["N"], cfg["I"], cfg["H"], cfg["L"]
    proj = cfg["proj"] if kind == "lstm" and cfg["proj"] < H else 0
    D = 2 if cfg["bidirectional"] else 1
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=L,
                                      bidirectional=D == 2, bias=cfg["bias"], proj_size=proj)
    x = rng.standard_normal((N, T, I) if cfg["batch_first"] else (T, N, I))
    hx = _helpers.random_hx(kind, L * D, N, H, rng=rng, proj_size=proj) if cfg["with_hx"] else None
    opts = dict(num_layers=L, bidirectional=D == 2, batch_first=cfg["batch_first"])
    if cfg["with_lengths"]:
        opts["lengths"] = rng.integers(1, T + 1, size=N)
    got = _helpers.call_sequence(gk, kind, x, hx, weights, **variant, **opts)
    want = _helpers.call_sequence(reference, kind, x, hx, weights, **variant, **opts)
    assert_close64(got, want, str(cfg))
    again = _helpers.call_sequence(gk, kind, x, hx, weights, **variant, **opts)
    for a, b in zip(_helpers.flatten(got), _helpers.flatten(again)):
        assert np.array_equal(a, b), "two calls differ"
    if cfg["with_lengths"]:
        y = got[0]
        for n, length in enumerate(opts["lengths"]):
            past = y[n, length:] if cfg["batch_first"] else y[length:, n]
            assert (past == 0).all()


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(range(len(KINDS))), N=st.integers(2, 9), I=st.integers(1, 24),
       H=st.integers(1, 48), row=st.integers(0, 8), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_cell_rows_are_independent(kind, N, I, H, row, seed, dtype):
    """A batch row's result does not depend on the other rows (NaN in one row stays there)."""
    kind, variant = KINDS[kind]
    row %= N
    rng = np.random.default_rng(seed)
    params = {k: (None if v is None else v.astype(dtype))
              for k, v in _helpers.random_cell_params(kind, I, H, rng=rng).items()}
    x = rng.standard_normal((N, I)).astype(dtype)
    hx = _helpers.random_hx(kind, None, N, H, rng=rng)
    hx = tuple(a.astype(dtype) for a in hx) if isinstance(hx, tuple) else hx.astype(dtype)
    full = _helpers.flatten(_helpers.call_cell(gk, kind, x, hx, params, **variant))
    x_nan = x.copy()
    x_nan[row] = np.nan
    poisoned = _helpers.flatten(_helpers.call_cell(gk, kind, x_nan, hx, params, **variant))
    others = np.arange(N) != row
    for a, b in zip(full, poisoned):
        assert np.array_equal(a[others], b[others])
        assert np.isnan(b[row]).all()
