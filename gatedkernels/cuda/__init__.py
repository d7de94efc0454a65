"""gatedkernels on NVIDIA GPUs: Numba CUDA kernels on device arrays, zero-copy.

Install with ``pip install 'gatedkernels[cuda12]'`` or ``'gatedkernels[cuda13]'`` (numba-cuda
with the matching toolkit wheels). This subpackage is imported only when a call gets a device
array, or when imported explicitly; ``import gatedkernels`` never imports numba.

You rarely call it directly: ``gk.lstm_cell``, ``gk.gru_cell``, ``gk.rnn_cell``, ``gk.lstm``,
``gk.gru``, ``gk.rnn`` and the modules route any CUDA array (torch CUDA tensors, CuPy arrays,
Numba device arrays, anything with ``__cuda_array_interface__``) here, and return the same kind
of array, on the caller's current stream, with no host round trip. Modules keep device copies of
their weights (``module.to("cuda")``, or made on first device call).

Kernels (see ``_kernels``): a fused step kernel per cell (the recurrent product and the gate math
in one launch; the Cho GRU needs two), a warp per hidden unit for small batches and a
shared-memory tiled product for large ones, and for sequences the input projection as one GEMM
(cuBLAS through torch or CuPy; a tiled Numba GEMM for Numba arrays) followed by one persistent
cooperative kernel per layer-direction that runs all T steps with a grid barrier per step and,
where they fit, the recurrent weights held in shared memory. Where a cooperative launch is not
possible, the same step runs as one ordinary launch per time step (``impl="loop"``; tiled
for large batches).

LSTM projections (``proj_size``, ``w_hr``) run as a second phase per step: h' = W_hr m.
Not yet on the GPU: float16.
"""
from __future__ import annotations

import numpy as np

from gatedkernels import _api
from gatedkernels._device import device_kind
from gatedkernels.cuda._interop import library_of
from gatedkernels.cuda._numba import SIMULATOR, cuda, is_available
from gatedkernels.cuda._run import IMPLS, _view, cell, sequence
from gatedkernels.cuda._stream import DeviceStream

__all__ = ["is_available", "to_device_params", "DeviceStream", "SIMULATOR", "lstm_cell", "gru_cell", "rnn_cell", "lstm", "gru",
           "rnn", "IMPLS"]


def to_device_params(params):
    """{name: Numba device array} copies of a module's NumPy parameters."""
    return {k: cuda.to_device(np.ascontiguousarray(v)) for k, v in params.items()}


def lstm_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None):
    h, c = _api.split_lstm_hx(hx)
    return cell(_api.LSTM, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, linear_before_reset=True):
    return cell(_api.GRU, x, h, None, w_ih, w_hh, b_ih, b_hh, lbr=bool(linear_before_reset))[0]


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    relu = _api.check_nonlinearity(nonlinearity)
    return cell(_api.RNN, x, h, None, w_ih, w_hh, b_ih, b_hh, relu=relu)[0]


def _layers(kind, weights, num_layers, bidirectional, dt):
    """[(w_ih, w_hh, b_ih, b_hh)] from a PyTorch-named mapping of device arrays, checked and
    cast to `dt`."""
    num_layers = _api.check_size(num_layers, "num_layers", 1)
    D = 2 if bidirectional else 1
    if "weight_hh_l0" not in weights or "weight_ih_l0" not in weights:
        raise ValueError("weights: expected PyTorch names, e.g. 'weight_ih_l0' and 'weight_hh_l0'")
    G = _api.GATES[kind]
    w0 = weights["weight_hh_l0"]
    lib = library_of(w0, device_kind(w0))
    w_hh0 = _view(lib, w0, "weight_hh_l0")
    w_ih0 = _view(lib, weights["weight_ih_l0"], "weight_ih_l0")
    if len(w_hh0.shape) != 2 or w_hh0.shape[0] % G or len(w_ih0.shape) != 2:
        raise ValueError(f"weight_hh_l0: expected [{_api.gate_rows(kind)}, H], "
                         f"got {tuple(w_hh0.shape)}")
    H, I = w_hh0.shape[0] // G, w_ih0.shape[1]
    bias = "bias_ih_l0" in weights
    proj = 0
    if "weight_hr_l0" in weights:
        if kind != _api.LSTM:
            raise ValueError("weights: only an LSTM has weight_hr_l*")
        proj = _view(lib, weights["weight_hr_l0"], "weight_hr_l0").shape[0]
    shapes = _api.param_shapes(kind, I, H, num_layers, D == 2, bias, proj)
    _api.check_names(weights, shapes, "weights")
    views = {}
    for name, (letters, shape) in shapes.items():
        v = _view(lib, weights[name], name, dt)
        _api.expect_shape(v, name, letters, shape)
        views[name] = v
    layers = _api.layer_tuples(views, num_layers, D == 2, bias, proj)
    return layers, I, H, proj or H, num_layers, D


def _sequence(kind, x, hx, weights, num_layers, bidirectional, batch_first, lengths, impl,
              lbr=True, relu=False):
    # computes in x's dtype, as the CPU call does: the weights are cast to it
    dt = _view(library_of(x, device_kind(x)), x, "x").dtype
    layers, I, H, P, L, D = _layers(kind, weights, num_layers, bidirectional, dt)
    return sequence(kind, lbr, relu, layers, I, H, L, D, x, hx, lengths, batch_first, impl,
                    dtype=dt, P=P)


def lstm(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
         impl="auto"):
    """``output, (h_n, c_n)`` of a whole LSTM sequence on device arrays (see ``gk.lstm``).
    impl: "auto" (persistent kernel where a cooperative launch fits, else one launch per step),
    "persistent" or "loop"."""
    y, hn, cn = _sequence(_api.LSTM, x, hx, weights, num_layers, bidirectional, batch_first,
                          lengths, impl)
    return y, (hn, cn)


def gru(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
        linear_before_reset=True, impl="auto"):
    y, hn, _ = _sequence(_api.GRU, x, hx, weights, num_layers, bidirectional, batch_first,
                         lengths, impl, lbr=bool(linear_before_reset))
    return y, hn


def rnn(x, hx, weights, *, num_layers=1, bidirectional=False, batch_first=False, lengths=None,
        nonlinearity="tanh", impl="auto"):
    relu = _api.check_nonlinearity(nonlinearity)
    y, hn, _ = _sequence(_api.RNN, x, hx, weights, num_layers, bidirectional, batch_first,
                         lengths, impl, relu=relu)
    return y, hn
