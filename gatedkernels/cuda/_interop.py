"""The caller's array library on the device: views for the kernels, outputs of the same kind.

A call works in the library of its `x`: torch CUDA tensors in give torch tensors out, CuPy gives
CuPy, Numba device arrays give Numba device arrays. Kernels get zero-copy Numba views
(`cuda.as_cuda_array(..., sync=False)`: no host synchronisation), launched on the library's
current stream; new arrays come from the library's own caching allocator; the input projection
uses the library's GEMM (cuBLAS for torch and CuPy), or gatedkernels' tiled kernel for Numba
arrays.
"""
from __future__ import annotations

import functools
import sys

import numpy as np

from gatedkernels.cuda import _kernels
from gatedkernels.cuda._numba import SIMULATOR, cuda

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=64)
def _external_stream(ptr):
    return cuda.external_stream(ptr)


def _numba_stream(ptr):
    if SIMULATOR or not ptr:
        return cuda.default_stream()
    return _external_stream(ptr)


class NumbaLib:
    """Numba device arrays (and any object with __cuda_array_interface__)."""

    name = "numba"

    def __init__(self):
        self.stream = cuda.default_stream()

    def view(self, a):
        if SIMULATOR or hasattr(a, "_numba_type_"):
            return a
        return cuda.as_cuda_array(a, sync=False)

    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype, stream=self.stream)

    def zeros(self, shape, dtype):
        a = self.empty(shape, dtype)
        fill_zero(a, self.stream)
        return a

    def result(self, v):
        return v

    def cast(self, a, dtype, name):
        """A new C-contiguous array of `dtype` with a's values (a copy kernel on the device)."""
        v = self.view(a)
        shape = tuple(v.shape)
        out = self.empty(shape, dtype)
        if len(shape) == 2:
            copy2d(v, out, self.stream)
        elif len(shape) == 1:
            if not v.is_c_contiguous():
                raise TypeError(f"{name}: expected {np.dtype(dtype)}, got a strided {v.dtype} "
                                f"device vector (cast it first)")
            copy2d(v.reshape(1, shape[0]), out.reshape(1, shape[0]), self.stream)
        elif v.is_c_contiguous():
            rows = int(np.prod(shape[:-1]))
            copy2d(v.reshape(rows, shape[-1]), out.reshape(rows, shape[-1]), self.stream)
        else:
            for i in range(shape[0]):  # a strided 3-D array: one 2-D copy per leading index
                copy2d(v[i], out[i], self.stream)
        return out

    def addmm(self, a, w, b, out):
        """out = a @ w.T + b on Numba views."""
        dt = out.dtype.name
        grid, block = _kernels.gemm_grid(a.shape[0], w.shape[0])
        _kernels.gemm_bias_kernel(dt)[grid, block, self.stream](a, w, b, out)


class TorchLib(NumbaLib):
    name = "torch"

    def __init__(self, like):
        self.torch = sys.modules["torch"]
        self.device = like.device
        self.stream = _numba_stream(self.torch.cuda.current_stream(self.device).cuda_stream)
        self.dtypes = {np.dtype(np.float32): self.torch.float32,
                       np.dtype(np.float64): self.torch.float64}

    def view(self, a):
        if hasattr(a, "_numba_type_"):  # already a Numba array (a module's weights)
            return a
        if type(a).__module__.startswith("torch"):
            a = a.detach()
        return cuda.as_cuda_array(a, sync=False)

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self.dtypes[np.dtype(dtype)], device=self.device)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=self.dtypes[np.dtype(dtype)], device=self.device)

    def result(self, v):
        return self.torch.as_tensor(v, device=self.device)

    def cast(self, a, dtype, name):
        return self.torch.as_tensor(a, device=self.device).to(self.dtypes[np.dtype(dtype)])

    def addmm(self, a, w, b, out):
        t = self.torch
        t.addmm(t.as_tensor(b, device=self.device), t.as_tensor(a, device=self.device),
                t.as_tensor(w, device=self.device).T, out=t.as_tensor(out, device=self.device))


class CupyLib(NumbaLib):
    name = "cupy"

    def __init__(self, like):
        self.cp = sys.modules["cupy"]
        self.stream = _numba_stream(self.cp.cuda.get_current_stream().ptr)

    def view(self, a):
        if hasattr(a, "_numba_type_"):
            return a
        return cuda.as_cuda_array(a, sync=False)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return self.cp.zeros(shape, dtype)

    def result(self, v):
        return self.cp.asarray(v)

    def cast(self, a, dtype, name):
        return self.cp.asarray(a).astype(dtype)

    def addmm(self, a, w, b, out):
        cp = self.cp
        o = cp.asarray(out)
        cp.matmul(cp.asarray(a), cp.asarray(w).T, out=o)
        o += cp.asarray(b)


def library_of(x, kind):
    if kind == "torch":
        return TorchLib(x)
    if kind == "cupy":
        return CupyLib(x)
    return NumbaLib()


def fill_zero(a2, stream):
    """Zero a 2-D Numba view (or every [.., C] row of a higher-rank C-contiguous one)."""
    shape = tuple(a2.shape)
    if len(shape) != 2:
        a2 = a2.reshape(int(np.prod(shape[:-1])), shape[-1])
    grid, block = _kernels.copy_grid(a2.shape[0] * a2.shape[1])
    _kernels.copy_kernel(a2.dtype.name)[grid, block, stream](a2, a2, True)


def copy2d(src, dst, stream):
    grid, block = _kernels.copy_grid(dst.shape[0] * dst.shape[1])
    _kernels.copy_kernel(dst.dtype.name)[grid, block, stream](src, dst, False)


_dummies = {}


def dummy(dtype):
    """A 1x1 device array for the kernel arguments a cell does not use."""
    key = np.dtype(dtype).name
    if key not in _dummies:
        _dummies[key] = cuda.to_device(np.zeros((1, 1), dtype))
    return _dummies[key]


_zeros = {}


def zeros_1d(n, dtype):
    """A cached zero vector [n]: the bias of a call that has none."""
    key = (n, np.dtype(dtype).name)
    if key not in _zeros:
        _zeros[key] = cuda.to_device(np.zeros(n, dtype))
    return _zeros[key]
