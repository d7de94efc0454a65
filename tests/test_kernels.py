"""The compiled kernels against the float64 reference (SPEC §6), over the matrix
path × cell × variant × dtype × options × awkward shapes.

Three kernel paths are checked:
* functional cells (``gk.lstm_cell`` ...): the raw-weight step, nothing packed;
* cell modules (``gk.LSTMCell`` ...): packed weights, the fused step;
* sequences (``gk.lstm`` ... and the ``gk.LSTM`` ... modules): input projection + time loop in C++.

Shapes include H = 1, odd H, H not a multiple of the packed block width (8 floats / 4 doubles in
the generic build, up to 16 in others), H equal to it, I != H, T = 1, N = 1, and N not a multiple
of the batch tile.
"""
import numpy as np
import pytest

import _helpers
import gatedkernels as gk
from conftest import assert_close32, assert_close64
from gatedkernels import reference

# Every test here runs once per kernel build this CPU supports (the `isa` fixture, conftest.py).
pytestmark = pytest.mark.usefixtures("isa")

CELL_VARIANTS, VARIANT_IDS = _helpers.CELL_VARIANTS, _helpers.VARIANT_IDS
DTYPES = [np.float64, np.float32]
# (N, I, H)
# N = 64 and 65 (I + H < 256) take the functional cells' pack-once-per-call path
# (_api.pack_per_call); 25 and 26 rows two chunks of the raw kernel (raw_step.h, kRawChunk = 24).
CELL_SHAPES = [(1, 1, 1), (1, 5, 7), (3, 4, 33), (2, 9, 8), (5, 3, 17), (4, 16, 64), (7, 12, 5),
               (16, 3, 5), (17, 6, 19), (25, 37, 23), (26, 9, 40), (64, 3, 5), (65, 6, 19)]


