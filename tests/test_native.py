"""The C++ library on its own: tests/native/kernel_check.cc built from csrc/ with setup.py's flags,
with no Python in between. It checks every instruction-set build the CPU runs, float32 and
float64, every cell variant, steps and sequences, against its own scalar reference (SPEC §6's
bounds), and that 1 and 2 threads give the same bits.

Two builds: for this machine, and for AArch64 (the NEON build of kernels_generic.cc), which runs
under qemu-user when a cross compiler and qemu are installed (Debian/Ubuntu:
`apt-get install g++-aarch64-linux-gnu qemu-user`); skipped, saying so, where they are not. Each
with GCC (the Linux wheels' compiler) and with Clang when one is installed (`apt-get install
clang`): Clang is what builds the package on macOS, which this machine cannot run. A compiler
warning fails the build.
Slow (each compiles the kernels, 1-2 minutes): `pytest -m slow tests/test_native.py`.
"""
import ast
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gatedkernels import _ext

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CHECK = Path(__file__).resolve().parent / "native" / "kernel_check.cc"

pytestmark = pytest.mark.slow


def setup_compile_args():
    """setup.py's compile_args (one source of truth for the flags the kernels are built with)."""
    text = (ROOT / "setup.py").read_text()
    m = re.search(r"^compile_args = (\[.*?\])$", text, re.M)
    assert m, "setup.py: no `compile_args = [...]` line"
    return [a for a in ast.literal_eval(m.group(1)) if a != "-march=native"]


def clang():
    """A clang++ on PATH (plain, or the newest versioned one), else None."""
    names = ["clang++"] + [f"clang++-{v}" for v in range(30, 13, -1)]
    return next((p for p in map(shutil.which, names) if p), None)


def toolchain(compiler, aarch64):
    """(C++ compiler or None, its target flags) for "g++" or "clang++", for this machine or for
    AArch64 (GCC's cross compiler; Clang by --target, with the cross compiler's libraries)."""
    if compiler == "clang++":
        return clang(), ("--target=aarch64-linux-gnu",) if aarch64 else ()
    if aarch64:
        return shutil.which("aarch64-linux-gnu-g++"), ()
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++"), ()


def compile_flags(target):
    return [*target, *setup_compile_args(), f"-I{CSRC}"]


