"""The thread pool: results are bitwise identical for any thread count (SPEC §6), on shapes
large enough that the kernels really split the work, for every cell, with lengths, several
layers, both directions and the LSTM projection; and they agree with the reference."""
import numpy as np
import pytest

import _helpers
import gatedkernels as gk
from conftest import assert_close32
from gatedkernels import reference

pytestmark = pytest.mark.usefixtures("isa")

VARIANTS = [("lstm", {}), ("lstm_proj", {}), ("gru", {"linear_before_reset": True}),
            ("gru", {"linear_before_reset": False}), ("rnn_tanh", {})]
IDS = ["lstm", "lstm_proj", "gru_lbr", "gru_cho", "rnn_tanh"]


@pytest.fixture
def restore_threads():
    n = gk.get_num_threads()
    yield
    gk.set_num_threads(n)


def _run_all_thread_counts(fn, counts=(1, 2, 3, 5)):
    results = []
    for n in counts:
        gk.set_num_threads(n)
        results.append([np.array(a, copy=True) for a in _helpers.flatten(fn())])
    return results


def _check_sequence_all_thread_counts(kind, x, weights, opts, what):
    """A float32 sequence gives the same bits at thread counts 1, 2, 3 and 5, within SPEC §6's
    float32 bound of the reference."""
    results = _run_all_thread_counts(
        lambda: _helpers.call_sequence(gk, kind, x, None, weights, **opts))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)
    oracle = _helpers.call_sequence(reference, kind, x.astype(np.float64), None,
                                    {k: v.astype(np.float64) for k, v in weights.items()}, **opts)
    ref32 = _helpers.call_sequence(reference, kind, x, None, weights, **opts)
    assert_close32(results[-1], oracle, ref32, what)


@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_sequence_bitwise_identical_for_any_thread_count(kind, variant, rng, restore_threads):
    T, N, I, H = 7, 12, 40, 96  # ~1e6 flops per step: several threads' worth
    proj = 33 if kind == "lstm_proj" else 0
    kind = "lstm" if kind == "lstm_proj" else kind
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=2, bidirectional=True,
                                      proj_size=proj, dtype=np.float32)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    lengths = _helpers.random_lengths(rng, N, T)
    opts = dict(num_layers=2, bidirectional=True, batch_first=True, lengths=lengths, **variant)
    _check_sequence_all_thread_counts(kind, x, weights, opts, "threaded sequence")


@pytest.mark.parametrize("N", [4, 8])
def test_lstm_gate_split_tiles_bitwise_identical_for_any_thread_count(N, rng, restore_threads):
    """N = 8 (AVX-512) and N = 4 (AVX2, baseline) take one gate-split LSTM tile (kernel.h,
    Lstm::step); with H = 160 a step still has enough work for several threads."""
    T, I, H = 5, 40, 160
    weights = _helpers.random_weights("lstm", I, H, rng=rng, num_layers=2, bidirectional=True,
                                      dtype=np.float32)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    opts = dict(num_layers=2, bidirectional=True, lengths=_helpers.random_lengths(rng, N, T))
    _check_sequence_all_thread_counts("lstm", x, weights, opts, "threaded gate-split sequence")


@pytest.mark.parametrize("N", [13, 19, 37])
@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_even_tiles_bitwise_identical_for_any_thread_count(N, kind, variant, rng,
                                                           restore_threads):
    """Where whole tiles would leave a short last one, the rows are cut into tiles of even
    heights (kernel.h, Tiling: 13 rows of 6-row tiles as 5, 4, 4), and several threads split
    them in chunks of whole tiles: H = 64 gives so few hidden blocks that the rows are chunked.
    Sequences (the projection GEMM, or the input by tiles) and, for the LSTM, a cell step big
    enough for several threads (I = 128, H = 256: 16 blocks, also chunked)."""
    T, I, H = 5, 24, 64
    proj = 40 if kind == "lstm_proj" else 0
    kind = "lstm" if kind == "lstm_proj" else kind
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=2, bidirectional=True,
                                      proj_size=proj, dtype=np.float32)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    opts = dict(num_layers=2, bidirectional=True, lengths=_helpers.random_lengths(rng, N, T),
                **variant)
    _check_sequence_all_thread_counts(kind, x, weights, opts, f"even tiles N={N}")
    if kind != "lstm" or proj:
        return
    m = gk.LSTMCell(128, 256, seed=3)
    xc = rng.standard_normal((N, 128)).astype(np.float32)
    hx = tuple(a.astype(np.float32) for a in _helpers.random_hx("lstm", None, N, 256, rng=rng))
    results = _run_all_thread_counts(lambda: m(xc, hx))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b), f"LSTMCell N={N}"