def _cast(tree, dtype):
    """Cast every array of a params dict / hx tuple / array to dtype (None stays None)."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_cast(v, dtype) for v in tree)
    return np.asarray(tree).astype(dtype)


def _check(dtype, run_kernel, run_reference, what):
    """Kernel vs reference with SPEC §6's bound for the dtype.

    run_kernel(dtype) / run_reference(dtype) take the inputs cast to dtype; inputs are made in
    float32 precision first so the float64 oracle sees exactly the float32 kernel's numbers.
    """
    got = run_kernel(dtype)
    for a in _helpers.flatten(got):
        if a is not None:
            assert a.dtype == dtype, f"{what}: output dtype {a.dtype}, expected {np.dtype(dtype)}"
    oracle = run_reference(np.float64)
    if dtype == np.float64:
        assert_close64(got, oracle, what)
    else:
        assert_close32(got, oracle, run_reference(np.float32), what)


def _f32_exact(tree):
    """Round to float32 values (kept as float64) so both precisions see the same inputs."""
    return _cast(_cast(tree, np.float32), np.float64)


# --------------------------------------------------------------------------- cells


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=[f"N{n}I{i}H{h}" for n, i, h in CELL_SHAPES])
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
def test_functional_cell(kind, variant, shape, dtype, bias, with_hx, rng):
    N, I, H = shape
    params = _f32_exact(_helpers.random_cell_params(kind, I, H, rng=rng, bias=bias))
    x = _f32_exact(rng.standard_normal((N, I)))
    hx = _f32_exact(_helpers.random_hx(kind, None, N, H, rng=rng)) if with_hx else None

    def run(impl):
        return lambda dt: _helpers.call_cell(impl, kind, _cast(x, dt), _cast(hx, dt),
                                             _cast(params, dt), **variant)

    _check(dtype, run(gk), run(reference), f"{kind}{variant} cell")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 1, 2), (3, 5, 7), (2, 4, 33), (5, 16, 17), (16, 4, 9)],
                         ids=lambda s: "N{}I{}H{}".format(*s))
@pytest.mark.parametrize("proj", [1, 3])
def test_functional_lstm_cell_projection(shape, proj, dtype, rng):
    N, I, H = shape
    if proj >= H:
        proj = H - 1
    params = _f32_exact(_helpers.random_cell_params("lstm", I, H, rng=rng, proj_size=proj))
    x = _f32_exact(rng.standard_normal((N, I)))
    hx = _f32_exact(_helpers.random_hx("lstm", None, N, H, rng=rng, proj_size=proj))

    def run(impl):
        return lambda dt: _helpers.call_cell(impl, "lstm", _cast(x, dt), _cast(hx, dt),
                                             _cast(params, dt))

    _check(dtype, run(gk), run(reference), "lstm_cell with w_hr")


def _cell_module(kind, variant, I, H, bias, dtype, params):
    if kind == "lstm":
        m = gk.LSTMCell(I, H, bias=bias, dtype=dtype)
    elif kind == "gru":
        m = gk.GRUCell(I, H, bias=bias, dtype=dtype, **variant)
    else:
        m = gk.RNNCell(I, H, bias=bias, nonlinearity=_helpers.nonlinearity(kind), dtype=dtype)
    sd = {"weight_ih": params["w_ih"], "weight_hh": params["w_hh"]}
    if bias:
        sd.update(bias_ih=params["b_ih"], bias_hh=params["b_hh"])
    m.load_state_dict(sd)
    return m


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=[f"N{n}I{i}H{h}" for n, i, h in CELL_SHAPES])
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_module(kind, variant, shape, dtype, bias, rng):
    N, I, H = shape
    params = _f32_exact(_helpers.random_cell_params(kind, I, H, rng=rng, bias=bias))
    x = _f32_exact(rng.standard_normal((N, I)))
    hx = _f32_exact(_helpers.random_hx(kind, None, N, H, rng=rng))
    module = _cell_module(kind, variant, I, H, bias, dtype, _cast(params, dtype))
    _check(dtype, lambda dt: module(_cast(x, dt), _cast(hx, dt)),
           lambda dt: _helpers.call_cell(reference, kind, _cast(x, dt), _cast(hx, dt),
                                         _cast(params, dt), **variant),
           f"{kind}{variant} cell module")


# --------------------------------------------------------------------------- sequences

# (T, N, I, H)
SEQ_SHAPES = [(1, 1, 1, 1), (5, 3, 4, 7), (4, 2, 9, 33), (3, 5, 6, 16), (6, 1, 3, 9)]
SEQ_OPTIONS = {
    "L1": dict(num_layers=1),
    "L2bi": dict(num_layers=2, bidirectional=True),
    "L3bf": dict(num_layers=3, batch_first=True),
    "L2bi_bf": dict(num_layers=2, bidirectional=True, batch_first=True),
}


def _sequence_case(kind, shape, options, rng, *, proj=0, bias=True, with_hx=True,
                   with_lengths=False):
    T, N, I, H = shape
    L = options.get("num_layers", 1)
    D = 2 if options.get("bidirectional") else 1
    weights = _f32_exact(_helpers.random_weights(kind, I, H, rng=rng, num_layers=L,
                                                 bidirectional=D == 2, bias=bias, proj_size=proj))
    xs = (N, T, I) if options.get("batch_first") else (T, N, I)
    x = _f32_exact(rng.standard_normal(xs))
    hx = (_f32_exact(_helpers.random_hx(kind, L * D, N, H, rng=rng, proj_size=proj))
          if with_hx else None)
    opts = dict(options)
    if with_lengths:
        opts["lengths"] = _helpers.random_lengths(rng, N, T)
    return weights, x, hx, opts


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SEQ_SHAPES, ids=lambda s: "T{}N{}I{}H{}".format(*s))
@pytest.mark.parametrize("options", list(SEQ_OPTIONS.values()), ids=list(SEQ_OPTIONS))
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_functional_sequence(kind, variant, shape, options, dtype, lengths, rng):
    weights, x, hx, opts = _sequence_case(kind, shape, options, rng, with_lengths=lengths)

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, kind, _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **variant, **opts)

    _check(dtype, run(gk), run(reference), f"{kind}{variant} sequence {opts}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (5, 3, 4, 7), (4, 2, 9, 33)],
                         ids=lambda s: "T{}N{}I{}H{}".format(*s))
@pytest.mark.parametrize("options", list(SEQ_OPTIONS.values()), ids=list(SEQ_OPTIONS))
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_lstm_projection_sequence(shape, options, dtype, lengths, rng):
    proj = max(1, shape[3] // 2)
    weights, x, hx, opts = _sequence_case("lstm", shape, options, rng, proj=proj,
                                          with_lengths=lengths)

    def run(impl):
        return lambda dt: impl.lstm(_cast(x, dt), _cast(hx, dt), _cast(weights, dt), **opts)

    _check(dtype, run(gk), run(reference), f"lstm proj={proj} {opts}")


def _sequence_module(kind, variant, I, H, options, dtype, proj=0, bias=True):
    common = dict(num_layers=options.get("num_layers", 1), bias=bias,
                  batch_first=options.get("batch_first", False),
                  bidirectional=options.get("bidirectional", False), dtype=dtype)
    if kind == "lstm":
        return gk.LSTM(I, H, proj_size=proj, **common)
    if kind == "gru":
        return gk.GRU(I, H, **variant, **common)
    return gk.RNN(I, H, nonlinearity=_helpers.nonlinearity(kind), **common)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SEQ_SHAPES[1:3], ids=lambda s: "T{}N{}I{}H{}".format(*s))
@pytest.mark.parametrize("options", list(SEQ_OPTIONS.values()), ids=list(SEQ_OPTIONS))
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
def test_sequence_module(kind, variant, shape, options, dtype, bias, with_hx, rng):
    weights, x, hx, opts = _sequence_case(kind, shape, options, rng, bias=bias, with_hx=with_hx,
                                          with_lengths=True)
    lengths = opts.pop("lengths")
    module = _sequence_module(kind, variant, shape[2], shape[3], options, dtype, bias=bias)
    module.load_state_dict(weights)

    def run_module(dt):
        out = module(_cast(x, dt), _cast(hx, dt), lengths=lengths)
        return out

    _check(dtype, run_module,
           lambda dt: _helpers.call_sequence(reference, kind, _cast(x, dt), _cast(hx, dt),
                                             _cast(weights, dt), lengths=lengths, **variant,
                                             **opts),
           f"{kind}{variant} module {opts}")


@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_unbatched_sequence(kind, variant, dtype, rng):
    T, I, H = 4, 3, 9
    weights = _f32_exact(_helpers.random_weights(kind, I, H, rng=rng, num_layers=2,
                                                 bidirectional=True))
    x = _f32_exact(rng.standard_normal((T, I)))
    hx = _f32_exact(_helpers.random_hx(kind, 4, 1, H, rng=rng, batched=False))

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, kind, _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), num_layers=2,
                                                 bidirectional=True, **variant)

    _check(dtype, run(gk), run(reference), f"{kind} unbatched")


@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_lengths_past_end_are_zero_and_states_hold(kind, variant, rng):
    """Rows past a length are exactly zero; h_n equals a run truncated to that row's length."""
    T, N, I, H = 6, 4, 3, 5
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=2, bidirectional=True)
    x = rng.standard_normal((T, N, I))
    lengths = np.array([6, 1, 3, 4])
    out = _helpers.call_sequence(gk, kind, x, None, weights, num_layers=2, bidirectional=True,
                                 lengths=lengths, **variant)
    y = out[0]
    for n, length in enumerate(lengths):
        assert (y[length:, n] == 0).all()
        alone = _helpers.call_sequence(gk, kind, x[:length, n:n + 1], None, weights, num_layers=2,
                                       bidirectional=True, **variant)
        assert_close64(alone[0][:, 0], y[:length, n], "truncated output")
        assert_close64([s[:, 0] for s in _helpers.flatten(alone)[1:]],
                       [s[:, n] for s in _helpers.flatten(out)[1:]], "truncated final state")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_sequence_over_several_projection_chunks(kind, variant, dtype, rng):
    """A sequence projects its input a chunk of steps at a time (about 2 MiB of projected rows,
    512 KiB in the AVX2 build: kernel.h projection_steps). Here one step's projection is 144 KiB
    (RNN, float32) to 1.2 MiB (LSTM, float64), so the 16 steps span 2 to 16 chunks, the last
    one partial, in both directions, with ragged lengths, batch-first (strided rows of x in a
    chunk) and a second layer reading the first one's output."""
    shape = (16, 96, 8, 384)  # T, N, I, H
    weights, x, hx, opts = _sequence_case(kind, shape, SEQ_OPTIONS["L2bi_bf"], rng,
                                          with_lengths=True)

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, kind, _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **variant, **opts)

    _check(dtype, run(gk), run(reference), f"{kind}{variant} chunked {opts}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("N", [2, 3, 4, 5, 13, 16, 19])
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_sequence_input_projected_by_tiles(kind, variant, N, dtype, rng):
    """Where both weight matrices are small and every register tile of a step has a few rows
    (kernel.h, input_by_tiles), a sequence's steps compute their input projection tile by tile
    from x itself (XTile) instead of reading it from the chunk GEMM: N = 2 and 3 stay with the
    GEMM; on AVX-512, 4, 5, 13 and 16 take the tiles (LSTM tiles of at most 6 rows, 13 rows as
    5, 4, 4 and 19 as 5, 5, 5, 4: kernel.h, Tiling), and so does 19 for the GRU (7, 6, 6), not
    for the RNN (8, 8, 3). Rows of x are strided (batch-first) and read backwards (the second
    direction), the second layer reads the first one's output, and ragged lengths hold the
    state. (I = 40: at I = 200-300 a few float32 ReLU RNN draws miss SPEC section 6's bound,
    in the old path as in this one, and torch.nn.RNN misses it on the same data by the same
    amount: that bound is relative to NumPy's float32 matmul, which at N <= 16 sums more
    accurately than a GEMM's k order.)"""
    weights, x, hx, opts = _sequence_case(kind, (5, N, 40, 37), SEQ_OPTIONS["L2bi_bf"], rng,
                                          with_lengths=True)

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, kind, _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **variant, **opts)

    _check(dtype, run(gk), run(reference), f"{kind}{variant} N={N} {opts}")


