"""Functional API: one time step on raw weights, and whole sequences on a weight mapping.

Every public call is a short pipeline: check and cast the arrays (SPEC §5), check their shapes
with messages in the letters of SPEC §1, allocate the outputs, call the kernel. No loop over time,
batch or layers happens here.
"""
from __future__ import annotations

import operator

import numpy as np

from gatedkernels import _config, _ext
from gatedkernels._device import cuda_module, device_kind, refuse_out

LSTM, GRU, RNN = _ext.LSTM, _ext.GRU, _ext.RNN
GATES = {LSTM: 4, GRU: 3, RNN: 1}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- array checks


def to_numpy(a):
    """np.asarray, also for torch tensors that require grad or live on another device."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu()
        if hasattr(a, "resolve_conj"):
            a = a.resolve_conj()
        return a.numpy()
    return np.asarray(a)


def float_array(a, name, dtype=None):
    """`a` as a C-contiguous float array of `dtype` (copied only when needed; never modified).

    Non-float input is a TypeError. With dtype None the array must already be float32 or float64
    (functional calls compute in x's dtype).
    """
    if a is None:
        raise TypeError(f"{name}: expected a float32 or float64 array, got None")
    try:
        arr = to_numpy(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected a float32 or float64 array ({e})") from None
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype.newbyteorder("=")  # the other byte order: converted, never read as is
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32 or float64, got {arr.dtype}")
    # np.asarray(order="C") keeps a 0-d array 0-d (np.ascontiguousarray would make it [1]).
    return np.asarray(arr, dtype=dtype, order="C")


def expect_shape(arr, name, letters, values):
    """ValueError `name: expected [4*H, H] = [256, 64], got (256, 65)` unless arr has the shape."""
    if arr.shape != tuple(values):
        raise ValueError(
            f"{name}: expected [{', '.join(letters)}] = [{', '.join(map(str, values))}], "
            f"got {arr.shape}"
        )


def check_size(value, name, minimum):
    """An integer option >= minimum (bool is not an integer here)."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    return v


def check_nonlinearity(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


def check_lengths(lengths, N, T):
    """lengths as a contiguous int64 array [N] with 1 <= lengths <= T."""
    arr = to_numpy(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer array [N], got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"lengths: expected [N] = [{N}], got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        raise ValueError(
            f"lengths: every entry must be in [1, T] = [1, {T}], got min {arr.min()}, "
            f"max {arr.max()}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_out(out, name, shape, dtype, inputs):
    """A caller's output buffer: a writable C-contiguous array of `dtype` holding `shape`'s
    elements (as [N, *] or unbatched), overlapping none of `inputs`. Returns it as `shape`."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected an ndarray, got {type(out).__name__}")
    if out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name}: expected a writable C-contiguous {np.dtype(dtype)} array, got "
                         f"{out.dtype} (contiguous={out.flags.c_contiguous}, "
                         f"writeable={out.flags.writeable})")
    if out.size != int(np.prod(shape)) or out.shape[-1] != shape[-1]:
        raise ValueError(f"{name}: expected {list(shape)} elements as [N, {shape[-1]}], "
                         f"got {out.shape}")
    for a in inputs:
        if a is not None and np.shares_memory(out, a):
            raise ValueError(f"{name}: must not overlap an input (the kernel reads the old state "
                             f"while it writes the new one)")
    return out.reshape(shape)


def split_lstm_hx(hx, names="(h, c)"):
    """An LSTM's hx as (h, c): None gives (None, None); anything but a pair is a TypeError."""
    if hx is None:
        return None, None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx: expected a tuple {names} or None")
    return hx[0], hx[1]


def cell_state(a, name, letter, N, size, dtype, unbatched):
    """A cell's state as a contiguous [N, size] array of `dtype`: zeros for None, else checked
    against [N, letter] (or [letter] for unbatched calls)."""
    if a is None:
        return np.zeros((N, size), dtype)
    a = float_array(a, name, dtype)
    if unbatched:
        expect_shape(a, name, (letter,), (size,))
    else:
        expect_shape(a, name, ("N", letter), (N, size))
    return a.reshape(N, size)


def gate_rows(kind):
    return {LSTM: "4*H", GRU: "3*H", RNN: "H"}[kind]


# --------------------------------------------------------------------------- functional cells

# Functional cells get new weight arrays on every call and cannot keep them packed. Below a
# number of batch rows they read the raw PyTorch-layout weights directly (raw_step.h: nothing is
# packed); from there on, packing once per call (one pass over the weights: 0.22 ms for an LSTM
# of I = 128, H = 256) and running the packed kernel costs less. Measured on the 2-core CI machine
# (AVX-512, one thread, LSTM, per call), the raw kernel against packing per call is equal at
# N = 40-48 for I = H = 64, N = 80-90 for I = 128, H = 256, and N = 150 for I = 256, H = 512.
# (K_SMALL, ROWS_SMALL, ROWS): with I + P < K_SMALL pack from ROWS_SMALL rows, else from ROWS.
PACK_PER_CALL = (256, 48, 128)


def pack_per_call(N, I, P):
    """Whether a functional cell of N rows packs its weights for the call (see PACK_PER_CALL)."""
    k_small, rows_small, rows = PACK_PER_CALL
    return N >= (rows_small if I + P < k_small else rows)


def _cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, lbr=True, relu=False, out=None):
    """Shared pipeline of the three functional cells. Returns (h1, c1) (c1 None unless LSTM);
    `out` is None, h1 or (h1, c1): caller-owned buffers written in place."""
    if w_hr is None:  # arrays that need no conversion (and out= buffers): checked in C
        fast = _ext.raw_call(kind, lbr, relu, x, h, c, w_ih, w_hh, b_ih, b_hh,
                             _config.get_isa(), PACK_PER_CALL, out)
        if fast is not None:
            return fast
    if device_kind(x) is not None:  # a CUDA array: the GPU path, outputs of the same kind
        refuse_out(out)
        return cuda_module()._run.cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, lbr, relu)
    x = float_array(x, "x")
    dt = x.dtype
    if x.ndim not in (1, 2):
        raise ValueError(f"x: expected [N, I] or [I], got {x.shape}")
    unbatched = x.ndim == 1
    X = x[None] if unbatched else x
    N, I = X.shape
    G = GATES[kind]
    w_hh = float_array(w_hh, "w_hh", dt)
    if w_hh.ndim != 2 or w_hh.shape[0] == 0 or w_hh.shape[0] % G:
        raise ValueError(
            f"w_hh: expected [{gate_rows(kind)}, {'P' if w_hr is not None else 'H'}] "
            f"(rows a positive multiple of {G}), got {w_hh.shape}"
        )
    H = w_hh.shape[0] // G
    P = H
    if w_hr is not None:
        w_hr = float_array(w_hr, "w_hr", dt)
        if w_hr.ndim != 2 or w_hr.shape[0] < 1:
            raise ValueError(f"w_hr: expected [P, H] = [P, {H}], got {w_hr.shape}")
        P = w_hr.shape[0]
        expect_shape(w_hr, "w_hr", ("P", "H"), (P, H))
    expect_shape(w_hh, "w_hh", (gate_rows(kind), "P" if w_hr is not None else "H"), (G * H, P))
    w_ih = float_array(w_ih, "w_ih", dt)
    expect_shape(w_ih, "w_ih", (gate_rows(kind), "I"), (G * H, I))
    if b_ih is not None:
        b_ih = float_array(b_ih, "b_ih", dt)
        expect_shape(b_ih, "b_ih", (gate_rows(kind),), (G * H,))
    if b_hh is not None:
        b_hh = float_array(b_hh, "b_hh", dt)
        expect_shape(b_hh, "b_hh", (gate_rows(kind),), (G * H,))
    h = cell_state(h, "h", "P" if w_hr is not None else "H", N, P, dt, unbatched)
    if kind == LSTM:
        c = cell_state(c, "c", "H", N, H, dt, unbatched)
    h1, c1, ret = _outputs(kind, out, N, H, P, dt, (X, h, c, w_ih, w_hh, b_ih, b_hh, w_hr))
    if not pack_per_call(N, X.shape[1], P):
        _ext.raw_step(kind, lbr, relu, X, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, h1, c1,
                      _config.get_isa())
    else:
        kernel = _ext.Kernel(kind, lbr, relu, dt, I, H, P, 1, 1,
                             [(w_ih, w_hh, b_ih, b_hh, w_hr)], _config.get_isa())
        kernel.step(X, h, c, h1, c1)
    if ret is not None:
        return ret
    if unbatched:
        h1 = h1[0]
        c1 = None if c1 is None else c1[0]
    return h1, c1


def _outputs(kind, out, N, H, P, dt, inputs):
    """(h1 [N, P], c1 [N, H] or None, what to return or None): new arrays, or the caller's."""
    if out is None:
        return np.empty((N, P), dt), (np.empty((N, H), dt) if kind == LSTM else None), None
    if kind == LSTM:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("out: expected a tuple (h1, c1) of arrays for an LSTM cell")
        h1 = check_out(out[0], "out[0]", (N, P), dt, inputs)
        c1 = check_out(out[1], "out[1]", (N, H), dt, inputs + (h1,))
        return h1, c1, (out[0], out[1])
    return check_out(out, "out", (N, P), dt, inputs), None, (out, None)


def lstm_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None, out=None):
    """One LSTM step: ``(h1, c1) = lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)``.

    x [N, I] or [I]; hx = (h [N, P], c [N, H]) or None (zeros); weights in PyTorch layout:
    w_ih [4*H, I], w_hh [4*H, P], b_ih/b_hh [4*H] or None, w_hr [P, H] (projection) or None.
    Computes in x's dtype. Below 48 or 128 batch rows (PACK_PER_CALL) the raw weights are read as
    given (nothing packed or cached); from there on they are packed once per call. ``out=(h1, c1)``
    writes into caller-owned buffers (no allocation) and returns them.
    """
    h, c = split_lstm_hx(hx)
    return _cell(LSTM, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, out=out)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, linear_before_reset=True, out=None):
    """One GRU step: ``h1 = gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)``; rows r, z, n.

    linear_before_reset=True is PyTorch/cuDNN/Keras reset_after=True; False is the Cho et al. form
    (ONNX's default, Keras reset_after=False).
    """
    return _cell(GRU, x, h, None, w_ih, w_hh, b_ih, b_hh, None, lbr=bool(linear_before_reset),
                 out=out)[0]


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", out=None):
    """One Elman RNN step: ``h1 = act(W_ih x + b_ih + W_hh h + b_hh)``, act tanh or relu."""
    relu = check_nonlinearity(nonlinearity)
    return _cell(RNN, x, h, None, w_ih, w_hh, b_ih, b_hh, None, relu=relu, out=out)[0]


