"""The compiled kernels against real PyTorch (torch.nn) and ONNX Runtime.

* ``from_torch`` modules (sequences and cells, float32 and float64) against the torch module they
  were built from: same options, same parameters, same dtype, same outputs;
* the functional cells and sequences on raw weights against torch modules holding them;
* one layer against ONNX Runtime's LSTM and GRU nodes (both GRU variants), float32.

Tolerances (conftest.py, SPEC §6): float64 results agree with torch per element (relative 1e-12);
float32 results, of gatedkernels and of torch alike, are held to the float32 bound against the
float64 reference (the oracle): max |result - oracle| <= 2 max |reference32 - oracle| + 1e-6.
ONNX Runtime's approximate activations get test_reference.py's ORT_FLOOR on top of that bound.

Shapes include T = 1, N = 1, H = 1, odd H (7, 33) and I != H.
"""

import numpy as np
import pytest

import _helpers as hp
import gatedkernels as gk
from conftest import F32_FACTOR, F32_FLOOR, assert_close32, assert_close64
from gatedkernels import reference as ref
from test_reference import ORT_FLOOR  # the one place ORT's bound is derived and justified

TORCH_REASON = "PyTorch (pip install torch==2.13.0) is needed for the comparisons with torch.nn"
ORT_REASON = "onnx and onnxruntime (pip install onnx onnxruntime) are needed for the ONNX checks"

# torch warns that it runs LSTM projections without oneDNN: nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
# Sequence variants of torch.nn: the cell kinds plus the LSTM with a projection (P = H // 2).
VARIANTS = ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"]
# (T, N, I, H): T = 1, N = 1, H = 1, odd H, I != H.
SEQ_SHAPES = [(5, 3, 4, 7), (1, 1, 1, 1), (4, 2, 6, 33), (3, 1, 2, 2)]
# (N, I, H)
CELL_SHAPES = [(4, 3, 7), (1, 1, 1), (2, 5, 33), (3, 6, 2)]
# (num_layers, bidirectional, batch_first)
LAYOUTS = [(1, False, False), (2, True, False), (3, True, True), (2, False, True)]

SEQ_CLASSES = {"lstm": gk.LSTM, "gru": gk.GRU, "rnn_tanh": gk.RNN, "rnn_relu": gk.RNN}
CELL_CLASSES = {"lstm": gk.LSTMCell, "gru": gk.GRUCell, "rnn_tanh": gk.RNNCell,
                "rnn_relu": gk.RNNCell}


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason=TORCH_REASON)


@pytest.fixture
def onnxruntime():
    pytest.importorskip("onnx", reason=ORT_REASON)
    return pytest.importorskip("onnxruntime", reason=ORT_REASON)


def _id(values, letters):
    return "-".join(f"{k}{v}" for k, v in zip(letters, values))


def _layout_id(layout):
    L, bidirectional, batch_first = layout
    return f"L{L}" + ("-bi" if bidirectional else "") + ("-bf" if batch_first else "")


def _split_variant(variant, H):
    """(cell kind, proj_size) of a sequence variant."""
    return ("lstm", H // 2) if variant == "lstm_proj" else (variant, 0)


SEQ_CASES = [
    pytest.param(v, s, id=f"{v}-{_id(s, 'TNIH')}")
    for v in VARIANTS for s in SEQ_SHAPES if not (v == "lstm_proj" and s[3] < 2)
]


def _cast(a, dtype):
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_cast(s, dtype) for s in a)
    return np.asarray(a).astype(dtype)


def _assert_shapes(got, expected):
    g, e = hp.flatten(got), hp.flatten(expected)
    assert [a.shape for a in g] == [a.shape for a in e]


def _check(got, torch_out, run_reference, dtype, what=""):
    """gatedkernels' result vs torch's (same dtype, same shapes).

    float64: per element against torch. float32: gatedkernels and torch both against the float64
    reference, bounded by the float32 reference. ``run_reference(dt)`` runs the reference with x
    and the states cast to dt."""
    _assert_shapes(got, torch_out)
    for a in hp.flatten(got):
        assert a.dtype == dtype, f"{what}: dtype {a.dtype}"
    if dtype == np.float64:
        assert_close64(got, torch_out, what)
    else:
        oracle, ref32 = run_reference(np.float64), run_reference(np.float32)
        assert_close32(got, oracle, ref32, f"{what} (gatedkernels)")
        assert_close32(torch_out, oracle, ref32, f"{what} (torch)")


