"""The C++ library on its own: tests/native/kernel_check.cc built from csrc/ with setup.py's flags,
with no Python in between. It checks every instruction-set build the CPU runs, float32 and
float64, every cell variant, steps and sequences, against its own scalar reference (SPEC §6's
bounds), and that 1 and 2 threads give the same bits.

Two builds: for this machine, and for AArch64 (the NEON build of kernels_generic.cc), which runs
under qemu-user when a cross compiler and qemu are installed (Debian/Ubuntu:
`apt-get install g++-aarch64-linux-gnu qemu-user`); skipped, saying so, where they are not.
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


def build(cxx, out_dir, link_args=()):
    if not (CSRC.is_dir() and (ROOT / "setup.py").is_file()):
        pytest.skip("needs the source tree (csrc/, setup.py), not an installed wheel")
    flags = setup_compile_args() + [f"-I{CSRC}"]
    sources = sorted(CSRC.glob("*.cc")) + [CHECK]  # the x86 ISA files compile to nothing on Arm

    def compile_one(src):
        obj = out_dir / (src.stem + ".o")
        r = subprocess.run([cxx, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        assert r.returncode == 0, f"{cxx} {src.name}:\n{r.stderr[-4000:]}"
        return obj

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    exe = out_dir / "kernel_check"
    r = subprocess.run([cxx, *map(str, objects), "-pthread", *link_args, "-o", str(exe)],
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


def test_native_library_on_this_machine(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler")
    exe = build(cxx, tmp_path)
    out = run_check([str(exe)], len(_ext.supported_isas()))
    for isa in _ext.supported_isas():
        assert re.search(rf"^{isa}: \d+ checks, 0 failed", out, re.M), out


def test_native_library_on_aarch64_under_qemu(tmp_path):
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if not (cxx and qemu):
        pytest.skip("needs aarch64-linux-gnu-g++ and qemu-aarch64 "
                    "(apt-get install g++-aarch64-linux-gnu qemu-user)")
    exe = build(cxx, tmp_path, link_args=["-static"])
    out = run_check([qemu, str(exe)], 1)
    assert re.search(r"^generic: \d+ checks, 0 failed \(block width: 4 floats, 2 doubles\)", out, re.M), out