# --------------------------------------------------------------------------- sequences


def param_names(num_layers, bidirectional, bias, proj_size, cell=False):
    """PyTorch's parameter names, in PyTorch's order (layer, direction, then w_ih w_hh b_ih b_hh
    w_hr)."""
    if cell:
        return ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    names = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse")[: 2 if bidirectional else 1]:
            s = f"_l{layer}{suffix}"
            names += [f"weight_ih{s}", f"weight_hh{s}"]
            if bias:
                names += [f"bias_ih{s}", f"bias_hh{s}"]
            if proj_size > 0:
                names.append(f"weight_hr{s}")
    return names


def param_shapes(kind, input_size, hidden_size, num_layers, bidirectional, bias, proj_size):
    """{name: (letters, shape)} of every parameter of a sequence module."""
    G, H = GATES[kind], hidden_size
    P = proj_size if proj_size > 0 else H
    D = 2 if bidirectional else 1
    rows = gate_rows(kind)
    out = {}
    for name in param_names(num_layers, bidirectional, bias, proj_size):
        layer = int(name.split("_l")[1].split("_")[0])
        if name.startswith("weight_ih"):
            out[name] = ((rows, "I" if layer == 0 else ("2*P" if D == 2 else "P")),
                         (G * H, input_size if layer == 0 else D * P))
        elif name.startswith("weight_hh"):
            out[name] = ((rows, "P" if proj_size else "H"), (G * H, P))
        elif name.startswith("bias"):
            out[name] = ((rows,), (G * H,))
        else:
            out[name] = (("P", "H"), (P, H))
    return out