@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_large_layers_bitwise_identical_for_any_thread_count(kind, variant, rng, restore_threads):
    """Weights over 2 MiB per layer (kernel.h, Ahead: each item pulls the next block into L2,
    in the input projection and the steps, forwards and, every other step, backwards): H = 740,
    every cell's recurrent and input weights are past it; N = 7 is a full tile and a short one."""
    T, N, I, H = 3, 7, 740, 740
    proj = 33 if kind == "lstm_proj" else 0
    kind = "lstm" if kind == "lstm_proj" else kind
    weights = _helpers.random_weights(kind, I, H, rng=rng, proj_size=proj, dtype=np.float32)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    opts = dict(lengths=_helpers.random_lengths(rng, N, T), **variant)
    _check_sequence_all_thread_counts(kind, x, weights, opts, "large-layer sequence")


@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_one_row_bitwise_identical_for_any_thread_count(kind, variant, rng, restore_threads):
    """N = 1 takes the one-row step (kernel.h, one_row_groups: groups of hidden blocks as the
    work items). H gives a step 6.4e5-6.9e5 flops: two threads' worth (kernel.h, threads_for)."""
    T, I, H = 6, 30, {"lstm": 200, "lstm_proj": 200, "gru": 240}.get(kind, 400)
    proj = 50 if kind == "lstm_proj" else 0
    kind = "lstm" if kind == "lstm_proj" else kind
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=2, bidirectional=True,
                                      proj_size=proj, dtype=np.float32)
    x = rng.standard_normal((T, 1, I)).astype(np.float32)
    # A length short of T: the items' epilogues hold the state and write zeros past it.
    opts = dict(num_layers=2, bidirectional=True, lengths=np.array([4]), **variant)
    _check_sequence_all_thread_counts(kind, x, weights, opts, "threaded one-row sequence")


def _module(kind, I, H, variant, **opts):
    """A module of the kind and variant of VARIANTS (lstm_proj: proj_size 24)."""
    if kind in ("lstm", "lstm_proj"):
        return gk.LSTM(I, H, proj_size=24 if kind == "lstm_proj" else 0, **opts)
    if kind == "gru":
        return gk.GRU(I, H, **variant, **opts)
    return gk.RNN(I, H, nonlinearity=_helpers.nonlinearity(kind), **opts)


@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_rows_split_bitwise_identical_for_any_thread_count(kind, variant, rng, restore_threads):
    """Where a sequence's threads split the batch rows (kernel.h, rows_split: each thread steps
    its share of the rows through the whole sequence, every hidden block, with no barrier
    between steps), the results are those of one thread, to the bit, and of the reference: with
    ragged lengths, 2 layers, both directions, batch_first. The batch is the first of a few
    sizes whose sequence the kernel (as it reports) splits by rows at 2 threads on this ISA."""
    T, I, H = 6, 40, 96
    m = _module(kind, I, H, variant, num_layers=2, bidirectional=True)
    gk.set_num_threads(2)
    plans = {N: m._kernel.sequence_threads(T, N) for N in (12, 16, 24, 32, 48)}
    split = [N for N, plan in plans.items() if plan == (2, True)]
    assert split, f"no batch size splits by rows at 2 threads: {plans}"
    N = split[0]
    proj = 24 if kind == "lstm_proj" else 0
    kind = "lstm" if kind == "lstm_proj" else kind
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=2, bidirectional=True,
                                      proj_size=proj, dtype=np.float32)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    opts = dict(num_layers=2, bidirectional=True, batch_first=True,
                lengths=_helpers.random_lengths(rng, N, T), **variant)
    _check_sequence_all_thread_counts(kind, x, weights, opts, f"rows split N={N}")


