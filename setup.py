"""Build of the compiled extension only; metadata lives in pyproject.toml.

One extension, gatedkernels._ext: the Cython binding plus the C++ kernels of csrc/. The kernels
never include Python headers. GK_NATIVE=1 builds for this machine's CPU only (-march=native):
for local experiments, never for a wheel.
"""
import glob
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -ffp-contract=off: the compiler fuses no multiply and add by itself. The kernels write every
# FMA they mean (fmadd, csrc/gatedkernels/simd.h), so each value is rounded the same way in every
# instantiation of the code that computes it, and the results do not depend on which kernel path
# (thread count, epilogue) computed them.
# -g0: no debug information (Python's own CFLAGS ask for -g). The kernels' templates made it 40% of
# the compile time: measured on a 2-vCPU AMD EPYC (Zen 3), GCC 12, one translation unit at a time,
# kernels_avx512.cc 282 -> 191 s, kernels_avx2.cc 201 -> 118 s, kernels_generic.cc 206 -> 133 s,
# and the compiler's peak memory from 1.4 GB to 0.6 GB.
compile_args = ["-O3", "-g0", "-std=c++17", "-ffp-contract=off", "-fvisibility=hidden", "-Wno-psabi"]
if os.environ.get("GK_NATIVE") == "1":
    compile_args.append("-march=native")

ext = Extension(
    "gatedkernels._ext",
    sources=["gatedkernels/_ext.pyx", "csrc/dispatch.cc", "csrc/threads.cc", "csrc/kernels_generic.cc",
             "csrc/kernels_avx2.cc", "csrc/kernels_avx512.cc"],
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    depends=sorted(glob.glob("csrc/gatedkernels/*.h")),  # rebuild when a kernel header changes
    language="c++",
    extra_compile_args=compile_args,
    extra_link_args=["-pthread"],
)



def _cores():
    """Cores this process may run on (os.sched_getaffinity is Linux-only; macOS has cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ParallelBuildExt(build_ext):
    """Compiles an extension's sources side by side, one compiler process per core.

    The three ISA builds of the kernels take 30 s (Xeon, AVX-512) to 2-3 min (2-vCPU EPYC) each;
    one after the other they were most of the install time. Objects are the same as a serial build's: each source is compiled alone, with
    the same arguments, and linked in the original order. GK_BUILD_JOBS sets the number of jobs.
    """

    def build_extensions(self):
        jobs = int(os.environ.get("GK_BUILD_JOBS", "0")) or _cores()
        serial_compile = self.compiler.compile

        def compile(sources, *args, **kwargs):
            if jobs < 2 or len(sources) < 2:
                return serial_compile(sources, *args, **kwargs)
            # The ISA kernel builds first (they take longest) so that the last job to start is short.
            order = sorted(sources, key=lambda s: not os.path.basename(s).startswith("kernels_"))
            with ThreadPoolExecutor(jobs) as pool:
                objects = dict(zip(order, pool.map(lambda s: serial_compile([s], *args, **kwargs), order)))
            return [obj for s in sources for obj in objects[s]]

        self.compiler.compile = compile
        super().build_extensions()


setup(ext_modules=cythonize([ext], compiler_directives={"language_level": "3"}),
      cmdclass={"build_ext": ParallelBuildExt})
