"""Plain-NumPy reference of the gatedkernels cells and sequences: the oracle of the tests.

Each equation of SPEC.md §2 is one line below, its variables named after the equation's symbols
and tagged with a trailing comment (``§2 LSTM c'`` = the line defining c' in the LSTM block).
The sequence functions (SPEC §3) are one loop over layers × directions × time that calls the
cell functions once per time step. Nothing here loops over the batch.

Precision
    Everything is computed in the dtype of ``x``; weights and states are cast to it. A float64
    call is the oracle every kernel is checked against (SPEC §6). A float32 call is what a plain
    float32 implementation gets, and so is the baseline of the float32 tolerance:
    ``max |kernel - oracle| <= 2 * max |reference32 - oracle| + floor``.

Layout
    Weights use PyTorch's layout and gate order (LSTM i,f,g,o; GRU r,z,n; SPEC §2): ``w_ih`` is
    ``[G*H, I]``, ``w_hh`` is ``[G*H, P]``. Arrays hold one row per batch element, so the
    ``W x`` of the equations is written ``x @ W.T``.

Validation is light on purpose: the public API validates shapes before it calls anything here.
Only an unknown ``nonlinearity``, a non-float ``x`` and ``lengths`` out of range are rejected.
There is no backward pass yet.
"""

import numpy as np

__all__ = ["sigmoid", "lstm_cell", "gru_cell", "rnn_cell", "lstm", "gru", "rnn"]

_NONLINEARITIES = ("tanh", "relu")


def sigmoid(a):
    """σ(a) = 1 / (1 + exp(−a)), elementwise, in the dtype of ``a``.

    exp only ever sees −|a| <= 0, so nothing overflows and large |a| saturates to exactly 0 or 1;
    both branches are the exact formula, so no accuracy is lost for negative a. NaN stays NaN.
    """
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _relu(a):
    # np.maximum propagates NaN (np.fmax would not).
    return np.maximum(a, 0)


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the cells: batching, default states and biases, dtype casts.


