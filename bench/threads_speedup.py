"""Speed-up of 2 threads over 1 thread for whole sequences (issue 3, threads part), float32.

    python bench/threads_speedup.py                  # T=100, N in {1,16,64}, H in {256,512}
    python bench/threads_speedup.py --blas           # an np.matmul before every call
    python bench/threads_speedup.py --rounds 15 --kinds lstm --n 1 16 --hidden 256
    python bench/threads_speedup.py --before /tmp/old/gatedkernels   # A/B against another build

Each shape runs gk.LSTM(H, H) / gk.GRU(H, H) on x [T, N, H]. The 1-thread and 2-thread calls
are timed in interleaved rounds (1T, 2T, 1T, 2T, ... in one process, see gatedkernels._timing),
so a slow phase of a noisy vCPU hits both alike; the table reports the medians over rounds and
their ratio. --before DIR loads a second build of the package (DIR: a built `gatedkernels`
package directory, copied to a temporary directory under another name) and times its 1T/2T calls
in the same rounds, so before and after see the same machine phases. With --blas every call is preceded by a float32 [H, H] x [H, H] np.matmul on
NumPy's default BLAS threads: its workers keep spinning for a while after the call and compete
with ours for the cores (the mixed-workload case).
"""
import argparse
import importlib
import os
import re
import shutil
import sys
import tempfile

import numpy as np

import gatedkernels as gk
from gatedkernels._timing import interleaved

KINDS = ("lstm", "gru")


def load_copy(pkg_dir, name="gk_before"):
    """Imports the package at pkg_dir (a built gatedkernels directory) as `name`."""
    root = tempfile.mkdtemp(prefix="gk_ab_")
    dst = os.path.join(root, name)
    shutil.copytree(pkg_dir, dst, ignore=shutil.ignore_patterns("__pycache__", "*.cpp"))
    for f in os.listdir(dst):
        if f.endswith(".py"):
            path = os.path.join(dst, f)
            with open(path) as fh:
                text = fh.read()
            with open(path, "w") as fh:
                fh.write(re.sub(r"\b(from|import) gatedkernels\b", rf"\1 {name}", text))
    sys.path.insert(0, root)
    return importlib.import_module(name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--n", nargs="+", type=int, default=[1, 16, 64], help="batch sizes")
    ap.add_argument("--hidden", nargs="+", type=int, default=[256, 512], help="I = H")
    ap.add_argument("--steps", type=int, default=100, help="T")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--target", type=float, default=0.05, help="seconds per timed batch")
    ap.add_argument("--blas", action="store_true", help="an np.matmul before every call")
    ap.add_argument("--before", metavar="DIR", help="a second build to time alongside")
    args = ap.parse_args(argv)

    builds = {"": gk}
    if args.before:
        builds = {"before ": load_copy(args.before), "after ": gk}
    rng = np.random.default_rng(0)
    saved = {tag: lib.get_num_threads() for tag, lib in builds.items()}
    print(f"{os.cpu_count()} CPUs; T={args.steps}; rounds={args.rounds}; "
          f"blas between calls: {args.blas}")
    for tag, lib in builds.items():
        print(f"{tag or 'build '}: {os.path.dirname(lib.__file__)}")
    header = f"{'shape':<22}" + "".join(
        f" {tag + '1T ms':>15} {tag + '2T ms':>15} {tag + 'speed-up':>16}" for tag in builds)
    print(header)
    print("-" * len(header))
    ratios = {tag: [] for tag in builds}
    try:
        for kind in args.kinds:
            for H in args.hidden:
                a = rng.standard_normal((H, H)).astype(np.float32)
                mods = {tag: getattr(lib, kind.upper())(H, H, seed=0) for tag, lib in builds.items()}
                for N in args.n:
                    x = rng.standard_normal((args.steps, N, H)).astype(np.float32)

                    def call(lib, m, n, x=x, a=a):
                        def run():
                            if args.blas:
                                np.matmul(a, a)
                            lib.set_num_threads(n)
                            return m(x)
                        return run

                    cands = {}
                    for tag, lib in builds.items():
                        cands[tag + "1T"] = call(lib, mods[tag], 1)
                        cands[tag + "2T"] = call(lib, mods[tag], 2)
                    res = interleaved(cands, rounds=args.rounds, target_s=args.target)
                    line = f"{kind} N={N} I=H={H}"
                    line = f"{line:<22}"
                    for tag in builds:
                        t1, t2 = res[tag + "1T"][0], res[tag + "2T"][0]
                        ratios[tag].append(t1 / t2)
                        line += f" {t1 * 1e3:15.2f} {t2 * 1e3:15.2f} {t1 / t2:15.2f}x"
                    print(line, flush=True)
    finally:
        for tag, lib in builds.items():
            lib.set_num_threads(saved[tag])
    for tag, r in ratios.items():
        print(f"{tag}speed-up: min {min(r):.2f}x, median {float(np.median(r)):.2f}x, "
              f"max {max(r):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