def _torch_state(module):
    return {k: hp.to_numpy(v) for k, v in module.state_dict().items()}


def _assert_same_parameters(m, tm):
    sd, expected = m.state_dict(), _torch_state(tm)
    assert list(sd) == list(expected)
    for k, v in expected.items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, k
        np.testing.assert_array_equal(sd[k], v, err_msg=k)


def _sequence_from_torch(kind, weights, dtype, *, num_layers, bidirectional, batch_first):
    """(torch module, gk module built by from_torch), with its options checked."""
    tm = hp.torch_module(kind, weights, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=batch_first)
    m = SEQ_CLASSES[kind].from_torch(tm)
    assert type(m) is SEQ_CLASSES[kind]
    assert m.dtype == dtype
    assert (m.input_size, m.hidden_size) == (tm.input_size, tm.hidden_size)
    assert (m.num_layers, m.bidirectional, m.batch_first, m.bias) == (
        num_layers, bidirectional, batch_first, "bias_ih_l0" in weights)
    if kind == "lstm":
        assert m.proj_size == tm.proj_size
    if kind.startswith("rnn"):
        assert m.nonlinearity == hp.nonlinearity(kind)
    _assert_same_parameters(m, tm)
    return tm, m


def _seq_reference(kind, x, hx, weights, **options):
    return lambda dt: hp.call_sequence(ref, kind, _cast(x, dt), _cast(hx, dt), weights, **options)


