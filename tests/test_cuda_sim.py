"""The CUDA path (``gatedkernels.cuda``) on Numba device arrays, against the float64 reference.

Without a GPU the kernels run in Numba's CUDA simulator (conftest.py sets NUMBA_ENABLE_CUDASIM
before numba is imported); on a GPU machine the same tests run on the GPU. The simulator's block
constants are KS = 4 lanes, U_STEP = 2 units per block, at most 2 batch rows per tile, so the
shapes below are tiny but cross every boundary: H = 1, H = 2 (the persistent kernel keeps W_hh in
shared memory when all units fit one block: H <= 2 in the simulator) and H > 2 (it reads W_hh
from global memory), odd H, I != H, N = 1, N = 3 (two batch tiles, the last one partial),
T = 1, unsorted lengths containing 1 and T.

Batches above _kernels.TILED_ABOVE rows (3 in the simulator) run the tiled step kernels, whose
simulator tiles are BN = 4 rows x BU = 4 units, k in chunks of KC = 4; their shapes are written
in those constants (N = BN + 1 = 5: two batch tiles, the last partial; H = BU + 1, BU - 1 or 1;
K = 2*KC + 1, KC - 1 or KC), so on a GPU they cross the GPU tiles the same way.

Tolerances are conftest.py's (SPEC §6): float64 per element against the float64 reference;
float32 within twice the float32 reference's error (+1e-6). Inputs are rounded to float32 values
first, so both precisions see the same numbers.

The simulator is slow (~0.1-0.3 ms per simulated thread, milliseconds per barrier): a step call
costs ~0.1 s, a sequence up to a few seconds, so the sequence options are spread over a few
scenarios instead of a full cross product.
"""
import pickle

import numpy as np
import pytest

pytest.importorskip("numba", reason="the CUDA path needs numba-cuda: pip install "
                                    "'gatedkernels[test]' (simulator) or 'gatedkernels[cuda12]'")
cuda = pytest.importorskip("numba.cuda", reason="the CUDA path needs numba-cuda: pip install "
                                                "'gatedkernels[test]' or 'gatedkernels[cuda12]'")

import _helpers  # noqa: E402
import gatedkernels as gk  # noqa: E402
import gatedkernels.cuda as gkc  # noqa: E402
from conftest import assert_close32, assert_close64  # noqa: E402
from gatedkernels import reference  # noqa: E402
from gatedkernels._device import device_kind  # noqa: E402
from gatedkernels.cuda import _kernels  # noqa: E402

CELL_VARIANTS, VARIANT_IDS = _helpers.CELL_VARIANTS, _helpers.VARIANT_IDS
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]


# --------------------------------------------------------------------------- helpers


_cast = _helpers.cast_tree


def _f32_exact(tree):
    """Round to float32 values (kept as float64) so both precisions see the same inputs."""
    return _cast(_cast(tree, np.float32), np.float64)