def param_shapes_cell(kind, input_size, hidden_size, bias):
    """{name: (letters, shape)} of every parameter of a cell module."""
    G, rows = GATES[kind], gate_rows(kind)
    shapes = {"weight_ih": ((rows, "I"), (G * hidden_size, input_size)),
              "weight_hh": ((rows, "H"), (G * hidden_size, hidden_size))}
    if bias:
        shapes.update({"bias_ih": ((rows,), (G * hidden_size,)),
                       "bias_hh": ((rows,), (G * hidden_size,))})
    return shapes


def layer_tuples(params, num_layers, bidirectional, bias, proj_size):
    """[(w_ih, w_hh, b_ih, b_hh, w_hr)] per layer-direction, layer-major, for _ext.Kernel."""
    out = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse")[: 2 if bidirectional else 1]:
            s = f"_l{layer}{suffix}"
            out.append((
                params[f"weight_ih{s}"], params[f"weight_hh{s}"],
                params[f"bias_ih{s}"] if bias else None,
                params[f"bias_hh{s}"] if bias else None,
                params[f"weight_hr{s}"] if proj_size > 0 else None,
            ))
    return out


class SequenceCall:
    """A validated sequence call: x, hx and lengths checked against the sizes of the weights
    (shapes in SPEC §1 letters), cast to `dtype`, unbatched input given a batch axis of 1."""

    def __init__(self, kind, I, H, P, L, D, x, hx, lengths, batch_first, dtype):
        x = float_array(x, "x", dtype)
        lstm = kind == LSTM
        if x.ndim == 2:
            self.unbatched = True
            expect_shape(x, "x", ("T", "I"), (x.shape[0], I))
            X, bf = x[:, None, :], False
        elif x.ndim == 3:
            self.unbatched = False
            if batch_first:
                expect_shape(x, "x", ("N", "T", "I"), (x.shape[0], x.shape[1], I))
            else:
                expect_shape(x, "x", ("T", "N", "I"), (x.shape[0], x.shape[1], I))
            X, bf = x, bool(batch_first)
        else:
            raise ValueError(
                f"x: expected [{'N, T' if batch_first else 'T, N'}, I] or unbatched [T, I], "
                f"got {x.shape}"
            )
        T, N = (X.shape[1], X.shape[0]) if bf else (X.shape[0], X.shape[1])
        if T < 1 or N < 1:
            raise ValueError(f"x: T and N must be at least 1, got {x.shape}")
        h0, c0 = split_lstm_hx(hx, "(h0, c0)") if lstm else (hx, None)
        lead = ("L*D",) if self.unbatched else ("L*D", "N")
        lead_v = (L * D,) if self.unbatched else (L * D, N)
        if h0 is not None:
            h0 = float_array(h0, "h0", dtype)
            expect_shape(h0, "h0", lead + ("P" if P != H else "H",), lead_v + (P,))
            h0 = h0.reshape(L * D, N, P)
        if c0 is not None:
            c0 = float_array(c0, "c0", dtype)
            expect_shape(c0, "c0", lead + ("H",), lead_v + (H,))
            c0 = c0.reshape(L * D, N, H)
        if lengths is not None:
            lengths = check_lengths(lengths, N, T)
        self.kind, self.dtype = kind, dtype
        self.X, self.batch_first, self.h0, self.c0, self.lengths = X, bf, h0, c0, lengths
        self.T, self.N, self.H, self.P, self.L, self.D = T, N, H, P, L, D

    def hx(self):
        """Initial states for the reference: (h0, c0), h0 or None (zeros for a missing part)."""
        if self.kind != LSTM:
            return self.h0
        if self.h0 is None and self.c0 is None:
            return None
        shape = (self.L * self.D, self.N)
        h0 = self.h0 if self.h0 is not None else np.zeros(shape + (self.P,), self.dtype)
        c0 = self.c0 if self.c0 is not None else np.zeros(shape + (self.H,), self.dtype)
        return h0, c0

    def finish(self, y, hn, cn):
        """Outputs in the caller's shape: unbatched in, unbatched out."""
        if self.unbatched:
            y, hn = y[:, 0], hn[:, 0]
            cn = None if cn is None else cn[:, 0]
        return y, hn, cn


