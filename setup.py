"""Build of the compiled extension only; metadata lives in pyproject.toml.

One extension, gatedkernels._ext: the Cython binding plus the C++ kernels of csrc/. The kernels
never include Python headers. GK_NATIVE=1 builds for this machine's CPU only (-march=native):
for local experiments, never for a wheel.
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# -ffp-contract=fast: let a * b + c become one FMA where the target has it (ISO C++ mode
# would otherwise forbid it); results stay deterministic for a given build.
compile_args = ["-O3", "-std=c++17", "-ffp-contract=fast", "-fvisibility=hidden", "-Wno-psabi"]
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

setup(ext_modules=cythonize([ext], compiler_directives={"language_level": "3"}))
