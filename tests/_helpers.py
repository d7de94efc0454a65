"""Helpers shared by the tests: random parameters in PyTorch's layout, the equivalent torch
modules, and ONNX Runtime models of single-layer LSTM / GRU / RNN nodes.

Cell kinds are named by a string: "lstm", "gru", "rnn_tanh", "rnn_relu".
torch, onnx and onnxruntime are imported inside the functions that need them, so importing this
module costs nothing and never fails; tests skip with `pytest.importorskip` before calling them.
Import it from a test file as ``import _helpers`` (tests/ is on sys.path under pytest's default
``prepend`` import mode).
"""

import importlib.util
import pathlib

import numpy as np

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


# Every cell variant as (kind, functional keyword arguments), with test ids.
CELL_VARIANTS = [
    ("lstm", {}),
    ("gru", {"linear_before_reset": True}),
    ("gru", {"linear_before_reset": False}),
    ("rnn_tanh", {}),
    ("rnn_relu", {}),
]
VARIANT_IDS = ["lstm", "gru_lbr", "gru_cho", "rnn_tanh", "rnn_relu"]

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_bench_script(name):
    """bench/<name>.py of the checkout as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"gk_bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cast_tree(tree, dtype):
    """Cast every array of a dict / tuple / array to dtype (None stays None)."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: cast_tree(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return tuple(cast_tree(v, dtype) for v in tree)
    return np.asarray(tree).astype(dtype)


def nonlinearity(kind):
    """"tanh"/"relu" for the RNN kinds."""
    return kind.split("_")[1]


# ---------------------------------------------------------------------------------------------
# Random parameters and states (NumPy, PyTorch layout).


def _uniform(rng, shape, scale, dtype):
    return rng.uniform(-scale, scale, size=shape).astype(dtype)


def random_cell_params(kind, input_size, hidden_size, *, rng, bias=True, proj_size=0,
                       scale=None, dtype=np.float64):
    """Arguments of the functional cell: {w_ih, w_hh, b_ih, b_hh[, w_hr]} in PyTorch's layout.

    Uniform(-scale, scale), scale = 1/sqrt(H) by default (PyTorch's initialisation). The biases
    are None when ``bias`` is false; ``w_hr`` [P, H] is there only when ``proj_size`` > 0.
    """
    G, H = GATES[kind], hidden_size
    P = proj_size or H
    scale = 1 / np.sqrt(H) if scale is None else scale
    params = {
        "w_ih": _uniform(rng, (G * H, input_size), scale, dtype),
        "w_hh": _uniform(rng, (G * H, P), scale, dtype),
        "b_ih": _uniform(rng, (G * H,), scale, dtype) if bias else None,
        "b_hh": _uniform(rng, (G * H,), scale, dtype) if bias else None,
    }
    if proj_size:
        params["w_hr"] = _uniform(rng, (P, H), scale, dtype)
    return params


def random_weights(kind, input_size, hidden_size, *, rng, num_layers=1, bidirectional=False,
                   bias=True, proj_size=0, scale=None, dtype=np.float64):
    """A sequence model's parameters {PyTorch name: ndarray}, as ``nn.LSTM(...).state_dict()``.

    Layer k > 0 takes D*P input features. Names without bias when ``bias`` is false.
    """
    D = 2 if bidirectional else 1
    P = proj_size or hidden_size
    weights = {}
    for k in range(num_layers):
        for d in range(D):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            cell = random_cell_params(kind, input_size if k == 0 else D * P, hidden_size,
                                      rng=rng, bias=bias, proj_size=proj_size, scale=scale,
                                      dtype=dtype)
            weights["weight_ih" + suffix] = cell["w_ih"]
            weights["weight_hh" + suffix] = cell["w_hh"]
            if bias:
                weights["bias_ih" + suffix] = cell["b_ih"]
                weights["bias_hh" + suffix] = cell["b_hh"]
            if proj_size:
                weights["weight_hr" + suffix] = cell["w_hr"]
    return weights


def random_hx(kind, rows, batch, hidden_size, *, rng, proj_size=0, batched=True,
              dtype=np.float64):
    """Initial state(s): (h [rows, N, P], c [rows, N, H]) for "lstm", h [rows, N, H] otherwise.

    ``rows`` is L*D for a sequence model; ``rows=None`` gives cell states [N, ·]. ``batched``
    false drops the N axis (unbatched calls).
    """
    P = proj_size or hidden_size

    def state(size):
        shape = ((rows,) if rows is not None else ()) + ((batch,) if batched else ()) + (size,)
        return rng.standard_normal(shape).astype(dtype) * 0.5

    return (state(P), state(hidden_size)) if kind == "lstm" else state(hidden_size)


def random_lengths(rng, batch, steps, *, include=(1,)):
    """Unsorted int64 lengths [N] in 1..T that contain T and every value of ``include``."""
    lengths = rng.integers(1, steps + 1, size=batch)
    fixed = [steps, *include][:batch]
    lengths[: len(fixed)] = fixed
    return rng.permutation(lengths).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# PyTorch (imported lazily).