# ---------------------------------------------------------------------------------------------
# Sequence modules: gk.LSTM / GRU / RNN.from_torch vs torch.nn.LSTM / GRU / RNN.


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("variant, shape", SEQ_CASES)
def test_sequence_from_torch(variant, shape, layout, dtype, hx_given, rng, torch):
    T, N, I, H = shape
    L, bidirectional, batch_first = layout
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional, dtype=dtype)
    tm, m = _sequence_from_torch(kind, weights, dtype, **options)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I)).astype(dtype)
    hx = (hp.random_hx(kind, L * D, N, H, rng=rng, proj_size=P, dtype=dtype)
          if hx_given else None)

    expected = hp.torch_run(tm, x, hx)
    got = m(x, hx)
    _check(got, expected, _seq_reference(kind, x, hx, weights, **options), dtype)


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("pattern", ["mixed", "all_1", "all_T"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("variant", VARIANTS)
def test_lengths_match_packed_sequence(variant, layout, dtype, pattern, hx_given, rng, torch):
    """lengths vs pack_padded_sequence(enforce_sorted=False): output past each length is
    exactly zero; h_n/c_n are the states after the last valid step; the reverse direction runs
    over each valid prefix reversed."""
    T, N, I, H = 6, 5, 3, 7
    L, bidirectional, batch_first = layout
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional, dtype=dtype)
    tm, m = _sequence_from_torch(kind, weights, dtype, **options)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I)).astype(dtype)
    hx = (hp.random_hx(kind, L * D, N, H, rng=rng, proj_size=P, dtype=dtype)
          if hx_given else None)
    lengths = {"mixed": hp.random_lengths(rng, N, T), "all_1": np.ones(N, np.int64),
               "all_T": np.full(N, T, np.int64)}[pattern]

    expected = hp.torch_run(tm, x, hx, lengths=lengths)
    got = m(x, hx, lengths=lengths)
    _check(got, expected,
           _seq_reference(kind, x, hx, weights, lengths=lengths, **options), dtype)
    output = got[0] if batch_first else got[0].swapaxes(0, 1)  # [N, T, D*P]
    for n, length in enumerate(lengths):
        assert np.all(output[n, length:] == 0), "output past the length must be exactly zero"


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
@pytest.mark.parametrize("layers", [(1, False), (2, True)], ids=["L1", "L2-bi"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_unbatched_from_torch(variant, layers, batch_first, dtype, hx_given, rng, torch):
    """x [T, I], hx [L*D, P] -> output [T, D*P], h_n [L*D, P] (time-major whatever
    batch_first says, as torch)."""
    T, I, H = 5, 3, 6
    L, bidirectional = layers
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional, dtype=dtype)
    tm, m = _sequence_from_torch(kind, weights, dtype, **options)
    x = rng.standard_normal((T, I)).astype(dtype)
    hx = (hp.random_hx(kind, L * D, 1, H, rng=rng, proj_size=P, batched=False, dtype=dtype)
          if hx_given else None)

    expected = hp.torch_run(tm, x, hx)
    got = m(x, hx)
    assert got[0].shape == (T, D * (P or H))
    _check(got, expected, _seq_reference(kind, x, hx, weights, **options), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_bias_from_torch(variant, dtype, rng, torch):
    T, N, I, H = 4, 3, 5, 6
    kind, P = _split_variant(variant, H)
    options = dict(num_layers=2, bidirectional=True, batch_first=False)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=2,
                                bidirectional=True, bias=False, dtype=dtype)
    tm, m = _sequence_from_torch(kind, weights, dtype, **options)
    assert not m.bias and not any(k.startswith("bias") for k in m.state_dict())
    x = rng.standard_normal((T, N, I)).astype(dtype)
    hx = hp.random_hx(kind, 4, N, H, rng=rng, proj_size=P, dtype=dtype)
    lengths = hp.random_lengths(rng, N, T)
    for kw in ({}, {"lengths": lengths}):
        _check(m(x, hx, **kw), hp.torch_run(tm, x, hx, **kw),
               _seq_reference(kind, x, hx, weights, **kw, **options), dtype, str(kw))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_from_torch_with_dropout_is_inference(variant, dtype, rng, torch):
    """A torch module built with dropout (in eval mode) converts; the gk module runs inference
    (dropout off), as torch in eval mode."""
    kind, _ = _split_variant(variant, 5)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[kind]
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    tm = cls(3, 5, num_layers=2, dropout=0.4, dtype=tdtype).eval()
    m = SEQ_CLASSES[kind].from_torch(tm)
    _assert_same_parameters(m, tm)
    x = rng.standard_normal((4, 2, 3)).astype(dtype)
    weights = _torch_state(tm)
    _check(m(x), hp.torch_run(tm, x), _seq_reference(kind, x, None, weights, num_layers=2),
           dtype)


@pytest.mark.parametrize("pair", [
    ("LSTM", "GRU"), ("GRU", "LSTM"), ("RNN", "GRU"), ("LSTM", "RNN"),
    ("LSTMCell", "GRUCell"), ("GRUCell", "RNNCell"), ("RNNCell", "LSTMCell"),
    ("LSTMCell", "LSTM"), ("LSTM", "LSTMCell"),
], ids=lambda p: f"{p[0]}-from-{p[1]}")
def test_from_torch_rejects_other_kinds(pair, torch):
    ours, theirs = pair
    module = getattr(torch.nn, theirs)(3, 4)
    with pytest.raises(TypeError):
        getattr(gk, ours).from_torch(module)


# ---------------------------------------------------------------------------------------------
# Cells: gk.*Cell.from_torch and the functional cells vs torch.nn.LSTMCell / GRUCell / RNNCell.


def _torch_cell_run(torch, cell, x, hx):
    with torch.no_grad():
        return hp.hx_to_numpy(cell(hp.to_torch(x), hp.hx_to_torch(hx)))


def _cell_reference(kind, x, hx, params):
    return lambda dt: hp.call_cell(ref, kind, _cast(x, dt), _cast(hx, dt), params)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=lambda s: _id(s, "NIH"))
@pytest.mark.parametrize("kind", hp.KINDS)
def test_cell_from_torch(kind, shape, dtype, batched, hx_given, bias, rng, torch):
    N, I, H = shape
    params = hp.random_cell_params(kind, I, H, rng=rng, bias=bias, dtype=dtype)
    tc = hp.torch_cell(kind, params)
    m = CELL_CLASSES[kind].from_torch(tc)
    assert type(m) is CELL_CLASSES[kind]
    assert m.dtype == dtype
    assert (m.input_size, m.hidden_size, m.bias) == (I, H, bias)
    if kind.startswith("rnn"):
        assert m.nonlinearity == hp.nonlinearity(kind)
    _assert_same_parameters(m, tc)
    x = rng.standard_normal((N, I) if batched else (I,)).astype(dtype)
    hx = hp.random_hx(kind, None, N, H, rng=rng, batched=batched, dtype=dtype) if hx_given \
        else None

    _check(m(x, hx), _torch_cell_run(torch, tc, x, hx), _cell_reference(kind, x, hx, params),
           dtype)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=lambda s: _id(s, "NIH"))
