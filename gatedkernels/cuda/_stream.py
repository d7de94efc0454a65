"""A cell's streaming state on the GPU: one step per call with as little host work as possible.

``s = cell.stream(N, device="cuda")``, then ``h = s.step(x)`` per time step. Everything but x is
made once: the weights' device copies, double-buffered state, the scratch the Cho GRU needs, and
the configured launchers (grid, block and stream fixed). A step converts x, launches (one
kernel; two for the Cho GRU) and flips the buffers: no allocation, no synchronisation.
"""
from __future__ import annotations

import numpy as np

from gatedkernels import _api
from gatedkernels._device import device_kind
from gatedkernels.cuda import _kernels
from gatedkernels.cuda._interop import dummy, library_of, zeros_1d
from gatedkernels.cuda._numba import cuda
from gatedkernels.cuda._run import _view


class DeviceStream:
    """Stateful one-step-per-call streaming of a cell module on the GPU.

    step(x) returns the new h as an array of x's library: a view of the stream's own state
    buffer, valid until the next step but one (copy it to keep it). ``h`` and ``c`` read the
    state, ``reset(h, c)`` sets it (None: zeros). The stream's CUDA stream is the caller's
    current stream when the first step runs (torch/CuPy), or the default stream.
    """

    def __init__(self, module, batch_size):
        self.N = _api.check_size(batch_size, "batch_size", 1)
        self._kind = module._kind
        self.dtype = module.dtype
        self.I, self.H = module.input_size, module.hidden_size
        p = module._device_params()
        G = _api.GATES[self._kind]
        dt = self.dtype
        self._w = (p["weight_ih"], p["weight_hh"],
                   p["bias_ih"] if "bias_ih" in p else zeros_1d(G * self.H, dt),
                   p["bias_hh"] if "bias_hh" in p else zeros_1d(G * self.H, dt))
        self._kernels, self._block, grid = _kernels.step_config(
            self._kind, module._lbr, module._relu, dt.name, self.N)
        self._grid = grid(self.H)
        self._hb = cuda.to_device(np.zeros((2, self.N, self.H), dt))
        lstm = self._kind == _api.LSTM
        self._cb = cuda.to_device(np.zeros((2, self.N, self.H), dt)) if lstm else None
        self._rh = (cuda.to_device(np.zeros((self.N, self.H), dt)) if len(self._kernels) == 2
                    else dummy(dt))
        self._cur = 0
        self._launchers = None  # configured on the first step, on the caller's stream
        self._lib = None
        self._results = None

    def _configure(self, x):
        self._lib = library_of(x, device_kind(x))
        s = self._lib.stream
        self._launchers = [k[self._grid, self._block, s] for k in self._kernels]
        d = dummy(self.dtype)
        h, c = [self._hb[i] for i in (0, 1)], ([self._cb[i] for i in (0, 1)] if self._cb
                                               is not None else [d, d])
        w_ih, w_hh, b_ih, b_hh = self._w
        # the argument tuples of both buffer parities, built once: step t reads parity t % 2
        self._args = [(h[i], c[i], w_ih, w_hh, b_ih, b_hh, h[1 - i], c[1 - i], self._rh)
                      for i in (0, 1)]
        self._results = [self._lib.result(self._hb[i]) for i in (0, 1)]

    def step(self, x):
        """One time step: x [N, I] (or [I] when N == 1), a device array; returns h."""
        if self._launchers is None:
            if device_kind(x) is None:
                raise TypeError(f"x: expected a CUDA device array, got {type(x).__name__}")
            self._configure(x)
        xv = _view(self._lib, x, "x", self.dtype)
        shape = tuple(xv.shape)
        if shape != (self.N, self.I):
            if shape == (self.I,) and self.N == 1:
                xv = xv.reshape(1, self.I)
            else:
                raise ValueError(f"x: expected [N, I] = [{self.N}, {self.I}], got {shape}")
        args = self._args[self._cur]
        for launch in self._launchers:
            launch(xv, *args)
        self._cur ^= 1
        return self._results[self._cur]

    @property
    def h(self):
        return self._hb[self._cur]

    @property
    def c(self):
        return None if self._cb is None else self._cb[self._cur]

    def reset(self, h=None, c=None):
        """Set the state (device or host arrays [N, H]; None: zeros)."""
        for buf, v, name in ((self._hb, h, "h"), (self._cb, c, "c")):
            if buf is None:
                if v is not None:
                    raise ValueError(f"{name}: only an LSTM stream has a cell state")
                continue
            target = buf[self._cur]
            if v is None:
                target.copy_to_device(np.zeros((self.N, self.H), self.dtype))
                continue
            if device_kind(v) is not None:
                a = library_of(v, device_kind(v)).view(v)
            else:
                a = _api.float_array(v, name, self.dtype)
            if tuple(a.shape) == (self.H,) and self.N == 1:
                a = a.reshape(1, self.H)
            _api.expect_shape(a, name, ("N", "H"), (self.N, self.H))
            if np.dtype(a.dtype) != self.dtype:
                raise TypeError(f"{name}: expected {self.dtype}, got {a.dtype}")
            target.copy_to_device(a if device_kind(a) is not None else np.ascontiguousarray(a))
