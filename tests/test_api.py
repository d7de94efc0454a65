"""The API contract (SPEC §4–§5) of the compiled calls (``gk.*``) and of the modules.

What is checked, for functional cells, functional sequences, cell modules and sequence modules:

* inputs are never modified; non-contiguous and read-only inputs give bitwise the same results;
* dtypes: functional calls compute in x's dtype, modules in their own, everything else is cast;
  integer, bool, complex and object input is a TypeError;
* every error of SPEC §5, with its message (``name: expected [letters] = [values], got (shape)``);
* determinism (bitwise), unbatched calls, and the modules' parameters (PyTorch's names and
  shapes, initialisation, read-only state_dict, load_state_dict and attribute assignment);
* NaN, Inf and huge inputs: no crash, no leak into other batch rows, IEEE propagation, and
  saturation to finite values.

Numbers are compared with ``assert_close64`` / ``assert_close32`` of conftest.py against the
float64 reference (the oracle); "bitwise" comparisons are exact byte comparisons.
"""

import re

import numpy as np
import pytest

import _helpers as hp
import gatedkernels as gk
from conftest import assert_close32, assert_close64
from gatedkernels import reference as ref

TORCH_REASON = "PyTorch (pip install torch==2.13.0) is needed for the comparisons with torch.nn"

# Sequence variants: the cell kinds of _helpers, the projected LSTM (P = H // 2) and the
# reset-before GRU (linear_before_reset=False).
VARIANTS = ["lstm", "lstm_proj", "gru", "gru_lbr0", "rnn_tanh", "rnn_relu"]
# Cell modules have no projection.
CELL_VARIANTS = ["lstm", "gru", "gru_lbr0", "rnn_tanh", "rnn_relu"]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
BACKENDS = ["cpu", "reference"]
# dtypes that are not float: every one is a TypeError wherever a float array is expected.
BAD_DTYPES = [pytest.param(np.int32, id="int32"), pytest.param(np.int64, id="int64"),
              pytest.param(np.bool_, id="bool"), pytest.param(np.complex128, id="complex"),
              pytest.param(object, id="object")]
# Memory layouts that must give bitwise the same result as a C-contiguous array.
LAYOUTS = ["fortran", "strided", "reversed", "readonly", "byteswapped"]


# ---------------------------------------------------------------------------------------------
# Helpers.


def _kind(variant):
    return {"lstm_proj": "lstm", "gru_lbr0": "gru"}.get(variant, variant)


def _lbr(variant):
    return variant != "gru_lbr0"


def _proj(variant, H):
    return H // 2 if variant == "lstm_proj" else 0


def _cast(a, dtype):
    """Arrays (in tuples and dicts, None kept) cast to dtype."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_cast(s, dtype) for s in a)
    if isinstance(a, dict):
        return {k: _cast(v, dtype) for k, v in a.items()}
    return np.asarray(a).astype(dtype)


def _copy(a):
    """A deep copy of arrays in tuples and dicts (None kept)."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_copy(s) for s in a)
    if isinstance(a, dict):
        return {k: _copy(v) for k, v in a.items()}
    return np.array(a, copy=True)


def _arrays(a):
    """Every array of a nested structure (tuples, dicts, None), in a fixed order."""
    if a is None:
        return []
    if isinstance(a, (tuple, list)):
        return [b for s in a for b in _arrays(s)]
    if isinstance(a, dict):
        return [b for k in sorted(a) for b in _arrays(a[k])]
    return [a]


def _assert_bitwise(got, expected, what=""):
    """Same structure, shapes, dtypes and bytes (dicts: same keys in the same order)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), what
        for k in expected:
            _assert_bitwise(got[k], expected[k], f"{what} {k}")
        return
    g, e = hp.flatten(got), hp.flatten(expected)
    assert len(g) == len(e), what
    for u, v in zip(g, e):
        assert u.shape == v.shape and u.dtype == v.dtype, f"{what}: {u.shape} {u.dtype} vs " \
                                                          f"{v.shape} {v.dtype}"
        np.testing.assert_array_equal(u, v, err_msg=what)
        assert np.ascontiguousarray(u).tobytes() == np.ascontiguousarray(v).tobytes(), what


def _assert_unchanged(before, after, what=""):
    b, a = _arrays(before), _arrays(after)
    assert len(b) == len(a)
    for u, v in zip(b, a):
        assert v.flags.writeable == u.flags.writeable, f"{what}: writeable flag changed"
        _assert_bitwise(v, u, what)


def _assert_like_reference(got, run_reference, dtype, what=""):
    """got (in dtype) vs the reference: float64 per element; float32 bounded by the float32
    reference. ``run_reference(dt)`` runs the reference with x and the states cast to dt."""
    for a in hp.flatten(got):
        assert a.dtype == dtype, f"{what}: dtype {a.dtype}, expected {np.dtype(dtype)}"
    oracle = run_reference(np.float64)
    if dtype == np.float64:
        assert_close64(got, oracle, what)
    else:
        assert_close32(got, oracle, run_reference(np.float32), what)


def _relayout(a, how):
    """`a` (arrays in tuples/dicts, None kept) as equal arrays in another memory layout:
    F-ordered, every other element of a wider buffer, negative strides, read-only, or in the
    other byte order (what a kernel must never read as if it were native)."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_relayout(s, how) for s in a)
    if isinstance(a, dict):
        return {k: _relayout(v, how) for k, v in a.items()}
    a = np.asarray(a)
    if how == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    if how == "byteswapped":
        out = a.astype(a.dtype.newbyteorder())
        assert out.dtype.byteorder != a.dtype.byteorder and out.dtype.byteorder != "="
        assert out.tobytes() != a.tobytes() or not a.any()
        np.testing.assert_array_equal(out, a)
        return out
    if how == "fortran" and a.ndim >= 2:
        out = np.asfortranarray(a)
    elif how in ("fortran", "strided"):
        fill = np.nan if a.dtype.kind == "f" else -7  # garbage between the elements
        big = np.full(a.shape[:-1] + (2 * a.shape[-1],), fill, a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
    else:
        out = a[::-1].copy()[::-1]
    assert not out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)
    return out


# Functional calls and modules, by variant.


def _cell_inputs(variant, N, I, H, dtype, rng, *, batched=True, proj=True):
    """(params, x, hx) for a functional cell (params as random_cell_params)."""
    kind = _kind(variant)
    P = _proj(variant, H) if proj else 0
    params = hp.random_cell_params(kind, I, H, rng=rng, proj_size=P, dtype=dtype)
    x = rng.standard_normal((N, I) if batched else (I,)).astype(dtype)
    hx = hp.random_hx(kind, None, N, H, rng=rng, proj_size=P, batched=batched, dtype=dtype)
    return params, x, hx


def _cell_call(impl, variant, x, hx, params):
    return hp.call_cell(impl, _kind(variant), x, hx, params, linear_before_reset=_lbr(variant))


def _seq_inputs(variant, T, N, I, H, dtype, rng, *, num_layers=1, bidirectional=False,
                batch_first=False, batched=True):
    """(weights, x, hx, lengths) for a sequence."""
    kind, P = _kind(variant), _proj(variant, H)
    D = 2 if bidirectional else 1
    weights = hp.random_weights(kind, I, H, rng=rng, num_layers=num_layers,
                                bidirectional=bidirectional, proj_size=P, dtype=dtype)
    shape = ((N, T, I) if batch_first else (T, N, I)) if batched else (T, I)
    x = rng.standard_normal(shape).astype(dtype)
    hx = hp.random_hx(kind, num_layers * D, N, H, rng=rng, proj_size=P, batched=batched,
                      dtype=dtype)
    lengths = hp.random_lengths(rng, N, T) if batched else None
    return weights, x, hx, lengths


def _seq_call(impl, variant, x, hx, weights, **options):
    return hp.call_sequence(impl, _kind(variant), x, hx, weights,
                            linear_before_reset=_lbr(variant), **options)


def _module(variant, I, H, *, num_layers=1, bidirectional=False, batch_first=False, bias=True,
            dtype=np.float64, backend="cpu", seed=0):
    kind = _kind(variant)
    common = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
                  bidirectional=bidirectional, dtype=dtype, seed=seed, backend=backend)
    if kind == "lstm":
        return gk.LSTM(I, H, proj_size=_proj(variant, H), **common)
    if kind == "gru":
        return gk.GRU(I, H, linear_before_reset=_lbr(variant), **common)
    return gk.RNN(I, H, nonlinearity=hp.nonlinearity(kind), **common)


def _cell_module(variant, I, H, *, bias=True, dtype=np.float64, backend="cpu", seed=0):
    kind = _kind(variant)
    common = dict(bias=bias, dtype=dtype, seed=seed, backend=backend)
    if kind == "lstm":
        return gk.LSTMCell(I, H, **common)
    if kind == "gru":
        return gk.GRUCell(I, H, linear_before_reset=_lbr(variant), **common)
    return gk.RNNCell(I, H, nonlinearity=hp.nonlinearity(kind), **common)


def _module_options(m):
    return dict(num_layers=m.num_layers, bidirectional=m.bidirectional,
                batch_first=m.batch_first)


def _module_reference(variant, m, x, hx, lengths=None):
    """run_reference(dt) for sequence module m: the reference on m's parameters."""
    sd = m.state_dict()
    return lambda dt: _seq_call(ref, variant, _cast(x, dt), _cast(hx, dt), sd,
                                lengths=lengths, **_module_options(m))


def _cell_params(sd):
    """A cell module's state_dict as the arguments of the functional cell."""
    return {"w_ih": sd["weight_ih"], "w_hh": sd["weight_hh"], "b_ih": sd.get("bias_ih"),
            "b_hh": sd.get("bias_hh")}


def _cell_module_reference(variant, m, x, hx):
    params = _cell_params(m.state_dict())
    return lambda dt: _cell_call(ref, variant, _cast(x, dt), _cast(hx, dt), params)


def _exact(message):
    """pytest.raises(match=...) for exactly this message."""
    return "^" + re.escape(message) + "$"