def build(cxx, out_dir, link_args=(), target=()):
    if not (CSRC.is_dir() and (ROOT / "setup.py").is_file()):
        pytest.skip("needs the source tree (csrc/, setup.py), not an installed wheel")
    flags = compile_flags(target)
    sources = sorted(CSRC.glob("*.cc")) + [CHECK]  # the x86 ISA files compile to nothing on Arm

    def compile_one(src):
        obj = out_dir / (src.stem + ".o")
        r = subprocess.run([cxx, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        assert r.returncode == 0, f"{cxx} {src.name}:\n{r.stderr[-4000:]}"
        assert "warning" not in r.stderr, f"{cxx} {src.name}:\n{r.stderr[-4000:]}"
        return obj

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    exe = out_dir / "kernel_check"
    r = subprocess.run([cxx, *target, *map(str, objects), "-pthread", *link_args, "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"link:\n{r.stderr[-4000:]}"
    return exe


def run_check(cmd, builds):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert re.fullmatch(rf"OK: {builds} builds, \d+ checks, 0 failed", summary), out[-6000:]
    return out


@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_native_library_on_this_machine(tmp_path, compiler):
    cxx, _ = toolchain(compiler, aarch64=False)
    if not cxx:
        pytest.skip(f"no {compiler}")
    exe = build(cxx, tmp_path)
    out = run_check([str(exe)], len(_ext.supported_isas()))
    for isa in _ext.supported_isas():
        assert re.search(rf"^{isa}: \d+ checks, 0 failed", out, re.M), out


@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_native_library_on_aarch64_under_qemu(tmp_path, compiler):
    qemu = shutil.which("qemu-aarch64")
    gxx = shutil.which("aarch64-linux-gnu-g++")  # Clang links with its libraries too
    cxx, target = toolchain(compiler, aarch64=True)
    if not (cxx and gxx and qemu):
        pytest.skip("needs aarch64-linux-gnu-g++, qemu-aarch64 and, for Clang, clang++ "
                    "(apt-get install g++-aarch64-linux-gnu qemu-user clang)")
    exe = build(cxx, tmp_path, link_args=["-static"], target=target)
    out = run_check([qemu, str(exe)], 1)
    assert re.search(r"^generic: \d+ checks, 0 failed \(block width: 4 floats, 2 doubles\)", out, re.M), out


def innermost_loops(asm):
    """(function, body lines) of each innermost loop of an AArch64 assembly listing (GCC's or
    Clang's): a label and a later branch back to it, with no branch target in between."""
    lines = asm.splitlines()
    branch = re.compile(r"\s(?:b\.?\w*|cbn?z|tbn?z)\s+(?:[\w#]+,\s*)*(\.L\w+)\s*(?://.*)?$")
    targets = {m.group(1) for m in map(branch.search, lines) if m}
    labels, funcs, func = {}, [], None
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if m:
            func = m.group(1)
        funcs.append(func)
        m = re.match(r"^(\.L\w+):", line)
        if m:
            labels[m.group(1)] = i
    for j, line in enumerate(lines):
        m = branch.search(line)
        i = labels.get(m.group(1)) if m else None
        if i is None or i >= j or any(
                (lm := re.match(r"^(\.L\w+):", x)) and lm.group(1) in targets
                for x in lines[i + 1:j]):
            continue
        yield funcs[i], [x.strip() for x in lines[i + 1:j + 1]
                         if x.strip() and not x.strip().startswith((".", "//"))
                         and not re.match(r"^\.L\w+:", x.strip())]


@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_aarch64_kernels_keep_accumulators_in_registers(tmp_path, compiler):
    """No ARM hardware times the AArch64 build here, so its code is checked instead: no inner loop
    of the kernels that runs vector FMAs (fmla) stores a vector register to the stack. GCC 12 once
    kept the dot products' accumulators in memory there, a load and a store per FMA chain per k
    (tile_dot_block, kernel.h), and a spill is the same cost. activation_t, the activations' entry
    point for tests/test_activations.py, is not a kernel and is left out. Both compilers: GCC
    builds the Linux wheels, Clang is macOS's."""
    cxx, target = toolchain(compiler, aarch64=True)
    if not cxx:
        pytest.skip("needs aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)"
                    if compiler == "g++" else "needs clang++ (apt-get install clang)")
    if not CSRC.is_dir():
        pytest.skip("needs the source tree (csrc/), not an installed wheel")
    asm = tmp_path / "kernels_generic.s"
    r = subprocess.run([cxx, *compile_flags(target), "-S",
                        str(CSRC / "kernels_generic.cc"), "-o", str(asm)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    demangle = shutil.which("aarch64-linux-gnu-c++filt") or shutil.which("c++filt")
    loops = [(f, body) for f, body in innermost_loops(asm.read_text())
             if sum(bool(re.match(r"fml[as]\s+v", x)) for x in body) >= 4]
    assert len(loops) > 100, f"only {len(loops)} FMA loops found: is the listing parsed?"
    spilling = [(f, body) for f, body in loops if "activation_t" not in f and
                any(re.match(r"st(?:r|p|ur)\s+q\d+.*\[sp\b", x) for x in body)]
    names = []
    for f, body in spilling[:5]:
        if demangle:
            f = subprocess.run([demangle, f], capture_output=True, text=True).stdout.strip()
        names.append(f[:200] + ":\n  " + "\n  ".join(body))
    assert not spilling, (f"{len(spilling)} of {len(loops)} FMA loops store vectors to the stack, "
                          "e.g.\n" + "\n".join(names))