@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_rows_split_every_batch_size_bitwise_identical(kind, variant, rng, restore_threads):
    """Every batch size from 8 to 40 at 2 and 3 threads, float32 and float64: the same bits as
    one thread. The shares of the rows are cut where each keeps the accumulator sets its rows
    have in the whole batch (kernel.h, rows_split), so they can be uneven (an RNN of 13 rows
    on AVX-512: 8 and 5); where no cut keeps them, the hidden blocks are split. Some sizes here
    must split by rows (the kernel reports which)."""
    T, I, H = 2, 24, 128
    split = 0
    for dtype in (np.float32, np.float64):
        m = _module(kind, I, H, variant, num_layers=2, dtype=dtype)
        for N in range(8, 41):
            x = rng.standard_normal((T, N, I)).astype(dtype)
            lengths = _helpers.random_lengths(rng, N, T)
            gk.set_num_threads(1)
            want = _helpers.flatten(m(x, lengths=lengths))
            for n in (2, 3):
                gk.set_num_threads(n)
                split += m._kernel.sequence_threads(T, N)[1]
                got = _helpers.flatten(m(x, lengths=lengths))
                for a, b in zip(want, got):
                    assert np.array_equal(a, b), f"{dtype.__name__} N={N} on {n} threads"
    assert split >= 4, f"only {split} of 132 calls split the batch rows"


def test_rows_split_plan(restore_threads):
    """Which sequences split the batch rows among threads (kernel.h, rows_split): none on one
    thread, nor with one row, nor with fewer than 4 rows a thread; where a step's weights are
    large (an LSTM of H = 512 reads 4 MiB of W_hh a step), only with rows enough to pay for each
    thread reading all of them (16 a thread); the hidden blocks are split otherwise."""
    gk.set_num_threads(2)
    small, big = gk.LSTM(128, 128), gk.LSTM(512, 512)
    assert small._kernel.sequence_threads(100, 48) == (2, True)
    assert small._kernel.sequence_threads(100, 1) == (1, False)
    assert small._kernel.sequence_threads(100, 6) == (2, False)
    assert big._kernel.sequence_threads(100, 16) == (2, False)
    assert big._kernel.sequence_threads(100, 48) == (2, True)
    gk.set_num_threads(1)
    assert small._kernel.sequence_threads(100, 48) == (1, False)
    with pytest.raises(ValueError, match="T and N"):
        small._kernel.sequence_threads(100, 0)


@pytest.mark.parametrize("kind,variant", VARIANTS, ids=IDS)
def test_dynamic_schedule_never_changes_a_bit(kind, variant, rng, restore_threads):
    """The work items of a step (hidden blocks, and row chunks of them when the blocks are few:
    here H = 64 and N = 160 give every build several chunks per block) are dealt out at run
    time, so which thread runs which item differs from call to call. Many calls at 2 and 3
    threads, with a busy thread competing for the cores to shake the schedule, must all
    equal the 1-thread result to the bit."""
    import hashlib
    import threading

    T, N, I, H = 5, 160, 24, 64
    proj = 40 if kind == "lstm_proj" else 0
    kind = "lstm" if kind == "lstm_proj" else kind
    weights = _helpers.random_weights(kind, I, H, rng=rng, num_layers=2, bidirectional=True,
                                      proj_size=proj, dtype=np.float32)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    lengths = _helpers.random_lengths(rng, N, T)
    opts = dict(num_layers=2, bidirectional=True, lengths=lengths, **variant)

    def call():
        return [np.array(a, copy=True) for a in
                _helpers.flatten(_helpers.call_sequence(gk, kind, x, None, weights, **opts))]

    gk.set_num_threads(1)
    want = call()
    stop = threading.Event()

    def busy():  # hashing a large buffer releases the GIL: CPU load that leaves ours alone
        data = bytes(1 << 20)
        while not stop.is_set():
            hashlib.sha256(data).digest()

    noise = threading.Thread(target=busy)
    noise.start()
    try:
        for n in (2, 3) * 8:
            gk.set_num_threads(n)
            for a, b in zip(want, call()):
                assert np.array_equal(a, b), f"{n} threads"
    finally:
        stop.set()
        noise.join()