def to_torch(a):
    import torch

    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def to_numpy(t):
    return None if t is None else t.detach().cpu().numpy()


def hx_to_torch(hx):
    if hx is None:
        return None
    return tuple(to_torch(s) for s in hx) if isinstance(hx, tuple) else to_torch(hx)


def hx_to_numpy(hx):
    return tuple(to_numpy(s) for s in hx) if isinstance(hx, tuple) else to_numpy(hx)


def torch_cell(kind, params):
    """``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` holding ``params`` (random_cell_params)
    in their dtype."""
    import torch

    w_ih = params["w_ih"]
    G = GATES[kind]
    H, I = w_ih.shape[0] // G, w_ih.shape[1]
    bias = params["b_ih"] is not None
    dtype = torch.from_numpy(w_ih[:0]).dtype
    if kind == "lstm":
        cell = torch.nn.LSTMCell(I, H, bias=bias, dtype=dtype)
    elif kind == "gru":
        cell = torch.nn.GRUCell(I, H, bias=bias, dtype=dtype)
    else:
        cell = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=nonlinearity(kind), dtype=dtype)
    state = {"weight_ih": w_ih, "weight_hh": params["w_hh"]}
    if bias:
        state.update(bias_ih=params["b_ih"], bias_hh=params["b_hh"])
    cell.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    return cell


