"""Drivers of the CUDA path: check the arrays, allocate in the caller's library, launch.

Shapes are checked with the CPU API's messages (SPEC §1 letters). Nothing here synchronises
with the host, except reading a `lengths` array that lives on the device (its range must be
checked) and the first call of a kernel (compilation).
"""
from __future__ import annotations

import numpy as np

from gatedkernels import _api
from gatedkernels._device import device_kind
from gatedkernels.cuda import _kernels
from gatedkernels.cuda._interop import (
    FLOAT_DTYPES, copy2d, dummy, fill_zero, library_of, zeros_1d,
)
from gatedkernels.cuda._numba import SIMULATOR, cuda, numba

LSTM, GRU, RNN = _api.LSTM, _api.GRU, _api.RNN
IMPLS = ("auto", "persistent", "loop")


def _view(lib, a, name, dtype=None):
    """A Numba view of a device array argument, in `dtype` (cast by the caller's library when it
    can). Host arrays are refused: mixing them in would hide a host-to-device copy per call."""
    if a is None:
        raise TypeError(f"{name}: expected a device array, got None")
    if device_kind(a) is None:
        raise TypeError(f"{name}: expected a CUDA device array like x, got {type(a).__name__} "
                        f"(move it to the GPU once, e.g. with module.to('cuda'))")
    v = lib.view(a)
    if np.dtype(v.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {v.dtype}")
    if dtype is not None and np.dtype(v.dtype) != dtype:
        v = lib.view(lib.cast(a, dtype, name))
    elif len(v.shape) >= 2 and not v.is_c_contiguous():
        v = lib.view(lib.cast(a, v.dtype, name))  # a contiguous copy, on the device
    return v


def _vector(lib, b, name, G, H, kind, dtype):
    if b is None:
        return zeros_1d(G * H, dtype)
    v = _view(lib, b, name, dtype)
    _api.expect_shape(v, name, (_api.gate_rows(kind),), (G * H,))
    return v


def _state(lib, a, name, letter, N, size, dtype, unbatched):
    if a is None:
        return lib.view(lib.zeros((N, size), dtype))
    v = _view(lib, a, name, dtype)
    if unbatched:
        _api.expect_shape(v, name, (letter,), (size,))
    else:
        _api.expect_shape(v, name, ("N", letter), (N, size))
    return v.reshape(N, size)


def cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None, lbr=True, relu=False, dtype=None,
         I=None):
    """One step on the device. Returns (h1, c1) in the library of x (c1 None unless LSTM).
    Computes in x's dtype, or in `dtype` (a module's); `I` (a module's input size) is checked
    against x first when given."""
    lib = library_of(x, device_kind(x))
    xv = _view(lib, x, "x", dtype)
    dt = np.dtype(xv.dtype)
    if len(xv.shape) not in (1, 2):
        raise ValueError(f"x: expected [N, I] or [I], got {tuple(xv.shape)}")
    unbatched = len(xv.shape) == 1
    X = xv.reshape(1, xv.shape[0]) if unbatched else xv
    if I is not None and X.shape[1] != I:
        raise ValueError(f"x: expected [N, I] = [N, {I}] or [I], got {tuple(xv.shape)}")
    N, I = X.shape
    if N < 1 or I < 1:
        raise ValueError(f"x: N and I must be at least 1, got {tuple(xv.shape)}")
    G = _api.GATES[kind]
    rows = _api.gate_rows(kind)
    whh = _view(lib, w_hh, "w_hh", dt)
    if len(whh.shape) != 2 or whh.shape[0] == 0 or whh.shape[0] % G:
        raise ValueError(f"w_hh: expected [{rows}, H] (rows a positive multiple of {G}), "
                         f"got {tuple(whh.shape)}")
    H = whh.shape[0] // G
    P = H
    whr = None
    if w_hr is not None:
        if kind != LSTM:
            raise ValueError("w_hr: only an LSTM has a projection")
        whr = _view(lib, w_hr, "w_hr", dt)
        if len(whr.shape) != 2 or whr.shape[0] < 1:
            raise ValueError(f"w_hr: expected [P, H] = [P, {H}], got {tuple(whr.shape)}")
        P = whr.shape[0]
        _api.expect_shape(whr, "w_hr", ("P", "H"), (P, H))
    _api.expect_shape(whh, "w_hh", (rows, "P" if whr is not None else "H"), (G * H, P))
    wih = _view(lib, w_ih, "w_ih", dt)
    _api.expect_shape(wih, "w_ih", (rows, "I"), (G * H, I))
    bih = _vector(lib, b_ih, "b_ih", G, H, kind, dt)
    bhh = _vector(lib, b_hh, "b_hh", G, H, kind, dt)
    hv = _state(lib, h, "h", "P" if whr is not None else "H", N, P, dt, unbatched)
    d = dummy(dt)
    cv = _state(lib, c, "c", "H", N, H, dt, unbatched) if kind == LSTM else d
    h1 = lib.empty((N, P), dt)
    c1 = lib.empty((N, H), dt) if kind == LSTM else None
    h1v = lib.view(h1)
    c1v = lib.view(c1) if kind == LSTM else d
    kernels, block, grid = _kernels.step_config(kind, lbr, relu, dt.name, N,
                                                proj=whr is not None)
    scratch = lib.view(lib.empty((N, H), dt)) if len(kernels) == 2 else d  # r*h, or m
    stream = lib.stream
    if whr is None:
        for k in kernels:
            k[grid(H), block, stream](X, hv, cv, wih, whh, bih, bhh, h1v, c1v, scratch)
    else:  # c' and m = o*tanh(c'), then h' = W_hr m
        kernels[0][grid(H), block, stream](X, hv, cv, wih, whh, bih, bhh, d, c1v, scratch)
        # (x is only read for N here: the projection has no input part)
        kernels[1][grid(P), block, stream](scratch, scratch, d, d, whr, bih, bhh, h1v, d, d)
    if unbatched:
        h1 = h1.reshape(P)
        c1 = None if c1 is None else c1.reshape(H)
    return h1, c1