def run_sequence(kernel, x, hx, lengths, batch_first, dtype):
    """Validate x, hx and lengths for `kernel` (an _ext.Kernel), allocate outputs and run.

    Returns (output, h_n, c_n) with c_n None unless LSTM; unbatched in, unbatched out.
    """
    done = kernel.run(x, hx, lengths, batch_first)  # the common case, checked in C
    if done is not None:
        return done
    call = SequenceCall(kernel.kind, kernel.I, kernel.H, kernel.P, kernel.L, kernel.D, x, hx,
                        lengths, batch_first, dtype)
    L, D, N, P, H = kernel.L, kernel.D, call.N, kernel.P, kernel.H
    y = np.empty(call.X.shape[:2] + (D * P,), dtype)
    hn = np.empty((L * D, N, P), dtype)
    cn = np.empty((L * D, N, H), dtype) if kernel.kind == LSTM else None
    kernel.forward(call.X, call.lengths, call.h0, call.c0, y, hn, cn, call.batch_first)
    return call.finish(y, hn, cn)


def _infer_sizes(kind, weights):
    """(I, H, P, bias, proj_size) from a PyTorch-named weight mapping."""
    G = GATES[kind]
    if "weight_hh_l0" not in weights or "weight_ih_l0" not in weights:
        raise ValueError("weights: expected PyTorch names, e.g. 'weight_ih_l0' and 'weight_hh_l0'")
    w_hh = to_numpy(weights["weight_hh_l0"])
    w_ih = to_numpy(weights["weight_ih_l0"])
    if w_hh.ndim != 2 or w_hh.shape[0] == 0 or w_hh.shape[0] % G or w_ih.ndim != 2:
        raise ValueError(
            f"weight_hh_l0: expected [{gate_rows(kind)}, H], got {w_hh.shape}"
        )
    H = w_hh.shape[0] // G
    proj = 0
    if "weight_hr_l0" in weights:
        if kind != LSTM:
            raise ValueError("weights: only an LSTM has weight_hr_l*")
        proj = to_numpy(weights["weight_hr_l0"]).shape[0]
    return w_ih.shape[1], H, proj, "bias_ih_l0" in weights