def torch_module(kind, weights, *, num_layers=1, bidirectional=False, batch_first=False):
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` holding ``weights`` (PyTorch names) in their dtype.

    Sizes, bias and proj_size are read off the layer-0 weights.
    """
    import torch

    w_ih, w_hh = weights["weight_ih_l0"], weights["weight_hh_l0"]
    G = GATES[kind]
    H, I = w_ih.shape[0] // G, w_ih.shape[1]
    options = dict(num_layers=num_layers, bias="bias_ih_l0" in weights,
                   batch_first=batch_first, bidirectional=bidirectional,
                   dtype=torch.from_numpy(w_ih[:0]).dtype)
    if kind == "lstm":
        proj_size = weights["weight_hr_l0"].shape[0] if "weight_hr_l0" in weights else 0
        module = torch.nn.LSTM(I, H, proj_size=proj_size, **options)
    elif kind == "gru":
        module = torch.nn.GRU(I, H, **options)
    else:
        module = torch.nn.RNN(I, H, nonlinearity=nonlinearity(kind), **options)
    assert w_hh.shape[1] == module.weight_hh_l0.shape[1]
    module.load_state_dict({k: to_torch(v) for k, v in weights.items()}, strict=True)
    module.eval()
    return module


def torch_run(module, x, hx=None, *, lengths=None):
    """Run a torch sequence module on NumPy input; with ``lengths``, through
    ``pack_padded_sequence(enforce_sorted=False)`` and ``pad_packed_sequence(total_length=T)``.
    Returns (output, h_n or (h_n, c_n)) as NumPy arrays, in the module's layout."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    with torch.no_grad():
        x_t = to_torch(x)
        if lengths is None:
            output, hn = module(x_t, hx_to_torch(hx))
        else:
            steps = x.shape[1] if module.batch_first else x.shape[0]
            packed = pack_padded_sequence(x_t, torch.as_tensor(lengths, dtype=torch.int64),
                                          batch_first=module.batch_first, enforce_sorted=False)
            output, hn = module(packed, hx_to_torch(hx))
            output, _ = pad_packed_sequence(output, batch_first=module.batch_first,
                                            total_length=steps)
    return to_numpy(output), hx_to_numpy(hn)


# ---------------------------------------------------------------------------------------------
# ONNX / ONNX Runtime (imported lazily). One node = one layer; ORT CPU computes in float32 only.

# Block order of the ONNX weights, as indices into PyTorch's blocks:
# LSTM PyTorch i,f,g,o -> ONNX i,o,f,c; GRU PyTorch r,z,n -> ONNX z,r,h; RNN: one block.
ONNX_BLOCKS = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}
ONNX_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def _reorder(a, kind):
    """Reorder the gate blocks (axis 0) of a PyTorch weight or bias into ONNX's order."""
    blocks = np.split(a, GATES[kind])
    return np.concatenate([blocks[j] for j in ONNX_BLOCKS[kind]])


def onnx_weights(kind, weights, *, bidirectional=False):
    """Layer-0 PyTorch weights -> ONNX inputs (W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H]),
    float32, B = concat(b_ih', b_hh') per direction (zeros without bias)."""
    W, R, B = [], [], []
    for d in range(2 if bidirectional else 1):
        suffix = "_l0" + ("_reverse" if d else "")
        w_ih, w_hh = weights["weight_ih" + suffix], weights["weight_hh" + suffix]
        zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
        b_ih = weights.get("bias_ih" + suffix, zeros)
        b_hh = weights.get("bias_hh" + suffix, zeros)
        W.append(_reorder(w_ih, kind))
        R.append(_reorder(w_hh, kind))
        B.append(np.concatenate([_reorder(b_ih, kind), _reorder(b_hh, kind)]))
    return tuple(np.stack(a).astype(np.float32) for a in (W, R, B))


def onnx_model(kind, hidden_size, *, bidirectional=False, linear_before_reset=True,
               with_lengths=True, opset=17):
    """A one-node ONNX model: inputs X [T, N, I], W, R, B, sequence_lens [N] (int32, when
    ``with_lengths``), initial_h [D, N, H] (and initial_c for LSTM); outputs Y [T, D, N, H],
    Y_h [D, N, H] (and Y_c). Dimensions other than H are symbolic."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    lstm = kind == "lstm"
    inputs = [
        helper.make_tensor_value_info("X", f32, ["T", "N", "I"]),
        helper.make_tensor_value_info("W", f32, ["D", "GH", "I"]),
        helper.make_tensor_value_info("R", f32, ["D", "GH", "H"]),
        helper.make_tensor_value_info("B", f32, ["D", "GH2"]),
        helper.make_tensor_value_info("initial_h", f32, ["D", "N", "H"]),
    ]
    node_inputs = ["X", "W", "R", "B", "sequence_lens" if with_lengths else "", "initial_h"]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["N"]))
    if lstm:
        inputs.append(helper.make_tensor_value_info("initial_c", f32, ["D", "N", "H"]))
        node_inputs.append("initial_c")
    output_names = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    outputs = [helper.make_tensor_value_info("Y", f32, ["T", "D", "N", "H"])]
    outputs += [helper.make_tensor_value_info(n, f32, ["D", "N", "H"]) for n in output_names[1:]]

    attributes = {"hidden_size": hidden_size,
                  "direction": "bidirectional" if bidirectional else "forward"}
    if kind == "gru":
        attributes["linear_before_reset"] = int(bool(linear_before_reset))
    if kind.startswith("rnn"):
        activation = {"tanh": "Tanh", "relu": "Relu"}[nonlinearity(kind)]
        attributes["activations"] = [activation] * (2 if bidirectional else 1)
    node = helper.make_node(ONNX_OPS[kind], node_inputs, output_names, **attributes)
    graph = helper.make_graph([node], f"{kind}_node", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # the IR version of opset 17; keeps older runtimes happy
    return model


def ort_run(kind, x, hx, weights, *, bidirectional=False, lengths=None,
            linear_before_reset=True):
    """Run a one-layer model through ONNX Runtime (CPU, float32).

    x [T, N, I]; hx as ``random_hx`` for L = 1 or None; weights in PyTorch layout (layer 0).
    Returns (output [T, N, D*H], h_n [D, N, H] or (h_n, c_n)) in gatedkernels' layout, float32.
    """
    import onnxruntime as ort

    T, N, _ = x.shape
    D = 2 if bidirectional else 1
    W, R, B = onnx_weights(kind, weights, bidirectional=bidirectional)
    H = R.shape[2]
    if hx is None:
        hx = ((np.zeros((D, N, H)),) * 2) if kind == "lstm" else np.zeros((D, N, H))
    h0, c0 = hx if kind == "lstm" else (hx, None)
    feeds = {"X": x, "W": W, "R": R, "B": B, "initial_h": h0}
    if c0 is not None:
        feeds["initial_c"] = c0
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, np.int32)
    feeds = {k: (v if k == "sequence_lens" else np.ascontiguousarray(v, np.float32))
             for k, v in feeds.items()}

    model = onnx_model(kind, H, bidirectional=bidirectional,
                       linear_before_reset=linear_before_reset, with_lengths=lengths is not None)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    results = session.run(None, feeds)
    Y = results[0]  # [T, D, N, H] -> [T, N, D*H], directions concatenated [forward, reverse]
    output = np.ascontiguousarray(Y.transpose(0, 2, 1, 3).reshape(T, N, D * H))
    states = tuple(results[1:]) if kind == "lstm" else results[1]
    return output, states


# ---------------------------------------------------------------------------------------------
# Calling an implementation (gatedkernels.reference, or anything with the same functions).


def call_cell(impl, kind, x, hx, params, *, linear_before_reset=True):
    """``impl.<kind>_cell`` on ``params`` from ``random_cell_params``."""
    args = (x, hx, params["w_ih"], params["w_hh"], params["b_ih"], params["b_hh"])
    if kind == "lstm":
        return impl.lstm_cell(*args, w_hr=params.get("w_hr"))
    if kind == "gru":
        return impl.gru_cell(*args, linear_before_reset=linear_before_reset)
    return impl.rnn_cell(*args, nonlinearity=nonlinearity(kind))


def call_sequence(impl, kind, x, hx, weights, *, linear_before_reset=True, **options):
    """``impl.lstm`` / ``impl.gru`` / ``impl.rnn``; ``options`` are num_layers, bidirectional,
    batch_first, lengths."""
    if kind == "lstm":
        return impl.lstm(x, hx, weights, **options)
    if kind == "gru":
        return impl.gru(x, hx, weights, linear_before_reset=linear_before_reset, **options)
    return impl.rnn(x, hx, weights, nonlinearity=nonlinearity(kind), **options)


def flatten(result):
    """A cell or sequence result as a flat list of arrays: [output, h_n(, c_n)] or [h1(, c1)]."""
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in flatten(part)]
    return [result]