MIXES = [pytest.param((np.float32, np.float32), id="f32"),
         pytest.param((np.float64, np.float64), id="f64"),
         pytest.param((np.float32, np.float64), id="x32-rest64"),
         pytest.param((np.float64, np.float32), id="x64-rest32")]


def test_public_names():
    for name in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "lstm_cell",
                 "gru_cell", "rnn_cell", "lstm", "gru", "rnn", "reference"):
        assert name in gk.__all__ and hasattr(gk, name)
    for name in ("lstm_cell", "gru_cell", "rnn_cell", "lstm", "gru", "rnn"):
        assert callable(getattr(gk.reference, name))


# ---------------------------------------------------------------------------------------------
# Inputs are never modified (SPEC §5).


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_cell_leaves_inputs(variant, mix, rng):
    x_dt, rest_dt = mix
    params, x, hx = _cell_inputs(variant, 3, 4, 6, rest_dt, rng)
    x = x.astype(x_dt)
    before = _copy((x, hx, params))
    _cell_call(gk, variant, x, hx, params)
    _assert_unchanged(before, (x, hx, params))


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_sequence_leaves_inputs(variant, mix, rng):
    x_dt, rest_dt = mix
    weights, x, hx, lengths = _seq_inputs(variant, 4, 3, 2, 5, rest_dt, rng, num_layers=2,
                                          bidirectional=True)
    x = x.astype(x_dt)
    keys = list(weights)
    before = _copy((x, hx, weights, lengths))
    _seq_call(gk, variant, x, hx, weights, num_layers=2, bidirectional=True, lengths=lengths)
    assert list(weights) == keys
    _assert_unchanged(before, (x, hx, weights, lengths))


