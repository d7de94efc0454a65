"""The kernels' own sigmoid and tanh (csrc/gatedkernels/activations.h) hold their documented
error bound: at most MAX_ULP ulp from the correctly rounded result, over the whole float range;
they saturate, a finite input never gives NaN or Inf, and NaN propagates (SPEC §6).

The default test sweeps every 61st float32 bit pattern of both signs (about 140 million values)
plus every float32 in the regions where the formulas switch; the `slow` test sweeps all of them.
"""
import numpy as np
import pytest

from gatedkernels import _ext

MAX_ULP = 3.0  # documented in activations.h
# Every test runs once per kernel build this CPU supports (the `isa` fixture, conftest.py): the
# builds compile the same source for different vector widths, with FMA contraction where the
# target has it, so each one is held to the bound.
FUNCS = ["sigmoid", "tanh"]


def _oracle(name, x):
    xd = x.astype(np.float64)
    if name == "tanh":
        return np.tanh(xd)
    e = np.exp(-np.abs(xd))
    return np.where(xd >= 0, 1 / (1 + e), e / (1 + e))


def _max_ulp(name, x, isa):
    """Worst error in ulp of the float32-rounded oracle (np.spacing handles subnormals)."""
    got = _ext.activation(name, x, isa).astype(np.float64)
    ref = _oracle(name, x)
    spacing = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
    err = np.abs(got - ref) / spacing
    i = int(np.argmax(err))
    return err[i], x[i]


def _bit_range(start, stop, step=1):
    return np.arange(start, stop, step, dtype=np.uint32)


def _sweep(name, step, isa):
    worst = (0.0, None)
    finite_top = 0x7F800000  # +inf
    for sign in (0, 0x80000000):
        for lo in range(0, finite_top, 1 << 25):
            bits = _bit_range(lo, min(lo + (1 << 25), finite_top), step) | np.uint32(sign)
            w = _max_ulp(name, bits.view(np.float32), isa)
            worst = max(worst, w, key=lambda t: t[0])
    return worst


@pytest.mark.parametrize("name", FUNCS)
def test_float32_ulp_strided_sweep(name, isa):
    err, at = _sweep(name, 61, isa)
    assert err <= MAX_ULP, f"{name}: {err:.2f} ulp at x = {at!r}"


@pytest.mark.parametrize("name", FUNCS)
# Where the formulas switch: the float tanh's range reduction of -2|x| steps n at |x| = ln2/4,
# 3 ln2/4, ... and it clamps at 20; sigmoid's exp clamps at -104 and falls into the subnormals
# near -87; 0.625 and 9 are where older forms switched.
@pytest.mark.parametrize("center", [0.0, 0.17328679, -0.17328679, 0.51986039, -0.51986039,
                                    0.625, -0.625, 1.0, 9.0, -9.0, 20.0, -20.0, 87.0, -87.0,
                                    103.0, -103.0])
def test_float32_ulp_dense_near_switch_points(name, center, isa):
    c = np.float32(center).view(np.uint32)
    bits = _bit_range(max(int(c) - (1 << 16), 0), int(c) + (1 << 16))
    x = bits.view(np.float32)
    x = np.concatenate([x, -x])
    err, at = _max_ulp(name, x[np.isfinite(x)], isa)
    assert err <= MAX_ULP, f"{name}: {err:.2f} ulp at x = {at!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCS)
def test_float32_ulp_exhaustive(name, isa):
    err, at = _sweep(name, 1, isa)
    assert err <= MAX_ULP, f"{name}: {err:.2f} ulp at x = {at!r}"


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18,
                    reason="needs an extended-precision long double for the float64 oracle")
@pytest.mark.parametrize("name", FUNCS)
def test_float64_ulp(name, rng, isa):
    """float64 sigmoid / tanh within MAX_ULP of the result computed in 80-bit long double."""
    x = np.concatenate([rng.uniform(-40, 40, 300_000), rng.standard_normal(200_000) * 1e-3,
                        rng.uniform(-745, 745, 100_000),
                        np.geomspace(1e-300, 740, 20_000), -np.geomspace(1e-300, 740, 20_000)])
    got = _ext.activation(name, x, isa)
    xl = x.astype(np.longdouble)
    if name == "tanh":
        ref = np.tanh(xl)
    else:
        e = np.exp(-np.abs(xl))
        ref = np.where(xl >= 0, 1 / (1 + e), e / (1 + e))
    spacing = np.spacing(np.abs(ref.astype(np.float64))).astype(np.longdouble)
    err = np.abs(got.astype(np.longdouble) - ref) / spacing
    i = int(np.argmax(err))
    assert err[i] <= MAX_ULP, f"{name}: {float(err[i]):.2f} ulp at x = {x[i]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FUNCS)
def test_saturation_and_specials(name, dtype, isa):
    big = np.finfo(dtype).max
    x = np.array([-np.inf, -big, -1e30, -1000.0, 1000.0, 1e30, big, np.inf, np.nan, 0.0, -0.0],
                 dtype)
    y = _ext.activation(name, x, isa)
    low = 0.0 if name == "sigmoid" else -1.0
    np.testing.assert_array_equal(y[:4], [low] * 4)
    np.testing.assert_array_equal(y[4:8], [1.0] * 4)
    assert np.isnan(y[8])
    assert y[9] == (0.5 if name == "sigmoid" else 0.0)
    if name == "tanh":
        assert np.signbit(y[10])  # tanh(-0) = -0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FUNCS)
def test_finite_in_finite_out_and_monotone(name, dtype, isa):
    x = np.linspace(-120, 120, 200_001).astype(dtype)
    y = _ext.activation(name, x, isa)
    assert np.isfinite(y).all()
    assert (np.diff(y) >= 0).all()
