"""A/B of kernel builds in one process, alternated call by call: the way to see a 5% change on a
noisy machine.

    python bench/ab_kernels.py --build new=/tmp/new/csrc seq:lstm:100:16:256 step:gru:8:128:256
    python bench/ab_kernels.py --build a=/tmp/a/csrc --build b=/tmp/b/csrc --pairs 31 seq:gru:50:16:512

The base is this checkout's `csrc/`; each `--build NAME=DIR` is another kernel source tree (a
`csrc/` directory, or a checkout that has one: a `git worktree` of another commit, a patched
copy). For each build, one file, `kernels_<isa>.cc` of the chosen instruction set (--isa; the
best this CPU runs by default), is compiled into a namespace of its own, with setup.py's flags,
and a C++ driver (bench/ab_kernels.cc) links them all with this checkout's threads.cc. A build
may change anything that file compiles (csrc/gatedkernels/*.h, the ISA file); threads.cc and
dispatch.cc are the base's. Objects are cached under build/ab_kernels by a hash of their sources.

Cases: `seq:KIND:T:N:H` (a T-step sequence, I = H) and `step:KIND:N:I:H` (one cell step, input
projection included), KIND lstm, gru (reset after, PyTorch's), gru_cho or rnn; float32, one
thread unless --threads (GATEDKERNELS_NUM_THREADS).

Every build runs on the same packed weights (one buffer, when they pack them to the same bytes)
and the same inputs, so only their code differs: unlike two Python builds in one process
(bench/ab_builds.py explains why it runs each build in its own processes), they do not
evict each other's weights from L2. Each round times every build once (samples of --sample-ms),
in an order that rotates; a ratio is the median over rounds of base time / build time (> 1: the
build is faster). A **null** build, the base's source compiled again, runs alongside unless
--no-null: its ratio is the noise floor of that case (code placement and the machine), and a
build's ratio means something only as far as it stands outside the null's. Measured on a 2-vCPU
AMD EPYC (Zen 3), whose vCPUs switch between a slow and a fast state for seconds at a time:
alternated processes (bench/ab_builds.py, or two driver binaries) gave null ratios of
0.96-1.11 and a 1.36x "gain" that the next run put at 0.98x; this gave 0.98-1.02 for shapes
whose weights fit in L2 (0.87-0.94 at H >= 512, where L3 is shared with other tenants).
"""
import argparse
import hashlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# setup.py's compile_args, after the flags Python's own build adds (sysconfig CFLAGS)
FLAGS = ["-DNDEBUG", "-fwrapv", "-fPIC", "-O3", "-g0", "-std=c++17", "-ffp-contract=off",
         "-fvisibility=hidden", "-Wno-psabi"]
ISAS = ("generic", "avx2", "avx512")
CASE = re.compile(r"(seq|step):(lstm|gru|gru_cho|rnn)(:[1-9][0-9]*){3}")


def best_isa():
    """The build the installed package's dispatch picks on this CPU (its own feature checks,
    OS register support included)."""
    from gatedkernels import _ext
    return _ext.best_isa()


def source_dir(path):
    p = Path(path).resolve()
    if (p / "csrc" / "gatedkernels").is_dir():
        p = p / "csrc"
    if not (p / "gatedkernels" / "kernel.h").is_file():
        raise SystemExit(f"{path}: not a kernel source tree (no gatedkernels/kernel.h)")
    return p