@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_leaves_inputs(variant, x_dtype, rng):
    m = _cell_module(variant, 4, 6, dtype=np.float32)
    _, x, hx = _cell_inputs(variant, 3, 4, 6, x_dtype, rng)
    before = _copy((x, hx))
    m(x, hx)
    _assert_unchanged(before, (x, hx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_module_leaves_inputs(variant, x_dtype, backend, rng):
    m = _module(variant, 2, 5, num_layers=2, bidirectional=True, dtype=np.float32,
                backend=backend)
    _, x, hx, lengths = _seq_inputs(variant, 4, 3, 2, 5, x_dtype, rng, num_layers=2,
                                    bidirectional=True)
    before = _copy((x, hx, lengths))
    m(x, hx, lengths=lengths)
    _assert_unchanged(before, (x, hx, lengths))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_load_state_dict_leaves_and_does_not_alias_inputs(variant, dtype, rng):
    """load_state_dict and attribute assignment keep the caller's arrays as they were (still
    writeable), and the module does not see later edits of them."""
    m = _module(variant, 3, 4, num_layers=2, bidirectional=True, dtype=dtype)
    weights, x, hx, _ = _seq_inputs(variant, 3, 2, 3, 4, dtype, rng, num_layers=2,
                                    bidirectional=True)
    before = _copy(weights)
    m.load_state_dict(weights)
    out = m(x, hx)
    w = weights["weight_hh_l1"]
    m.weight_hh_l1 = w
    _assert_unchanged(before, weights)
    for a in weights.values():
        a[...] = 0.5  # the caller edits its arrays in place
    _assert_bitwise(m(x, hx), out, "outputs after editing the loaded arrays")
    assert not np.shares_memory(m.weight_hh_l1, w)


@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_load_state_dict_does_not_alias_inputs(variant, rng):
    m = _cell_module(variant, 3, 4, dtype=np.float64)
    params, x, hx = _cell_inputs(variant, 2, 3, 4, np.float64, rng)
    sd = {"weight_ih": params["w_ih"], "weight_hh": params["w_hh"], "bias_ih": params["b_ih"],
          "bias_hh": params["b_hh"]}
    m.load_state_dict(sd)
    out = m(x, hx)
    for a in sd.values():
        assert a.flags.writeable
        a[...] = 0.25
    _assert_bitwise(m(x, hx), out)


# ---------------------------------------------------------------------------------------------
# Non-contiguous and read-only inputs (SPEC §5): bitwise the same as C-contiguous ones.


@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_cell_any_layout(variant, how, rng):
    params, x, hx = _cell_inputs(variant, 3, 5, 6, np.float64, rng)
    expected = _cell_call(gk, variant, x, hx, params)
    got = _cell_call(gk, variant, _relayout(x, how), _relayout(hx, how), _relayout(params, how))
    _assert_bitwise(got, expected, how)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_sequence_any_layout(variant, how, dtype, rng):
    options = dict(num_layers=2, bidirectional=True, batch_first=True)
    weights, x, hx, lengths = _seq_inputs(variant, 4, 3, 5, 6, dtype, rng, **options)
    expected = _seq_call(gk, variant, x, hx, weights, lengths=lengths, **options)
    got = _seq_call(gk, variant, _relayout(x, how), _relayout(hx, how),
                    _relayout(weights, how), lengths=_relayout(lengths, how), **options)
    _assert_bitwise(got, expected, how)


@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_any_layout(variant, how, rng):
    m = _cell_module(variant, 5, 6, dtype=np.float32, seed=1)
    _, x, hx = _cell_inputs(variant, 3, 5, 6, np.float32, rng)
    expected = m(x, hx)
    _assert_bitwise(m(_relayout(x, how), _relayout(hx, how)), expected, how)

    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    m2 = _cell_module(variant, 5, 6, dtype=np.float32, seed=2)
    m2.load_state_dict(_relayout(sd, how))
    _assert_bitwise(m2(x, hx), expected, f"{how} weights")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_module_any_layout(variant, how, backend, rng):
    options = dict(num_layers=2, bidirectional=True)
    m = _module(variant, 5, 6, dtype=np.float32, backend=backend, seed=1, **options)
    _, x, hx, lengths = _seq_inputs(variant, 4, 3, 5, 6, np.float32, rng, **options)
    expected = m(x, hx, lengths=lengths)
    got = m(_relayout(x, how), _relayout(hx, how), lengths=_relayout(lengths, how))
    _assert_bitwise(got, expected, how)

    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    m2 = _module(variant, 5, 6, dtype=np.float32, backend=backend, seed=2, **options)
    m2.load_state_dict(_relayout(sd, how))
    _assert_bitwise(m2(x, hx, lengths=lengths), expected, f"{how} weights")


@pytest.mark.parametrize("lengths_as", ["int32", "uint8", "list", "tuple"])
def test_lengths_any_integer_type(lengths_as, rng):
    weights, x, hx, lengths = _seq_inputs("gru", 5, 4, 3, 6, np.float64, rng)
    expected = gk.gru(x, hx, weights, lengths=lengths)
    other = {"int32": lengths.astype(np.int32), "uint8": lengths.astype(np.uint8),
             "list": lengths.tolist(), "tuple": tuple(lengths.tolist())}[lengths_as]
    _assert_bitwise(gk.gru(x, hx, weights, lengths=other), expected)
    m = gk.GRU(3, 6, dtype=np.float64)
    _assert_bitwise(m(x, hx, lengths=other), m(x, hx, lengths=lengths))


# ---------------------------------------------------------------------------------------------
# dtypes (SPEC §5).


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_cell_computes_in_x_dtype(variant, mix, rng):
    """The other arguments are cast to x's dtype: the result is bitwise that of a call with
    everything cast first, in x's dtype, and close to the reference."""
    x_dt, rest_dt = mix
    params, x, hx = _cell_inputs(variant, 3, 4, 7, rest_dt, rng)
    x = x.astype(x_dt)
    got = _cell_call(gk, variant, x, hx, params)
    _assert_bitwise(got, _cell_call(gk, variant, x, _cast(hx, x_dt), _cast(params, x_dt)))
    params_x = _cast(params, x_dt)  # the reference's oracle on the values the kernel sees
    _assert_like_reference(
        got, lambda dt: _cell_call(ref, variant, _cast(x, dt), _cast(_cast(hx, x_dt), dt),
                                   params_x), x_dt)


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_sequence_computes_in_x_dtype(variant, mix, rng):
    x_dt, rest_dt = mix
    options = dict(num_layers=2, bidirectional=True)
    weights, x, hx, lengths = _seq_inputs(variant, 4, 3, 4, 7, rest_dt, rng, **options)
    x = x.astype(x_dt)
    got = _seq_call(gk, variant, x, hx, weights, lengths=lengths, **options)
    _assert_bitwise(got, _seq_call(gk, variant, x, _cast(hx, x_dt), _cast(weights, x_dt),
                                   lengths=lengths, **options))
    weights_x, hx_x = _cast(weights, x_dt), _cast(hx, x_dt)
    _assert_like_reference(
        got, lambda dt: _seq_call(ref, variant, _cast(x, dt), _cast(hx_x, dt), weights_x,
                                  lengths=lengths, **options), x_dt)


@pytest.mark.parametrize("input_dtype", DTYPES)
@pytest.mark.parametrize("module_dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_computes_in_its_dtype(variant, module_dtype, input_dtype, rng):
    m = _cell_module(variant, 4, 7, dtype=module_dtype)
    assert m.dtype == module_dtype
    assert all(v.dtype == module_dtype for v in m.state_dict().values())
    _, x, hx = _cell_inputs(variant, 3, 4, 7, input_dtype, rng)
    got = m(x, hx)
    _assert_bitwise(got, m(_cast(x, module_dtype), _cast(hx, module_dtype)))
    _assert_like_reference(got, _cell_module_reference(variant, m, _cast(x, module_dtype),
                                                       _cast(hx, module_dtype)), module_dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("input_dtype", DTYPES)
@pytest.mark.parametrize("module_dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_module_computes_in_its_dtype(variant, module_dtype, input_dtype, backend,
                                               rng):
    options = dict(num_layers=2, bidirectional=True)
    m = _module(variant, 4, 7, dtype=module_dtype, backend=backend, **options)
    assert m.dtype == module_dtype
    assert all(v.dtype == module_dtype for v in m.state_dict().values())
    _, x, hx, lengths = _seq_inputs(variant, 4, 3, 4, 7, input_dtype, rng, **options)
    got = m(x, hx, lengths=lengths)
    _assert_bitwise(got, m(_cast(x, module_dtype), _cast(hx, module_dtype), lengths=lengths))
    _assert_like_reference(got, _module_reference(variant, m, _cast(x, module_dtype),
                                                  _cast(hx, module_dtype), lengths),
                           module_dtype)


@pytest.mark.parametrize("module_dtype", DTYPES)
def test_load_state_dict_casts_to_module_dtype(module_dtype, rng):
    other = np.float64 if module_dtype == np.float32 else np.float32
    weights = hp.random_weights("lstm", 3, 4, rng=rng, proj_size=2, dtype=other)
    m = gk.LSTM(3, 4, proj_size=2, dtype=module_dtype)
    m.load_state_dict(weights)
    for k, v in m.state_dict().items():
        assert v.dtype == module_dtype
        _assert_bitwise(v, weights[k].astype(module_dtype), k)


@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("arg", ["x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"])
def test_functional_cell_rejects_non_float(arg, bad, rng):
    params, x, (h, c) = _cell_inputs("lstm_proj", 3, 4, 6, np.float64, rng)
    values = dict(params, x=x, h=h, c=c)
    values[arg] = np.zeros(values[arg].shape, bad)
    with pytest.raises(TypeError, match=f"^{arg}:"):
        gk.lstm_cell(values["x"], (values["h"], values["c"]), values["w_ih"], values["w_hh"],
                     values["b_ih"], values["b_hh"], w_hr=values["w_hr"])


@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("variant", ["gru", "rnn_tanh"])
def test_functional_gru_rnn_cells_reject_non_float(variant, bad, rng):
    params, x, h = _cell_inputs(variant, 3, 4, 6, np.float64, rng)
    with pytest.raises(TypeError, match="^x:"):
        _cell_call(gk, variant, x.astype(bad), h, params)
    with pytest.raises(TypeError, match="^h:"):
        _cell_call(gk, variant, x, h.astype(bad), params)
    with pytest.raises(TypeError, match="^w_hh:"):
        _cell_call(gk, variant, x, h, dict(params, w_hh=params["w_hh"].astype(bad)))


def test_functional_cell_rejects_non_array_input(rng):
    params, x, h = _cell_inputs("gru", 3, 4, 6, np.float64, rng)
    for bad in ("abc", [[1, 2, 3, 4]], None):
        with pytest.raises(TypeError, match="^x:"):
            gk.gru_cell(bad, h, params["w_ih"], params["w_hh"])


@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("arg", ["x", "h0", "c0", "weight_ih_l0", "weight_hh_l1_reverse",
                                 "bias_hh_l0", "weight_hr_l1"])
def test_functional_sequence_rejects_non_float(arg, bad, rng):
    options = dict(num_layers=2, bidirectional=True)
    weights, x, (h0, c0), lengths = _seq_inputs("lstm_proj", 3, 2, 4, 6, np.float32, rng,
                                                **options)
    values = dict(weights, x=x, h0=h0, c0=c0)
    values[arg] = np.zeros(values[arg].shape, bad)
    weights = {k: values[k] for k in weights}
    with pytest.raises(TypeError, match=f"^{arg}:"):
        gk.lstm(values["x"], (values["h0"], values["c0"]), weights, lengths=lengths, **options)


@pytest.mark.parametrize("lengths_dtype", [np.float64, np.float32, np.bool_, np.complex64])
def test_non_integer_lengths_are_type_errors(lengths_dtype, rng):
    weights, x, hx, _ = _seq_inputs("gru", 3, 2, 4, 6, np.float64, rng)
    lengths = np.array([1, 1], lengths_dtype)
    with pytest.raises(TypeError, match="^lengths"):
        gk.gru(x, hx, weights, lengths=lengths)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_relu"])
def test_sequence_module_rejects_non_float(variant, bad, backend, rng):
    m = _module(variant, 4, 6, dtype=np.float32, backend=backend)
    _, x, hx, _ = _seq_inputs(variant, 3, 2, 4, 6, np.float32, rng)
    with pytest.raises(TypeError, match="^x:"):
        m(x.astype(bad), hx)
    bad_hx = (hx[0].astype(bad), hx[1]) if variant == "lstm" else hx.astype(bad)
    with pytest.raises(TypeError, match="^h0:"):
        m(x, bad_hx)
    if variant == "lstm":
        with pytest.raises(TypeError, match="^c0:"):
            m(x, (hx[0], hx[1].astype(bad)))
    sd = dict(m.state_dict(), weight_hh_l0=m.weight_hh_l0.astype(bad))
    with pytest.raises(TypeError, match="^weight_hh_l0:"):
        m.load_state_dict(sd)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths_dtype", [np.float64, np.bool_])
def test_sequence_module_non_integer_lengths_are_type_errors(lengths_dtype, backend, rng):
    m = gk.GRU(4, 6, backend=backend)
    _, x, hx, _ = _seq_inputs("gru", 3, 2, 4, 6, np.float32, rng)
    with pytest.raises(TypeError, match="^lengths"):
        m(x, hx, lengths=np.array([1, 1], lengths_dtype))


@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_rejects_non_float(variant, bad, rng):
    m = _cell_module(variant, 4, 6)
    _, x, hx = _cell_inputs(variant, 3, 4, 6, np.float64, rng)
    with pytest.raises(TypeError, match="^x:"):
        m(x.astype(bad), hx)
    bad_hx = (hx[0].astype(bad), hx[1]) if variant == "lstm" else hx.astype(bad)
    with pytest.raises(TypeError, match="^h:"):
        m(x, bad_hx)
    sd = dict(m.state_dict(), weight_ih=m.weight_ih.astype(bad))
    with pytest.raises(TypeError, match="^weight_ih:"):
        m.load_state_dict(sd)


# ---------------------------------------------------------------------------------------------
# Errors and their messages (SPEC §5).

# (variant, N, I, H, argument, bad shape, exact message); the other arguments are well formed.
CELL_SHAPE_ERRORS = [
    ("lstm", 3, 32, 64, "w_hh", (256, 65), "w_hh: expected [4*H, H] = [256, 64], got (256, 65)"),
    ("lstm", 3, 32, 64, "w_ih", (256, 31), "w_ih: expected [4*H, I] = [256, 32], got (256, 31)"),
    ("lstm", 3, 32, 64, "w_ih", (255, 32), "w_ih: expected [4*H, I] = [256, 32], got (255, 32)"),
    ("lstm", 3, 32, 64, "b_ih", (255,), "b_ih: expected [4*H] = [256], got (255,)"),
    ("lstm", 3, 32, 64, "b_hh", (256, 1), "b_hh: expected [4*H] = [256], got (256, 1)"),
    ("lstm", 3, 32, 64, "h", (3, 63), "h: expected [N, H] = [3, 64], got (3, 63)"),
    ("lstm", 3, 32, 64, "h", (2, 64), "h: expected [N, H] = [3, 64], got (2, 64)"),
    ("lstm", 3, 32, 64, "c", (3, 65), "c: expected [N, H] = [3, 64], got (3, 65)"),
    ("lstm", 3, 32, 64, "c", (64,), "c: expected [N, H] = [3, 64], got (64,)"),
    ("lstm_proj", 2, 5, 8, "w_hr", (4, 9), "w_hr: expected [P, H] = [4, 8], got (4, 9)"),
    ("lstm_proj", 2, 5, 8, "w_hh", (32, 8), "w_hh: expected [4*H, P] = [32, 4], got (32, 8)"),
    ("lstm_proj", 2, 5, 8, "h", (2, 8), "h: expected [N, P] = [2, 4], got (2, 8)"),
    ("lstm_proj", 2, 5, 8, "c", (2, 4), "c: expected [N, H] = [2, 8], got (2, 4)"),
    ("gru", 2, 5, 7, "w_hh", (21, 8), "w_hh: expected [3*H, H] = [21, 7], got (21, 8)"),
    ("gru", 2, 5, 7, "w_ih", (21, 4), "w_ih: expected [3*H, I] = [21, 5], got (21, 4)"),
    ("gru", 2, 5, 7, "b_hh", (20,), "b_hh: expected [3*H] = [21], got (20,)"),
    ("gru", 2, 5, 7, "h", (2, 6), "h: expected [N, H] = [2, 7], got (2, 6)"),
    ("rnn_tanh", 2, 5, 7, "w_hh", (7, 8), "w_hh: expected [H, H] = [7, 7], got (7, 8)"),
    ("rnn_tanh", 2, 5, 7, "w_ih", (7, 4), "w_ih: expected [H, I] = [7, 5], got (7, 4)"),
    ("rnn_relu", 2, 5, 7, "b_ih", (8,), "b_ih: expected [H] = [7], got (8,)"),
    ("rnn_relu", 2, 5, 7, "h", (3, 7), "h: expected [N, H] = [2, 7], got (3, 7)"),
]


def _cell_error_id(case):
    return f"{case[0]}-{case[4]}-{'x'.join(map(str, case[5]))}"


def _functional_cell_with(variant, N, I, H, arg, shape, rng, *, batched=True):
    params, x, hx = _cell_inputs(variant, N, I, H, np.float64, rng, batched=batched)
    if _kind(variant) == "lstm":
        h, c = hx
        values = dict(params, x=x, h=h, c=c)
    else:
        values = dict(params, x=x, h=hx)
    values[arg] = rng.standard_normal(shape)
    hx = (values["h"], values["c"]) if _kind(variant) == "lstm" else values["h"]
    params = {k: values[k] for k in params}
    return lambda: _cell_call(gk, variant, values["x"], hx, params)


@pytest.mark.parametrize("case", CELL_SHAPE_ERRORS, ids=_cell_error_id)
def test_functional_cell_shape_messages(case, rng):
    variant, N, I, H, arg, shape, message = case
    call = _functional_cell_with(variant, N, I, H, arg, shape, rng)
    with pytest.raises(ValueError, match=_exact(message)):
        call()


@pytest.mark.parametrize("case", [
    ("lstm", "h", (1, 7), "h: expected [H] = [7], got (1, 7)"),
    ("lstm", "c", (7, 1), "c: expected [H] = [7], got (7, 1)"),
    ("lstm_proj", "h", (7,), "h: expected [P] = [3], got (7,)"),
    ("gru", "h", (8,), "h: expected [H] = [7], got (8,)"),
    ("rnn_tanh", "h", (1, 7), "h: expected [H] = [7], got (1, 7)"),
], ids=lambda c: f"{c[0]}-{c[1]}")
def test_functional_cell_unbatched_shape_messages(case, rng):
    variant, arg, shape, message = case
    call = _functional_cell_with(variant, 1, 5, 7, arg, shape, rng, batched=False)
    with pytest.raises(ValueError, match=_exact(message)):
        call()


@pytest.mark.parametrize("case", [
    ("x", (2, 3, 5), r"^x: .*\[N, I\].*got \(2, 3, 5\)$"),
    ("x", (), r"^x: .*got \(\)$"),
    ("w_hh", (28,), r"^w_hh: .*\[4\*H, H\].*got \(28,\)$"),
    ("w_hh", (27, 7), r"^w_hh: .*\[4\*H, H\].*got \(27, 7\)$"),
    ("w_hh", (0, 7), r"^w_hh: .*\[4\*H, H\].*got \(0, 7\)$"),
    ("w_ih", (28, 5, 1), r"^w_ih: expected \[4\*H, I\] = \[28, 5\], got \(28, 5, 1\)$"),
], ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1])) or 'scalar'}")
def test_functional_cell_rank_errors(case, rng):
    arg, shape, pattern = case
    call = _functional_cell_with("lstm", 2, 5, 7, arg, shape, rng)
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("call, pattern", [
    pytest.param(lambda: gk.rnn_cell(np.array(0.5), None, np.ones((3, 1)), np.ones((3, 3))),
                 r"^x: .*got \(\)$", id="functional-x"),
    pytest.param(lambda: gk.rnn_cell(np.ones(2), np.array(0.5), np.ones((1, 2)), np.ones((1, 1))),
                 r"^h: .*got \(\)$", id="functional-h"),
    pytest.param(lambda: gk.rnn_cell(np.ones(2), None, np.ones((1, 2)), np.ones((1, 1)),
                                     np.array(0.5)),
                 r"^b_ih: .*got \(\)$", id="functional-b_ih"),
    pytest.param(lambda: gk.GRUCell(1, 4)(np.array(0.5)), r"^x: .*got \(\)$", id="cell-x"),
    pytest.param(lambda: gk.RNNCell(2, 1)(np.ones(2), np.array(0.5)), r"^h: .*got \(\)$",
                 id="cell-h"),
    pytest.param(lambda: gk.GRU(1, 4)(np.array(0.5)), r"^x: .*got \(\)$", id="sequence-x"),
    pytest.param(lambda: gk.RNN(2, 1)(np.ones((3, 2)), np.array(0.5)), r"^h0: .*got \(\)$",
                 id="sequence-h0"),
    pytest.param(lambda: gk.RNNCell(1, 1).load_state_dict(
        {"weight_ih": np.ones((1, 1)), "weight_hh": np.ones((1, 1)), "bias_ih": np.array(0.5),
         "bias_hh": np.ones(1)}), r"^bias_ih: .*got \(\)$", id="load-bias_ih"),
])
def test_rank0_arrays_are_value_errors(call, pattern):
    """A 0-d array is a wrong rank (even where a [1] array would fit): ValueError naming the
    argument and the shape it got, ()."""
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("case", [
    (gk.gru_cell, 3, "w_hh", (20, 7), r"^w_hh: .*\[3\*H, H\].*got \(20, 7\)$"),
    (gk.rnn_cell, 1, "x", (1, 1, 5), r"^x: .*got \(1, 1, 5\)$"),
], ids=["gru-w_hh-rows", "rnn-x-rank"])
def test_functional_gru_rnn_rank_errors(case, rng):
    fn, G, arg, shape, pattern = case
    values = dict(x=rng.standard_normal((2, 5)), h=rng.standard_normal((2, 7)),
                  w_ih=rng.standard_normal((G * 7, 5)), w_hh=rng.standard_normal((G * 7, 7)))
    values[arg] = rng.standard_normal(shape)
    with pytest.raises(ValueError, match=pattern):
        fn(values["x"], values["h"], values["w_ih"], values["w_hh"])


# Sequences: LSTM(I=3, H=5, num_layers=2, bidirectional) on T=4, N=2, unless the case says.
SEQ_SHAPE_ERRORS = [
    # (id, options, x shape, h0 shape, c0 shape, exact message or regex)
    ("x-I", {}, (4, 2, 4), None, None, "x: expected [T, N, I] = [4, 2, 3], got (4, 2, 4)"),
    ("x-I-bf", {"batch_first": True}, (2, 4, 4), None, None,
     "x: expected [N, T, I] = [2, 4, 3], got (2, 4, 4)"),
    ("x-I-unbatched", {}, (4, 4), None, None, "x: expected [T, I] = [4, 3], got (4, 4)"),
    ("x-rank4", {}, (4, 2, 3, 1), None, None, re.compile(r"^x: .*got \(4, 2, 3, 1\)$")),
    ("x-rank1", {}, (3,), None, None, re.compile(r"^x: .*got \(3,\)$")),
    ("x-T0", {}, (0, 2, 3), None, None, re.compile(r"^x: .*got \(0, 2, 3\)$")),
    ("x-N0", {}, (4, 0, 3), None, None, re.compile(r"^x: .*got \(4, 0, 3\)$")),
    ("h0-LD", {}, (4, 2, 3), (2, 2, 5), (4, 2, 5),
     "h0: expected [L*D, N, H] = [4, 2, 5], got (2, 2, 5)"),
    ("h0-N", {}, (4, 2, 3), (4, 3, 5), (4, 2, 5),
     "h0: expected [L*D, N, H] = [4, 2, 5], got (4, 3, 5)"),
    ("h0-N-bf", {"batch_first": True}, (2, 4, 3), (4, 4, 5), (4, 2, 5),
     "h0: expected [L*D, N, H] = [4, 2, 5], got (4, 4, 5)"),
    ("c0-H", {}, (4, 2, 3), (4, 2, 5), (4, 2, 4),
     "c0: expected [L*D, N, H] = [4, 2, 5], got (4, 2, 4)"),
    ("h0-P", {"proj_size": 2}, (4, 2, 3), (4, 2, 5), (4, 2, 5),
     "h0: expected [L*D, N, P] = [4, 2, 2], got (4, 2, 5)"),
    ("c0-H-proj", {"proj_size": 2}, (4, 2, 3), (4, 2, 2), (4, 2, 2),
     "c0: expected [L*D, N, H] = [4, 2, 5], got (4, 2, 2)"),
    ("h0-unbatched", {}, (4, 3), (4, 1, 5), (4, 5),
     "h0: expected [L*D, H] = [4, 5], got (4, 1, 5)"),
    ("c0-unbatched", {}, (4, 3), (4, 5), (4, 2, 5),
     "c0: expected [L*D, H] = [4, 5], got (4, 2, 5)"),
    ("h0-rank2", {}, (4, 2, 3), (4, 5), (4, 2, 5),
     "h0: expected [L*D, N, H] = [4, 2, 5], got (4, 5)"),
]


def _seq_error_args(x_shape, h0_shape, c0_shape, rng):
    x = rng.standard_normal(x_shape)
    hx = None
    if h0_shape is not None:
        hx = (rng.standard_normal(h0_shape), rng.standard_normal(c0_shape))
    return x, hx


def _raises_seq(message):
    if isinstance(message, re.Pattern):
        return pytest.raises(ValueError, match=message.pattern)
    return pytest.raises(ValueError, match=_exact(message))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SEQ_SHAPE_ERRORS, ids=lambda c: c[0])
