"""What this build is: version, kernel build in use, packed block widths."""
import platform

import numpy as np

from gatedkernels import _ext


def config():
    """The build configuration as a dict."""
    from gatedkernels import __version__

    info = _ext.build_info()
    return {
        "version": __version__,
        "kernel_build": info["isa"],
        "block_width": {"float32": info["block_width_float32"],
                        "float64": info["block_width_float64"]},
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def show_config():
    """Print the build configuration."""
    c = config()
    print(f"gatedkernels {c['version']}")
    print(f"  kernel build : {c['kernel_build']} (block width float32 {c['block_width']['float32']}, "
          f"float64 {c['block_width']['float64']})")
    print(f"  platform     : {c['machine']}, Python {c['python']}, NumPy {c['numpy']}")
