"""The CUDA path on a real GPU: torch CUDA tensors (and CuPy arrays) in, the same kind out,
against torch.nn on the GPU and the float64 reference.

Marked ``cuda``; skipped with a reason without an NVIDIA GPU, without a CUDA build of torch, or
when NUMBA_ENABLE_CUDASIM=1 was set by hand (the simulator cannot take torch CUDA tensors).
TF32 is switched off in torch for these tests, so its float32 results are real float32.

Shapes cross the GPU block constants (KS = 32 lanes per unit, 4 units per block, batch tiles of
up to 8 rows): H = 1, H = 37 (not a multiple of 4), I != H, N = 1, N = 11 (two batch tiles, the
last partial), T = 1; and H = 3072 for the LSTM, whose W_hh rows do not fit in a block's shared
memory (the persistent kernel reads them from global memory). Cells (and the per-step loop) of
more than 8 rows run the tiled kernels (tiles of 32 rows x 16 units, k in chunks of 32): N = 11
(one partial batch tile), N = 70 (three, the last partial) with I = 100 (four chunks, the last
partial) and H = 37 (three unit tiles, the last partial), N = 33 at H = 256.

Tolerances are conftest.py's (SPEC §6): float64 per element (also against torch's float64);
float32 within twice the float32 reference's error (+1e-6) of the float64 oracle, the oracle
being the reference on the torch module's own parameters.
"""
import numpy as np
import pytest

import _helpers
import gatedkernels as gk
from conftest import HAS_GPU, assert_close32, assert_close64
from gatedkernels import reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU with a driver "
                                           "(/proc/driver/nvidia/gpus is empty or missing)"),
]

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
KINDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
# (N, I, H)
CELL_SHAPES = [(11, 19, 37), (1, 1, 1), (8, 64, 256), (70, 100, 37), (33, 256, 256)]
# (T, N, I, H)
SEQ_SHAPES = [(5, 11, 19, 37), (1, 1, 1, 1), (4, 3, 16, 64)]
# (num_layers, bidirectional, batch_first, lengths: None / "cpu" / "cuda")
LAYOUTS = [(1, False, False, None), (2, True, False, "cuda"), (2, True, True, "cpu")]


def _gpu_ready():
    """gatedkernels.cuda on a real GPU, or a skip with the reason."""
    pytest.importorskip("numba", reason="the CUDA path needs numba-cuda "
                                        "(pip install 'gatedkernels[cuda12]')")
    import gatedkernels.cuda as gkc

    if gkc.SIMULATOR:
        pytest.skip("NUMBA_ENABLE_CUDASIM=1: the simulator cannot run on torch/CuPy arrays")
    if not gkc.is_available():
        pytest.skip("numba-cuda finds no usable GPU (driver / toolkit mismatch?)")
    return gkc


@pytest.fixture
def torch():
    """torch with CUDA and TF32 off (restored afterwards)."""
    torch = pytest.importorskip("torch", reason="needs PyTorch with CUDA")
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda is not available (a CPU build of torch?)")
    _gpu_ready()
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield torch
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def gen(torch, request):
    """A torch generator on the GPU seeded from the test id."""
    import zlib

    g = torch.Generator(device="cuda")
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    return g


