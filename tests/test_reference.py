"""The NumPy reference (the oracle) checked against PyTorch and ONNX Runtime.

PyTorch runs in float64 and must agree to SPEC §6's float64 bound. ONNX Runtime (CPU) runs in
float32 only and is held to a bound derived from the reference's own float32 error. Both are
independent implementations of the same equations with other gate layouts, so a gate-order,
variant or masking bug in the reference cannot pass both.
"""

import zlib

import numpy as np
import pytest

import _helpers as hp
from gatedkernels import reference as ref

TORCH_REASON = "PyTorch (pip install torch==2.13.0) is needed for the comparisons with torch.nn"
ORT_REASON = "onnx and onnxruntime (pip install onnx onnxruntime) are needed for the ONNX checks"

# float64, reference vs torch: SPEC §6's float64 bound (relative 1e-12 per element, absolute
# floor 1e-14). Both sides compute the same equations in float64; they differ only in summation
# order (torch adds the h-part to the x-part and blends the GRU as (h - n) z + n), which costs a
# few ulps: measured max |difference| ~4e-16 (relative ~1e-13 on elements near zero, which the
# floor covers). The bound is ~20x above what is measured, and ~10 orders of magnitude below
# what a gate-order or variant bug gives (>= 1e-3).
RTOL64, ATOL64 = 1e-12, 1e-14

# ONNX Runtime float32 vs the float64 reference:
#     max |ort - ref64| <= 2 * max |ref32 - ref64| + ORT_FLOOR
# The first term is what a plain float32 implementation gets on the same data (SPEC §6). The
# floor covers ORT's approximate activations (MLAS logistic/tanh; the GRU gates use clamped
# rational approximations) whose absolute error (~2e-7 per call) is beyond a float32 rounding
# and compounds over the steps of the recurrence (measured worst: 2.4e-7 against ref32's 1.1e-7
# on T = 20). 1e-5 leaves room for that over T <= 12 here while staying four orders of magnitude
# below the error of the wrong GRU variant (checked in test_onnx_detects_wrong_gru_variant).
ORT_FLOOR = 1e-5

# (N, I, H): N = 1, H = 1, odd H (7, 33), I != H.
CELL_SHAPES = [(4, 3, 7), (1, 1, 1), (2, 5, 33), (3, 6, 2)]
# (T, N, I, H): T = 1, N = 1, H = 1, odd H, I != H.
SEQ_SHAPES = [(5, 3, 4, 7), (1, 1, 1, 1), (4, 2, 6, 33), (3, 1, 2, 2)]
# (num_layers, bidirectional, batch_first)
LAYOUTS = [(1, False, False), (2, True, False), (3, True, True), (2, False, True)]
# Sequence variants: the cell kinds plus the LSTM with a projection (P = H // 2).
VARIANTS = ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"]


def _id(values, letters):
    return "-".join(f"{k}{v}" for k, v in zip(letters, values))


def _layout_id(layout):
    L, bidirectional, batch_first = layout
    return f"L{L}" + ("-bi" if bidirectional else "") + ("-bf" if batch_first else "")