def dev(tree):
    """Numba device copies of a dict / tuple / array (None stays None)."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: dev(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return tuple(dev(v) for v in tree)
    return cuda.to_device(np.ascontiguousarray(tree))


def host(tree, dtype=None, what=""):
    """Host copies of a result, checking that every array is a Numba device array (of dtype)."""
    if tree is None:
        return None
    if isinstance(tree, (tuple, list)):
        return tuple(host(v, dtype, what) for v in tree)
    assert device_kind(tree) == "numba", f"{what}: expected a Numba device array, got {type(tree)}"
    a = tree.copy_to_host()
    if dtype is not None:
        assert a.dtype == dtype, f"{what}: dtype {a.dtype}, expected {np.dtype(dtype)}"
    return a


def _same_shapes(got, oracle, what):
    g, o = _helpers.flatten(got), _helpers.flatten(oracle)
    assert len(g) == len(o), f"{what}: {len(g)} outputs, expected {len(o)}"
    for a, b in zip(g, o):
        assert np.shape(a) == np.shape(b), f"{what}: shape {np.shape(a)}, expected {np.shape(b)}"


def check(dtype, run_device, run_reference, what):
    """Device result (host copy) vs the reference, with conftest's bound for the dtype.
    run_device(dtype) / run_reference(dtype) take the inputs cast to dtype."""
    got = host(run_device(dtype), np.dtype(dtype), what)
    oracle = run_reference(np.float64)
    _same_shapes(got, oracle, what)
    if dtype == np.float64:
        assert_close64(got, oracle, what)
    else:
        assert_close32(got, oracle, run_reference(np.float32), what)
    return got


def _gru_lbr(variant):
    return variant.get("linear_before_reset", True)


def seq_call(mod, kind, variant, x, hx, weights, **options):
    """mod.lstm / mod.gru / mod.rnn (mod: gk, gatedkernels.cuda or the reference)."""
    if kind == "lstm":
        return mod.lstm(x, hx, weights, **options)
    if kind == "gru":
        return mod.gru(x, hx, weights, linear_before_reset=_gru_lbr(variant), **options)
    return mod.rnn(x, hx, weights, nonlinearity=_helpers.nonlinearity(kind), **options)


def cell_call(mod, kind, variant, x, hx, p):
    args = (x, hx, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    if kind == "lstm":
        return mod.lstm_cell(*args)
    if kind == "gru":
        return mod.gru_cell(*args, linear_before_reset=_gru_lbr(variant))
    return mod.rnn_cell(*args, nonlinearity=_helpers.nonlinearity(kind))


def _assert_equal_with_nans(got, oracle, what):
    """NaN exactly where the oracle has NaN; elsewhere assert_close64."""
    for g, o in zip(_helpers.flatten(got), _helpers.flatten(oracle)):
        assert np.array_equal(np.isnan(g), np.isnan(o)), f"{what}: NaN positions differ"
        ok = ~np.isnan(o)
        assert_close64(g[ok], o[ok], what)


# --------------------------------------------------------------------------- cells

# (id, N (None: unbatched x [I]), I, H, bias, state given)
CELL_CASES = [
    ("N3I4H5", 3, 4, 5, True, True),  # 2 batch tiles (last partial), 3 unit blocks, odd H
    ("N1I1H1-nobias-nostate", 1, 1, 1, False, False),
    ("N2I3H2-nostate", 2, 3, 2, True, False),
    ("unbatched-I5H3-nobias", None, 5, 3, False, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CELL_CASES, ids=[c[0] for c in CELL_CASES])
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_cell(kind, variant, case, dtype, rng):
    _, N, I, H, bias, with_state = case
    batched = N is not None
    params = _f32_exact(_helpers.random_cell_params(kind, I, H, rng=rng, bias=bias))
    x = _f32_exact(rng.standard_normal((N, I) if batched else (I,)))
    hx = None
    if with_state:
        hx = _f32_exact(_helpers.random_hx(kind, None, N or 1, H, rng=rng, batched=batched))
    check_cell(kind, variant, x, hx, params, dtype, f"{kind}{variant} cell {case[0]}")


def check_cell(kind, variant, x, hx, params, dtype, what):
    """One cell call on the device against the reference (see check)."""

    def run_device(dt):
        return cell_call(gk, kind, variant, dev(_cast(x, dt)), dev(_cast(hx, dt)),
                         dev(_cast(params, dt)))

    def run_reference(dt):
        return cell_call(reference, kind, variant, _cast(x, dt), _cast(hx, dt),
                         _cast(params, dt))

    check(dtype, run_device, run_reference, what)


@pytest.mark.parametrize("missing", ["h", "c"])
def test_lstm_cell_with_half_a_state(missing, rng):
    p = _f32_exact(_helpers.random_cell_params("lstm", 3, 3, rng=rng))
    x = _f32_exact(rng.standard_normal((3, 3)))
    h, c = _f32_exact(_helpers.random_hx("lstm", None, 3, 3, rng=rng))
    hx = (None, c) if missing == "h" else (h, None)
    ref_hx = (np.zeros_like(h), c) if missing == "h" else (h, np.zeros_like(c))
    got = host(cell_call(gk, "lstm", {}, dev(x), dev(hx), dev(p)), np.float64)
    assert_close64(got, cell_call(reference, "lstm", {}, x, ref_hx, p), f"lstm_cell no {missing}")


def test_cell_through_gatedkernels_cuda(rng):
    # gatedkernels.cuda's own cell functions are the functional API's device path.
    p = _f32_exact(_helpers.random_cell_params("gru", 2, 3, rng=rng))
    x, h = _f32_exact(rng.standard_normal((3, 2))), _f32_exact(rng.standard_normal((3, 3)))
    for lbr in (True, False):
        got = host(gkc.gru_cell(dev(x), dev(h), *dev((p["w_ih"], p["w_hh"], p["b_ih"],
                                                      p["b_hh"])), linear_before_reset=lbr))
        ref = reference.gru_cell(x, h, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                                 linear_before_reset=lbr)
        assert_close64(got, ref, f"gatedkernels.cuda.gru_cell lbr={lbr}")


# --------------------------------------------------------------------------- tiled cells

BN, BU, KC = _kernels.BN, _kernels.BU, _kernels.KC
# (id, N, I, H, bias, state given), in the tile constants; every N runs the tiled kernels.
TILED_CASES = [
    # two batch tiles (the last partial), two unit tiles (the last partial), K = I: 3 chunks
    # (the last partial), then K = H: 2 chunks
    ("N=BN+1,I=2KC+1,H=BU+1", BN + 1, 2 * KC + 1, BU + 1, True, True),
    # H = 1; I < KC: one partial chunk
    ("N=2BN-1,I=KC-1,H=1-nostate", 2 * BN - 1, KC - 1, 1, True, False),
    # one unit tile (partial), I = KC (one whole chunk), I != H
    ("N=BN+2,I=KC,H=BU-1-nobias", BN + 2, KC, BU - 1, False, True),
]


def _cell_inputs(kind, N, I, H, bias, with_state, rng):
    params = _f32_exact(_helpers.random_cell_params(kind, I, H, rng=rng, bias=bias))
    x = _f32_exact(rng.standard_normal((N, I)))
    hx = _f32_exact(_helpers.random_hx(kind, None, N, H, rng=rng)) if with_state else None
    return x, hx, params


def test_step_selection():
    # The warp kernels up to TILED_ABOVE rows, the tiled ones above, with their launch shapes.
    for N in (1, _kernels.TILED_ABOVE, _kernels.TILED_ABOVE + 1, 3 * BN + 1):
        kernels, block, grid = _kernels.step_config(_kernels.GRU, False, False, "float32", N)
        assert len(kernels) == 2  # the Cho GRU: r*h, then z and n
        factories = {k.py_func.__qualname__.split(".")[0] for k in kernels}
        if N > _kernels.TILED_ABOVE:
            assert factories == {"_tiled_step_kernel"}
            assert block == (_kernels.TILED_BLOCK,) and grid(2 * BU + 1) == (3, -(-N // BN))
        else:
            bt = _kernels.batch_tile(N)
            assert factories == {"_step_kernel"}
            assert block == (_kernels.KS, _kernels.U_STEP)
            assert grid(5) == _kernels.grid_for(5, N, BT=bt)
    assert _kernels.TILED_BLOCK == (BN // _kernels.RN) * (BU // _kernels.RU)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TILED_CASES, ids=[c[0] for c in TILED_CASES])
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_tiled_cell(kind, variant, case, dtype, rng):
    _, N, I, H, bias, with_state = case
    assert _kernels.use_tiled(N)
    x, hx, params = _cell_inputs(kind, N, I, H, bias, with_state, rng)
    check_cell(kind, variant, x, hx, params, dtype, f"{kind}{variant} tiled cell {case[0]}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_tiled_and_warp_kernels_agree(kind, variant, dtype, rng, monkeypatch):
    """The same cell call on both step kernels: float64 per element (conftest's bound), float32
    within the float32 bound around the warp kernel's result."""
    N, I, H = 2 * BN + 1, KC + 1, BU + 1
    x, hx, params = _cell_inputs(kind, N, I, H, True, True, rng)
    args = dev((_cast(x, dtype), _cast(hx, dtype))) + (dev(_cast(params, dtype)),)
    tiled = host(cell_call(gk, kind, variant, *args), dtype)
    monkeypatch.setattr(_kernels, "TILED_ABOVE", N)  # the warp kernels, BT_MAX rows per tile
    warp = host(cell_call(gk, kind, variant, *args), dtype)
    what = f"{kind}{variant} tiled vs warp"
    if dtype == np.float64:
        assert_close64(tiled, warp, what)
    else:
        ref32 = cell_call(reference, kind, variant, *_cast((x, hx, params), np.float32))
        assert_close32(tiled, warp, ref32, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,I,H,P", [(2 * BN - 1, KC - 1, BU + 1, BU - 1),
                                     (BN + 1, 2 * KC + 1, 1, 2)],
                         ids=["N=2BN-1,I=KC-1,H=BU+1,P=BU-1", "N=BN+1,I=2KC+1,H=1,P=2"])