def _tdtype(torch, dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


def _randn(torch, gen, shape, dtype):
    return torch.randn(*shape, generator=gen, device="cuda", dtype=_tdtype(torch, dtype))


def _np(tree):
    """Host NumPy copies of tensors (None stays None; tuples stay tuples)."""
    if tree is None:
        return None
    if isinstance(tree, (tuple, list)):
        return tuple(_np(t) for t in tree)
    return tree.detach().cpu().numpy()


_cast = _helpers.cast_tree


def _assert_torch_like(torch, out, like, what):
    """Every array of `out` is a torch tensor on like's device, of like's dtype."""
    for t in _helpers.flatten(out):
        assert isinstance(t, torch.Tensor), f"{what}: got {type(t)}, expected a torch tensor"
        assert t.device == like.device, f"{what}: on {t.device}, input on {like.device}"
        assert t.dtype == like.dtype, f"{what}: {t.dtype}, input {like.dtype}"


def _check(got, oracle, ref32, dtype, what, torch_out=None):
    """got (host copies) vs the float64 oracle: per element in float64 (and vs torch's float64
    result), the float32 bound in float32 (torch's result held to the same bound)."""
    if dtype == np.float64:
        assert_close64(got, oracle, what)
        if torch_out is not None:
            assert_close64(got, torch_out, what + " vs torch")
    else:
        assert_close32(got, oracle, ref32, what)
        if torch_out is not None:
            assert_close32(torch_out, oracle, ref32, what + ": torch itself")


def _seq_reference(kind, x, hx, weights, dtype, **options):
    x, hx, weights = _cast(x, dtype), _cast(hx, dtype), _cast(weights, dtype)
    if kind == "lstm":
        y, (hn, cn) = reference.lstm(x, hx, weights, **options)
        return y, hn, cn
    if kind == "gru":
        y, hn = reference.gru(x, hx, weights, **options)
    else:
        y, hn = reference.rnn(x, hx, weights, nonlinearity=_helpers.nonlinearity(kind), **options)
    return y, hn


# --------------------------------------------------------------------------- torch: cells


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=lambda s: "N{}I{}H{}".format(*s))
@pytest.mark.parametrize("kind", KINDS)
def test_torch_cells(torch, gen, kind, shape, dtype):
    N, I, H = shape
    tdt = _tdtype(torch, dtype)
    if kind == "lstm":
        tcell, cls = torch.nn.LSTMCell(I, H, dtype=tdt, device="cuda"), gk.LSTMCell
    elif kind == "gru":
        tcell, cls = torch.nn.GRUCell(I, H, dtype=tdt, device="cuda"), gk.GRUCell
    else:
        tcell = torch.nn.RNNCell(I, H, nonlinearity=_helpers.nonlinearity(kind), dtype=tdt,
                                 device="cuda")
        cls = gk.RNNCell
    m = cls.from_torch(tcell)
    assert m.dtype == dtype
    x = _randn(torch, gen, (N, I), dtype)
    h = _randn(torch, gen, (N, H), dtype)
    hx = (h, _randn(torch, gen, (N, H), dtype)) if kind == "lstm" else h
    with torch.no_grad():
        expected = tcell(x, hx)
    got = m(x, hx)
    _assert_torch_like(torch, got, x, f"{kind} cell")
    p = m.state_dict()
    args = (p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])

    def ref(dt):
        xa, hxa = _cast(_np(x), dt), _cast(_np(hx), dt)
        pa = _cast(args, dt)
        if kind == "lstm":
            return reference.lstm_cell(xa, hxa, *pa)
        if kind == "gru":
            return reference.gru_cell(xa, hxa, *pa)
        return reference.rnn_cell(xa, hxa, *pa, nonlinearity=_helpers.nonlinearity(kind))

    _check(_np(got), ref(np.float64), ref(np.float32), dtype, f"{kind} cell", _np(expected))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(70, 19, 37, 20), (5, 19, 37, 20)],
                         ids=["N70I19H37P20-tiled", "N5I19H37P20-warp"])
def test_torch_lstm_cell_with_projection(torch, gen, shape, dtype):
    """One step of torch.nn.LSTM(proj_size=P) against gk.lstm_cell(..., w_hr=...)."""
    N, I, H, P = shape
    tm = torch.nn.LSTM(I, H, proj_size=P, dtype=_tdtype(torch, dtype), device="cuda").eval()
    x = _randn(torch, gen, (N, I), dtype)
    h, c = _randn(torch, gen, (N, P), dtype), _randn(torch, gen, (N, H), dtype)
    with torch.no_grad():
        _, (t_h, t_c) = tm(x[None], (h[None], c[None]))
    w = [getattr(tm, name + "_l0").detach() for name in
         ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
    got = gk.lstm_cell(x, (h, c), *w[:4], w_hr=w[4])
    _assert_torch_like(torch, got, x, "lstm_cell w_hr")

    def ref(dt):
        a = _cast(_np((x, (h, c)) + tuple(w)), dt)
        return reference.lstm_cell(*a[:6], w_hr=a[6])

    _check(_np(got), ref(np.float64), ref(np.float32), dtype, f"lstm_cell w_hr N{N}",
           _np((t_h[0], t_c[0])))


# --------------------------------------------------------------------------- torch: sequences


def _torch_sequence(torch, kind, I, H, L, bidirectional, batch_first, dtype):
    kw = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first,
              dtype=_tdtype(torch, dtype), device="cuda")
    if kind == "lstm":
        return torch.nn.LSTM(I, H, **kw).eval(), gk.LSTM
    if kind == "gru":
        return torch.nn.GRU(I, H, **kw).eval(), gk.GRU
    return torch.nn.RNN(I, H, nonlinearity=_helpers.nonlinearity(kind), **kw).eval(), gk.RNN