# --------------------------------------------------------------------------- long dot products

@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_long_dot_products_float32_within_spec_bound(kind, variant, rng):
    """Dot products over K = 3000 inputs and 300 hidden units (kernel.h, kSumBlock): summed in one
    accumulator per lane over all of K, float32 LSTM cells missed SPEC section 6's bound in 25-45%
    of random cases at I = 1100 to 4096 (measured on every build); summed block by block, none
    did. Five draws each of a cell step (the packed kernels: N = 8) and a two-layer sequence."""
    I, H = 3000, 300
    for _ in range(5):
        params = _f32_exact(_helpers.random_cell_params(kind, I, H, rng=rng))
        x = _f32_exact(rng.standard_normal((8, I)))
        hx = _f32_exact(_helpers.random_hx(kind, None, 8, H, rng=rng))
        module = _cell_module(kind, variant, I, H, True, np.float32, _cast(params, np.float32))
        _check(np.float32, lambda dt: module(_cast(x, dt), _cast(hx, dt)),
               lambda dt: _helpers.call_cell(reference, kind, _cast(x, dt), _cast(hx, dt),
                                             _cast(params, dt), **variant),
               f"{kind}{variant} cell, I={I}")
        weights, xs, hxs, opts = _sequence_case(kind, (3, 2, I, H), SEQ_OPTIONS["L2bi"], rng)
        _check(np.float32,
               lambda dt: _helpers.call_sequence(gk, kind, _cast(xs, dt), _cast(hxs, dt),
                                                 _cast(weights, dt), **variant, **opts),
               lambda dt: _helpers.call_sequence(reference, kind, _cast(xs, dt), _cast(hxs, dt),
                                                 _cast(weights, dt), **variant, **opts),
               f"{kind}{variant} sequence, I={I}")


