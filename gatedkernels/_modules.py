"""Modules with PyTorch's constructor arguments, parameter names and call signatures.

A module owns its parameters (read-only NumPy arrays under PyTorch's names) and a kernel object
holding them packed once. Assigning a parameter (``m.weight_hh_l0 = w``) or ``load_state_dict``
checks and re-packs; the arrays are read-only so that an in-place edit cannot leave the packed
copy silently stale.
"""
from __future__ import annotations

import math

import numpy as np

from gatedkernels import _api, _config, _ext, reference
from gatedkernels._device import cuda_module, device_kind, refuse_out
from gatedkernels._api import check_size, float_array, to_numpy

# Cell kinds (the class names LSTM, GRU, RNN below are the modules).
LSTM_KIND, GRU_KIND, RNN_KIND = _api.LSTM, _api.GRU, _api.RNN

_BACKENDS = ("cpu", "reference")


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in _api.FLOAT_DTYPES:
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
    return backend


def _check_dropout(dropout):
    """Accepted for drop-in compatibility; like torch in eval mode it has no effect (these
    modules run inference only)."""
    p = float(dropout)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
    return p


def _torch_dtype(module):
    """float32 or float64 from a torch module's first parameter (duck typing, no torch import)."""
    sd = module.state_dict()
    for v in sd.values():
        s = str(getattr(v, "dtype", ""))
        if s.endswith("float64"):
            return np.float64
        if s.endswith("float32"):
            return np.float32
        raise TypeError(f"from_torch: parameters must be float32 or float64, got {s}")
    return np.float32


class _Module:
    """Parameter storage shared by the cell and sequence modules."""

    _kind: int

    def _init_common(self, kind, input_size, hidden_size, bias, lbr, relu, dtype, backend):
        object.__setattr__(self, "_params", None)
        self._kind = kind
        self.input_size = check_size(input_size, "input_size", 1)
        self.hidden_size = check_size(hidden_size, "hidden_size", 1)
        self.bias = bool(bias)
        self.dtype = _check_dtype(dtype)
        self.backend = _check_backend(backend)
        self._lbr, self._relu = lbr, relu
        self.device = "cpu"
        object.__setattr__(self, "_dev", None)

    def _init_params(self, seed, rng):
        rng = np.random.default_rng(seed) if rng is None else rng
        k = 1.0 / math.sqrt(self.hidden_size)
        params = {}
        for name, (_, shape) in self._shapes().items():
            params[name] = rng.uniform(-k, k, size=shape)
        self._load(params)

    def _load(self, mapping):
        params = _api.load_params(mapping, **self._load_args())
        object.__setattr__(self, "_params", params)
        self._pack()
        object.__setattr__(self, "_dev", None)  # device copies are of the old weights
        if self.device == "cuda":
            self._device_params()

    def _place(self, device):
        if device is not None:
            self.to(device)

    def to(self, device):
        """``to("cuda")`` keeps device copies of the weights (needs gatedkernels[cuda12] or
        [cuda13]) for calls on device arrays; ``to("cpu")`` drops them. Returns self. NumPy input
        always runs on the CPU; device input (torch CUDA tensors, CuPy, Numba) always runs on the
        GPU, uploading the weights on first use when the module was not moved."""
        dev = str(device)
        if dev.startswith("cuda"):
            object.__setattr__(self, "device", "cuda")
            self._device_params()
        elif dev == "cpu":
            object.__setattr__(self, "device", "cpu")
            object.__setattr__(self, "_dev", None)
        else:
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        return self

    def _device_params(self):
        """{name: Numba device array} of the parameters, uploaded once per weight change."""
        dev = self.__dict__.get("_dev")
        if dev is None:
            dev = cuda_module().to_device_params(self._params)
            object.__setattr__(self, "_dev", dev)
        return dev

    def __getattr__(self, name):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            self._load({**params, name: value})
        else:
            object.__setattr__(self, name, value)

    def __getstate__(self):
        # The packed kernel is not pickled: it is rebuilt from the parameters on load, for the
        # kernel build of the loading process (its CPU may differ).
        state = dict(self.__dict__)
        state.pop("_kernel", None)
        state["_dev"] = None  # device copies are re-made on first use in the loading process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pack()

    def state_dict(self):
        """{PyTorch name: read-only ndarray} (the module's own arrays, not copies)."""
        return dict(self._params)

    def load_state_dict(self, state_dict):
        """Load a mapping of PyTorch names to arrays (NumPy, torch tensors, lists ...): every name
        and shape is checked, values are cast to the module's dtype and the kernel re-packed."""
        self._load(state_dict)

    def parameters(self):
        return list(self._params.values())

    @property
    def isa(self):
        """The kernel build this module's weights are packed for (None with the reference)."""
        return None if self._kernel is None else self._kernel.isa

    @property
    def packed_bytes(self):
        """Bytes of packed weights the kernel holds (0 with the reference backend)."""
        return 0 if self._kernel is None else self._kernel.packed_bytes