def _run_torch(torch, tm, x, hx, lengths_cpu, T):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    with torch.no_grad():
        if lengths_cpu is None:
            return tm(x, hx)
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=tm.batch_first,
                                      enforce_sorted=False)
        y, hn = tm(packed, hx)
        y, _ = pad_packed_sequence(y, batch_first=tm.batch_first, total_length=T)
        return y, hn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda s: "L{}{}{}-lengths_{}".format(
    s[0], "-bidir" if s[1] else "", "-bf" if s[2] else "", s[3]))
@pytest.mark.parametrize("shape", SEQ_SHAPES, ids=lambda s: "T{}N{}I{}H{}".format(*s))
@pytest.mark.parametrize("kind", KINDS)
def test_torch_sequences(torch, gen, kind, shape, layout, dtype):
    T, N, I, H = shape
    L, bidirectional, batch_first, where = layout
    D = 2 if bidirectional else 1
    tm, cls = _torch_sequence(torch, kind, I, H, L, bidirectional, batch_first, dtype)
    m = cls.from_torch(tm)
    x = _randn(torch, gen, (N, T, I) if batch_first else (T, N, I), dtype)
    h0 = _randn(torch, gen, (L * D, N, H), dtype)
    hx = (h0, _randn(torch, gen, (L * D, N, H), dtype)) if kind == "lstm" else h0
    lengths_np = None
    lengths_arg = None
    if where is not None:
        lengths_np = _helpers.random_lengths(np.random.default_rng(N * T + H), N, T)
        lengths_arg = (torch.as_tensor(lengths_np, device="cuda") if where == "cuda"
                       else lengths_np)
    x_before = x.clone()
    t_y, t_hn = _run_torch(torch, tm, x, hx, None if lengths_np is None
                           else torch.as_tensor(lengths_np), T)
    got = m(x, hx, lengths=lengths_arg)
    _assert_torch_like(torch, got, x, f"{kind} sequence")
    assert torch.equal(x, x_before)
    opts = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first,
                lengths=lengths_np)
    sd = m.state_dict()
    what = f"{kind} T{T} N{N} H{H} L{L} D{D} bf={batch_first} lengths={where}"
    _check(_helpers.flatten(_np(got)),
           _helpers.flatten(_seq_reference(kind, _np(x), _np(hx), sd, np.float64, **opts)),
           _helpers.flatten(_seq_reference(kind, _np(x), _np(hx), sd, np.float32, **opts)),
           dtype, what, _helpers.flatten((_np(t_y), _np(t_hn))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,H,N", [("lstm", 3072, 2), ("gru", 37, 2), ("rnn_relu", 37, 2),
                                      ("lstm", 37, 70)],
                         ids=["lstm-H3072-uncached", "gru-H37", "rnn_relu-H37",
                              "lstm-H37-N70-tiled_loop"])
def test_persistent_and_loop_agree(torch, gen, kind, H, N, dtype):
    import gatedkernels.cuda as gkc

    T, I = 4, 8
    weights = {k: torch.as_tensor(v, device="cuda") for k, v in _helpers.random_weights(
        kind, I, H, rng=np.random.default_rng(H), bidirectional=True, dtype=dtype).items()}
    x = _randn(torch, gen, (T, N, I), dtype)
    lengths = np.resize([T, 1, 2], N)
    opts = dict(bidirectional=True, lengths=lengths)
    runs = {}
    for impl in ("persistent", "loop"):
        if kind == "lstm":
            y, (hn, cn) = gkc.lstm(x, None, weights, impl=impl, **opts)
            out = (y, hn, cn)
        elif kind == "gru":
            out = gkc.gru(x, None, weights, impl=impl, **opts)
        else:
            out = gkc.rnn(x, None, weights, nonlinearity="relu", impl=impl, **opts)
        _assert_torch_like(torch, out, x, impl)
        runs[impl] = _helpers.flatten(_np(out))
    w_np = {k: _np(v) for k, v in weights.items()}
    oracle = _helpers.flatten(_seq_reference(kind, _np(x), None, w_np, np.float64, **opts))
    ref32 = _helpers.flatten(_seq_reference(kind, _np(x), None, w_np, np.float32, **opts))
    for impl, got in runs.items():
        _check(got, oracle, ref32, dtype, f"{kind} H{H} impl={impl}")
    if dtype == np.float64:
        assert_close64(runs["loop"], runs["persistent"], "loop vs persistent")