def test_tiled_lstm_cell_with_projection(N, I, H, P, dtype, rng):
    assert _kernels.use_tiled(N)
    x, h, c = _f32_exact((rng.standard_normal((N, I)), rng.standard_normal((N, P)),
                          rng.standard_normal((N, H))))
    p = _f32_exact(_helpers.random_cell_params("lstm", I, H, rng=rng, proj_size=P))

    def run(dt, mod):
        q = _cast(p, dt)
        args = (_cast(x, dt), _cast((h, c), dt), q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])
        if mod is gk:
            return gk.lstm_cell(*dev(args), w_hr=dev(q["w_hr"]))
        return reference.lstm_cell(*args, w_hr=q["w_hr"])

    got = check(dtype, lambda dt: run(dt, gk), lambda dt: run(dt, reference),
                "tiled lstm_cell w_hr")
    assert got[0].shape == (N, P) and got[1].shape == (N, H)


# --------------------------------------------------------------------------- sequences

# Scenarios: each sequence call costs 0.1-3 s in the simulator, so the options are spread over
# them; every variant runs every scenario (on the path / dtype given in SEQ_CASES).
SCENARIOS = {
    # Two layers, bidirectional, unsorted lengths with 1 and T, given (h0, c0); H = 3 > U_STEP:
    # W_hh read from global memory; N = 3: two batch tiles.
    "deep": dict(T=2, N=3, I=2, H=3, L=2, bidirectional=True, batch_first=False,
                 lengths="host", hx="full", bias=True),
    # H = 2: the persistent kernel caches W_hh in shared memory; batch_first; two layers.
    "cached_bf": dict(T=3, N=3, I=3, H=2, L=2, bidirectional=False, batch_first=True,
                      lengths="host", hx=None, bias=True),
    # T = 1, N = 1, H = 1, I = 1, no bias, no state.
    "tiny": dict(T=1, N=1, I=1, H=1, L=1, bidirectional=False, batch_first=False, lengths=None,
                 hx=None, bias=False),
    # batch_first bidirectional, lengths 1 < 2 < T as a device array, h0 only (an LSTM's c0
    # None).
    "bidir_bf": dict(T=3, N=3, I=3, H=2, L=1, bidirectional=True, batch_first=True,
                     lengths="device", hx="h_only", bias=True),
    # Unbatched x [T, I] (time-major whatever batch_first says), two layers, H = 3 (two unit
    # blocks), I = 4, no bias.
    "unbatched": dict(T=3, N=None, I=4, H=3, L=2, bidirectional=False, batch_first=True,
                      lengths=None, hx="full", bias=False),
    # The tiled loop steps: two batch tiles (the last partial), two unit tiles, K = 2*KC + 1
    # (layer 0) and D*H = 2*BU + 2 (layer 1), bidirectional, unsorted lengths.
    "large_batch": dict(T=2, N=_kernels.BN + 1, I=2 * _kernels.KC + 1, H=_kernels.BU + 1, L=2,
                        bidirectional=True, batch_first=False, lengths="host", hx="full",
                        bias=True),
    # Tiled, batch_first: one unit tile, K = KC - 1 < KC, lengths on the device, h0 only.
    "large_batch_bf": dict(T=2, N=2 * _kernels.BN - 1, I=_kernels.KC - 1, H=_kernels.BU - 1,
                           L=1, bidirectional=False, batch_first=True, lengths="device",
                           hx="h_only", bias=False),
}
# (path, dtype, scenario); path "functional" is gk.lstm & co. (impl "auto"), the others
# gatedkernels.cuda.lstm & co. with that impl.
SEQ_CASES = [
    ("functional", np.float64, "deep"),
    ("persistent", np.float32, "cached_bf"),
    ("persistent", np.float64, "tiny"),
    ("loop", np.float64, "bidir_bf"),
    ("loop", np.float32, "unbatched"),
    ("loop", np.float64, "large_batch"),
    ("loop", np.float32, "large_batch_bf"),
]


