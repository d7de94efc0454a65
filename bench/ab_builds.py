"""A/B of two or more builds of gatedkernels, each timed in its own processes, alternated.

    python bench/ab_builds.py --build old=/tmp/old --build new=. lstm:100:8:256 lstmcell:128:8:256
    python bench/ab_builds.py --build a=/tmp/a --build b=/tmp/b --rounds 9 gru:30:64:256

A build is a directory that holds a built `gatedkernels` package (a checkout after
`python setup.py build_ext --inplace`, or a site-packages directory). A case is
`kind:T:N:H` (a T-step sequence of gk.LSTM / GRU / RNN(H, H) on x [T, N, H]) or
`kindcell:I:N:H` (one zero-allocation stream step of gk.LSTMCell / GRUCell / RNNCell(I, H) on
N rows), `kindcall:I:N:H` (the module's own call, `cell(x, hx)`) or `kindfn:I:N:H` (one
functional step, gk.lstm_cell / gru_cell / rnn_cell, on raw PyTorch-layout weights); `kindcallout`
and `kindfnout` pass out= buffers. float32, one thread (--threads: more).

Why processes and not one process: two builds in one process (threads_speedup.py --before) share
the core's L2. A step at (8, 128, 256) reads 1.5 MiB of weights, and with two builds' weights
side by side in a 2 MiB L2 each evicts the other's. Measured on a 2-vCPU Xeon (2 MiB L2): the
N = 1 step (1, 128, 256), whose code two builds shared, read 0.79x to 1.38x in in-process A/B
runs, and within 5% of 1.0 in alternated processes. Each round runs every build once, in turn (A, B, then B, A, ...: the order rotates), so a slow phase of a noisy
vCPU hits them alike; the table gives the median over rounds of each build's per-call time, its
ratio to the first build's, and whether the outputs are bitwise equal to the first build's.
"""
import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import hashlib, sys
import numpy as np
import gatedkernels as gk
from gatedkernels._timing import interleaved

gk.set_num_threads(int(sys.argv[1]))
for case in sys.argv[2:]:
    kind, a, n, h = case.split(":")
    a, n, h = int(a), int(n), int(h)
    rng = np.random.default_rng(0)
    if kind.endswith(("fn", "fnout", "call", "callout")):
        # a functional cell on raw PyTorch-layout weights, or a cell module's own call; "out":
        # into caller-owned buffers (out=)
        stem = kind[:-3] if kind.endswith("out") else kind
        base = stem[:-4] if stem.endswith("call") else stem[:-2]
        cls = {"lstm": gk.LSTMCell, "gru": gk.GRUCell, "rnn": gk.RNNCell}[base]
        module = cls(a, h, seed=0)
        sd = module.state_dict()
        w = [np.array(sd[k]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        x = rng.standard_normal((n, a)).astype(np.float32)
        h0 = rng.standard_normal((n, h)).astype(np.float32)
        hx = (h0, h0.copy()) if base == "lstm" else h0
        bufs = tuple(np.empty((n, h), np.float32) for _ in range(2))
        kw = {"out": bufs if base == "lstm" else bufs[0]} if kind.endswith("out") else {}
        if "call" in kind:
            fn = lambda: module(x, hx, **kw)
        else:
            call = getattr(gk, base + "_cell")
            fn = lambda: call(x, hx, *w, **kw)
        out = fn()
        digest = hashlib.sha1(np.asarray(out[0] if base == "lstm" else out).tobytes()).hexdigest()[:12]
    elif kind.endswith("cell"):
        cls = {"lstm": gk.LSTMCell, "gru": gk.GRUCell, "rnn": gk.RNNCell}[kind[:-4]]
        x = rng.standard_normal((n, a)).astype(np.float32)
        stream = cls(a, h, seed=0).stream(n)
        out = np.empty((n, h), np.float32)
        fn = lambda: stream.step(x, out)
        fn()
        digest = hashlib.sha1(out.tobytes()).hexdigest()[:12]
    else:
        cls = {"lstm": gk.LSTM, "gru": gk.GRU, "rnn": gk.RNN}[kind]
        x = rng.standard_normal((a, n, h)).astype(np.float32)
        m = cls(h, h, seed=0)
        fn = lambda: m(x)
        digest = hashlib.sha1(np.asarray(fn()[0]).tobytes()).hexdigest()[:12]
    t = interleaved({"a": fn}, rounds=3, target_s=0.05)["a"][0]
    print(case, t, digest, flush=True)
"""


def run_build(path, cases, threads=1):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
    # From an empty directory: the working directory must not shadow the build under test.
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), *cases], env=env, cwd=os.path.expanduser("~"),
                         check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        case, t, digest = line.split()
        rows[case] = (float(t), digest)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="append", required=True, metavar="NAME=DIR",
                    help="a build to time (give two or more; the first is the baseline)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="gk.set_num_threads for every build")
    ap.add_argument("cases", nargs="+", help="kind:T:N:H or kindcell:I:N:H")
    args = ap.parse_args(argv)
    builds = dict(b.split("=", 1) for b in args.build)
    if len(builds) < 2:
        ap.error("give at least two --build NAME=DIR")
    times = {name: {c: [] for c in args.cases} for name in builds}
    digests = {}
    order = list(builds.items())
    for _ in range(args.rounds):
        # Every build runs once per round, the order rotating from round to round, so no build
        # always runs first (a null A/B of one build against a copy of itself read 0.965-1.007x
        # with a fixed order).
        for name, path in order:
            for case, (t, digest) in run_build(path, args.cases, args.threads).items():
                times[name][case].append(t)
                digests[name, case] = digest
        order = order[1:] + order[:1]
    base = next(iter(builds))
    print(f"medians of {args.rounds} alternated rounds, {args.threads} thread(s), float32; ratio = {base} / build "
          f"(> 1: faster than {base}); '=' outputs bitwise equal to {base}'s, '!=' not")
    for case in args.cases:
        ref = statistics.median(times[base][case])
        cells = []
        for name in builds:
            med = statistics.median(times[name][case])
            same = "=" if digests[name, case] == digests[base, case] else "!="
            cells.append(f"{name} {med * 1e6:10.2f} us {ref / med:6.3f}x {same:>2}")
        print(f"{case:<20} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