# --------------------------------------------------------------------------- zero copy


def test_cell_results_stay_on_the_device_and_inputs_are_untouched(torch, gen):
    N, I, H = 5, 7, 9
    x = _randn(torch, gen, (N, I), np.float32).requires_grad_(True)
    h, c = (_randn(torch, gen, (N, H), np.float32) for _ in range(2))
    w = [_randn(torch, gen, shape, np.float32) * 0.3 for shape in
         ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    inputs = [x, h, c] + w
    before = [t.detach().clone() for t in inputs]
    h1, c1 = gk.lstm_cell(x, (h, c), *w)
    _assert_torch_like(torch, (h1, c1), x, "lstm_cell")
    assert not h1.requires_grad
    for t, b in zip(inputs, before):
        assert torch.equal(t.detach(), b)
    ptrs = {t.data_ptr() for t in inputs}
    assert h1.data_ptr() not in ptrs and c1.data_ptr() not in ptrs
    # On a side stream: the kernels run on the caller's current stream.
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        h2, c2 = gk.lstm_cell(x, (h, c), *w)
    s.synchronize()
    assert torch.equal(h2, h1) and torch.equal(c2, c1)
    ref = reference.lstm_cell(*_cast(_np(tuple(inputs[:1]) + ((h, c),) + tuple(w)),
                                     np.float64))
    ref32 = reference.lstm_cell(*_np(tuple(inputs[:1]) + ((h, c),) + tuple(w)))
    assert_close32(_np((h1, c1)), ref, ref32, "lstm_cell on torch tensors")


def test_module_on_cuda_takes_torch_tensors(torch, gen):
    m = gk.GRU(6, 10, num_layers=2, batch_first=True, seed=0, device="cuda")
    x = _randn(torch, gen, (3, 4, 6), np.float32)
    y, hn = m(x)
    _assert_torch_like(torch, (y, hn), x, "GRU module")
    cpu_y, cpu_hn = m(_np(x))
    oracle = reference.gru(_np(x).astype(np.float64), None, _cast(m.state_dict(), np.float64),
                           num_layers=2, batch_first=True)
    ref32 = reference.gru(_np(x), None, m.state_dict(), num_layers=2, batch_first=True)
    assert_close32(_np((y, hn)), oracle, ref32, "GRU module on torch tensors")
    assert_close32((cpu_y, cpu_hn), oracle, ref32, "GRU module on NumPy")


# --------------------------------------------------------------------------- CuPy


def test_cupy_in_cupy_out():
    cp = pytest.importorskip("cupy", reason="CuPy is not installed")
    gkc = _gpu_ready()
    assert gkc.is_available()
    rng = np.random.default_rng(0)
    p = _helpers.random_cell_params("gru", 5, 6, rng=rng)
    x = rng.standard_normal((3, 5))
    h = rng.standard_normal((3, 6))
    args = [cp.asarray(a) for a in (x, h, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])]
    h1 = gk.gru_cell(*args, linear_before_reset=False)
    assert isinstance(h1, cp.ndarray) and h1.dtype == np.float64 and h1.shape == (3, 6)
    assert_close64(cp.asnumpy(h1), reference.gru_cell(x, h, p["w_ih"], p["w_hh"], p["b_ih"],
                                                      p["b_hh"], linear_before_reset=False),
                   "gru_cell on CuPy")
    w = _helpers.random_weights("lstm", 5, 6, rng=rng, num_layers=2, bidirectional=True)
    xs = rng.standard_normal((4, 3, 5))
    lengths = np.array([4, 1, 2])
    y, (hn, cn) = gk.lstm(cp.asarray(xs), None, {k: cp.asarray(v) for k, v in w.items()},
                          num_layers=2, bidirectional=True, lengths=cp.asarray(lengths))
    for a in (y, hn, cn):
        assert isinstance(a, cp.ndarray) and a.dtype == np.float64
    ry, (rhn, rcn) = reference.lstm(xs, None, w, num_layers=2, bidirectional=True,
                                    lengths=lengths)
    assert_close64([cp.asnumpy(a) for a in (y, hn, cn)], (ry, rhn, rcn), "lstm on CuPy")