def _scenario_inputs(kind, s, rng):
    batched = s["N"] is not None
    N = s["N"] or 1
    D = 2 if s["bidirectional"] else 1
    weights = _f32_exact(_helpers.random_weights(kind, s["I"], s["H"], rng=rng,
                                                 num_layers=s["L"],
                                                 bidirectional=s["bidirectional"],
                                                 bias=s["bias"]))
    shape = (s["T"], s["I"])
    if batched:
        shape = (N, s["T"], s["I"]) if s["batch_first"] else (s["T"], N, s["I"])
    x = _f32_exact(rng.standard_normal(shape))
    hx = ref_hx = None
    if s["hx"] is not None:
        hx = _f32_exact(_helpers.random_hx(kind, s["L"] * D, N, s["H"], rng=rng,
                                           batched=batched))
        ref_hx = hx
        if s["hx"] == "h_only" and kind == "lstm":
            hx = (hx[0], None)
            ref_hx = (hx[0], np.zeros_like(hx[0]))
    lengths = None
    if s["lengths"] is not None:
        lengths = _helpers.random_lengths(rng, N, s["T"], include=(1, 2))
    return x, hx, ref_hx, weights, lengths


def _sequence_params():
    """Every cell variant in every SEQ_CASES row; "large_batch" (two layers, bidirectional, two
    batch and two unit tiles, float64: 6-13 s a variant in the simulator on a 2-vCPU EPYC) runs
    the LSTM by default and the other variants under `pytest -m slow`. Their tiled loop kernels
    run by default in "large_batch_bf"."""
    for path, dtype, scenario in SEQ_CASES:
        for (kind, variant), vid in zip(CELL_VARIANTS, VARIANT_IDS):
            slow = scenario == "large_batch" and vid != "lstm"
            yield pytest.param(kind, variant, path, dtype, scenario,
                               id=f"{vid}-{path}-{np.dtype(dtype).name}-{scenario}",
                               marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("kind,variant,path,dtype,scenario", list(_sequence_params()))
def test_sequence(kind, variant, path, dtype, scenario, rng):
    s = SCENARIOS[scenario]
    x, hx, ref_hx, weights, lengths = _scenario_inputs(kind, s, rng)
    opts = dict(num_layers=s["L"], bidirectional=s["bidirectional"],
                batch_first=s["batch_first"])
    if path == "functional":
        mod, impl = gk, {}
    else:
        mod, impl = gkc, {"impl": path}
    inputs = {}

    def run_device(dt):
        d_lengths = lengths
        if lengths is not None and s["lengths"] == "device":
            d_lengths = cuda.to_device(lengths)
        inputs.update(x=dev(_cast(x, dt)), hx=dev(_cast(hx, dt)), w=dev(_cast(weights, dt)))
        return seq_call(mod, kind, variant, inputs["x"], inputs["hx"], inputs["w"],
                        lengths=d_lengths, **opts, **impl)

    def run_reference(dt):
        return seq_call(reference, kind, variant, _cast(x, dt), _cast(ref_hx, dt),
                        _cast(weights, dt), lengths=lengths, **opts)

    check(dtype, run_device, run_reference, f"{kind}{variant} {path} {scenario}")
    # The inputs are read, never written.
    assert np.array_equal(host(inputs["x"]), _cast(x, dtype))
    for k, w in inputs["w"].items():
        assert np.array_equal(host(w), _cast(weights[k], dtype)), k
    for a, b in zip(_helpers.flatten(inputs["hx"]), _helpers.flatten(_cast(hx, dtype))):
        if b is not None:
            assert np.array_equal(host(a), b)


def test_persistent_and_loop_agree(rng):
    # Same reduction order in both implementations (the result never depends on scheduling):
    # bitwise equal in the simulator.
    w = _f32_exact(_helpers.random_weights("gru", 2, 3, rng=rng))
    x = _f32_exact(rng.standard_normal((2, 3, 2)))
    lengths = np.array([2, 1, 2])
    out = [host(gkc.gru(dev(x), None, dev(w), lengths=lengths, impl=impl,
                        linear_before_reset=False))
           for impl in ("persistent", "loop")]
    if gkc.SIMULATOR:
        for a, b in zip(_helpers.flatten(out[0]), _helpers.flatten(out[1])):
            np.testing.assert_array_equal(a, b)
    else:  # two compiled kernels: the compiler may contract differently
        assert_close64(out[1], out[0], "gru loop vs persistent")
    ref = reference.gru(x, None, w, lengths=lengths, linear_before_reset=False)
    assert_close64(out[0], ref, "gru persistent vs reference")


def test_functional_sequence_computes_in_x_dtype(rng):
    # As on the CPU (and as the device cells do): float32 x with float64 weights computes in
    # float32 and returns float32.
    w = _helpers.random_weights("lstm", 2, 2, rng=rng)
    x = _f32_exact(rng.standard_normal((2, 1, 2))).astype(np.float32)
    cpu_y, (cpu_h, cpu_c) = gk.lstm(x, None, w)
    assert cpu_y.dtype == np.float32
    y, (h, c) = gk.lstm(dev(x), None, dev(w))
    got = host((y, h, c), what="gk.lstm(float32 x, float64 weights)")
    assert [a.dtype for a in got] == [np.dtype(np.float32)] * 3, [a.dtype for a in got]
    w32 = _cast(w, np.float32)
    oracle = reference.lstm(x.astype(np.float64), None, _cast(w32, np.float64))
    assert_close32(got, oracle, reference.lstm(x, None, w32), "gk.lstm float32 x")


def test_functional_cell_computes_in_x_dtype(rng):
    p = _helpers.random_cell_params("rnn_tanh", 3, 3, rng=rng)
    x = rng.standard_normal((3, 3)).astype(np.float32)
    got = host(gk.rnn_cell(dev(x), None, *dev((p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]))),
               np.float32, "rnn_cell float32 x, float64 weights")
    p32 = _cast(p, np.float32)
    args = (None, p32["w_ih"], p32["w_hh"], p32["b_ih"], p32["b_hh"])
    oracle = reference.rnn_cell(x.astype(np.float64), *_cast(args, np.float64))
    assert_close32(got, oracle, reference.rnn_cell(x, *args), "rnn_cell float32 x")