@pytest.mark.parametrize("kind", hp.KINDS)
def test_functional_cell_matches_torch(kind, shape, dtype, batched, hx_given, bias, rng, torch):
    N, I, H = shape
    params = hp.random_cell_params(kind, I, H, rng=rng, bias=bias, dtype=dtype)
    x = rng.standard_normal((N, I) if batched else (I,)).astype(dtype)
    hx = hp.random_hx(kind, None, N, H, rng=rng, batched=batched, dtype=dtype) if hx_given \
        else None

    expected = _torch_cell_run(torch, hp.torch_cell(kind, params), x, hx)
    got = hp.call_cell(gk, kind, x, hx, params)
    _check(got, expected, _cell_reference(kind, x, hx, params), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("shape", [(3, 4, 7, 3), (1, 2, 5, 1), (2, 33, 33, 16)],
                         ids=lambda s: _id(s, "NIHP"))
def test_lstm_cell_projection_matches_torch(shape, batched, dtype, rng, torch):
    """lstm_cell(w_hr=...) is one step of nn.LSTM(proj_size=P) (torch's LSTMCell has no
    projection)."""
    N, I, H, P = shape
    weights = hp.random_weights("lstm", I, H, rng=rng, proj_size=P, dtype=dtype)
    params = {"w_ih": weights["weight_ih_l0"], "w_hh": weights["weight_hh_l0"],
              "b_ih": weights["bias_ih_l0"], "b_hh": weights["bias_hh_l0"],
              "w_hr": weights["weight_hr_l0"]}
    x = rng.standard_normal((N, I)).astype(dtype)
    h, c = hp.random_hx("lstm", None, N, H, rng=rng, proj_size=P, dtype=dtype)

    _, (h_n, c_n) = hp.torch_run(hp.torch_module("lstm", weights), x[None], (h[None], c[None]))
    if batched:
        x_in, hx, expected = x, (h, c), (h_n[0], c_n[0])
    else:
        x_in, hx, expected = x[0], (h[0], c[0]), (h_n[0, 0], c_n[0, 0])
    got = hp.call_cell(gk, "lstm", x_in, hx, params)
    _check(got, expected, _cell_reference("lstm", x_in, hx, params), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_sequence_matches_torch(variant, layout, dtype, rng, torch):
    """gk.lstm / gru / rnn on a weight mapping (torch's state_dict as tensors) vs torch."""
    T, N, I, H = 5, 4, 3, 7
    L, bidirectional, batch_first = layout
    kind, P = _split_variant(variant, H)
    D = 2 if bidirectional else 1
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=bidirectional, dtype=dtype)
    tm = hp.torch_module(kind, weights, **options)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I)).astype(dtype)
    hx = hp.random_hx(kind, L * D, N, H, rng=rng, proj_size=P, dtype=dtype)
    lengths = hp.random_lengths(rng, N, T)
    for kw in ({}, {"lengths": lengths}):
        got = hp.call_sequence(gk, kind, x, hx, tm.state_dict(), **kw, **options)
        _check(got, hp.torch_run(tm, x, hx, **kw),
               _seq_reference(kind, x, hx, weights, **kw, **options), dtype, str(kw))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["lstm_proj", "gru"])
def test_large_sequence_from_torch(variant, dtype, rng, torch):
    T, N, I, H, L = 64, 9, 48, 97, 2  # odd N and H: tails of every block
    kind, P = _split_variant(variant, H)
    options = dict(num_layers=L, bidirectional=True, batch_first=True)
    weights = hp.random_weights(kind, I, H, rng=rng, proj_size=P, num_layers=L,
                                bidirectional=True, dtype=dtype)
    tm, m = _sequence_from_torch(kind, weights, dtype, **options)
    x = rng.standard_normal((N, T, I)).astype(dtype)
    hx = hp.random_hx(kind, 2 * L, N, H, rng=rng, proj_size=P, dtype=dtype)
    lengths = hp.random_lengths(rng, N, T)
    for kw in ({}, {"lengths": lengths}):
        _check(m(x, hx, **kw), hp.torch_run(tm, x, hx, **kw),
               _seq_reference(kind, x, hx, weights, **kw, **options), dtype, str(kw))


# ---------------------------------------------------------------------------------------------
# One layer vs ONNX Runtime (float32): LSTM and both GRU variants, with sequence_lens.