def test_sequence_module_shape_messages(case, backend, rng):
    _, options, x_shape, h0_shape, c0_shape, message = case
    m = gk.LSTM(3, 5, num_layers=2, bidirectional=True, backend=backend, **options)
    x, hx = _seq_error_args(x_shape, h0_shape, c0_shape, rng)
    with _raises_seq(message):
        m(x, hx)


@pytest.mark.parametrize("case", SEQ_SHAPE_ERRORS, ids=lambda c: c[0])
def test_functional_sequence_shape_messages(case, rng):
    _, options, x_shape, h0_shape, c0_shape, message = case
    options = dict(options)
    proj = options.pop("proj_size", 0)
    weights = hp.random_weights("lstm", 3, 5, rng=rng, num_layers=2, bidirectional=True,
                                proj_size=proj)
    x, hx = _seq_error_args(x_shape, h0_shape, c0_shape, rng)
    with _raises_seq(message):
        gk.lstm(x, hx, weights, num_layers=2, bidirectional=True, **options)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["gru", "rnn_tanh"])
def test_gru_rnn_module_h0_message(variant, backend, rng):
    m = _module(variant, 3, 5, num_layers=2, backend=backend)
    x = rng.standard_normal((4, 2, 3))
    with pytest.raises(ValueError, match=_exact("h0: expected [L*D, N, H] = [2, 2, 5], "
                                                "got (1, 2, 5)")):
        m(x, rng.standard_normal((1, 2, 5)))
    with pytest.raises(ValueError, match=_exact("h0: expected [L*D, N, H] = [2, 2, 5], "
                                                "got (2, 3, 5)")):
        m(x, rng.standard_normal((2, 3, 5)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_shape_messages(variant, backend, rng):
    m = _cell_module(variant, 5, 7, backend=backend)
    _, x, hx = _cell_inputs(variant, 2, 5, 7, np.float32, rng)
    h = hx[0] if variant == "lstm" else hx

    def call(x, h):
        return m(x, (h, hx[1]) if variant == "lstm" else h)

    with pytest.raises(ValueError, match=_exact("x: expected [N, I] = [2, 5], got (2, 6)")):
        call(rng.standard_normal((2, 6)), h)
    with pytest.raises(ValueError, match=_exact("x: expected [I] = [5], got (6,)")):
        call(rng.standard_normal(6), h[0])
    with pytest.raises(ValueError, match=r"^x: .*got \(1, 2, 5\)$"):
        call(rng.standard_normal((1, 2, 5)), h)
    with pytest.raises(ValueError, match=_exact("h: expected [N, H] = [2, 7], got (2, 6)")):
        call(x, rng.standard_normal((2, 6)))
    with pytest.raises(ValueError, match=_exact("h: expected [N, H] = [2, 7], got (3, 7)")):
        call(x, rng.standard_normal((3, 7)))
    with pytest.raises(ValueError, match=_exact("h: expected [H] = [7], got (1, 7)")):
        call(x[0], rng.standard_normal((1, 7)))
    if variant == "lstm":
        with pytest.raises(ValueError, match=_exact("c: expected [N, H] = [2, 7], "
                                                    "got (2, 8)")):
            m(x, (h, rng.standard_normal((2, 8))))


@pytest.mark.parametrize("api", ["functional", "cpu", "reference"])
@pytest.mark.parametrize("lengths", [[0, 4], [1, 5], [-1, 2], [4, 4, 4], [4], [[4, 4]], 4],
                         ids=["zero", "T+1", "negative", "N+1", "N-1", "2d", "scalar"])
def test_bad_lengths_are_value_errors(lengths, api, rng):
    weights, x, hx, _ = _seq_inputs("lstm", 4, 2, 3, 5, np.float32, rng)
    with pytest.raises(ValueError, match="^lengths"):
        if api == "functional":
            gk.lstm(x, hx, weights, lengths=np.array(lengths))
        else:
            gk.LSTM(3, 5, backend=api)(x, hx, lengths=np.array(lengths))


@pytest.mark.parametrize("make", [
    pytest.param(lambda: gk.RNN(3, 5, nonlinearity="gelu"), id="RNN-gelu"),
    pytest.param(lambda: gk.RNN(3, 5, nonlinearity="Tanh"), id="RNN-Tanh"),
    pytest.param(lambda: gk.RNNCell(3, 5, nonlinearity="gelu"), id="RNNCell-gelu"),
    pytest.param(lambda: gk.LSTM(0, 5), id="LSTM-I0"),
    pytest.param(lambda: gk.LSTM(-3, 5), id="LSTM-I-neg"),
    pytest.param(lambda: gk.LSTM(3, 0), id="LSTM-H0"),
    pytest.param(lambda: gk.GRU(3, -1), id="GRU-H-neg"),
    pytest.param(lambda: gk.RNN(3, 5, num_layers=0), id="RNN-L0"),
    pytest.param(lambda: gk.LSTM(3, 5, num_layers=-2), id="LSTM-L-neg"),
    pytest.param(lambda: gk.LSTM(3, 5, proj_size=5), id="LSTM-proj-eq-H"),
    pytest.param(lambda: gk.LSTM(3, 5, proj_size=6), id="LSTM-proj-gt-H"),
    pytest.param(lambda: gk.LSTM(3, 5, proj_size=-1), id="LSTM-proj-neg"),
    pytest.param(lambda: gk.LSTMCell(0, 5), id="LSTMCell-I0"),
    pytest.param(lambda: gk.GRUCell(3, 0), id="GRUCell-H0"),
    pytest.param(lambda: gk.RNNCell(3, -2), id="RNNCell-H-neg"),
    pytest.param(lambda: gk.LSTM(3, 5, dtype=np.int32), id="LSTM-int32"),
    pytest.param(lambda: gk.GRU(3, 5, dtype=np.complex64), id="GRU-complex"),
    pytest.param(lambda: gk.RNN(3, 5, dtype="int64"), id="RNN-int64-str"),
    pytest.param(lambda: gk.LSTMCell(3, 5, dtype=np.int32), id="LSTMCell-int32"),
    pytest.param(lambda: gk.GRUCell(3, 5, dtype=np.bool_), id="GRUCell-bool"),
    pytest.param(lambda: gk.RNNCell(3, 5, dtype=object), id="RNNCell-object"),
    pytest.param(lambda: gk.LSTM(3, 5, backend="cuda-nope"), id="LSTM-backend"),
])
def test_bad_options_are_value_errors(make):
    with pytest.raises(ValueError):
        make()


def test_bad_functional_options_are_value_errors(rng):
    params, x, h = _cell_inputs("rnn_tanh", 2, 3, 4, np.float64, rng)
    with pytest.raises(ValueError, match="nonlinearity"):
        gk.rnn_cell(x, h, params["w_ih"], params["w_hh"], nonlinearity="gelu")
    weights, xs, h0, _ = _seq_inputs("rnn_tanh", 3, 2, 3, 4, np.float64, rng)
    with pytest.raises(ValueError, match="nonlinearity"):
        gk.rnn(xs, h0, weights, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="num_layers"):
        gk.rnn(xs, h0, weights, num_layers=0)


@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_functional_sequence_weight_errors(variant, rng):
    """The weight mapping: every name and shape is checked (missing, unexpected, wrong shape,
    options that do not match the weights)."""
    kind = _kind(variant)
    weights, x, _, _ = _seq_inputs(variant, 3, 2, 3, 5, np.float64, rng, num_layers=2,
                                   bidirectional=True)
    options = dict(num_layers=2, bidirectional=True)

    def call(w, **kw):
        return _seq_call(gk, variant, x, None, w, **{**options, **kw})

    rows = {"lstm": "4*H", "gru": "3*H", "rnn_tanh": "H"}[variant]
    G = hp.GATES[kind]
    missing = {k: v for k, v in weights.items() if k != "bias_hh_l1_reverse"}
    with pytest.raises(ValueError, match=r"missing.*bias_hh_l1_reverse"):
        call(missing)
    with pytest.raises(ValueError, match=r"unexpected.*weight_ih_l2"):
        call(dict(weights, weight_ih_l2=weights["weight_ih_l1"]))
    with pytest.raises(ValueError, match=r"missing.*weight_ih_l2"):
        call(weights, num_layers=3)
    with pytest.raises(ValueError, match=r"unexpected.*_reverse"):
        call(weights, bidirectional=False)
    with pytest.raises(ValueError, match=_exact(f"weight_hh_l1: expected [{rows}, H] = "
                                                f"[{G * 5}, 5], got ({G * 5}, 6)")):
        call(dict(weights, weight_hh_l1=rng.standard_normal((G * 5, 6))))
    with pytest.raises(ValueError, match=rf"^weight_ih_l1: expected \[{re.escape(rows)}, .*\] "
                                         rf"= \[{G * 5}, 10\], got \({G * 5}, 5\)$"):
        call(dict(weights, weight_ih_l1=rng.standard_normal((G * 5, 5))))
    with pytest.raises(ValueError, match=_exact(f"bias_ih_l0_reverse: expected [{rows}] = "
                                                f"[{G * 5}], got ({G * 5 + 1},)")):
        call(dict(weights, bias_ih_l0_reverse=rng.standard_normal(G * 5 + 1)))
    with pytest.raises(ValueError, match="weight_ih_l0"):
        call({k: v for k, v in weights.items() if k != "weight_ih_l0"})
    if kind != "lstm":
        with pytest.raises(ValueError, match="weight_hr"):
            call(dict(weights, weight_hr_l0=rng.standard_normal((2, 5))))


@pytest.mark.parametrize("api", ["functional", "cpu", "reference"])
@pytest.mark.parametrize("hx_as", ["array", "stacked", "one", "three", "dict"])
def test_lstm_hx_structure_is_type_error(hx_as, api, rng):
    """An LSTM's hx is a tuple (h0, c0) or None; anything else is a TypeError (even an array
    that could be unpacked into two)."""
    weights, x, (h0, c0), _ = _seq_inputs("lstm", 3, 2, 4, 5, np.float64, rng, num_layers=2)
    hx = {"array": h0, "stacked": np.stack([h0, c0]), "one": (h0,), "three": (h0, c0, c0),
          "dict": {"h0": h0, "c0": c0}}[hx_as]
    with pytest.raises(TypeError, match="^hx"):
        if api == "functional":
            gk.lstm(x, hx, weights, num_layers=2)
        else:
            gk.LSTM(4, 5, num_layers=2, dtype=np.float64, backend=api)(x, hx)


@pytest.mark.parametrize("api", ["functional", "cpu", "reference"])
@pytest.mark.parametrize("hx_as", ["array", "stacked", "one", "three"])
def test_lstm_cell_hx_structure_is_type_error(hx_as, api, rng):
    params, x, (h, c) = _cell_inputs("lstm", 2, 4, 5, np.float64, rng)
    hx = {"array": h, "stacked": np.stack([h, c]), "one": (h,), "three": (h, c, c)}[hx_as]
    with pytest.raises(TypeError, match="^hx"):
        if api == "functional":
            gk.lstm_cell(x, hx, params["w_ih"], params["w_hh"], params["b_ih"], params["b_hh"])
        else:
            gk.LSTMCell(4, 5, dtype=np.float64, backend=api)(x, hx)


# ---------------------------------------------------------------------------------------------
# Determinism (SPEC §6): the same input gives bitwise the same output.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_cell_deterministic(variant, dtype, rng):
    # N*G*H*(I+P) >= 2^17 (_ext.GIL_RELEASE_WORK) for every variant: the kernel runs without
    # the GIL.
    params, x, hx = _cell_inputs(variant, 9, 40, 129, dtype, rng)
    first = _cell_call(gk, variant, x, hx, params)
    for _ in range(3):
        _assert_bitwise(_cell_call(gk, variant, x, hx, params), first)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_deterministic(variant, dtype, rng):
    options = dict(num_layers=2, bidirectional=True)
    weights, x, hx, lengths = _seq_inputs(variant, 6, 5, 9, 33, dtype, rng, **options)
    m = _module(variant, 9, 33, dtype=dtype, **options)
    for kw in ({}, {"lengths": lengths}):
        first_f = _seq_call(gk, variant, x, hx, weights, **kw, **options)
        first_m = m(x, hx, **kw)
        for _ in range(3):
            _assert_bitwise(_seq_call(gk, variant, x, hx, weights, **kw, **options), first_f)
            _assert_bitwise(m(x, hx, **kw), first_m)


@pytest.mark.parametrize("I,H", [(40, 33), (7, 70)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_cell_rows_independent_of_batch(variant, dtype, I, H, rng):
    """The raw-weight kernel (raw_step.h) takes rows in groups of 3 and chunks of 24: each row of
    a 47-row call (the second chunk ending in a group of 2) is bitwise that row called alone,
    whatever group or chunk it falls in."""
    from gatedkernels import _api

    assert not _api.pack_per_call(47, I, H)  # the raw kernel, not the packed one
    params, x, hx = _cell_inputs(variant, 47, I, H, dtype, rng)
    whole = _cell_call(gk, variant, x, hx, params)
    for n in (0, 1, 2, 3, 23, 24, 25, 44, 45, 46):
        hx_n = tuple(a[n:n + 1] for a in hx) if isinstance(hx, tuple) else hx[n:n + 1]
        one = _cell_call(gk, variant, x[n:n + 1], hx_n, params)
        _assert_bitwise(tuple(a[n:n + 1] for a in hp.flatten(whole)), tuple(hp.flatten(one)),
                        f"row {n}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_deterministic_across_batch_sizes(variant, dtype, rng):
    """A cell module reuses a workspace between calls: calls with other batch sizes (larger,
    smaller, unbatched) in between do not change a bit."""
    m = _cell_module(variant, 40, 33, dtype=dtype)
    inputs = {N: _cell_inputs(variant, N, 40, 33, dtype, rng)[1:] for N in (3, 17, 1)}
    first = {N: m(*inputs[N]) for N in inputs}
    x1, hx1 = _cell_inputs(variant, 1, 40, 33, dtype, rng, batched=False)[1:]
    first_unbatched = m(x1, hx1)
    for N in (17, 3, 1, 3, 17):
        _assert_bitwise(m(*inputs[N]), first[N], f"N={N}")
        _assert_bitwise(m(x1, hx1), first_unbatched, "unbatched")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_concurrent_calls_are_deterministic(variant, dtype, rng):
    """Calls from several threads on one module (large enough for the kernel to run without the
    GIL) give bitwise the results of sequential calls."""
    from concurrent.futures import ThreadPoolExecutor

    # every call >= 2^17 multiply-adds (_ext.GIL_RELEASE_WORK): all run without the GIL
    cell = _cell_module(variant, 48, 160, dtype=dtype)
    seq = _module(variant, 48, 160, dtype=dtype)
    cell_inputs = [_cell_inputs(variant, N, 48, 160, dtype, rng)[1:] for N in (16, 9, 16, 5)]
    seq_inputs = [_seq_inputs(variant, 3, N, 48, 160, dtype, rng)[1:] for N in (8, 5)]
    expected_cell = [cell(*a) for a in cell_inputs]
    expected_seq = [seq(x, hx, lengths=lengths) for x, hx, lengths in seq_inputs]
    jobs = [(i % 4, None) for i in range(24)] + [(None, i % 2) for i in range(8)]

    def run(job):
        c, s = job
        if c is not None:
            return cell(*cell_inputs[c])
        x, hx, lengths = seq_inputs[s]
        return seq(x, hx, lengths=lengths)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    for (c, s), got in zip(jobs, results):
        _assert_bitwise(got, expected_cell[c] if c is not None else expected_seq[s])


@pytest.mark.parametrize("batched,batch_first", [(True, False), (True, True), (False, False)],
                         ids=["TN", "NT", "unbatched"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_call_fast_path_matches_general_path(variant, batched, batch_first, rng,
                                                      monkeypatch):
    """A module's sequence call on plain arrays of its dtype takes a path checked in C
    (Kernel.run, no SequenceCall); anything it does not take (another dtype, Fortran order, a
    subclass, a byte-swapped array, hx as a list or with a missing half, int32 lengths, a bad shape
    or length) goes the general way, with bitwise the same results and the same errors."""
    from gatedkernels import _api

    T, N, I, H = 4, 3, 5, 7
    m = _module(variant, I, H, num_layers=2, bidirectional=True, batch_first=batch_first,
                dtype=np.float32)
    _, x, hx, lengths = _seq_inputs(variant, T, N, I, H, np.float32, rng, num_layers=2,
                                    bidirectional=True, batch_first=batch_first, batched=batched)
    if not batched:
        lengths = np.array([T - 1])
    lstm = _kind(variant) == "lstm"
    general = _api.SequenceCall

    def no_general_path(*args, **kw):
        raise AssertionError("took the general path")

    for h, ln in [(None, None), (hx, None), (None, lengths), (hx, lengths)]:
        monkeypatch.setattr(_api, "SequenceCall", no_general_path)
        fast = m(x, h, lengths=ln)
        monkeypatch.setattr(_api, "SequenceCall", general)
        # the same call with x as a list: cast by the general path
        _assert_bitwise(fast, m(x.tolist(), h, lengths=ln), f"hx={h is not None}")
        assert m._kernel.run(x, h, ln, batch_first) is not None
    want = m(x, hx, lengths=lengths)
    h0 = hx[0] if lstm else hx
    others = [
        (x.astype(np.float64), hx, lengths),
        (np.asfortranarray(x), hx, lengths),
        (x.view(np.ma.MaskedArray), hx, lengths),
        (x.astype(x.dtype.newbyteorder()), hx, lengths),
        (x, _cast(hx, np.float64), lengths),
        (x, _relayout(hx, "fortran"), lengths),
        (x, hx, lengths.astype(np.int32)),
        (x, hx, lengths.tolist()),
    ]
    if lstm:
        others.append((x, list(hx), lengths))
    for args in others:
        assert m._kernel.run(*args, batch_first) is None
        _assert_bitwise(m(args[0], args[1], lengths=args[2]), want)
    # read-only arrays are fine as they are
    ro = x.copy()
    ro.flags.writeable = False
    assert m._kernel.run(ro, hx, lengths, batch_first) is not None
    # no fast path for what the general path rejects: the same errors
    if lstm:
        assert m._kernel.run(x, (hx[0], None), lengths, batch_first) is None
        m(x, (hx[0], None), lengths=lengths)  # a missing half is zeros
    bad_x = x[..., :I - 1].copy()
    assert m._kernel.run(bad_x, hx, lengths, batch_first) is None
    with pytest.raises(ValueError, match="^x: "):
        m(bad_x, hx, lengths=lengths)
    bad_h0 = h0[..., :-1].copy()
    bad_hx = (bad_h0, hx[1]) if lstm else bad_h0
    assert m._kernel.run(x, bad_hx, lengths, batch_first) is None
    with pytest.raises(ValueError, match="^h0: "):
        m(x, bad_hx, lengths=lengths)
    for bad in (lengths + T, lengths * 0):
        assert m._kernel.run(x, hx, bad, batch_first) is None
        with pytest.raises(ValueError, match="^lengths: "):
            m(x, hx, lengths=bad)
    assert m._kernel.run(x, hx, np.concatenate([lengths, lengths]), batch_first) is None


def test_sequence_workspace_kept_between_calls_of_any_size(rng):
    """A kernel keeps one workspace between calls (up to 1 MiB) and grows it: calls of growing,
    shrinking and larger-than-kept sizes, alternating with steps of a cell, give bitwise the
    results of a fresh module."""
    m = _module("lstm", 24, 40, num_layers=2, dtype=np.float32)
    sd = m.state_dict()
    shapes = [(2, 1), (40, 8), (1, 1), (3, 2), (700, 16), (5, 3)]  # 700x16: > 1 MiB of layers
    for T, N in shapes:
        x = rng.standard_normal((T, N, 24)).astype(np.float32)
        fresh = _module("lstm", 24, 40, num_layers=2, dtype=np.float32)
        fresh.load_state_dict(sd)
        _assert_bitwise(m(x), fresh(x), f"T={T} N={N}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_are_fresh_c_arrays(variant, rng):
    """Outputs are new C-contiguous arrays: they share no memory with the inputs, with each
    other or with the next call's outputs, and editing them changes nothing."""
    options = dict(num_layers=2, bidirectional=True)
    m = _module(variant, 5, 6, dtype=np.float64, **options)
    weights, x, hx, lengths = _seq_inputs(variant, 4, 3, 5, 6, np.float64, rng, **options)
    x1 = x[:, 0]  # unbatched [T, I], with states [L*D, P]
    hx1 = tuple(s[:, 0] for s in hx) if isinstance(hx, tuple) else hx[:, 0]
    calls = [lambda: m(x, hx, lengths=lengths), lambda: m(x1, hx1),
             lambda: _seq_call(gk, variant, x, hx, weights, lengths=lengths, **options)]
    if variant != "lstm_proj":
        cell = _cell_module(variant, 5, 6, dtype=np.float64)
        c_params, c_x, c_hx = _cell_inputs(variant, 3, 5, 6, np.float64, rng)
        calls += [lambda: cell(c_x, c_hx), lambda: cell(c_x[0], None)]
    c_params, c_x, c_hx = _cell_inputs(variant, 3, 5, 6, np.float64, rng)
    calls.append(lambda: _cell_call(gk, variant, c_x, c_hx, c_params))
    inputs = _arrays((x, hx, lengths, weights, c_params, c_x, c_hx))
    for call in calls:
        first = call()
        saved = _copy(tuple(hp.flatten(first)))
        outs = hp.flatten(first)
        for i, a in enumerate(outs):
            assert a.flags.c_contiguous and a.flags.writeable
            assert not any(np.shares_memory(a, b) for b in inputs)
            assert not any(np.shares_memory(a, b) for b in outs[i + 1:])
        second = call()
        for a in outs:
            a[...] = np.nan
        assert not any(np.shares_memory(a, b) for a in outs for b in hp.flatten(second))
        _assert_bitwise(call(), saved)


@pytest.mark.parametrize("variant", ["lstm", "gru", "gru_lbr0", "rnn_tanh"])
def test_aliased_inputs(variant, rng):
    """The same array passed as several arguments (x as h, h as c, w_ih as w_hh, b_ih as b_hh)
    gives the result of separate copies."""
    params, x, hx = _cell_inputs(variant, 3, 6, 6, np.float64, rng)
    s = x  # [N, 6] with I = H = 6: usable as x, h and c
    hx = (s, s) if _kind(variant) == "lstm" else s
    params = dict(params, w_hh=params["w_ih"], b_hh=params["b_ih"])
    expected = _cell_call(gk, variant, s.copy(), _copy(hx), _copy(params))
    _assert_bitwise(_cell_call(gk, variant, s, hx, params), expected)


# ---------------------------------------------------------------------------------------------
# Unbatched inputs (SPEC §3-§4): [I] -> [H] for cells; [T, I] -> [T, D*P], h_n [L*D, P].


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_cell_unbatched(variant, hx_given, dtype, rng):
    I, H = 5, 7
    params, x, hx = _cell_inputs(variant, 1, I, H, dtype, rng, batched=False)
    hx = hx if hx_given else None
    got = _cell_call(gk, variant, x, hx, params)
    P = _proj(variant, H) or H
    if _kind(variant) == "lstm":
        assert got[0].shape == (P,) and got[1].shape == (H,)
    else:
        assert got.shape == (H,)
    _assert_like_reference(got, lambda dt: _cell_call(ref, variant, _cast(x, dt),
                                                      _cast(hx, dt), params), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_module_unbatched(variant, dtype, backend, rng):
    m = _cell_module(variant, 5, 7, dtype=dtype, backend=backend)
    _, x, hx = _cell_inputs(variant, 1, 5, 7, dtype, rng, batched=False)
    for state in (hx, None):
        got = m(x, state)
        for a in hp.flatten(got):
            assert a.shape == (7,)
        _assert_like_reference(got, _cell_module_reference(variant, m, x, state), dtype)


@pytest.mark.parametrize("api", ["functional", "cpu", "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_unbatched(variant, batch_first, dtype, api, rng):
    """Unbatched x [T, I] is time-major whatever batch_first says (as torch)."""
    T, I, H, L = 5, 3, 6, 2
    options = dict(num_layers=L, bidirectional=True, batch_first=batch_first)
    P = _proj(variant, H) or H
    weights, x, hx, _ = _seq_inputs(variant, T, 1, I, H, dtype, rng, batched=False, **options)
    for state in (hx, None):
        if api == "functional":
            got = _seq_call(gk, variant, x, state, weights, **options)
        else:
            m = _module(variant, I, H, dtype=dtype, backend=api, **options)
            m.load_state_dict(weights)
            got = m(x, state)
        flat = hp.flatten(got)
        assert flat[0].shape == (T, 2 * P)
        assert flat[1].shape == (2 * L, P)
        if _kind(variant) == "lstm":
            assert flat[2].shape == (2 * L, H)
        _assert_like_reference(got, lambda dt: _seq_call(ref, variant, _cast(x, dt),
                                                         _cast(state, dt), weights, **options),
                               dtype)


# ---------------------------------------------------------------------------------------------
# Modules: parameters.

MODULE_CONFIGS = [
    pytest.param(("LSTM", (3, 6), dict(num_layers=2, bidirectional=True, proj_size=2)),
                 id="LSTM-L2-bi-proj"),
    pytest.param(("LSTM", (4, 5), dict(bias=False)), id="LSTM-nobias"),
    pytest.param(("GRU", (3, 7), dict(num_layers=2, bidirectional=True)), id="GRU-L2-bi"),
    pytest.param(("GRU", (2, 1), dict(num_layers=3)), id="GRU-L3-H1"),
    pytest.param(("RNN", (3, 4), dict(num_layers=2, nonlinearity="relu", bias=False)),
                 id="RNN-L2-relu-nobias"),
    pytest.param(("RNN", (5, 3), dict(bidirectional=True)), id="RNN-bi"),
    pytest.param(("LSTMCell", (3, 6), {}), id="LSTMCell"),
    pytest.param(("GRUCell", (4, 33), dict(bias=False)), id="GRUCell-nobias"),
    pytest.param(("RNNCell", (3, 7), dict(nonlinearity="relu")), id="RNNCell-relu"),
]


def _gk_module(config, **kw):
    name, args, options = config
    return getattr(gk, name)(*args, **options, **kw)


@pytest.mark.parametrize("config", MODULE_CONFIGS)
def test_parameter_names_and_shapes_match_torch(config):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    name, args, options = config
    expected = getattr(torch.nn, name)(*args, **options).state_dict()
    m = _gk_module(config)
    sd = m.state_dict()
    assert list(sd) == list(expected)
    for k, v in expected.items():
        assert sd[k].shape == tuple(v.shape), k
        _assert_bitwise(getattr(m, k), sd[k], k)  # the attribute is the parameter


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", MODULE_CONFIGS)
def test_initialisation_uniform_and_seeded(config, dtype):
    H = config[1][1]
    k = 1 / np.sqrt(H)
    m = _gk_module(config, dtype=dtype, seed=7)
    values = np.concatenate([v.ravel() for v in m.state_dict().values()])
    assert values.dtype == dtype
    assert np.all(np.abs(values) <= np.asarray(k, dtype))
    # spread over the whole interval, both signs (not, e.g., uniform(0, k))
    assert values.min() < -k / 2 and values.max() > k / 2
    _assert_bitwise(_gk_module(config, dtype=dtype, seed=7).state_dict(), m.state_dict())
    _assert_bitwise(_gk_module(config, dtype=dtype, rng=np.random.default_rng(3)).state_dict(),
                    _gk_module(config, dtype=dtype, rng=np.random.default_rng(3)).state_dict())
    other = np.concatenate([v.ravel() for v in
                            _gk_module(config, dtype=dtype, seed=8).state_dict().values()])
    assert not np.array_equal(values, other)


@pytest.mark.parametrize("config", MODULE_CONFIGS)
def test_state_dict_is_read_only(config):
    m = _gk_module(config)
    for name, v in m.state_dict().items():
        assert isinstance(v, np.ndarray)
        assert not v.flags.writeable, name
        with pytest.raises(ValueError):
            v[...] = 0
        with pytest.raises(ValueError):
            getattr(m, name)[...] = 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", MODULE_CONFIGS)
def test_load_state_dict_checks_names_and_shapes(config, backend, rng):
    m = _gk_module(config, backend=backend)
    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    first = next(iter(sd))
    with pytest.raises(ValueError, match=rf"missing.*{first}"):
        m.load_state_dict({k: v for k, v in sd.items() if k != first})
    with pytest.raises(ValueError, match=r"unexpected.*not_a_parameter"):
        m.load_state_dict(dict(sd, not_a_parameter=sd[first]))
    other_name = "weight_ih" if first == "weight_ih_l0" else "weight_ih_l0"  # cell <-> sequence
    with pytest.raises(ValueError, match=rf"unexpected.*'{other_name}'"):
        m.load_state_dict(dict(sd, **{other_name: sd[first]}))
    for name, v in sd.items():
        bad = np.zeros(v.shape[:-1] + (v.shape[-1] + 1,))
        with pytest.raises(ValueError, match=rf"^{name}: expected \[.*\] = \[.*\], got "
                                             rf"{re.escape(str(bad.shape))}$"):
            m.load_state_dict(dict(sd, **{name: bad}))
        with pytest.raises(ValueError, match=rf"^{name}: "):
            setattr(m, name, bad)
        with pytest.raises(ValueError, match=rf"^{name}: "):
            setattr(m, name, v.ravel() if v.ndim == 2 else v[None])
    m.load_state_dict(sd)  # the well-formed dict still loads


@pytest.mark.parametrize("source", ["numpy", "numpy_other_dtype", "torch", "torch_grad",
                                    "lists"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_load_state_dict_sources_change_outputs(variant, dtype, source, rng):
    """Any mapping np.asarray accepts: the loaded values are the module's (cast to its dtype)
    and the outputs are those of a reference-backend module with the same parameters."""
    options = dict(num_layers=2, bidirectional=True)
    m = _module(variant, 3, 6, dtype=dtype, seed=1, **options)
    weights, x, hx, lengths = _seq_inputs(variant, 4, 3, 3, 6, np.float64, rng, **options)
    before = m(x, hx, lengths=lengths)
    if source == "numpy_other_dtype":
        loaded = _cast(weights, np.float32 if dtype == np.float64 else np.float64)
    elif source.startswith("torch"):
        torch = pytest.importorskip("torch", reason=TORCH_REASON)
        loaded = {k: torch.tensor(v, requires_grad=source == "torch_grad")
                  for k, v in _cast(weights, dtype).items()}
    elif source == "lists":
        loaded = {k: v.tolist() for k, v in weights.items()}
    else:
        loaded = weights
    m.load_state_dict(loaded)
    expected_sd = {k: np.asarray(hp.to_numpy(v) if hasattr(v, "detach") else v).astype(dtype)
                   for k, v in loaded.items()}
    _assert_bitwise(m.state_dict(), expected_sd)

    got = m(x, hx, lengths=lengths)
    assert not np.array_equal(hp.flatten(got)[1], hp.flatten(before)[1])
    r = _module(variant, 3, 6, dtype=dtype, seed=2, backend="reference", **options)
    r.load_state_dict(loaded)
    _assert_bitwise(r.state_dict(), expected_sd)
    x_m, hx_m = _cast(x, dtype), _cast(hx, dtype)
    _assert_like_reference(got, _module_reference(variant, r, x_m, hx_m, lengths), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_attribute_assignment_repacks(variant, dtype, rng):
    options = dict(num_layers=2, bidirectional=True)
    m = _module(variant, 3, 6, dtype=dtype, seed=1, **options)
    r = _module(variant, 3, 6, dtype=dtype, seed=1, backend="reference", **options)
    weights, x, hx, lengths = _seq_inputs(variant, 4, 3, 3, 6, np.float64, rng, **options)
    x, hx = _cast(x, dtype), _cast(hx, dtype)
    names = ["weight_hh_l0", "bias_ih_l1_reverse", "weight_ih_l1"]
    if variant == "lstm_proj":
        names.append("weight_hr_l0_reverse")
    for name in names:
        before = m(x, hx, lengths=lengths)
        setattr(m, name, weights[name])
        setattr(r, name, weights[name])
        assert getattr(m, name).dtype == dtype and not getattr(m, name).flags.writeable
        _assert_bitwise(getattr(m, name), weights[name].astype(dtype), name)
        got = m(x, hx, lengths=lengths)
        assert not np.array_equal(hp.flatten(got)[1], hp.flatten(before)[1]), name
        _assert_like_reference(got, _module_reference(variant, r, x, hx, lengths), dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cell_load_and_assign_change_outputs(variant, dtype, rng):
    m = _cell_module(variant, 4, 7, dtype=dtype, seed=1)
    params, x, hx = _cell_inputs(variant, 3, 4, 7, np.float64, rng)
    x, hx = _cast(x, dtype), _cast(hx, dtype)
    before = m(x, hx)
    m.load_state_dict({"weight_ih": params["w_ih"], "weight_hh": params["w_hh"],
                       "bias_ih": params["b_ih"].tolist(), "bias_hh": params["b_hh"]})
    got = m(x, hx)
    assert not np.array_equal(hp.flatten(got)[0], hp.flatten(before)[0])
    _assert_like_reference(got, _cell_module_reference(variant, m, x, hx), dtype)
    m.weight_hh = params["w_hh"][::-1]
    got2 = m(x, hx)
    assert not np.array_equal(hp.flatten(got2)[0], hp.flatten(got)[0])
    _assert_bitwise(m.weight_hh, params["w_hh"][::-1].astype(dtype))
    _assert_like_reference(got2, _cell_module_reference(variant, m, x, hx), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", [(1, False, False), (2, True, True)],
                         ids=["L1", "L2-bi-bf"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_backend_is_the_reference(variant, layout, dtype, rng):
    """backend="reference" gives gk.reference's outputs (bitwise) on the module's parameters,
    and the compiled module agrees with it to SPEC §6."""
    L, bidirectional, batch_first = layout
    options = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    r = _module(variant, 3, 7, dtype=dtype, seed=4, backend="reference", **options)
    m = _module(variant, 3, 7, dtype=dtype, seed=4, **options)
    _assert_bitwise(r.state_dict(), m.state_dict())
    _, x, hx, lengths = _seq_inputs(variant, 5, 4, 3, 7, dtype, rng, **options)
    for kw in ({}, {"lengths": lengths}):
        got = r(x, hx, **kw)
        _assert_bitwise(got, _seq_call(ref, variant, x, hx, r.state_dict(), **kw, **options))
        _assert_like_reference(m(x, hx, **kw), _module_reference(variant, r, x, hx, **kw),
                               dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_reference_backend_cell_is_the_reference(variant, dtype, rng):
    r = _cell_module(variant, 3, 7, dtype=dtype, seed=4, backend="reference")
    m = _cell_module(variant, 3, 7, dtype=dtype, seed=4)
    _, x, hx = _cell_inputs(variant, 4, 3, 7, dtype, rng)
    params = _cell_params(r.state_dict())
    _assert_bitwise(r(x, hx), _cell_call(ref, variant, x, hx, params))
    _assert_like_reference(m(x, hx), _cell_module_reference(variant, r, x, hx), dtype)


# ---------------------------------------------------------------------------------------------
# NaN, Inf and huge inputs (SPEC §5-§6).

APIS = ["functional_cell", "cell_module", "functional_sequence", "sequence_module"]
# Every API with every variant it has (cell modules have no projection).
API_VARIANTS = [pytest.param(a, v, id=f"{a}-{v}") for a in APIS for v in VARIANTS
                if not (a == "cell_module" and v == "lstm_proj")]


def _api_case(api, variant, dtype, rng):
    """(run(x) -> outputs, x, run_reference(x, dt) -> outputs, batch axis of x).

    Sequences: T=5, N=3, 2 layers, bidirectional, with initial states; cells: N=3."""
    I, H = 4, 7
    if api.endswith("cell"):
        params, x, hx = _cell_inputs(variant, 3, I, H, dtype, rng,
                                     proj=api == "functional_cell")
        if api == "cell_module":
            m = _cell_module(variant, I, H, dtype=dtype, seed=5)
            params = _cell_params(m.state_dict())
            run = lambda x: m(x, hx)  # noqa: E731
        else:
            run = lambda x: _cell_call(gk, variant, x, hx, params)  # noqa: E731
        run_ref = lambda x, dt: _cell_call(ref, variant, _cast(x, dt), _cast(hx, dt),  # noqa
                                           params)
        return run, x, run_ref, 0
    options = dict(num_layers=2, bidirectional=True)
    weights, x, hx, _ = _seq_inputs(variant, 5, 3, I, H, dtype, rng, **options)
    if api == "sequence_module":
        m = _module(variant, I, H, dtype=dtype, **options)
        m.load_state_dict(weights)
        run = lambda x: m(x, hx)  # noqa: E731
    else:
        run = lambda x: _seq_call(gk, variant, x, hx, weights, **options)  # noqa: E731
    run_ref = lambda x, dt: _seq_call(ref, variant, _cast(x, dt), _cast(hx, dt), weights,  # noqa
                                      **options)
    return run, x, run_ref, 1


def _rows(outputs, axis, rows):
    """The batch rows `rows` of every output (the batch axis of h_n/c_n is 1 for sequences,
    0 for cells, as for x)."""
    return [np.take(a, rows, axis=axis) for a in hp.flatten(outputs)]


def _assert_ieee_like_reference(got, expected, dtype, what):
    """Same NaN and infinity positions as the reference in the same dtype; the finite values
    are close to the float64 reference."""
    g, e = hp.flatten(got), hp.flatten(expected)
    for u, v in zip(g, e):
        assert u.dtype == dtype
        np.testing.assert_array_equal(np.isnan(u), np.isnan(v), err_msg=f"{what}: NaN positions")
        np.testing.assert_array_equal(np.isinf(u), np.isinf(v), err_msg=f"{what}: Inf positions")
        np.testing.assert_array_equal(u[np.isinf(u)], v[np.isinf(v)], err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("api, variant", API_VARIANTS)
def test_non_finite_row_stays_in_its_row(api, variant, bad, dtype, rng):
    """A NaN or Inf in one batch row of x changes no other row (bitwise) and propagates in its
    own row as IEEE arithmetic (the reference) says."""
    run, x, run_ref, axis = _api_case(api, variant, dtype, rng)
    clean = run(x)
    x_bad = x.copy()
    index = [0] * x.ndim
    index[axis] = 1
    if axis == 1:
        index[0] = 2  # time step 2
    x_bad[tuple(index)] = bad
    got = run(x_bad)
    for a in hp.flatten(got):
        assert a.dtype == dtype
    _assert_bitwise(_rows(got, axis, [0, 2]), _rows(clean, axis, [0, 2]), "other rows")
    own = _rows(got, axis, [1])
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the reference's matmul
        expected = _rows(run_ref(x_bad, dtype), axis, [1])
    _assert_ieee_like_reference(own, expected, dtype, "own row")
    if bad != bad:  # NaN reaches the row's final states
        for a in hp.flatten(own)[1:] if axis else hp.flatten(own):
            assert np.isnan(a).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e30, -1e30], ids=["1e30", "-1e30"])
@pytest.mark.parametrize("api, variant", API_VARIANTS)
def test_huge_inputs_saturate(api, variant, scale, dtype, rng):
    """x of magnitude 1e30: the gates saturate, every output is finite and matches the
    reference (LSTM and tanh-RNN outputs stay within [-1, 1])."""
    run, x, run_ref, _ = _api_case(api, variant, dtype, rng)
    x_big = (x * scale).astype(dtype)
    got = run(x_big)
    for a in hp.flatten(got):
        assert np.isfinite(a).all()
    if variant in ("lstm", "rnn_tanh"):  # h = o tanh(c) or tanh(.); a GRU blends in h0
        assert np.abs(hp.flatten(got)[0]).max() <= 1
    _assert_like_reference(got, lambda dt: run_ref(x_big, dt), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_is_never_read(variant, dtype, rng):
    """Steps past a sequence's length do not matter: NaN, Inf or 1e30 there gives bitwise the
    output of zeros there; output past each length is exactly zero."""
    options = dict(num_layers=2, bidirectional=True)
    weights, x, hx, lengths = _seq_inputs(variant, 6, 5, 4, 7, dtype, rng, **options)
    m = _module(variant, 4, 7, dtype=dtype, **options)
    m.load_state_dict(weights)
    pad = np.arange(6)[:, None] >= lengths[None, :]  # [T, N]
    x0 = np.where(pad[..., None], 0, x).astype(dtype)
    expected = m(x0, hx, lengths=lengths)
    for fill in (np.nan, np.inf, 1e30):
        x_bad = np.where(pad[..., None], fill, x).astype(dtype)
        _assert_bitwise(m(x_bad, hx, lengths=lengths), expected, f"module, padding {fill}")
        _assert_bitwise(_seq_call(gk, variant, x_bad, hx, weights, lengths=lengths, **options),
                        expected, f"functional, padding {fill}")
    assert np.all(expected[0][pad] == 0)


def test_modules_pickle_round_trip():
    """Modules pickle (multiprocessing needs it) and re-pack on load with the same outputs."""
    import pickle

    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 6)).astype(np.float32)
    for m in (gk.LSTM(6, 8, num_layers=2, bidirectional=True, proj_size=3, seed=1),
              gk.GRU(6, 8, linear_before_reset=False, seed=2), gk.RNN(6, 8, seed=3)):
        m2 = pickle.loads(pickle.dumps(m))
        for a, b in zip(gk_flat(m(x)), gk_flat(m2(x))):
            assert np.array_equal(a, b)
    cell = gk.LSTMCell(6, 8, seed=4)
    cell2 = pickle.loads(pickle.dumps(cell))
    for a, b in zip(cell(x[0]), cell2(x[0])):
        assert np.array_equal(a, b)


def gk_flat(result):
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in gk_flat(part)]
    return [result]