# --------------------------------------------------------------------------- modules


def _module_reference(m, x, hx, lengths, dtype):
    """The reference on a module's parameters, in dtype."""
    p = _cast(m.state_dict(), dtype)
    x, hx = _cast(x, dtype), _cast(hx, dtype)
    name = type(m).__name__
    if name.endswith("Cell"):
        args = (x, hx, p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"))
        if name == "LSTMCell":
            return reference.lstm_cell(*args)
        if name == "GRUCell":
            return reference.gru_cell(*args, linear_before_reset=m.linear_before_reset)
        return reference.rnn_cell(*args, nonlinearity=m.nonlinearity)
    kw = dict(num_layers=m.num_layers, bidirectional=m.bidirectional,
              batch_first=m.batch_first, lengths=lengths)
    if name == "LSTM":
        return reference.lstm(x, hx, p, **kw)
    if name == "GRU":
        return reference.gru(x, hx, p, linear_before_reset=m.linear_before_reset, **kw)
    return reference.rnn(x, hx, p, nonlinearity=m.nonlinearity, **kw)


def _check_module(m, gpu, cpu, x, hx=None, lengths=None, what=""):
    """A module's device result (already on the host) against its own CPU result: per element
    in float64; in float32 both must be within the float32 bound of the oracle."""
    _same_shapes(gpu, cpu, what)
    for a in _helpers.flatten(gpu):
        assert a.dtype == m.dtype, f"{what}: {a.dtype}, module dtype {m.dtype}"
    if m.dtype == np.float64:
        assert_close64(gpu, cpu, what)
    else:
        x64 = _cast(_cast(x, np.float32), np.float64)
        hx64 = _cast(_cast(hx, np.float32), np.float64)
        oracle = _module_reference(m, x64, hx64, lengths, np.float64)
        ref32 = _module_reference(m, x64, hx64, lengths, np.float32)
        assert_close32(gpu, oracle, ref32, what + " (device)")
        assert_close32(cpu, oracle, ref32, what + " (cpu)")


@pytest.mark.parametrize("placement", ["first_call", "device_kwarg", "to_cuda"])
def test_sequence_module_routing(placement, rng):
    if placement == "first_call":  # never moved: the weights are uploaded on the first call
        m = gk.LSTM(2, 3, bidirectional=True, dtype=np.float64, seed=1)
        T, N = 2, 3
        x = rng.standard_normal((T, N, 2))
        hx = _helpers.random_hx("lstm", 2, N, 3, rng=rng)
        lengths = np.array([1, 2, 2])
    elif placement == "device_kwarg":
        m = gk.GRU(3, 2, num_layers=2, batch_first=True, linear_before_reset=False, seed=2,
                   device="cuda")
        x = rng.standard_normal((3, 2, 3)).astype(np.float32)
        hx, lengths = None, None
    else:
        m = gk.RNN(2, 3, nonlinearity="relu", dtype=np.float64, seed=3).to("cuda")
        x = rng.standard_normal((3, 2))  # unbatched [T, I]
        hx, lengths = rng.standard_normal((1, 3)), None
    assert m.device == ("cpu" if placement == "first_call" else "cuda")
    out = m(dev(x), dev(hx), lengths=lengths)
    gpu = host(out, m.dtype, placement)
    cpu = m(x, hx, lengths=lengths)
    assert all(type(a) is np.ndarray for a in _helpers.flatten(cpu))
    _check_module(m, gpu, cpu, x, hx, lengths, f"{type(m).__name__} {placement}")
    if placement == "to_cuda":
        assert m.to("cpu") is m and m.device == "cpu"
        # Device input still runs on the device (weights uploaded again), with the same result.
        again = host(m(dev(x), dev(hx)), m.dtype)
        for a, b in zip(_helpers.flatten(again), _helpers.flatten(gpu)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("placement", ["first_call", "device_kwarg", "to_cuda"])
def test_cell_module_routing(placement, rng):
    if placement == "first_call":
        m = gk.LSTMCell(3, 3, dtype=np.float64, seed=1)
        x = rng.standard_normal((3, 3))
        hx = _helpers.random_hx("lstm", None, 3, 3, rng=rng)
    elif placement == "device_kwarg":
        m = gk.GRUCell(4, 3, linear_before_reset=False, device="cuda", seed=2)
        x = rng.standard_normal(4).astype(np.float32)  # unbatched [I]
        hx = None
    else:
        m = gk.RNNCell(2, 3, bias=False, nonlinearity="relu", dtype=np.float64, seed=3)
        assert m.to("cuda") is m
        x = rng.standard_normal((2, 2))
        hx = rng.standard_normal((2, 3))
    gpu = host(m(dev(x), dev(hx)), m.dtype, placement)
    cpu = m(x, hx)
    _check_module(m, gpu, cpu, x, hx, None, f"{type(m).__name__} {placement}")
    if placement == "to_cuda":
        m.to("cpu")
        assert m.device == "cpu" and type(m(x, hx)) is np.ndarray
        np.testing.assert_array_equal(host(m(dev(x), dev(hx))), gpu)


@pytest.mark.parametrize("on_cuda", [True, False], ids=["to_cuda", "not_moved"])
@pytest.mark.parametrize("how", ["load_state_dict", "assign"])
def test_cell_module_device_weights_follow_updates(how, on_cuda, rng):
    m = gk.GRUCell(2, 3, dtype=np.float64, seed=4)
    if on_cuda:
        m.to("cuda")
    x, h = rng.standard_normal((2, 2)), rng.standard_normal((2, 3))  # h: W_hh matters
    before = host(m(dev(x), dev(h)))
    new_w_hh = rng.standard_normal((9, 3))
    if how == "load_state_dict":
        m.load_state_dict({**m.state_dict(), "weight_hh": new_w_hh})
    else:
        m.weight_hh = new_w_hh
    assert m.device == ("cuda" if on_cuda else "cpu")
    after = host(m(dev(x), dev(h)))
    assert not np.allclose(after, before), "the device call still uses the old weights"
    assert_close64(after, m(x, h), f"GRUCell after {how}")
    assert_close64(after, _module_reference(m, x, h, None, np.float64), f"after {how}")


def test_sequence_module_device_weights_follow_load_state_dict(rng):
    m = gk.LSTM(2, 2, dtype=np.float64, seed=5, device="cuda")
    x = rng.standard_normal((2, 1, 2))
    before = host(m(dev(x)))
    sd = {k: rng.standard_normal(v.shape) for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    after = host(m(dev(x)))
    assert_close64(after, m(x), "LSTM after load_state_dict")
    assert not np.allclose(after[0], before[0])
    m.bias_ih_l0 = np.zeros(8)
    assert_close64(host(m(dev(x))), m(x), "LSTM after assigning bias_ih_l0")


@pytest.mark.parametrize("which", ["cell", "sequence"])
def test_pickled_module_on_cuda(which, rng):
    if which == "cell":
        m = gk.LSTMCell(2, 3, dtype=np.float64, seed=6, device="cuda")
        x = rng.standard_normal((2, 2))
    else:
        m = gk.GRU(2, 2, dtype=np.float64, seed=6, device="cuda")
        x = rng.standard_normal((2, 1, 2))
    first = host(m(dev(x)))  # device copies exist now; they are not pickled
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.device == "cuda"
    again = host(m2(dev(x)))
    for a, b in zip(_helpers.flatten(again), _helpers.flatten(first)):
        np.testing.assert_array_equal(a, b)
    assert_close64(again, m2(x), f"unpickled {which}")


@pytest.mark.parametrize("which", ["cell", "sequence"])
def test_float32_module_casts_float64_device_input(which, rng):
    if which == "cell":
        m = gk.LSTMCell(3, 2, seed=7)
        x = rng.standard_normal((2, 3))
        hx = _helpers.random_hx("lstm", None, 2, 2, rng=rng)
    else:
        m = gk.GRU(3, 2, seed=7)
        x = rng.standard_normal((2, 1, 3))
        hx = rng.standard_normal((1, 1, 2))
    assert m.dtype == np.float32
    gpu = host(m(dev(x), dev(hx)), np.float32, f"float32 {which} on float64 input")
    cpu = m(x, hx)  # the CPU path casts the same way
    _check_module(m, gpu, cpu, x, hx, None, f"float32 {which}, float64 x")


# --------------------------------------------------------------------------- errors


@pytest.fixture
def lstm_args(rng):
    """Device arguments of an LSTM cell, N = 2, I = 3, H = 2, float64."""
    p = _helpers.random_cell_params("lstm", 3, 2, rng=rng)
    x = rng.standard_normal((2, 3))
    h, c = _helpers.random_hx("lstm", None, 2, 2, rng=rng)
    return dict(x=x, h=h, c=c, **p)


def _lstm_cell(a, **override):
    a = {**{k: dev(v) for k, v in a.items()}, **override}
    return gk.lstm_cell(a["x"], (a["h"], a["c"]), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])


@pytest.mark.parametrize("name,shape", [
    ("x", (0, 3)), ("x", (1, 2, 3)), ("w_hh", (8, 3)), ("w_hh", (7, 2)), ("w_ih", (8, 4)),
    ("b_ih", (7,)), ("b_hh", (8, 1)), ("h", (3, 2)), ("c", (2, 3)),
])
def test_cell_shape_errors_name_the_argument(lstm_args, name, shape):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        _lstm_cell(lstm_args, **{name: dev(np.zeros(shape))})


@pytest.mark.parametrize("name", ["w_ih", "w_hh", "b_ih", "h", "c"])
def test_cell_host_array_with_device_x_is_a_type_error(lstm_args, name):
    with pytest.raises(TypeError, match=rf"^{name}\b"):
        _lstm_cell(lstm_args, **{name: lstm_args[name]})


def test_device_calls_refuse_out(lstm_args):
    a = {k: dev(v) for k, v in lstm_args.items()}
    out = (np.empty((2, 2)), np.empty((2, 2)))
    with pytest.raises(TypeError, match="^out"):
        gk.lstm_cell(a["x"], (a["h"], a["c"]), a["w_ih"], a["w_hh"], out=out)
    m = gk.GRUCell(3, 2, dtype=np.float64)
    with pytest.raises(TypeError, match="^out"):
        m(a["x"], out=np.empty((2, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,I,H,P", [(3, 2, 4, 3), (1, 3, 2, 1)], ids=["N3H4P3", "N1H2P1"])
def test_lstm_cell_with_projection(N, I, H, P, dtype, rng):
    x, h, c = _f32_exact((rng.standard_normal((N, I)), rng.standard_normal((N, P)),
                          rng.standard_normal((N, H))))
    p = _f32_exact(_helpers.random_cell_params("lstm", I, H, rng=rng, proj_size=P))

    def run(dt, mod):
        q = _cast(p, dt)
        args = (_cast(x, dt), _cast((h, c), dt), q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])
        if mod is gk:
            args = dev(args)
            return gk.lstm_cell(*args, w_hr=dev(q["w_hr"]))
        return reference.lstm_cell(*args, w_hr=q["w_hr"])

    got = check(dtype, lambda dt: run(dt, gk), lambda dt: run(dt, reference), "lstm_cell w_hr")
    assert got[0].shape == (N, P) and got[1].shape == (N, H)


# H4P3 runs its loop and tiled-loop steps under `pytest -m slow` (7-11 s each in the simulator on a
# 2-vCPU EPYC); H2P1 runs all three kinds of step by default.
@pytest.mark.parametrize("impl,N,H,P", [
    pytest.param("persistent", 3, 4, 3, id="H4P3-persistent"),
    pytest.param("loop", 3, 4, 3, id="H4P3-loop", marks=pytest.mark.slow),
    pytest.param("loop", _kernels.BN + 1, 4, 3, id="H4P3-loop_tiled", marks=pytest.mark.slow),
    pytest.param("persistent", 3, 2, 1, id="H2P1_shared_memory-persistent"),
    pytest.param("loop", 3, 2, 1, id="H2P1_shared_memory-loop"),
    pytest.param("loop", _kernels.BN + 1, 2, 1, id="H2P1_shared_memory-loop_tiled"),
])
def test_lstm_sequence_with_projection(impl, N, H, P, rng):
    """2 layers (layer 1 takes D*P features), bidirectional, batch_first, ragged lengths, given
    (h0 [L*D, N, P], c0 [L*D, N, H]), float64; N = BN + 1 runs the tiled loop steps."""
    L, D, T, I = 2, 2, 3, 2
    w = _helpers.random_weights("lstm", I, H, rng=rng, num_layers=L, bidirectional=True,
                                proj_size=P)
    x = rng.standard_normal((N, T, I))
    hx = (rng.standard_normal((L * D, N, P)), rng.standard_normal((L * D, N, H)))
    lengths = np.resize([3, 1, 2], N)
    kw = dict(num_layers=L, bidirectional=True, batch_first=True, lengths=lengths)
    got = host(gkc.lstm(dev(x), dev(hx), dev(w), impl=impl, **kw), np.float64, "proj seq")
    oracle = reference.lstm(x, hx, w, **kw)
    _same_shapes(got, oracle, "proj seq")
    assert_close64(got, oracle, f"lstm proj_size={P} sequence ({impl})")


def test_lstm_module_with_projection_matches_cpu(rng):
    m = gk.LSTM(3, 4, proj_size=2, num_layers=2, dtype=np.float64, seed=5)
    x = rng.standard_normal((2, 3, 3))
    cpu = m(x)
    gpu = host(m.to("cuda")(dev(x)), np.float64, "module proj")
    _check_module(m, gpu, cpu, x, what="LSTM proj_size=2 module")
    with pytest.raises(ValueError, match="h0"):
        m(dev(x), (dev(np.zeros((2, 3, 4))), dev(np.zeros((2, 3, 4)))))  # h0 has P = 2 columns


def test_projection_errors(lstm_args, rng):
    a = {k: dev(v) for k, v in lstm_args.items()}
    w_hh_p = dev(rng.standard_normal((8, 1)))
    with pytest.raises(ValueError, match="w_hr"):
        gk.lstm_cell(a["x"], None, a["w_ih"], w_hh_p, w_hr=dev(rng.standard_normal((1, 3))))
    with pytest.raises(ValueError, match="w_hh"):
        gk.lstm_cell(a["x"], None, a["w_ih"], a["w_hh"], w_hr=dev(rng.standard_normal((1, 2))))
    w = _helpers.random_weights("gru", 3, 2, rng=rng)
    w["weight_hr_l0"] = rng.standard_normal((1, 2))
    with pytest.raises(ValueError, match="weight_hr"):
        gk.gru(dev(rng.standard_normal((2, 1, 3))), None, dev(w))


@pytest.fixture
def seq_args(rng):
    """Device sequence arguments: GRU, T = 2, N = 2, I = 3, H = 2, float64."""
    w = _helpers.random_weights("gru", 3, 2, rng=rng)
    return dict(x=rng.standard_normal((2, 2, 3)), h0=rng.standard_normal((1, 2, 2)), w=w)


def _gru(a, impl="auto", lengths=None, **override):
    d = {"x": dev(a["x"]), "h0": dev(a["h0"]), "w": dev(a["w"])}
    d.update(override)
    return gkc.gru(d["x"], d["h0"], d["w"], lengths=lengths, impl=impl)


@pytest.mark.parametrize("name,value,error,match", [
    ("x", np.zeros((2, 2, 4)), ValueError, "^x"),
    ("x", np.zeros((1, 2, 2, 3)), ValueError, "^x"),
    ("h0", np.zeros((1, 3, 2)), ValueError, "^h0"),
    ("h0", np.zeros((2, 2, 2)), ValueError, "^h0"),
])
def test_sequence_shape_errors_name_the_argument(seq_args, name, value, error, match):
    with pytest.raises(error, match=match):
        _gru(seq_args, **{name: dev(value)})


def test_sequence_weight_errors(seq_args, rng):
    w = dict(seq_args["w"])
    w["weight_hh_l0"] = np.zeros((6, 3))
    with pytest.raises(ValueError, match="weight_hh_l0"):
        _gru(seq_args, w=dev(w))
    w = dict(seq_args["w"])
    del w["bias_hh_l0"]
    with pytest.raises(ValueError, match="bias_hh_l0"):
        _gru(seq_args, w=dev(w))
    # Host weights (or state) with device x: a TypeError naming the array.
    w = dev(seq_args["w"])
    w["weight_ih_l0"] = seq_args["w"]["weight_ih_l0"]
    with pytest.raises(TypeError, match="weight_ih_l0"):
        _gru(seq_args, w=w)
    with pytest.raises(TypeError, match="^h0"):
        _gru(seq_args, h0=seq_args["h0"])
    with pytest.raises(ValueError, match="^impl"):
        _gru(seq_args, impl="bogus")


@pytest.mark.parametrize("lengths", [[0, 2], [1, 3], [2], [[1, 2]]],
                         ids=["zero", "above_T", "short", "2d"])
@pytest.mark.parametrize("where", ["host", "device"])
def test_lengths_errors(seq_args, lengths, where):
    lengths = np.array(lengths)
    with pytest.raises(ValueError, match="^lengths"):
        _gru(seq_args, lengths=lengths if where == "host" else cuda.to_device(lengths))


def test_module_errors(rng):
    m = gk.LSTM(3, 2, dtype=np.float64, device="cuda")
    with pytest.raises(ValueError, match="^x"):
        m(dev(np.zeros((2, 1, 4))))
    with pytest.raises(ValueError, match="^h0"):
        m(dev(np.zeros((2, 1, 3))), (dev(np.zeros((1, 2, 2))), dev(np.zeros((1, 1, 2)))))
    with pytest.raises(TypeError, match="^c0"):
        m(dev(np.zeros((2, 1, 3))), (dev(np.zeros((1, 1, 2))), np.zeros((1, 1, 2))))
    c = gk.RNNCell(3, 2, device="cuda")
    with pytest.raises(ValueError, match="^x"):
        c(dev(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="^device"):
        c.to("tpu")


# --------------------------------------------------------------------------- robustness


def test_nan_in_one_batch_row_stays_in_that_row_cell(rng):
    p = _helpers.random_cell_params("lstm", 3, 3, rng=rng)
    x = rng.standard_normal((3, 3))
    x[1, 2] = np.nan  # row 1 shares its batch tile with row 0
    hx = _helpers.random_hx("lstm", None, 3, 3, rng=rng)
    got = host(cell_call(gk, "lstm", {}, dev(x), dev(hx), dev(p)))
    ref = cell_call(reference, "lstm", {}, x, hx, p)
    for a in got:
        assert np.isnan(a[1]).all() and np.isfinite(a[[0, 2]]).all()
    _assert_equal_with_nans(got, ref, "lstm_cell with a NaN row")


@pytest.mark.parametrize("impl", ["persistent", "loop"])
def test_nan_in_one_batch_row_stays_in_that_row_sequence(impl, rng):
    w = _helpers.random_weights("gru", 2, 2, rng=rng, bidirectional=True)
    x = rng.standard_normal((2, 3, 2))
    x[1, 0, 0] = np.nan  # t = 1, row 0 (shares its tile with row 1)
    got = host(gkc.gru(dev(x), None, dev(w), bidirectional=True, impl=impl))
    ref = reference.gru(x, None, w, bidirectional=True)
    y, hn = got
    assert np.isfinite(y[:, 1:]).all() and np.isfinite(hn[:, 1:]).all()
    assert np.isnan(y[1, 0]).all() and np.isnan(hn[:, 0]).all()
    _assert_equal_with_nans(got, ref, f"gru {impl} with a NaN row")


@pytest.mark.parametrize("impl", ["persistent", "loop"])
def test_repeated_calls_are_bitwise_equal(impl, rng):
    w = dev(_helpers.random_weights("lstm", 2, 3, rng=rng))
    x_host = rng.standard_normal((2, 2, 2))
    x, x0 = dev(x_host), dev(x_host[0])
    runs = [host(gkc.lstm(x, None, w, impl=impl)) for _ in range(2)]
    p = dev(_helpers.random_cell_params("gru", 2, 3, rng=rng))
    cells = [host(cell_call(gk, "gru", {"linear_before_reset": False}, x0, None, p))
             for _ in range(2)]
    for a, b in zip(_helpers.flatten(runs[0]) + [cells[0]],
                    _helpers.flatten(runs[1]) + [cells[1]]):
        assert a.tobytes() == b.tobytes()


def test_is_available():
    assert gkc.is_available()
