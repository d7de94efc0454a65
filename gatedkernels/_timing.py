"""Interleaved timing for comparisons on a noisy machine.

The candidates are timed in rounds A, B, C, A, B, C, ... so that a slow phase of the machine hits
all of them alike; each round times a batch of calls long enough to swamp the timer's resolution,
and the figure reported is the median over rounds of the per-call time.
"""
import contextlib
import statistics
import time


def _calibrate(fn, target_s):
    """Calls per batch so that one batch takes about target_s."""
    fn()  # warm up: first-call costs (allocation, lazy init) stay out of the timing
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target_s or n >= 1 << 20:
            return n, dt / n
        n = max(n * 2, int(n * target_s / max(dt, 1e-9) * 1.2))


def interleaved(candidates, *, rounds=7, target_s=0.01, budget_s=None, settle_s=0.0):
    """Median seconds per call of each candidate {name: zero-argument callable}.

    Returns {name: (median_s, min_s, per_round_list)}. `budget_s` caps the total time by lowering
    the number of rounds (never below 3). `settle_s` sleeps before each batch: thread pools that
    spin after a call (ONNX Runtime's, OpenMP's, OpenBLAS's) then go idle instead of competing
    with the next candidate's threads. Measured: a 2-thread gk LSTM (T=100, N=64, H=256) ran at
    60 ms right after an ONNX Runtime call and 34.5 ms after a 50 ms pause.
    """
    plan = {name: _calibrate(fn, target_s) for name, fn in candidates.items()}
    if budget_s is not None:
        per_round = sum(n * t for n, t in plan.values())
        rounds = max(3, min(rounds, int(budget_s / max(per_round, 1e-9))))
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            n = plan[name][0]
            if settle_s:
                time.sleep(settle_s)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: (statistics.median(s), min(s), s) for name, s in samples.items()}


def fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def blas_threads(threads):
    """A context that holds NumPy's BLAS to `threads` threads (threadpoolctl, when installed).

    A peer timed beside gatedkernels must get the same threads: NumPy's OpenBLAS otherwise runs
    on every core and keeps its workers spinning for a while after each call, on the cores the
    next candidate runs on. Returns (context, limited); limited is False without threadpoolctl.
    """
    try:
        import threadpoolctl
    except ImportError:
        return contextlib.nullcontext(), False
    return threadpoolctl.threadpool_limits(threads, "blas"), True