# --------------------------------------------------------------------------- gate-split LSTM tiles

# A batch a little over one whole-gate LSTM register tile (bt(4) rows: 6 on AVX-512, 3 in the AVX2
# and baseline builds) runs as one gate-split tile of all its rows (kernel.h, Lstm::step): N = 7,
# 8, 9 on AVX-512, 4 on the others. I = 1100 makes a cell step's input projection go through K a
# summation block at a time (tile_dot_split), the last one partial; H = 37 is not a multiple of
# any vector width.
SPLIT_ROWS = [4, 7, 8, 9]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("N", SPLIT_ROWS)
def test_lstm_gate_split_tile_cell(N, dtype, rng):
    I, H = 1100, 37
    params = _f32_exact(_helpers.random_cell_params("lstm", I, H, rng=rng))
    x = _f32_exact(rng.standard_normal((N, I)))
    hx = _f32_exact(_helpers.random_hx("lstm", None, N, H, rng=rng))
    module = _cell_module("lstm", {}, I, H, True, dtype, _cast(params, dtype))
    _check(dtype, lambda dt: module(_cast(x, dt), _cast(hx, dt)),
           lambda dt: _helpers.call_cell(reference, "lstm", _cast(x, dt), _cast(hx, dt),
                                         _cast(params, dt)),
           f"lstm cell N={N}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("N", SPLIT_ROWS)
@pytest.mark.parametrize("proj", [0, 5])
def test_lstm_gate_split_tile_sequence(N, proj, dtype, rng):
    weights, x, hx, opts = _sequence_case("lstm", (6, N, 11, 37), SEQ_OPTIONS["L2bi_bf"], rng,
                                          proj=proj, with_lengths=True)

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, "lstm", _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **opts)

    _check(dtype, run(gk), run(reference), f"lstm N={N} proj={proj} {opts}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("N", [4, 8])
def test_lstm_gate_split_tile_equals_two_row_tiles(N, dtype, rng):
    """A gate-split tile keeps one accumulator set per gate, as a whole-gate tile of two or more
    rows does, and the same summation blocks (I = 1100: several): a step on N rows equals, to the
    bit, the same step on its rows two at a time (two-row whole-gate tiles)."""
    I, H = 1100, 37
    cell = gk.LSTMCell(I, H, seed=1, dtype=dtype)
    x = rng.standard_normal((N, I)).astype(dtype)
    h, c = (rng.standard_normal((N, H)).astype(dtype) for _ in range(2))
    h1, c1 = cell(x, (h, c))
    for r in range(0, N, 2):
        h2, c2 = cell(x[r:r + 2], (h[r:r + 2], c[r:r + 2]))
        assert np.array_equal(h1[r:r + 2], h2) and np.array_equal(c1[r:r + 2], c2), f"rows {r}, {r + 1}"


# --------------------------------------------------------------------------- one-row steps

# A batch of one row (a stream) of the LSTM, the reset-after GRU and the RNN runs its epilogue
# over kRowJam hidden blocks at a time (kernel.h, one_row_groups), falling back to one block at a
# time for a short last group or a partial last block. H = 33, 53, 64, 100 give every mix of those
# for the vector widths of all builds (4, 8, 16 float32 lanes; 2, 4, 8 float64): whole groups, a
# partial block inside the last group, a lone last block. I = 1100 takes the cell's input
# projection through several summation blocks. (The Cho GRU, projected beforehand, is checked
# alongside.)
ONE_ROW_H = [33, 53, 64, 100]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("H", ONE_ROW_H)
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_one_row_cell_and_stream(kind, variant, H, dtype, rng):
    I = 1100
    params = _f32_exact(_helpers.random_cell_params(kind, I, H, rng=rng))
    xs = _f32_exact(rng.standard_normal((3, 1, I)))
    hx = _f32_exact(_helpers.random_hx(kind, None, 1, H, rng=rng))
    module = _cell_module(kind, variant, I, H, True, dtype, _cast(params, dtype))
    _check(dtype, lambda dt: module(_cast(xs[0], dt), _cast(hx, dt)),
           lambda dt: _helpers.call_cell(reference, kind, _cast(xs[0], dt), _cast(hx, dt),
                                         _cast(params, dt), **variant),
           f"{kind}{variant} cell N=1 H={H}")

    def stream(dt):  # three steps: the stream visits the blocks forwards, backwards, forwards
        s = module.stream(1)
        s.reset(*_cast(hx, dtype)) if kind == "lstm" else s.reset(_cast(hx, dtype))
        return [s.step(_cast(x, dtype)) for x in xs]

    def steps(dt):
        state, out = _cast(hx, dt), []
        for x in xs:
            state = _helpers.call_cell(reference, kind, _cast(x, dt), state, _cast(params, dt),
                                       **variant)
            out.append(state[0] if kind == "lstm" else state)
        return out

    _check(dtype, stream, steps, f"{kind}{variant} stream N=1 H={H}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("H", ONE_ROW_H)
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("length", [5, 3], ids=["full", "short"])
def test_one_row_sequence(kind, variant, H, length, dtype, rng):
    weights, x, hx, opts = _sequence_case(kind, (5, 1, 9, H), SEQ_OPTIONS["L2bi_bf"], rng)
    opts["lengths"] = np.array([length])  # short: steps 3, 4 hold the state, write zeros

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, kind, _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **variant, **opts)

    _check(dtype, run(gk), run(reference), f"{kind}{variant} N=1 H={H} {opts}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("H", ONE_ROW_H)
def test_lstm_one_row_projection_sequence(H, dtype, rng):
    weights, x, hx, opts = _sequence_case("lstm", (5, 1, 9, H), SEQ_OPTIONS["L2bi_bf"], rng,
                                          proj=7)

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, "lstm", _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **opts)

    _check(dtype, run(gk), run(reference), f"lstm N=1 H={H} proj=7 {opts}")


@pytest.mark.slow
@pytest.mark.parametrize("kind,variant", CELL_VARIANTS, ids=VARIANT_IDS)
def test_large_sequence(kind, variant, rng):
    shape = (50, 16, 96, 256)
    weights, x, hx, opts = _sequence_case(kind, shape, SEQ_OPTIONS["L2bi"], rng,
                                          with_lengths=True)

    def run(impl):
        return lambda dt: _helpers.call_sequence(impl, kind, _cast(x, dt), _cast(hx, dt),
                                                 _cast(weights, dt), **variant, **opts)

    _check(np.float32, run(gk), run(reference), f"{kind} large")
