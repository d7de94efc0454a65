"""Build configuration and the instruction-set build in use.

Several builds of the kernels are compiled into one wheel ("generic" everywhere; "avx2" and
"avx512" on x86-64). At import the fastest one this CPU supports is chosen, unless the
environment variable GATEDKERNELS_ISA names another. `set_isa` / `use_isa` change it at run time:
modules pack their weights for the build in use when they (re)pack, and keep using that build.
"""
import contextlib
import os
import platform
import warnings

import numpy as np

from gatedkernels import _ext

ENV_ISA = "GATEDKERNELS_ISA"


def _initial_isa():
    wanted = os.environ.get(ENV_ISA, "").strip().lower()
    if not wanted:
        return _ext.best_isa()
    if wanted not in _ext.supported_isas():
        warnings.warn(
            f"{ENV_ISA}={wanted!r} is not a build this CPU can run "
            f"(compiled: {_ext.isa_names()}, supported here: {_ext.supported_isas()}); "
            f"using {_ext.best_isa()!r}",
            RuntimeWarning,
            stacklevel=3,
        )
        return _ext.best_isa()
    return wanted


_isa = _initial_isa()


def get_isa():
    """Name of the kernel build that new modules and functional calls use."""
    return _isa


def set_isa(name):
    """Use build `name` ("generic", "avx2", "avx512") from now on; returns the previous name.
    Modules built or re-packed before keep the build they packed for."""
    global _isa
    if name not in _ext.supported_isas():
        raise ValueError(f"isa: expected one of {_ext.supported_isas()} (builds this CPU can run), "
                         f"got {name!r}")
    previous, _isa = _isa, name
    return previous


@contextlib.contextmanager
def use_isa(name):
    """``with gk.use_isa("generic"): ...`` runs the block with another build."""
    previous = set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def get_num_threads():
    """Threads the kernels may use, the calling thread included. The default is 1 (or
    GATEDKERNELS_NUM_THREADS): NumPy's OpenBLAS keeps its workers spinning for ~0.1 s after each
    call, and parallel steps that meet at a barrier lose to them (measured: 2 threads slower than
    1 right after NumPy matmuls). `set_num_threads(os.cpu_count())` opts in (on Linux,
    `len(os.sched_getaffinity(0))` counts only the cores this process may use); a call
    still uses one thread when its time steps are too small to gain from more."""
    return _ext.get_num_threads()


def set_num_threads(n):
    """Let the kernels use up to `n` threads. Results are bitwise the same for any `n`."""
    from gatedkernels._api import check_size

    _ext.set_num_threads(check_size(n, "n", 1))


def config():
    """The build configuration as a dict."""
    from gatedkernels import __version__

    return {
        "version": __version__,
        "isa": _isa,
        "isa_best": _ext.best_isa(),
        "isa_compiled": _ext.isa_names(),
        "isa_supported": _ext.supported_isas(),
        "block_width": _ext.block_widths(_isa),
        "num_threads": _ext.get_num_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cuda": _cuda_status(),
    }


def _cuda_status():
    """What the GPU path would use, read from package metadata: nothing here imports numba."""
    from importlib import metadata

    try:
        version = metadata.version("numba-cuda")
    except metadata.PackageNotFoundError:
        return "not installed (pip install 'gatedkernels[cuda12]' or '[cuda13]')"
    import os

    gpu = "no NVIDIA driver found"
    try:
        if os.listdir("/proc/driver/nvidia/gpus"):
            gpu = "NVIDIA driver present"
    except OSError:
        pass
    return f"numba-cuda {version}, {gpu}; device arrays (torch, CuPy, Numba) run on the GPU"


def show_config():
    """Print the build configuration."""
    c = config()
    print(f"gatedkernels {c['version']}")
    print(f"  kernel build : {c['isa']} (block width float32 {c['block_width']['float32']}, "
          f"float64 {c['block_width']['float64']}); override with {ENV_ISA}=<name>")
    print(f"  builds       : compiled {', '.join(c['isa_compiled'])}; this CPU runs "
          f"{', '.join(c['isa_supported'])}")
    print(f"  threads      : {c['num_threads']} (gk.set_num_threads / GATEDKERNELS_NUM_THREADS)")
    print(f"  platform     : {c['machine']}, Python {c['python']}, NumPy {c['numpy']}")
    print(f"  cuda         : {c['cuda']}")