def _functional_kernel(kind, weights, dtype, num_layers, bidirectional, lbr=True, relu=False):
    num_layers = check_size(num_layers, "num_layers", 1)
    I, H, proj, bias = _infer_sizes(kind, weights)
    params = load_params(weights, kind, I, H, num_layers, bool(bidirectional), bias, proj, dtype)
    tuples = layer_tuples(params, num_layers, bool(bidirectional), bias, proj)
    return _ext.Kernel(kind, lbr, relu, dtype, I, H, proj or H, num_layers,
                       2 if bidirectional else 1, tuples, _config.get_isa())


def check_names(weights, shapes, what):
    """ValueError naming the missing and unexpected keys unless `weights` has exactly the names
    of `shapes`."""
    keys = set(weights.keys())
    missing = [k for k in shapes if k not in keys]
    unexpected = sorted(k for k in keys if k not in shapes)
    if missing or unexpected:
        raise ValueError(f"{what}: missing keys {missing}, unexpected keys {unexpected}")


def load_params(weights, kind, I, H, num_layers, bidirectional, bias, proj, dtype, cell=False):
    """Check every name and shape of a PyTorch-named mapping; return {name: read-only array}."""
    if cell:
        shapes = param_shapes_cell(kind, I, H, bias)
    else:
        shapes = param_shapes(kind, I, H, num_layers, bidirectional, bias, proj)
    check_names(weights, shapes, "state dict")
    out = {}
    for name, (letters, shape) in shapes.items():
        arr = float_array(weights[name], name, dtype)
        expect_shape(arr, name, letters, shape)
        if np.shares_memory(arr, to_numpy(weights[name])):
            arr = arr.copy()  # the module owns its parameters; the caller's array stays theirs
        arr.flags.writeable = False
        out[name] = arr
    return out


def _sequence_dtype(x):
    return float_array(x, "x").dtype


def lstm(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None):
    """A whole LSTM sequence: ``output, (h_n, c_n) = lstm(x, (h0, c0), weights, ...)``.

    `weights` maps PyTorch's parameter names (``weight_ih_l0`` ...; ``weight_hr_l0`` for a
    projection) to arrays. The weights are packed on every call: hold an ``LSTM`` module to pack
    them once. CUDA arrays (torch, CuPy, Numba) run on the GPU (see ``gatedkernels.cuda``).
    """
    if device_kind(x) is not None:
        return cuda_module().lstm(x, hx, weights, num_layers=num_layers,
                                  bidirectional=bidirectional, batch_first=batch_first,
                                  lengths=lengths)
    dt = _sequence_dtype(x)
    k = _functional_kernel(LSTM, weights, dt, num_layers, bidirectional)
    y, hn, cn = run_sequence(k, x, hx, lengths, batch_first, dt)
    return y, (hn, cn)


def gru(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
        linear_before_reset=True):
    """A whole GRU sequence: ``output, h_n = gru(x, h0, weights, ...)`` (see ``lstm``)."""
    if device_kind(x) is not None:
        return cuda_module().gru(x, hx, weights, num_layers=num_layers,
                                 bidirectional=bidirectional, batch_first=batch_first,
                                 lengths=lengths, linear_before_reset=linear_before_reset)
    dt = _sequence_dtype(x)
    k = _functional_kernel(GRU, weights, dt, num_layers, bidirectional,
                           lbr=bool(linear_before_reset))
    y, hn, _ = run_sequence(k, x, hx, lengths, batch_first, dt)
    return y, hn


def rnn(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
        nonlinearity="tanh"):
    """A whole Elman RNN sequence: ``output, h_n = rnn(x, h0, weights, ...)`` (see ``lstm``)."""
    relu = check_nonlinearity(nonlinearity)
    if device_kind(x) is not None:
        return cuda_module().rnn(x, hx, weights, num_layers=num_layers,
                                 bidirectional=bidirectional, batch_first=batch_first,
                                 lengths=lengths, nonlinearity=nonlinearity)
    dt = _sequence_dtype(x)
    k = _functional_kernel(RNN, weights, dt, num_layers, bidirectional, relu=relu)
    y, hn, _ = run_sequence(k, x, hx, lengths, batch_first, dt)
    return y, hn