ONNX_CASES = [pytest.param("lstm", True, id="lstm"), pytest.param("gru", True, id="gru-lbr1"),
              pytest.param("gru", False, id="gru-lbr0")]
ONNX_SHAPES = [(6, 4, 3, 7), (1, 1, 1, 1), (12, 3, 5, 33), (4, 2, 6, 1)]


def _max_error(result, oracle):
    return max(float(np.max(np.abs(np.asarray(r, np.float64) - o), initial=0.0))
               for r, o in zip(hp.flatten(result), hp.flatten(oracle)))


def _onnx_inputs(kind, shape, bidirectional, hx_given, rng):
    """float32 weights, x and states: the float64 oracle sees exactly the numbers that
    gatedkernels and ORT see."""
    T, N, I, H = shape
    D = 2 if bidirectional else 1
    weights = hp.random_weights(kind, I, H, rng=rng, bidirectional=bidirectional,
                                dtype=np.float32)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    hx = hp.random_hx(kind, D, N, H, rng=rng, dtype=np.float32) if hx_given else None
    return weights, x, hx


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("shape", ONNX_SHAPES, ids=lambda s: _id(s, "TNIH"))
@pytest.mark.parametrize("kind, lbr", ONNX_CASES)
def test_matches_onnxruntime(kind, lbr, shape, bidirectional, with_lengths, hx_given, rng,
                             onnxruntime):
    T, N, I, H = shape
    weights, x, hx = _onnx_inputs(kind, shape, bidirectional, hx_given, rng)
    lengths = hp.random_lengths(rng, N, T) if with_lengths else None
    options = dict(bidirectional=bidirectional, lengths=lengths, linear_before_reset=lbr)

    got = hp.call_sequence(gk, kind, x, hx, weights, **options)
    for a in hp.flatten(got):
        assert a.dtype == np.float32
    oracle = hp.call_sequence(ref, kind, x.astype(np.float64), _cast(hx, np.float64), weights,
                              **options)
    ref32 = hp.call_sequence(ref, kind, x, hx, weights, **options)
    assert_close32(got, oracle, ref32, "gatedkernels vs oracle")

    ort = hp.ort_run(kind, x, hx, weights, **options)
    _assert_shapes(got, ort)
    # |gk - ort| <= |gk - oracle| + |ort - oracle|: the float32 bound (SPEC §6) plus the ORT
    # bound of test_reference.py (float32 bound with ORT_FLOOR for its approximate activations).
    base = _max_error(ref32, oracle)
    bound = (F32_FACTOR * base + F32_FLOOR) + (F32_FACTOR * base + ORT_FLOOR)
    err = _max_error(got, ort)
    assert err <= bound, f"gatedkernels vs ORT: {err:.3g} > {bound:.3g}"
    if lengths is not None:  # both zero the output past each length
        for n, length in enumerate(lengths):
            assert np.all(got[0][length:, n] == 0)
            assert np.all(ort[0][length:, n] == 0)


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr1", "lbr0"])
def test_onnx_bound_tells_gru_variants_apart(lbr, rng, onnxruntime):
    """gatedkernels' GRU of the other variant is far outside the gk-vs-ORT bound, so
    test_matches_onnxruntime checks which variant is computed; the GRU module with
    linear_before_reset computes that variant too."""
    weights, x, hx = _onnx_inputs("gru", (6, 4, 3, 7), True, True, rng)
    ort = hp.ort_run("gru", x, hx, weights, bidirectional=True, linear_before_reset=lbr)
    wrong = gk.gru(x, hx, weights, bidirectional=True, linear_before_reset=not lbr)
    assert _max_error(wrong, ort) > 1e3 * ORT_FLOOR

    m = gk.GRU(3, 7, bidirectional=True, linear_before_reset=lbr, dtype=np.float32)
    m.load_state_dict(weights)
    options = dict(bidirectional=True, linear_before_reset=lbr)
    oracle = gk.reference.gru(x.astype(np.float64), _cast(hx, np.float64), weights, **options)
    ref32 = gk.reference.gru(x, hx, weights, **options)
    got = m(x, hx)
    assert_close32(got, oracle, ref32, "module")
    base = _max_error(ref32, oracle)
    assert _max_error(got, ort) <= 2 * (F32_FACTOR * base) + F32_FLOOR + ORT_FLOOR