class _CellModule(_Module, _ext.CellCall):
    # __call__ is _ext.CellCall's (in C): plain arrays go to the kernel, the rest to _call.

    def __init__(self, kind, input_size, hidden_size, bias, lbr, relu, dtype, seed, rng, backend):
        self._init_common(kind, input_size, hidden_size, bias, lbr, relu, dtype, backend)
        self._init_params(seed, rng)

    def _shapes(self):
        return _api.param_shapes_cell(self._kind, self.input_size, self.hidden_size, self.bias)

    def _load_args(self):
        return dict(kind=self._kind, I=self.input_size, H=self.hidden_size, num_layers=1,
                    bidirectional=False, bias=self.bias, proj=0, dtype=self.dtype, cell=True)

    def _pack(self):
        p = self._params
        kernel = None
        if self.backend == "cpu":
            kernel = _ext.Kernel(
                self._kind, self._lbr, self._relu, self.dtype, self.input_size, self.hidden_size,
                self.hidden_size, 1, 1,
                [(p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"), None)],
                _config.get_isa(),
            )
        object.__setattr__(self, "_kernel", kernel)

    def _step(self, x, h, c, out=None):
        """Shared cell call, what _ext.CellCall.__call__ did not run in C: returns (h1, c1), c1
        None unless LSTM; `out` as in _api._outputs."""
        dt = self.dtype
        if device_kind(x) is not None:
            return self._step_device(x, h, c, out)
        x = float_array(x, "x", dt)
        I, H = self.input_size, self.hidden_size
        if x.ndim == 1:
            _api.expect_shape(x, "x", ("I",), (I,))
        elif x.ndim == 2:
            _api.expect_shape(x, "x", ("N", "I"), (x.shape[0], I))
        else:
            raise ValueError(f"x: expected [N, I] = [N, {I}] or [I], got {x.shape}")
        unbatched = x.ndim == 1
        X = x[None] if unbatched else x
        N = X.shape[0]
        lstm = self._kind == LSTM_KIND
        h = _api.cell_state(h, "h", "H", N, H, dt, unbatched)
        if lstm:
            c = _api.cell_state(c, "c", "H", N, H, dt, unbatched)
        if self.backend == "reference":
            if out is not None:
                raise ValueError("out: needs the compiled backend, not backend='reference'")
            p = self._params
            args = (X, (h, c) if lstm else h, p["weight_ih"], p["weight_hh"], p.get("bias_ih"),
                    p.get("bias_hh"))
            if lstm:
                h1, c1 = reference.lstm_cell(*args)
            elif self._kind == GRU_KIND:
                h1, c1 = reference.gru_cell(*args, linear_before_reset=self._lbr), None
            else:
                h1, c1 = reference.rnn_cell(*args, nonlinearity=self.nonlinearity), None
        else:
            h1, c1, ret = _api._outputs(self._kind, out, N, H, H, dt, (X, h, c))
            self._kernel.step(X, h, c, h1, c1)
            if ret is not None:
                return ret
        if unbatched:
            return h1[0], None if c1 is None else c1[0]
        return h1, c1

    def _step_device(self, x, h, c, out):
        refuse_out(out)
        p = self._device_params()
        return cuda_module()._run.cell(
            self._kind, x, h, c, p["weight_ih"], p["weight_hh"], p.get("bias_ih"),
            p.get("bias_hh"), None, self._lbr, self._relu, dtype=self.dtype, I=self.input_size)

    def stream(self, batch_size=1, hx=None, *, device="cpu"):
        """A stateful streaming object for this cell: ``s = cell.stream(N)``, then per time step
        ``s.step(x, out)`` (x [N, I], or [I] when N == 1) writes the new hidden state into `out`
        and allocates nothing; ``out=None`` returns a new array. ``s.h`` / ``s.c`` read the state,
        ``s.reset(h, c)`` sets it. The stream keeps the weights packed at this moment.

        ``device="cuda"``: the same on the GPU (``gatedkernels.cuda.DeviceStream``): ``h =
        s.step(x)`` takes a device array and returns the new state as an array of x's library
        (a view of the stream's buffer, valid until the step after next)."""
        if str(device).startswith("cuda"):
            s = cuda_module().DeviceStream(self, batch_size)
            if hx is not None:
                h, c = _api.split_lstm_hx(hx) if self._kind == LSTM_KIND else (hx, None)
                s.reset(h, c)
            return s
        if device != "cpu":
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if self._kernel is None:
            raise ValueError("stream() needs the compiled backend, not backend='reference'")
        s = _ext.Stream(self._kernel, check_size(batch_size, "batch_size", 1))
        if hx is not None:
            h, c = _api.split_lstm_hx(hx) if self._kind == LSTM_KIND else (hx, None)
            N, H = s.N, self.hidden_size
            one_row = N == 1 and np.ndim(h) == 1  # [H] for a single-row stream
            h = _api.cell_state(h, "h", "H", N, H, self.dtype, one_row)
            if c is not None:
                c = _api.cell_state(c, "c", "H", N, H, self.dtype, one_row)
            s.reset(h, c)
        return s

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, bias={self.bias}, "
                f"dtype={self.dtype.name})")

    @classmethod
    def _from_torch(cls, module, **kw):
        kind_name = type(module).__name__
        if kind_name != cls.__name__:
            raise TypeError(f"from_torch: expected a torch.nn.{cls.__name__}, got {kind_name}")
        m = cls(module.input_size, module.hidden_size, bias=bool(module.bias),
                dtype=_torch_dtype(module), **kw)
        m.load_state_dict(module.state_dict())
        return m


class LSTMCell(_CellModule):
    """``torch.nn.LSTMCell``: ``h1, c1 = cell(x, (h, c))``; x [N, I] or [I]."""

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=None,
                 rng=None, backend="cpu", device=None):
        super().__init__(LSTM_KIND, input_size, hidden_size, bias, True, False, dtype, seed, rng,
                         backend)
        self._place(device)

    def _call(self, x, hx, out):
        """out=(h1, c1): caller-owned buffers [N, H] written in place (no allocation)."""
        h, c = _api.split_lstm_hx(hx)
        return self._step(x, h, c, out)

    @classmethod
    def from_torch(cls, module, **kw):
        return cls._from_torch(module, **kw)