# --------------------------------------------------------------------------- sequences


def _coop_limit(kernel, args, block):
    """How many blocks of `kernel` can be co-resident (the cooperative launch limit)."""
    if SIMULATOR:
        return 1  # the simulator runs a cooperative grid as one block only
    sig = tuple(numba.typeof(a) for a in args)
    key = (id(kernel), sig, block, cuda.get_current_device().id)
    if key not in _coop_limits:
        overload = kernel.compile(sig)
        _coop_limits[key] = int(overload.max_cooperative_grid_blocks(block))
    return _coop_limits[key]


_coop_limits = {}  # (kernel, signature, block, device) -> co-resident blocks (an occupancy query)


def _lengths(lib, lengths, N, T, stream):
    if lengths is None:
        return cuda.to_device(np.full(N, T, np.int32), stream=stream)
    if device_kind(lengths) is not None:
        host = lib.view(lengths).copy_to_host()  # range check needs the values (one sync)
    else:
        host = lengths
    host = _api.check_lengths(host, N, T)
    return cuda.to_device(host.astype(np.int32), stream=stream)


def sequence(kind, lbr, relu, layers, I, H, L, D, x, hx, lengths, batch_first, impl="auto",
             dtype=None, P=None):
    """A whole sequence on the device.

    layers: [(w_ih, w_hh, b_ih, b_hh[, w_hr])] per layer-direction, layer-major (device arrays;
    None biases; w_hr [P, H] for a projected LSTM, whose states and outputs have P columns).
    Returns (y, h_n, c_n) in the library of x (c_n None unless LSTM).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    P = H if P is None else P
    proj = P != H
    lib = library_of(x, device_kind(x))
    xv = _view(lib, x, "x", dtype)
    dt = np.dtype(xv.dtype)
    G = _api.GATES[kind]
    shape = tuple(xv.shape)
    if len(shape) == 2:
        unbatched, bf = True, False
        _api.expect_shape(xv, "x", ("T", "I"), (shape[0], I))
        X = xv.reshape(shape[0], 1, I)
    elif len(shape) == 3:
        unbatched, bf = False, bool(batch_first)
        letters = ("N", "T", "I") if bf else ("T", "N", "I")
        _api.expect_shape(xv, "x", letters, (shape[0], shape[1], I))
        X = xv
    else:
        raise ValueError(f"x: expected [{'N, T' if batch_first else 'T, N'}, I] or unbatched "
                         f"[T, I], got {shape}")
    T, N = (X.shape[1], X.shape[0]) if bf else (X.shape[0], X.shape[1])
    if T < 1 or N < 1:
        raise ValueError(f"x: T and N must be at least 1, got {shape}")
    h0, c0 = _api.split_lstm_hx(hx, "(h0, c0)") if kind == LSTM else (hx, None)
    lead = ("L*D",) if unbatched else ("L*D", "N")
    lead_v = (L * D,) if unbatched else (L * D, N)
    if h0 is not None:
        h0 = _view(lib, h0, "h0", dt)
        _api.expect_shape(h0, "h0", lead + ("P" if proj else "H",), lead_v + (P,))
        h0 = h0.reshape(L * D, N, P)
    if c0 is not None:
        c0 = _view(lib, c0, "c0", dt)
        _api.expect_shape(c0, "c0", lead + ("H",), lead_v + (H,))
        c0 = c0.reshape(L * D, N, H)
    stream = lib.stream
    lens = _lengths(lib, lengths, N, T, stream)

    outer = (N, T) if bf else (T, N)
    make = lib.zeros if lengths is not None else lib.empty
    ys = [make(outer + (D * P,), dt) for _ in range(min(L, 2))]
    hn = lib.empty((L * D, N, P), dt)
    cn = lib.empty((L * D, N, H), dt) if kind == LSTM else None
    hnv = lib.view(hn)
    cnv = lib.view(cn) if kind == LSTM else None
    hbuf = lib.view(lib.empty((2, N, P), dt))
    xg = lib.view(lib.empty((T * N, G * H), dt))
    xg3 = xg.reshape(outer + (G * H,))
    d1 = dummy(dt)
    two = len(_kernels.plans(kind, lbr, proj)) == 2
    scratch = lib.view(lib.empty((N, H), dt)) if two else d1  # r*h (Cho GRU) or m (projection)

    layer_in = X.reshape(T * N, I)
    for layer in range(L):
        y = ys[layer % 2]
        yv = lib.view(y)
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = layers[layer * D + d][:4]
            w_hr = layers[layer * D + d][4] if proj else d1
            ld = layer * D + d
            bih = b_ih if b_ih is not None else zeros_1d(G * H, dt)
            bhh = b_hh if b_hh is not None else zeros_1d(G * H, dt)
            lib.addmm(layer_in, w_ih, bih, xg)
            if h0 is not None:
                copy2d(h0[ld], hbuf[0], stream)
            else:
                fill_zero(hbuf[0], stream)
            if kind == LSTM:
                cv = cnv[ld]
                if c0 is not None:
                    copy2d(c0[ld], cv, stream)
                else:
                    fill_zero(cv, stream)
            else:
                cv = d1
            args = (xg3, w_hh, w_hr, bhh, lens, hbuf, cv, yv, scratch, scratch, int(d == 1),
                    int(d * P))
            _recurrence(kind, lbr, relu, dt, bf, impl, proj, args, T, N, H, P, stream)
            copy2d(hbuf[T % 2], hnv[ld], stream)
        layer_in = yv.reshape(T * N, D * P)
    y = ys[(L - 1) % 2]
    if unbatched:
        y = y.reshape(T, D * P)
        hn = hn.reshape(L * D, P)
        cn = None if cn is None else cn.reshape(L * D, H)
    return y, hn, cn


def _recurrence(kind, lbr, relu, dt, bf, impl, proj, args, T, N, H, P, stream):
    """Launch one layer-direction: the persistent kernel where a cooperative grid fits (with
    W_hh in shared memory where that fits too), else one launch per plan per step (the tiled
    kernels for a large batch, _kernels.use_tiled)."""
    G = _api.GATES[kind]
    bt = _kernels.batch_tile(N)
    nbt = -(-N // bt)
    units = max(H, P)  # the projection phase runs P units
    if impl != "loop":
        U, cache_ok = _kernels.seq_units(G, P, dt.itemsize, bt)
        block = (_kernels.KS, U)
        nub = -(-H // U)
        probe, _ = _kernels.sequence_kernels(kind, lbr, relu, dt.name, bf, 0, U, bt, proj)
        limit = _coop_limit(probe, args, block)
        cache = cache_ok and nub <= limit
        persistent, _ = _kernels.sequence_kernels(kind, lbr, relu, dt.name, bf,
                                                  P if cache else 0, U, bt, proj)
        if cache:
            limit = min(limit, _coop_limit(persistent, args, block))
        if limit >= 1 and (not cache or nub <= limit):
            grid = nub if cache else max(1, min(-(-units // U) * nbt, limit))
            persistent[grid, block, stream](*args)
            return
        if impl == "persistent":
            raise RuntimeError("impl='persistent': no cooperative launch fits this device")
    if _kernels.use_tiled(N):
        steps = _kernels.tiled_sequence_steps(kind, lbr, relu, dt.name, bf, proj)
        block = (_kernels.TILED_BLOCK,)
        grids = [_kernels.tiled_grid(H, N), _kernels.tiled_grid(P, N)]
    else:
        U = _kernels.U_STEP
        _, steps = _kernels.sequence_kernels(kind, lbr, relu, dt.name, bf, 0, U, bt, proj)
        block = (_kernels.KS, U)
        grids = [(-(-H // U)) * nbt, (-(-P // U)) * nbt]
    for s in range(T):
        for i, k in enumerate(steps):
            k[grids[i], block, stream](s, *args)