def _split_variant(variant, H):
    """(cell kind, proj_size) of a sequence variant."""
    return ("lstm", H // 2) if variant == "lstm_proj" else (variant, 0)


# torch requires 0 < proj_size < hidden_size: the projected LSTM needs H >= 2.
SEQ_CASES = [
    pytest.param(v, s, id=f"{v}-{_id(s, 'TNIH')}")
    for v in VARIANTS for s in SEQ_SHAPES if not (v == "lstm_proj" and s[3] < 2)
]


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, and different for every case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _assert_close64(got, expected):
    got, expected = hp.flatten(got), hp.flatten(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=RTOL64, atol=ATOL64)


def _max_error(result, oracle):
    return max(float(np.max(np.abs(np.asarray(r, np.float64) - o), initial=0.0))
               for r, o in zip(hp.flatten(result), hp.flatten(oracle)))


# ---------------------------------------------------------------------------------------------
# Cells vs torch.nn.LSTMCell / GRUCell / RNNCell, float64.


@pytest.mark.parametrize("shape", CELL_SHAPES, ids=lambda s: _id(s, "NIH"))
@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kind", hp.KINDS)
def test_cell_matches_torch(kind, batched, bias, hx_given, shape, rng):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    N, I, H = shape
    params = hp.random_cell_params(kind, I, H, rng=rng, bias=bias)
    x = rng.standard_normal((N, I) if batched else (I,))
    hx = hp.random_hx(kind, None, N, H, rng=rng, batched=batched) if hx_given else None

    with torch.no_grad():
        expected = hp.torch_cell(kind, params)(hp.to_torch(x), hp.hx_to_torch(hx))
    got = hp.call_cell(ref, kind, x, hx, params)

    _assert_close64(got, hp.hx_to_numpy(expected))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("shape", [(3, 4, 7, 3), (1, 2, 5, 1)], ids=lambda s: _id(s, "NIHP"))
def test_lstm_cell_projection_matches_torch(shape, batched, rng):
    """lstm_cell(w_hr=...) is one step of nn.LSTM(proj_size=P) (torch's LSTMCell has no
    projection)."""
    pytest.importorskip("torch", reason=TORCH_REASON)
    N, I, H, P = shape
    weights = hp.random_weights("lstm", I, H, rng=rng, proj_size=P)
    params = {"w_ih": weights["weight_ih_l0"], "w_hh": weights["weight_hh_l0"],
              "b_ih": weights["bias_ih_l0"], "b_hh": weights["bias_hh_l0"],
              "w_hr": weights["weight_hr_l0"]}
    x = rng.standard_normal((N, I))
    h, c = hp.random_hx("lstm", None, N, H, rng=rng, proj_size=P)

    _, (h_n, c_n) = hp.torch_run(hp.torch_module("lstm", weights), x[None], (h[None], c[None]))
    if batched:
        got = hp.call_cell(ref, "lstm", x, (h, c), params)
        expected = (h_n[0], c_n[0])
    else:
        got = hp.call_cell(ref, "lstm", x[0], (h[0], c[0]), params)
        expected = (h_n[0, 0], c_n[0, 0])
    _assert_close64(got, expected)


# ---------------------------------------------------------------------------------------------
# Sequences vs torch.nn.LSTM / GRU / RNN, float64.


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("variant, shape", SEQ_CASES)
def test_sequence_matches_torch(variant, shape, layout, hx_given, rng):
    pytest.importorskip("torch", reason=TORCH_REASON)
    T, N, I, H = shape
    L, bidirectional, batch_first = layout
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I))
    hx = hp.random_hx(kind, L * D, N, H, rng=rng, proj_size=P) if hx_given else None

    expected = hp.torch_run(hp.torch_module(kind, weights, **options), x, hx)
    got = hp.call_sequence(ref, kind, x, hx, weights, **options)

    _assert_close64(got, expected)


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
@pytest.mark.parametrize("layers", [(1, False), (2, True)], ids=["L1", "L2-bi"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_unbatched_sequence_matches_torch(variant, layers, batch_first, hx_given, rng):
    """Unbatched x [T, I] with hx [L*D, P]: time-major whatever batch_first says, as torch."""
    pytest.importorskip("torch", reason=TORCH_REASON)
    T, I, H = 5, 3, 6
    L, bidirectional = layers
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional)
    x = rng.standard_normal((T, I))
    hx = (hp.random_hx(kind, L * D, 1, H, rng=rng, proj_size=P, batched=False)
          if hx_given else None)

    expected = hp.torch_run(hp.torch_module(kind, weights, **options), x, hx)
    got = hp.call_sequence(ref, kind, x, hx, weights, **options)

    assert got[0].shape == (T, D * (P or H))
    _assert_close64(got, expected)


def _lengths(pattern, rng, N, T):
    if pattern == "mixed":  # unsorted, with 1 and T among them
        return hp.random_lengths(rng, N, T)
    return np.full(N, {"all_T": T, "all_1": 1}[pattern], np.int64)


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("pattern", ["mixed", "all_T", "all_1"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("variant", VARIANTS)
def test_lengths_match_packed_sequence(variant, layout, pattern, hx_given, rng):
    """``lengths`` vs pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence: output
    past each length is zero, h_n/c_n are the states after the last valid step, the reverse
    direction runs over each valid prefix reversed (starting from h0)."""
    pytest.importorskip("torch", reason=TORCH_REASON)
    T, N, I, H = 6, 5, 3, 7
    L, bidirectional, batch_first = layout
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I))
    hx = hp.random_hx(kind, L * D, N, H, rng=rng, proj_size=P) if hx_given else None
    lengths = _lengths(pattern, rng, N, T)

    expected = hp.torch_run(hp.torch_module(kind, weights, **options), x, hx, lengths=lengths)
    got = hp.call_sequence(ref, kind, x, hx, weights, lengths=lengths, **options)

    _assert_close64(got, expected)
    output = got[0] if batch_first else got[0].swapaxes(0, 1)  # [N, T, D*P]
    for n, length in enumerate(lengths):
        assert np.all(output[n, length:] == 0), "output past the length must be exactly zero"


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_lengths_equal_no_lengths(variant, rng):
    """lengths = T for every sequence is bitwise the same as no lengths."""
    T, N, I, H = 4, 3, 2, 5
    kind, P = _split_variant(variant, H)
    options = dict(num_layers=2, bidirectional=True)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=2,
                                bidirectional=True)
    x = rng.standard_normal((T, N, I))
    hx = hp.random_hx(kind, 4, N, H, rng=rng, proj_size=P)

    plain = hp.call_sequence(ref, kind, x, hx, weights, **options)
    full = hp.call_sequence(ref, kind, x, hx, weights, lengths=np.full(N, T), **options)
    for a, b in zip(hp.flatten(plain), hp.flatten(full)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# One layer vs ONNX Runtime (float32): LSTM, both GRU variants, RNN tanh/relu.

ONNX_CASES = [("lstm", True), ("gru", True), ("gru", False), ("rnn_tanh", True),
              ("rnn_relu", True)]


def _onnx_inputs(kind, shape, bidirectional, hx_given, rng):
    """Random float32-representable data (held as float64), so the float64 reference and ORT
    see exactly the same numbers and only the arithmetic differs."""
    T, N, I, H = shape
    D = 2 if bidirectional else 1
    f32 = np.float32
    weights = hp.random_weights(kind, I, H, rng=rng, bidirectional=bidirectional, dtype=f32)
    weights = {k: v.astype(np.float64) for k, v in weights.items()}
    x = rng.standard_normal((T, N, I)).astype(f32).astype(np.float64)
    hx = None
    if hx_given:
        hx = hp.random_hx(kind, D, N, H, rng=rng, dtype=f32)
        hx = (tuple(s.astype(np.float64) for s in hx) if kind == "lstm"
              else hx.astype(np.float64))
    return weights, x, hx


def _to32(a):
    if a is None:
        return None
    return tuple(_to32(s) for s in a) if isinstance(a, tuple) else a.astype(np.float32)


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("shape", [(6, 4, 3, 7), (1, 1, 1, 1), (12, 3, 5, 33)],
                         ids=lambda s: _id(s, "TNIH"))
@pytest.mark.parametrize("kind, lbr", ONNX_CASES,
                         ids=["lstm", "gru-lbr1", "gru-lbr0", "rnn_tanh", "rnn_relu"])
def test_matches_onnxruntime(kind, lbr, shape, bidirectional, with_lengths, hx_given, rng):
    pytest.importorskip("onnx", reason=ORT_REASON)
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    T, N, _, _ = shape
    weights, x, hx = _onnx_inputs(kind, shape, bidirectional, hx_given, rng)
    lengths = hp.random_lengths(rng, N, T) if with_lengths else None
    options = dict(bidirectional=bidirectional, lengths=lengths, linear_before_reset=lbr)

    got = hp.ort_run(kind, x, hx, weights, **options)
    oracle = hp.call_sequence(ref, kind, x, hx, weights, **options)
    baseline = hp.call_sequence(ref, kind, x.astype(np.float32), _to32(hx), weights, **options)

    for g, o in zip(hp.flatten(got), hp.flatten(oracle)):
        assert g.shape == o.shape
    bound = 2 * _max_error(baseline, oracle) + ORT_FLOOR
    assert _max_error(got, oracle) <= bound
    if lengths is not None:  # ORT zeroes Y past each length, as SPEC §3 says
        for n, length in enumerate(lengths):
            assert np.all(got[0][length:, n] == 0)


def test_onnx_detects_wrong_gru_variant(rng):
    """ORT's GRU with linear_before_reset=0 is far outside the ORT bound from the reference's
    linear_before_reset=True (and vice versa), so test_matches_onnxruntime can tell the
    variants apart."""
    pytest.importorskip("onnx", reason=ORT_REASON)
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    weights, x, hx = _onnx_inputs("gru", (6, 4, 3, 7), True, True, rng)
    for lbr in (True, False):
        got = hp.ort_run("gru", x, hx, weights, bidirectional=True, linear_before_reset=lbr)
        wrong = hp.call_sequence(ref, "gru", x, hx, weights, bidirectional=True,
                                 linear_before_reset=not lbr)
        assert _max_error(got, wrong) > 1e3 * ORT_FLOOR


# ---------------------------------------------------------------------------------------------
# The reference on its own.


def test_gru_variants_differ(rng):
    """linear_before_reset True and False are different functions on random data (so no test
    can pass by computing the wrong one), and agree where the equations do: with h = 0 and no
    bias, both n are tanh(W_in x)."""
    params = hp.random_cell_params("gru", 4, 6, rng=rng, scale=1.0)
    x = rng.standard_normal((5, 4))
    h = rng.standard_normal((5, 6))
    after = hp.call_cell(ref, "gru", x, h, params, linear_before_reset=True)
    before = hp.call_cell(ref, "gru", x, h, params, linear_before_reset=False)
    assert np.max(np.abs(after - before)) > 1e-2

    weights = hp.random_weights("gru", 4, 6, rng=rng, num_layers=2, bidirectional=True)
    xs = rng.standard_normal((7, 5, 4))
    after = hp.call_sequence(ref, "gru", xs, None, weights, num_layers=2, bidirectional=True)
    before = hp.call_sequence(ref, "gru", xs, None, weights, num_layers=2, bidirectional=True,
                              linear_before_reset=False)
    assert _max_error(after, before) > 1e-2

    nobias = dict(params, b_ih=None, b_hh=None)
    np.testing.assert_array_equal(
        hp.call_cell(ref, "gru", x, None, nobias, linear_before_reset=True),
        hp.call_cell(ref, "gru", x, None, nobias, linear_before_reset=False))


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_in_float32_out(variant, rng):
    """A float32 call computes in float32 (it is the same-precision baseline): float64 weights
    and states are cast to x's dtype, every output is float32, and it is near the float64
    result."""
    T, N, I, H = 5, 3, 4, 6
    kind, P = _split_variant(variant, H)
    options = dict(num_layers=2, bidirectional=True)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=2,
                                bidirectional=True)
    x = rng.standard_normal((T, N, I))
    hx = hp.random_hx(kind, 4, N, H, rng=rng, proj_size=P)
    lengths = np.array([5, 2, 1])

    got = hp.call_sequence(ref, kind, x.astype(np.float32), hx, weights, lengths=lengths,
                           **options)
    oracle = hp.call_sequence(ref, kind, x, hx, weights, lengths=lengths, **options)
    assert all(a.dtype == np.float32 for a in hp.flatten(got))
    assert 0 < _max_error(got, oracle) < 1e-5

    params = hp.random_cell_params(kind, I, H, rng=rng, proj_size=P)
    h = hp.random_hx(kind, None, N, H, rng=rng, proj_size=P)
    cell = hp.call_cell(ref, kind, x[0].astype(np.float32), h, params)
    assert all(a.dtype == np.float32 for a in hp.flatten(cell))