class GRUCell(_CellModule):
    """``torch.nn.GRUCell``: ``h1 = cell(x, h)``; ``linear_before_reset=False`` for the Cho et al.
    / ONNX-default / Keras ``reset_after=False`` variant."""

    def __init__(self, input_size, hidden_size, bias=True, *, linear_before_reset=True,
                 dtype=np.float32, seed=None, rng=None, backend="cpu", device=None):
        self.linear_before_reset = bool(linear_before_reset)
        super().__init__(GRU_KIND, input_size, hidden_size, bias, self.linear_before_reset, False,
                         dtype, seed, rng, backend)
        self._place(device)

    def _call(self, x, hx, out):
        """out=h1: a caller-owned buffer [N, H] written in place (no allocation)."""
        return self._step(x, hx, None, out)[0]

    @classmethod
    def from_torch(cls, module, **kw):
        return cls._from_torch(module, **kw)


class RNNCell(_CellModule):
    """``torch.nn.RNNCell``: ``h1 = cell(x, h)``, nonlinearity 'tanh' or 'relu'."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *,
                 dtype=np.float32, seed=None, rng=None, backend="cpu", device=None):
        relu = _api.check_nonlinearity(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(RNN_KIND, input_size, hidden_size, bias, True, relu, dtype, seed, rng,
                         backend)
        self._place(device)

    def _call(self, x, hx, out):
        """out=h1: a caller-owned buffer [N, H] written in place (no allocation)."""
        return self._step(x, hx, None, out)[0]

    @classmethod
    def from_torch(cls, module, **kw):
        if type(module).__name__ != cls.__name__:
            raise TypeError(f"from_torch: expected a torch.nn.{cls.__name__}, got "
                            f"{type(module).__name__}")
        return cls._from_torch(module, nonlinearity=module.nonlinearity, **kw)


class _SequenceModule(_Module, _ext.SeqCall):
    # __call__ is _ext.SeqCall's (in C): plain arrays go to the kernel, the rest to _forward.

    def __init__(self, kind, input_size, hidden_size, num_layers, bias, batch_first,
                 bidirectional, proj_size, lbr, relu, dtype, seed, rng, backend):
        self._init_common(kind, input_size, hidden_size, bias, lbr, relu, dtype, backend)
        self.num_layers = check_size(num_layers, "num_layers", 1)
        self.proj_size = check_size(proj_size, "proj_size", 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size: expected 0 <= proj_size < hidden_size = {self.hidden_size}, "
                f"got {self.proj_size}"
            )
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self._init_params(seed, rng)

    def _shapes(self):
        return _api.param_shapes(self._kind, self.input_size, self.hidden_size, self.num_layers,
                                 self.bidirectional, self.bias, self.proj_size)

    def _load_args(self):
        return dict(kind=self._kind, I=self.input_size, H=self.hidden_size,
                    num_layers=self.num_layers, bidirectional=self.bidirectional, bias=self.bias,
                    proj=self.proj_size, dtype=self.dtype)

    def _pack(self):
        kernel = None
        if self.backend == "cpu":
            tuples = _api.layer_tuples(self._params, self.num_layers, self.bidirectional,
                                       self.bias, self.proj_size)
            kernel = _ext.Kernel(
                self._kind, self._lbr, self._relu, self.dtype, self.input_size, self.hidden_size,
                self.proj_size or self.hidden_size, self.num_layers,
                2 if self.bidirectional else 1, tuples, _config.get_isa(),
            )
        object.__setattr__(self, "_kernel", kernel)

    def _forward(self, x, hx, lengths):
        """What _ext.SeqCall.__call__ does not run in C -> (y, hn, cn): casts, lists, device
        arrays, the reference backend, and every error."""
        if device_kind(x) is not None:
            p = self._device_params()
            D = 2 if self.bidirectional else 1
            layers = _api.layer_tuples(p, self.num_layers, self.bidirectional, self.bias,
                                       self.proj_size)
            return cuda_module()._run.sequence(
                self._kind, self._lbr, self._relu, layers, self.input_size, self.hidden_size,
                self.num_layers, D, x, hx, lengths, self.batch_first, dtype=self.dtype,
                P=self.proj_size or self.hidden_size)
        if self.backend == "cpu":
            return _api.run_sequence(self._kernel, x, hx, lengths, self.batch_first, self.dtype)
        # The reference backend: the same validation, then the NumPy oracle.
        D = 2 if self.bidirectional else 1
        call = _api.SequenceCall(self._kind, self.input_size, self.hidden_size,
                                 self.proj_size or self.hidden_size, self.num_layers, D, x, hx,
                                 lengths, self.batch_first, self.dtype)
        kw = dict(num_layers=self.num_layers, bidirectional=self.bidirectional,
                  batch_first=call.batch_first, lengths=call.lengths)
        if self._kind == LSTM_KIND:
            y, (hn, cn) = reference.lstm(call.X, call.hx(), self._params, **kw)
        elif self._kind == GRU_KIND:
            y, hn = reference.gru(call.X, call.hx(), self._params,
                                  linear_before_reset=self._lbr, **kw)
            cn = None
        else:
            y, hn = reference.rnn(call.X, call.hx(), self._params,
                                  nonlinearity=self.nonlinearity, **kw)
            cn = None
        return call.finish(y, hn, cn)

    def stream(self, batch_size=1, hx=None):
        """A stateful streaming object for a unidirectional module: ``s = lstm.stream(N)``, then
        per time step ``s.step(x, out)`` (x [N, I], or [I] when N == 1) runs that step through
        every layer, writes the last layer's new hidden state into `out` ([N, P]) and allocates
        nothing; ``out=None`` returns a new array. ``hx`` is the module's (h0 [L, N, P], or
        [L, P] when N == 1; an LSTM's (h0, c0)); ``s.h`` / ``s.c`` read the state as h_n / c_n,
        ``s.reset(h, c)`` sets it. The same numbers as calling the module one step at a time
        with the state passed along. CPU only; the weights packed at this moment are kept."""
        if self._kernel is None:
            raise ValueError("stream() needs the compiled backend, not backend='reference'")
        if self.bidirectional:
            raise ValueError("stream(): a bidirectional module cannot stream (its backward "
                             "direction reads the whole sequence)")
        s = _ext.Stream(self._kernel, check_size(batch_size, "batch_size", 1), True)
        if hx is not None:
            h, c = _api.split_lstm_hx(hx, "(h0, c0)") if self._kind == LSTM_KIND else (hx, None)
            L, N, P, H = self.num_layers, s.N, self.proj_size or self.hidden_size, self.hidden_size
            h = self._stream_state(h, "h0", L, N, P, "P")
            c = None if c is None else self._stream_state(c, "c0", L, N, H, "H")
            s.reset(h, c)
        return s

    def _stream_state(self, a, name, L, N, size, letter):
        a = float_array(a, name, self.dtype)
        if a.shape != (L, N, size) and not (N == 1 and a.shape == (L, size)):
            raise ValueError(f"{name}: expected [num_layers, N, {letter}] = [{L}, {N}, {size}]"
                             f"{f' or [{L}, {size}]' if N == 1 else ''}, got {a.shape}")
        return a

    def __repr__(self):
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bias={self.bias}, batch_first={self.batch_first}, "
                f"bidirectional={self.bidirectional}{extra}, dtype={self.dtype.name})")

    @classmethod
    def _from_torch(cls, module, mode, **kw):
        got = getattr(module, "mode", None)
        if got != mode:
            raise TypeError(f"from_torch: expected a torch.nn.{cls.__name__}, got "
                            f"{type(module).__name__} (mode {got!r})")
        m = cls(module.input_size, module.hidden_size, num_layers=module.num_layers,
                bias=bool(module.bias), batch_first=bool(module.batch_first),
                bidirectional=bool(module.bidirectional), dropout=float(module.dropout),
                dtype=_torch_dtype(module), **kw)
        m.load_state_dict(module.state_dict())
        return m


class LSTM(_SequenceModule):
    """``torch.nn.LSTM``: ``output, (h_n, c_n) = lstm(x, (h0, c0), lengths=None)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, proj_size=0, *, dropout=0.0, dtype=np.float32, seed=None,
                 rng=None, backend="cpu", device=None):
        self.dropout = _check_dropout(dropout)
        super().__init__(LSTM_KIND, input_size, hidden_size, num_layers, bias, batch_first,
                         bidirectional, proj_size, True, False, dtype, seed, rng, backend)
        self._place(device)

    @classmethod
    def from_torch(cls, module, **kw):
        return cls._from_torch(module, "LSTM", proj_size=getattr(module, "proj_size", 0), **kw)