@pytest.mark.parametrize("kind,variant", VARIANTS[:1] + VARIANTS[2:], ids=IDS[:1] + IDS[2:])
def test_cell_step_bitwise_identical_for_any_thread_count(kind, variant, rng, restore_threads):
    N, I, H = 48, 64, 160
    params = _helpers.random_cell_params(kind, I, H, rng=rng, dtype=np.float32)
    cls = {"lstm": gk.LSTMCell, "gru": gk.GRUCell, "rnn_tanh": gk.RNNCell}[kind]
    m = cls(I, H, **variant)
    m.load_state_dict({"weight_ih": params["w_ih"], "weight_hh": params["w_hh"],
                       "bias_ih": params["b_ih"], "bias_hh": params["b_hh"]})
    x = rng.standard_normal((N, I)).astype(np.float32)
    hx = _helpers.random_hx(kind, None, N, H, rng=rng)
    hx = tuple(a.astype(np.float32) for a in hx) if isinstance(hx, tuple) else hx.astype(np.float32)
    results = _run_all_thread_counts(lambda: m(x, hx))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_set_num_threads_validation(restore_threads):
    gk.set_num_threads(3)
    assert gk.get_num_threads() == 3
    with pytest.raises(ValueError, match="n"):
        gk.set_num_threads(0)
    with pytest.raises(TypeError):
        gk.set_num_threads(1.5)


def test_concurrent_calls_from_python_threads(rng, restore_threads):
    """Sequence calls release the GIL; calls from several Python threads at once (each using
    the pool or not) all give the single-threaded result."""
    import threading

    gk.set_num_threads(2)
    m = gk.GRU(32, 64, num_layers=2, seed=0)
    xs = [rng.standard_normal((20, 8, 32)).astype(np.float32) for _ in range(6)]
    want = [m(x)[0] for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(3):
            got[i] = m(xs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(want, got):
        assert np.array_equal(a, b)


def test_pool_works_in_a_forked_child(rng, restore_threads):
    """After fork() the child has none of the parent's worker threads: its first threaded call
    must neither hang nor differ (multiprocessing's default start method on Linux)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork() on this platform")
    gk.set_num_threads(2)
    m = gk.LSTM(64, 128, seed=0)
    x = rng.standard_normal((10, 16, 64)).astype(np.float32)
    want = m(x)[0]  # starts the parent's workers
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_call_module, (m, x)).get(timeout=60)
    assert np.array_equal(want, got)


def _call_module(m, x):
    return m(x)[0]


@pytest.mark.parametrize("env,want", [(None, 1), ("3", 3), ("0", 1), ("junk", 1)])
def test_default_thread_count_and_environment(env, want, tmp_path):
    """One thread unless GATEDKERNELS_NUM_THREADS asks for more (read once per process). Runs
    from an empty directory so `python -c` imports the installed package, not a source tree."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "GATEDKERNELS_NUM_THREADS"}
    if env is not None:
        environ["GATEDKERNELS_NUM_THREADS"] = env
    out = subprocess.run([sys.executable, "-c", "import gatedkernels as gk; print(gk.get_num_threads())"],
                         env=environ, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert int(out.stdout.strip()) == want