@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_not_modified(variant, rng):
    T, N, I, H = 3, 2, 3, 4
    kind, P = _split_variant(variant, H)
    options = dict(num_layers=2, bidirectional=True)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=2,
                                bidirectional=True)
    x = rng.standard_normal((T, N, I))
    hx = hp.random_hx(kind, 4, N, H, rng=rng, proj_size=P)
    lengths = np.array([3, 1])
    before = [a.copy() for a in [x, lengths, *hp.flatten(hx), *weights.values()]]

    hp.call_sequence(ref, kind, x, hx, weights, lengths=lengths, **options)
    after = [x, lengths, *hp.flatten(hx), *weights.values()]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_unknown_nonlinearity_is_value_error(rng):
    params = hp.random_cell_params("rnn_tanh", 3, 4, rng=rng)
    weights = hp.random_weights("rnn_tanh", 3, 4, rng=rng)
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.rnn_cell(x, None, params["w_ih"], params["w_hh"], nonlinearity="gelu")
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.rnn(x[None], None, weights, nonlinearity="Tanh")


@pytest.mark.parametrize("lengths", [[0, 2], [3, 4], [2]], ids=["zero", "over_T", "wrong_N"])
def test_bad_lengths_are_value_errors(lengths, rng):
    weights = hp.random_weights("gru", 3, 4, rng=rng)
    x = rng.standard_normal((3, 2, 3))
    with pytest.raises(ValueError, match="lengths"):
        ref.gru(x, None, weights, lengths=np.array(lengths))