def digest(paths, extra):
    h = hashlib.sha1(extra.encode())
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def compile_build(src, isa, ns, work, cxx):
    """kernels_<isa>.cc of `src`, renamed into namespace `ns`, as a cached object."""
    text = (src / f"kernels_{isa}.cc").read_text()
    renamed = text.replace(f"#define GK_ISA {isa}", f"#define GK_ISA {ns}").replace(
        f"GK_DEFINE_OPS({isa})", f"GK_DEFINE_OPS({ns})")
    if renamed.count(ns) < 2:
        raise SystemExit(f"{src}/kernels_{isa}.cc: no '#define GK_ISA {isa}' and "
                         f"'GK_DEFINE_OPS({isa})' to rename")
    headers = list((src / "gatedkernels").glob("*.h"))
    key = digest(headers + [src / f"kernels_{isa}.cc"], " ".join([cxx, ns, isa] + FLAGS))
    obj = work / f"{ns}-{key}.o"
    if not obj.exists():
        cc = work / f"{ns}-{key}.cc"
        cc.write_text(renamed)
        subprocess.run([cxx, *FLAGS, f"-I{src}", "-c", str(cc), "-o", str(obj) + ".tmp"],
                       check=True)
        os.replace(str(obj) + ".tmp", obj)
    return obj


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+", help="seq:KIND:T:N:H or step:KIND:N:I:H")
    ap.add_argument("--build", action="append", default=[], metavar="NAME=DIR",
                    help="a kernel source tree to time against the base (repeatable)")
    ap.add_argument("--isa", choices=ISAS, default=None, help="default: the best this CPU runs")
    ap.add_argument("--pairs", type=int, default=21, help="rounds (default 21)")
    ap.add_argument("--sample-ms", type=float, default=10.0, help="time per sample (default 10)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-null", action="store_true", help="leave out the null build")
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    args = ap.parse_args(argv)

    for case in args.cases:
        if not CASE.fullmatch(case):
            raise SystemExit(f"case {case!r}: want seq:KIND:T:N:H or step:KIND:N:I:H, KIND one of "
                             "lstm, gru, gru_cho, rnn, sizes >= 1")
    isa = args.isa or best_isa()
    builds = [("base", source_dir(ROOT / "csrc"))]
    if not args.no_null:
        builds.append(("null", builds[0][1]))
    for spec in args.build:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"--build {spec!r}: want NAME=DIR")
        builds.append((name, source_dir(path)))
    if len(builds) < 2:
        raise SystemExit("nothing to compare: give --build NAME=DIR, or drop --no-null")
    work = ROOT / "build" / "ab_kernels"
    work.mkdir(parents=True, exist_ok=True)

    print(f"compiling {len(builds)} builds of kernels_{isa}.cc (minutes; cached in {work})",
          flush=True)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        jobs = [pool.submit(compile_build, src, isa, f"ab_{i}", work, args.cxx)
                for i, (_, src) in enumerate(builds)]
        objs = [j.result() for j in jobs]
    base = builds[0][1]
    listing = " ".join(f"X(ab_{i})" for i in range(len(builds)))
    driver = work / f"driver-{digest([Path(o) for o in objs] + [base / 'threads.cc', ROOT / 'bench' / 'ab_kernels.cc'], listing)}"
    if not driver.exists():
        subprocess.run([args.cxx, "-O2", "-std=c++17", "-pthread", f"-I{base}",
                        f"-DGK_AB_BUILDS={listing}", str(ROOT / "bench" / "ab_kernels.cc"),
                        str(base / "threads.cc"), *map(str, objs), "-o", str(driver) + ".tmp"],
                       check=True)
        os.replace(str(driver) + ".tmp", driver)

    env = dict(os.environ, GATEDKERNELS_NUM_THREADS=str(args.threads))
    names = [n for n, _ in builds[1:]]
    print(f"isa {isa}; {args.threads} thread(s); {args.pairs} rounds of {args.sample_ms:g} ms "
          "samples; ratio = base time / build time (> 1: faster), '*': outputs not bitwise equal")
    print(f"{'case':<26}{'base':>12}{'GFLOP/s':>9}" + "".join(f"{n:>12}" for n in names))
    for case in args.cases:
        out = subprocess.run([str(driver), str(args.pairs), str(args.sample_ms), case], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr.strip() or f"driver failed on {case}")
        f = out.stdout.split()
        secs, gflops, rest = float(f[1]), float(f[2]), f[3:]
        t = f"{secs * 1e3:.3f} ms" if secs >= 1e-3 else f"{secs * 1e6:.2f} us"
        cells = "".join(f"{float(rest[2 * i]):>11.3f}{'*' if rest[2 * i + 1] == '0' else ' '}"
                        for i in range(len(names)))
        print(f"{case:<26}{t:>12}{gflops:>9.1f}{cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