class GRU(_SequenceModule):
    """``torch.nn.GRU``: ``output, h_n = gru(x, h0, lengths=None)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, *, linear_before_reset=True, dropout=0.0,
                 dtype=np.float32, seed=None, rng=None, backend="cpu", device=None):
        self.dropout = _check_dropout(dropout)
        self.linear_before_reset = bool(linear_before_reset)
        super().__init__(GRU_KIND, input_size, hidden_size, num_layers, bias, batch_first,
                         bidirectional, 0, self.linear_before_reset, False, dtype, seed, rng,
                         backend)
        self._place(device)

    @classmethod
    def from_torch(cls, module, **kw):
        return cls._from_torch(module, "GRU", **kw)


class RNN(_SequenceModule):
    """``torch.nn.RNN``: ``output, h_n = rnn(x, h0, lengths=None)``, tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, bidirectional=False, *, dropout=0.0, dtype=np.float32,
                 seed=None, rng=None, backend="cpu", device=None):
        self.dropout = _check_dropout(dropout)
        relu = _api.check_nonlinearity(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(RNN_KIND, input_size, hidden_size, num_layers, bias, batch_first,
                         bidirectional, 0, True, relu, dtype, seed, rng, backend)
        self._place(device)

    @classmethod
    def from_torch(cls, module, **kw):
        mode = getattr(module, "mode", None)
        if mode not in ("RNN_TANH", "RNN_RELU"):
            raise TypeError(f"from_torch: expected a torch.nn.RNN, got {type(module).__name__}")
        return cls._from_torch(module, mode, nonlinearity=module.nonlinearity, **kw)