def test_integer_input_is_type_error():
    w = np.zeros((4, 2))
    with pytest.raises(TypeError, match="x"):
        ref.rnn_cell(np.ones((1, 2), np.int64), None, w, np.zeros((4, 4)))


def test_missing_bias_is_zero(rng):
    """Sequence weights without bias keys equal the same weights with zero biases."""
    weights = hp.random_weights("lstm", 3, 5, rng=rng, num_layers=2, bidirectional=True,
                                bias=False)
    zeros = {k.replace("weight_ih", "bias_ih"): np.zeros(v.shape[0])
             for k, v in weights.items() if k.startswith("weight_ih")}
    zeros.update({k.replace("ih", "hh"): v for k, v in zeros.items()})
    x = rng.standard_normal((4, 2, 3))
    a = ref.lstm(x, None, weights, num_layers=2, bidirectional=True)
    b = ref.lstm(x, None, {**weights, **zeros}, num_layers=2, bidirectional=True)
    for u, v in zip(hp.flatten(a), hp.flatten(b)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_saturates_and_is_accurate(dtype):
    big = np.array([-1e30, -1e4, -800.0, 800.0, 1e4, 1e30, -np.inf, np.inf], dtype)
    with np.errstate(over="raise", invalid="raise"):  # exp underflows to 0, never overflows
        s = ref.sigmoid(big)
    assert s.dtype == dtype
    np.testing.assert_array_equal(s, [0, 0, 0, 1, 1, 1, 0, 1])
    assert np.isnan(ref.sigmoid(np.array([np.nan], dtype)))[0]

    a = np.linspace(-30, 30, 1201).astype(dtype)
    exact = 1 / (1 + np.exp(-a.astype(np.float64)))  # float64, no overflow on this range
    got = ref.sigmoid(a).astype(np.float64)
    eps = np.finfo(dtype).eps
    # within a few ulps of the float64 value (relative, also for the tiny values at a = -30)
    np.testing.assert_allclose(got, exact, rtol=4 * eps, atol=0)