def _input(x):
    """``x`` as an array of a float dtype, with a leading batch axis; and whether it had one."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x: expected a float32 or float64 array, got dtype {x.dtype}")
    batched = x.ndim != 1
    return (x if batched else x[None]), batched


def _state(s, x, size, batched):
    """A state ``[N, size]`` in the dtype of ``x``: zeros when ``s`` is None."""
    if s is None:
        return np.zeros((x.shape[0], size), x.dtype)
    s = np.asarray(s, x.dtype)
    return s if batched else s[None]


def _bias(b, rows, dtype):
    """A bias vector ``[rows]`` in ``dtype``: zeros when ``b`` is None (SPEC §2: missing = 0)."""
    return np.zeros(rows, dtype) if b is None else np.asarray(b, dtype)


def _output(a, batched):
    return a if batched else a[0]


# ---------------------------------------------------------------------------------------------
# The cells (SPEC §2), one time step each.


def lstm_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None):
    """One LSTM step (SPEC §2, gate rows i, f, g, o).

    x     [N, I] or unbatched [I].
    hx    (h, c) with h [N, P] and c [N, H] (unbatched: [P], [H]); None, or either part None,
          means zeros.
    w_ih  [4*H, I];  w_hh [4*H, P];  b_ih, b_hh [4*H] or None (zero).
    w_hr  [P, H] projection or None (then P = H).
    Returns (h1 [N, P], c1 [N, H]), unbatched if x is, in the dtype of x.
    """
    x, batched = _input(x)
    dtype = x.dtype
    w_ih, w_hh = np.asarray(w_ih, dtype), np.asarray(w_hh, dtype)
    H, P = w_hh.shape[0] // 4, w_hh.shape[1]
    h, c = (None, None) if hx is None else hx
    h, c = _state(h, x, P, batched), _state(c, x, H, batched)
    W_ii, W_if, W_ig, W_io = np.split(w_ih, 4)
    W_hi, W_hf, W_hg, W_ho = np.split(w_hh, 4)
    b_ii, b_if, b_ig, b_io = np.split(_bias(b_ih, 4 * H, dtype), 4)
    b_hi, b_hf, b_hg, b_ho = np.split(_bias(b_hh, 4 * H, dtype), 4)

    i = sigmoid(x @ W_ii.T + b_ii + h @ W_hi.T + b_hi)  # §2 LSTM i
    f = sigmoid(x @ W_if.T + b_if + h @ W_hf.T + b_hf)  # §2 LSTM f
    g = np.tanh(x @ W_ig.T + b_ig + h @ W_hg.T + b_hg)  # §2 LSTM g
    o = sigmoid(x @ W_io.T + b_io + h @ W_ho.T + b_ho)  # §2 LSTM o
    c1 = f * c + i * g  # §2 LSTM c'
    h1 = o * np.tanh(c1)  # §2 LSTM h'
    if w_hr is not None:
        h1 = h1 @ np.asarray(w_hr, dtype).T  # §2 LSTM h' with proj_size P > 0
    return _output(h1, batched), _output(c1, batched)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, linear_before_reset=True):
    """One GRU step (SPEC §2, gate rows r, z, n).

    x     [N, I] or unbatched [I].
    h     [N, H] (unbatched [H]) or None (zeros).
    w_ih  [3*H, I];  w_hh [3*H, H];  b_ih, b_hh [3*H] or None (zero).
    linear_before_reset  True: n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))  (PyTorch, cuDNN);
                         False: n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)  (Cho et al.).
    Returns h1 [N, H], unbatched if x is, in the dtype of x.
    """
    x, batched = _input(x)
    dtype = x.dtype
    w_ih, w_hh = np.asarray(w_ih, dtype), np.asarray(w_hh, dtype)
    H = w_hh.shape[0] // 3
    h = _state(h, x, H, batched)
    W_ir, W_iz, W_in = np.split(w_ih, 3)
    W_hr, W_hz, W_hn = np.split(w_hh, 3)
    b_ir, b_iz, b_in = np.split(_bias(b_ih, 3 * H, dtype), 3)
    b_hr, b_hz, b_hn = np.split(_bias(b_hh, 3 * H, dtype), 3)

    r = sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)  # §2 GRU r
    z = sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)  # §2 GRU z
    if linear_before_reset:
        n = np.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))  # §2 GRU n, reset after
    else:
        n = np.tanh(x @ W_in.T + b_in + (r * h) @ W_hn.T + b_hn)  # §2 GRU n, reset before
    h1 = (1 - z) * n + z * h  # §2 GRU h'
    return _output(h1, batched)


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    """One Elman RNN step (SPEC §2): h1 = act(W_ih x + b_ih + W_hh h + b_hh).

    x     [N, I] or unbatched [I].
    h     [N, H] (unbatched [H]) or None (zeros).
    w_ih  [H, I];  w_hh [H, H];  b_ih, b_hh [H] or None (zero).
    nonlinearity  "tanh" or "relu"; anything else is a ValueError.
    Returns h1 [N, H], unbatched if x is, in the dtype of x.
    """
    act = _activation(nonlinearity)
    x, batched = _input(x)
    dtype = x.dtype
    w_ih, w_hh = np.asarray(w_ih, dtype), np.asarray(w_hh, dtype)
    H = w_hh.shape[0]
    h = _state(h, x, H, batched)
    b_ih, b_hh = _bias(b_ih, H, dtype), _bias(b_hh, H, dtype)

    h1 = act(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)  # §2 RNN h'
    return _output(h1, batched)


def _activation(nonlinearity):
    if nonlinearity == "tanh":
        return np.tanh
    if nonlinearity == "relu":
        return _relu
    raise ValueError(f"nonlinearity: expected one of {_NONLINEARITIES}, got {nonlinearity!r}")


# ---------------------------------------------------------------------------------------------
# Sequences (SPEC §3): one driver for the three cell kinds.


def _layer_params(weights, k, d, dtype):
    """The parameters of layer ``k``, direction ``d`` under PyTorch's names; absent keys -> None."""
    suffix = f"_l{k}" + ("_reverse" if d else "")
    return {
        name: (np.asarray(weights[name + suffix], dtype) if name + suffix in weights else None)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    }


