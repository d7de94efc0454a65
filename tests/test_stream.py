"""Streaming steps (`cell.stream(N)`): same numbers as module calls, no allocation per step with
`out=`, the state handled as documented, and clear errors for bad input."""
import tracemalloc

import numpy as np
import pytest

import gatedkernels as gk

pytestmark = pytest.mark.usefixtures("isa")

CELLS = [
    ("lstm", lambda I, H, dt: gk.LSTMCell(I, H, dtype=dt, seed=1)),
    ("gru", lambda I, H, dt: gk.GRUCell(I, H, dtype=dt, seed=1)),
    ("gru_cho", lambda I, H, dt: gk.GRUCell(I, H, linear_before_reset=False, dtype=dt, seed=1)),
    ("rnn_relu", lambda I, H, dt: gk.RNNCell(I, H, nonlinearity="relu", dtype=dt, seed=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("N,I,H", [(1, 1, 1), (1, 64, 64), (3, 5, 33), (8, 16, 17)])
@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
def test_stream_matches_module_calls_bitwise(name, make, N, I, H, dtype, rng):
    # The stream and the module alternate the order of the hidden blocks from call to call, in
    # opposite phase (the stream starts backward, the module forward): this also checks that the
    # order never changes a bit.
    cell = make(I, H, dtype)
    s = cell.stream(N)
    h = np.zeros((N, H), dtype)
    c = np.zeros((N, H), dtype)
    out = np.empty((N, H), dtype)
    for _ in range(6):
        x = rng.standard_normal((N, I)).astype(dtype)
        got = s.step(x, out)
        assert got is out
        if name == "lstm":
            h, c = cell(x, (h, c))
        else:
            h = cell(x, h)
        assert np.array_equal(out, h)
        assert np.array_equal(s.h, h)
        if name == "lstm":
            assert np.array_equal(s.c, c)


def _peak_growth(fn, repeat=500):
    """Bytes the traced peak rises above the starting level while fn() runs `repeat` times:
    any allocation, even one freed right away, raises the peak."""
    fn()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(repeat):
            fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
def test_stream_step_allocates_nothing(name, make, rng):
    cell = make(32, 48, np.float32)
    s = cell.stream(2)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    out = np.empty((2, 48), np.float32)
    harness = _peak_growth(lambda: None)  # the loop itself (int objects) moves the peak a bit
    assert _peak_growth(lambda: s.step(x, out)) <= harness
    # The measurement does see an allocating call (a new [2, 48] float32 array per step).
    assert _peak_growth(lambda: s.step(x)) >= 2 * 48 * 4


def test_stream_state_reset_and_hx(rng):
    cell = gk.LSTMCell(4, 6, seed=3)
    h0 = rng.standard_normal((2, 6)).astype(np.float32)
    c0 = rng.standard_normal((2, 6)).astype(np.float32)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    s = cell.stream(2, (h0, c0))
    h1, c1 = cell(x, (h0, c0))
    assert np.array_equal(s.step(x), h1)
    s.reset()
    assert not s.h.any() and not s.c.any()
    s.reset(h0, c0)
    assert np.array_equal(s.step(x), h1) and np.array_equal(s.c, c1)


def test_stream_unbatched_and_casting(rng):
    cell = gk.GRUCell(5, 7, seed=0)
    s = cell.stream()
    x = rng.standard_normal(5)  # float64 and 1-d: the slow path casts
    y = s.step(x)
    assert y.shape == (7,) and y.dtype == np.float32
    assert np.array_equal(y, cell(x.astype(np.float32)))
    x_strided = rng.standard_normal((1, 10)).astype(np.float32)[:, ::2]
    assert s.step(x_strided).shape == (1, 7)


def test_stream_byte_swapped_input_and_out(rng):
    """x in the other byte order is converted, never read as native bytes; an out of the other
    byte order is refused before the step, so the state does not move."""
    cell = gk.LSTMCell(5, 7, seed=0)
    a, b = cell.stream(2), cell.stream(2)
    for _ in range(3):
        x = rng.standard_normal((2, 5)).astype(np.float32)
        swapped = x.astype(x.dtype.newbyteorder())
        assert np.array_equal(b.step(swapped), a.step(x))
    with pytest.raises(ValueError, match="out"):
        b.step(x, np.empty((2, 7), np.dtype(np.float32).newbyteorder()))
    assert np.array_equal(b.h, a.h) and np.array_equal(b.c, a.c)
    assert np.array_equal(b.step(x), a.step(x))


def test_stream_errors():
    cell = gk.LSTMCell(4, 6)
    s = cell.stream(2)
    with pytest.raises(ValueError, match=r"x: expected \[N, I\] = \[2, 4\]"):
        s.step(np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="x"):
        s.step(np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="out"):
        s.step(np.zeros((2, 4), np.float32), np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="out"):
        s.step(np.zeros((2, 4), np.float32), np.empty((2, 6), np.float64))
    h = s.h
    with pytest.raises(ValueError, match="out"):  # refused before the step: the state stays
        s.step(np.ones((2, 4), np.float32), np.empty((2, 6), np.float32)[:, ::2])
    assert np.array_equal(s.h, h)
    with pytest.raises(ValueError, match="batch_size"):
        cell.stream(0)
    with pytest.raises(ValueError, match="reference"):
        gk.LSTMCell(4, 6, backend="reference").stream()


@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("N", [1, 3, 16])
def test_cell_calls_write_into_out(name, make, functional, N, rng):
    """`out=` buffers are written in place, returned, equal to the allocating call, and the call
    allocates nothing else of the output's size."""
    I, H = 5, 7
    cell = make(I, H, np.float32)
    x = rng.standard_normal((N, I)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    hx = (h, h + 1) if name == "lstm" else h
    if functional:
        sd = cell.state_dict()
        w = (sd["weight_ih"], sd["weight_hh"], sd["bias_ih"], sd["bias_hh"])
        kw = ({} if name == "lstm" else {"nonlinearity": "relu"} if name == "rnn_relu"
              else {"linear_before_reset": cell.linear_before_reset})
        fn = getattr(gk, {"lstm": "lstm_cell", "rnn_relu": "rnn_cell"}.get(name, "gru_cell"))

        def call(**o):
            return fn(x, hx, *w, **kw, **o)
    else:
        def call(**o):
            return cell(x, hx, **o)
    want = call()
    if name == "lstm":
        out = (np.empty((N, H), np.float32), np.empty((N, H), np.float32))
        got = call(out=out)
        assert got[0] is out[0] and got[1] is out[1]
        assert np.array_equal(out[0], want[0]) and np.array_equal(out[1], want[1])
        with pytest.raises(ValueError, match="overlap"):
            call(out=(h, out[1]))
        with pytest.raises(TypeError, match="out"):
            call(out=out[0])
    else:
        out = np.empty((N, H), np.float32)
        assert call(out=out) is out
        assert np.array_equal(out, want)
        with pytest.raises(ValueError, match="overlap"):
            call(out=h)
        with pytest.raises(ValueError, match="out"):
            call(out=np.empty((N, H), np.float64))
        with pytest.raises(ValueError, match="out"):
            call(out=np.empty((N, H + 1), np.float32))


@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
def test_cell_call_fast_path_matches_general_path(name, make, rng):
    """A module's cell call on plain arrays takes a path checked in C (Kernel.call); anything it
    does not take (Fortran order, another dtype, a 1-d x, no state, a bad shape, a read-only or
    subclassed array) goes the general way, with the same results and the same errors."""
    N, I, H = 3, 5, 7
    cell = make(I, H, np.float32)
    k = cell._kernel
    x = rng.standard_normal((N, I)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    c = rng.standard_normal((N, H)).astype(np.float32)
    lstm = name == "lstm"

    def run(x, h, c):
        out = cell(x, (h, c) if lstm else h)
        return out if lstm else (out, None)

    want = k.call(x, h, c)
    assert want is not None
    assert want[1] is None if not lstm else want[1].shape == (N, H)
    got = run(x, h, c)
    assert np.array_equal(got[0], want[0])
    others = [
        (np.asfortranarray(x), h, c),
        (x.astype(np.float64), h, c),
        (x, h.astype(np.float64), c),
        (x.view(np.ma.MaskedArray), h, c),
        (x, np.asfortranarray(h), c),
    ]
    if lstm:
        others.append((x, h, c[:, ::-1].copy()[:, ::-1]))  # a negative-stride view
    for args in others:
        assert k.call(*args) is None
        got = run(*args)
        assert np.array_equal(np.asarray(got[0]), want[0])
        if lstm:
            assert np.array_equal(np.asarray(got[1]), want[1])
    # the unbatched form goes the general way and returns [H]
    assert k.call(x[0], h[0], c[0]) is None
    got = run(x[:1][0], h[:1][0], c[:1][0])
    assert got[0].shape == (H,)
    # a missing state is zeros, made in C too; a bad shape is the general path's ValueError
    zeros = np.zeros_like(h)
    assert np.array_equal(k.call(x, None, c)[0], k.call(x, zeros, c)[0])
    assert np.array_equal(k.call(x, h, None)[0], k.call(x, h, zeros)[0])
    assert np.array_equal(cell(x)[0] if lstm else cell(x), k.call(x, zeros, zeros)[0])
    with pytest.raises(ValueError, match="h"):
        run(x, h[:, :H - 1].copy(), c)
    assert k.call(x, h[:, :H - 1].copy(), c) is None
    with pytest.raises(ValueError, match="x"):
        run(x[:, :I - 1].copy(), h, c)


@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
def test_out_buffers_fast_path(name, make, functional, rng):
    """Cell calls with out= on plain arrays are checked and run in C (Kernel.call_cell,
    _ext.raw_call): the caller's buffers come back written, bitwise as the allocating call. A
    buffer that shares memory with an input or with the other output, by as little as one
    element, goes the general way and is refused there; buffers side by side in one array are
    taken."""
    from gatedkernels import _api, _ext

    N, I, H = 3, 5, 7
    cell = make(I, H, np.float32)
    lstm = name == "lstm"
    sd = cell.state_dict()
    w = [np.array(sd[k]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]  # writable
    lbr = getattr(cell, "linear_before_reset", True)
    relu = name == "rnn_relu"
    kind = {"lstm": _api.LSTM, "rnn_relu": _api.RNN}.get(name, _api.GRU)
    x = rng.standard_normal((N, I)).astype(np.float32)
    # one array holds h, c and room for both outputs, row blocks side by side
    buf = rng.standard_normal((4 * N, H)).astype(np.float32)
    flat = buf.reshape(-1)
    h, c = buf[:N], buf[N:2 * N]
    hx = (h, c) if lstm else h
    if functional:
        kw = ({} if lstm else {"nonlinearity": "relu"} if relu
              else {"linear_before_reset": lbr})
        fn = getattr(gk, {"lstm": "lstm_cell", "rnn_relu": "rnn_cell"}.get(name, "gru_cell"))

        def call(out=None):
            return fn(x, hx, *w, **kw, out=out)

        def fast(out):
            got = _ext.raw_call(kind, lbr, relu, x, h, c if lstm else None, *w, gk.get_isa(),
                                _api.PACK_PER_CALL, out)
            return got if got is None or lstm else got[0]
    else:
        def call(out=None):
            return cell(x, hx, out=out)

        def fast(out):
            return cell._kernel.call_cell(x, hx, out)

    def pair(h1, c1):
        return (h1, c1) if lstm else h1

    want = call()
    out = pair(buf[2 * N:3 * N], buf[3 * N:])  # right after c: adjacent, not overlapping
    got = fast(out)
    assert got is not None
    if lstm:
        assert got[0] is out[0] and got[1] is out[1]
        assert np.array_equal(out[0], want[0]) and np.array_equal(out[1], want[1])
    else:
        assert got is out and np.array_equal(out, want)
    end = (2 if lstm else 1) * N * H  # where the last state input (c, or h) ends
    one_back = flat[end - 1:end - 1 + N * H].reshape(N, H)  # its last value, nothing more
    bad = [
        pair(buf[N - 1:2 * N - 1], buf[3 * N:]),      # h1 over the last row of h
        pair(one_back, buf[3 * N:]),
    ]
    if lstm:
        bad += [(buf[2 * N:3 * N], buf[2 * N - 1:3 * N - 1]),   # c1 over the last row of c
                (buf[2 * N:3 * N], buf[2 * N + 1:3 * N + 1])]   # c1 over h1
    if functional:
        bad.append(pair(w[1].reshape(-1)[:N * H].reshape(N, H), buf[3 * N:]))  # W_hh's memory
    for o in bad:
        assert fast(o) is None
        with pytest.raises(ValueError, match="overlap"):
            call(out=o)
    # a read-only buffer: the general path's error
    ro = np.empty((N, H), np.float32)
    ro.flags.writeable = False
    o = pair(ro, np.empty((N, H), np.float32))
    assert fast(o) is None
    with pytest.raises(ValueError, match="writ"):
        call(out=o)


@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
def test_functional_call_fast_path_matches_general_path(name, make, rng):
    """The functional cells take a path checked in C (_ext.raw_call) for plain arrays of one
    dtype; casts, Fortran order, a batch that pack_per_call packs for, and bad shapes go the
    general way, with the same results and the same errors."""
    from gatedkernels import _api, _ext

    N, I, H = 3, 5, 7
    cell = make(I, H, np.float32)
    sd = cell.state_dict()
    w = [sd["weight_ih"], sd["weight_hh"], sd["bias_ih"], sd["bias_hh"]]
    kind = {"lstm": _api.LSTM, "rnn_relu": _api.RNN}.get(name, _api.GRU)
    lbr = getattr(cell, "linear_before_reset", True)
    relu = name == "rnn_relu"
    kw = ({} if name == "lstm" else {"nonlinearity": "relu"} if relu
          else {"linear_before_reset": lbr})
    fn = getattr(gk, {"lstm": "lstm_cell", "rnn_relu": "rnn_cell"}.get(name, "gru_cell"))
    x = rng.standard_normal((N, I)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    c = rng.standard_normal((N, H)).astype(np.float32)
    lstm = name == "lstm"

    def run(x, h, c, w):
        out = fn(x, (h, c) if lstm else h, *w, **kw)
        return out if lstm else (out, None)

    def fast(x, h, c, w):
        return _ext.raw_call(kind, lbr, relu, x, h, c, *w, gk.get_isa(), _api.PACK_PER_CALL)

    want = fast(x, h, c, w)
    assert want is not None
    got = run(x, h, c, w)
    assert np.array_equal(got[0], want[0])
    general = [
        (np.asfortranarray(x), h, c, w),
        (x, h, c, [np.asfortranarray(w[0])] + w[1:]),
        (x, h, c, w[:2] + [w[2].astype(np.float64), w[3]]),
        (x, h, c, w[:2] + [None, None]),  # no biases: still the fast path
    ]
    for args in general[:3]:
        assert fast(*args) is None
        assert np.array_equal(run(*args)[0], want[0])
    assert fast(*general[3]) is not None
    assert np.array_equal(fast(*general[3])[0], run(*general[3])[0])
    # a batch of as many rows as pack_per_call takes is packed per call: the general path
    R = _api.PACK_PER_CALL[1]
    assert I + H < _api.PACK_PER_CALL[0] and _api.pack_per_call(R, I, H)
    assert not _api.pack_per_call(R - 1, I, H)
    assert fast(*(np.ascontiguousarray(np.tile(a, (R, 1))[:R - 1]) for a in (x, h, c)), w) \
        is not None
    xb, hb, cb = (np.ascontiguousarray(np.tile(a, (R, 1))[:R]) for a in (x, h, c))
    assert fast(xb, hb, cb, w) is None
    assert np.allclose(run(xb, hb, cb, w)[0][:N], want[0], rtol=1e-5, atol=1e-6)
    # bad shapes: the general path's errors
    assert fast(x, h, c, [w[0][:, :I - 1].copy()] + w[1:]) is None
    with pytest.raises(ValueError, match="w_ih"):
        run(x, h, c, [w[0][:, :I - 1].copy()] + w[1:])
    assert fast(x, h[:, :H - 1].copy(), c, w) is None
    with pytest.raises(ValueError, match="h"):
        run(x, h[:, :H - 1].copy(), c, w)


def test_streams_step_without_the_gil_in_threads(rng):
    """A stream step of >= 2^17 multiply-adds (_ext.GIL_RELEASE_WORK) runs without the GIL:
    streams stepped in their own Python threads at once give bitwise the results of stepping
    them one after another."""
    import threading

    cells = [make(32, 160, np.float32) for _, make in CELLS]
    N = 2  # N * G * H * (I + H) >= 2 * 160 * 192 > 2^17 for every cell
    frames = [rng.standard_normal((12, N, 32)).astype(np.float32) for _ in cells]

    def run(cell, xs, outs):
        s = cell.stream(N)
        for t, x in enumerate(xs):
            s.step(x, outs[t])

    want = [np.empty((12, N, 160), np.float32) for _ in cells]
    for cell, xs, outs in zip(cells, frames, want):
        run(cell, xs, outs)
    got = [np.empty_like(w) for w in want]
    threads = [threading.Thread(target=run, args=a) for a in zip(cells, frames, got)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        assert np.array_equal(w, g)


def test_stream_refuses_a_second_thread_while_it_steps():
    """While one thread steps a stream (without the GIL: ~1 ms at I = H = 1024), a step or a
    reset from another thread is a RuntimeError, never a race on the state; afterwards the
    stream steps on as if nothing had happened. Two threads step it 20 times each, retrying a
    refused step after a pause (whichever steps always finishes, so both do); the main thread
    tries to reset it meanwhile."""
    import threading
    import time

    cell = gk.LSTMCell(1024, 1024, seed=0)
    x = np.full((1, 1024), 0.01, np.float32)
    s, ref = cell.stream(1), cell.stream(1)
    errors = {"step": [], "reset": []}

    def steps():
        out = np.empty((1, 1024), np.float32)
        done = 0
        while done < 20:
            try:
                s.step(x, out)
                done += 1
            except RuntimeError as e:
                errors["step"].append(str(e))
                time.sleep(1e-4)

    threads = [threading.Thread(target=steps) for _ in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        try:
            s.reset()  # between two steps, it runs
        except RuntimeError as e:
            errors["reset"].append(str(e))
    for t in threads:
        t.join()
    for what, got in errors.items():
        assert got and all(e.startswith(what + ":") and "another thread" in e for e in got)
    # the state is intact: one more step from a known state matches a fresh stream's
    out, want = np.empty((1, 1024), np.float32), np.empty((1, 1024), np.float32)
    ref.reset(s.h, s.c)
    s.step(x, out)
    ref.step(x, want)
    assert np.array_equal(out, want)


SEQ_MODULES = [
    ("lstm", lambda I, H, L, dt: gk.LSTM(I, H, num_layers=L, dtype=dt, seed=2)),
    ("lstm_proj", lambda I, H, L, dt: gk.LSTM(I, H, num_layers=L, proj_size=H // 2 + 1,
                                              dtype=dt, seed=2)),
    ("gru", lambda I, H, L, dt: gk.GRU(I, H, num_layers=L, dtype=dt, seed=2)),
    ("gru_cho", lambda I, H, L, dt: gk.GRU(I, H, num_layers=L, linear_before_reset=False,
                                           dtype=dt, seed=2)),
    ("rnn_relu", lambda I, H, L, dt: gk.RNN(I, H, num_layers=L, nonlinearity="relu", dtype=dt,
                                            seed=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("L,N", [(1, 1), (3, 1), (2, 4)])
@pytest.mark.parametrize("name,make", SEQ_MODULES, ids=[m[0] for m in SEQ_MODULES])
def test_layered_stream_matches_module_steps(name, make, L, N, dtype, rng):
    """A sequence module's stream steps every layer one time step per call: bitwise the module
    called one step at a time with its state passed along, its state that call's h_n (c_n),
    and the whole sequence in one call to rounding (the one call projects the inputs of many
    steps in one GEMM, whose register tiles may sum a row differently)."""
    I, H, T = 5, 9, 6
    m = make(I, H, L, dtype)
    P = m.proj_size or H
    lstm = name.startswith("lstm")
    x = rng.standard_normal((T, N, I)).astype(dtype)
    h0 = rng.standard_normal((L, N, P)).astype(dtype)
    c0 = rng.standard_normal((L, N, H)).astype(dtype)
    hx = (h0, c0) if lstm else h0
    s = m.stream(N, hx)
    out = np.empty((N, P), dtype)
    ys = []
    state = hx
    for t in range(T):
        assert s.step(x[t], out) is out
        ys.append(out.copy())
        y_t, state = m(x[t:t + 1], state)
        assert np.array_equal(out, y_t[0])
    hn = state[0] if lstm else state
    assert s.h.shape == (L, N, P) and np.array_equal(s.h, hn)
    if lstm:
        assert s.c.shape == (L, N, H) and np.array_equal(s.c, state[1])
    else:
        assert s.c is None
    y, _ = m(x, hx)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(np.stack(ys), y, rtol=tol, atol=tol)
    # reset to the start: the same steps again; one row unbatched when N == 1
    s.reset(h0, c0 if lstm else None)
    if N == 1:
        got = s.step(x[0, 0])
        assert got.shape == (P,) and np.array_equal(got, ys[0][0])
    else:
        assert np.array_equal(s.step(x[0]), ys[0])


def test_layered_stream_errors():
    m = gk.LSTM(4, 6, num_layers=2, seed=0)
    with pytest.raises(ValueError, match="bidirectional"):
        gk.GRU(4, 6, bidirectional=True).stream()
    with pytest.raises(ValueError, match="reference"):
        gk.RNN(4, 6, backend="reference").stream()
    with pytest.raises(ValueError, match="batch_size"):
        m.stream(0)
    with pytest.raises(ValueError, match=r"h0: expected \[num_layers, N, P\] = \[2, 3, 6\]"):
        m.stream(3, (np.zeros((1, 3, 6)), np.zeros((2, 3, 6))))
    with pytest.raises(ValueError, match=r"c0: expected \[num_layers, N, H\] = \[2, 1, 6\] or"):
        m.stream(1, (np.zeros((2, 6)), np.zeros((2, 7))))
    with pytest.raises(TypeError, match="hx"):
        m.stream(1, np.zeros((2, 1, 6)))
    s = m.stream(1, (np.zeros((2, 6)), np.ones((2, 6))))  # [L, P] for one row
    assert np.array_equal(s.c, np.ones((2, 1, 6), np.float32))
    with pytest.raises(ValueError, match="x"):
        s.step(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="out"):
        s.step(np.zeros((1, 4), np.float32), np.empty((1, 7), np.float32))