def _sequence(step, x, h0s, sizes, weights, num_layers, bidirectional, batch_first, lengths):
    """Run ``step`` over layers × directions × time.

    step(x_t [N, features], states, params) -> new states: a tuple whose first entry is h.
    h0s    one initial state per entry of the state tuple: [L*D, N, size] (unbatched
           [L*D, size]) or None (zeros); ``sizes`` gives each one's last dimension.
    Returns (output [T, N, D*P], batch-first or unbatched as x;
             tuple of final states [L*D, N, size]).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x: expected a float32 or float64 array, got dtype {x.dtype}")
    dtype = x.dtype
    # Unbatched input [T, I] is time-major whatever batch_first says (as in PyTorch).
    batched = x.ndim == 3
    if not batched:
        x = x[:, None]
    elif batch_first:
        x = x.swapaxes(0, 1)
    T, N = x.shape[:2]
    D = 2 if bidirectional else 1

    states0 = []
    for s0, size in zip(h0s, sizes):
        if s0 is None:
            states0.append(np.zeros((num_layers * D, N, size), dtype))
        else:
            s0 = np.asarray(s0, dtype)
            states0.append(s0 if batched else s0[:, None])

    # valid[t, n]: step t is inside sequence n. A step outside it keeps the state and outputs 0,
    # so the reverse direction first changes the state at t = lengths[n] - 1 (SPEC §3).
    valid = None
    if lengths is not None:
        lengths = np.asarray(lengths).reshape(-1)
        if lengths.dtype.kind not in "iu" or lengths.shape != (N,):
            raise ValueError(f"lengths: expected an int array [N] = [{N}], got {lengths!r}")
        if np.any(lengths < 1) or np.any(lengths > T):
            raise ValueError(f"lengths: expected 1 <= lengths <= T = {T}, got {lengths}")
        valid = np.arange(T)[:, None] < lengths[None, :]

    layer_input = x
    finals = [[] for _ in states0]
    for k in range(num_layers):
        outputs = []
        for d in range(D):
            params = _layer_params(weights, k, d, dtype)
            states = tuple(s0[k * D + d] for s0 in states0)
            y = np.zeros((T, N, sizes[0]), dtype)
            for t in reversed(range(T)) if d else range(T):
                new = step(layer_input[t], states, params)
                if valid is None:
                    states = new
                    y[t] = new[0]
                else:
                    keep = valid[t][:, None]
                    states = tuple(np.where(keep, s1, s) for s1, s in zip(new, states))
                    y[t] = np.where(keep, new[0], 0)
            outputs.append(y)
            for final, s in zip(finals, states):
                final.append(s)
        layer_input = np.concatenate(outputs, axis=-1)

    output = layer_input
    finals = tuple(np.stack(f) for f in finals)
    if not batched:
        output, finals = output[:, 0], tuple(f[:, 0] for f in finals)
    elif batch_first:
        output = np.ascontiguousarray(output.swapaxes(0, 1))
    return output, finals


def lstm(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None):
    """A (multi-layer, optionally bidirectional) LSTM over a sequence, as ``torch.nn.LSTM``.

    x        [T, N, I], [N, T, I] with batch_first, or unbatched [T, I].
    hx       (h0 [L*D, N, P], c0 [L*D, N, H]) (unbatched [L*D, P], [L*D, H]) or None (zeros).
    weights  mapping with PyTorch's names (SPEC §3); a missing bias is zero; ``weight_hr_l0``
             present means proj_size P = its rows.
    lengths  optional int [N], 1 <= lengths <= T (SPEC §3).
    Returns (output [T, N, D*P] (batch-first or unbatched as x),
             (h_n [L*D, N, P], c_n [L*D, N, H])).
    """
    w_hh = np.asarray(weights["weight_hh_l0"])
    H, P = w_hh.shape[0] // 4, w_hh.shape[1]
    h0, c0 = (None, None) if hx is None else hx

    def step(x_t, states, p):
        return lstm_cell(x_t, states, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"],
                         w_hr=p["weight_hr"])

    output, (h_n, c_n) = _sequence(step, x, (h0, c0), (P, H), weights, num_layers,
                                   bidirectional, batch_first, lengths)
    return output, (h_n, c_n)


def gru(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
        linear_before_reset=True):
    """A (multi-layer, optionally bidirectional) GRU over a sequence, as ``torch.nn.GRU``.

    x        [T, N, I], [N, T, I] with batch_first, or unbatched [T, I].
    hx       h0 [L*D, N, H] (unbatched [L*D, H]) or None (zeros).
    weights  mapping with PyTorch's names (SPEC §3); a missing bias is zero.
    lengths  optional int [N], 1 <= lengths <= T (SPEC §3).
    linear_before_reset  the GRU variant, see ``gru_cell``.
    Returns (output [T, N, D*H] (batch-first or unbatched as x), h_n [L*D, N, H]).
    """
    H = np.asarray(weights["weight_hh_l0"]).shape[0] // 3

    def step(x_t, states, p):
        return (gru_cell(x_t, states[0], p["weight_ih"], p["weight_hh"], p["bias_ih"],
                         p["bias_hh"], linear_before_reset=linear_before_reset),)

    output, (h_n,) = _sequence(step, x, (hx,), (H,), weights, num_layers, bidirectional,
                               batch_first, lengths)
    return output, h_n


def rnn(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
        nonlinearity="tanh"):
    """A (multi-layer, optionally bidirectional) Elman RNN over a sequence, as ``torch.nn.RNN``.

    x        [T, N, I], [N, T, I] with batch_first, or unbatched [T, I].
    hx       h0 [L*D, N, H] (unbatched [L*D, H]) or None (zeros).
    weights  mapping with PyTorch's names (SPEC §3); a missing bias is zero.
    lengths  optional int [N], 1 <= lengths <= T (SPEC §3).
    nonlinearity  "tanh" or "relu"; anything else is a ValueError.
    Returns (output [T, N, D*H] (batch-first or unbatched as x), h_n [L*D, N, H]).
    """
    _activation(nonlinearity)
    H = np.asarray(weights["weight_hh_l0"]).shape[0]

    def step(x_t, states, p):
        return (rnn_cell(x_t, states[0], p["weight_ih"], p["weight_hh"], p["bias_ih"],
                         p["bias_hh"], nonlinearity=nonlinearity),)

    output, (h_n,) = _sequence(step, x, (hx,), (H,), weights, num_layers, bidirectional,
                               batch_first, lengths)
    return output, h_n
