"""``python -m gatedkernels``: what this build is, a self-check against the NumPy reference, and a
short speed table on this machine (gatedkernels vs the NumPy reference, and vs PyTorch when it is
installed). Exits non-zero if the self-check fails.

    python -m gatedkernels            # config + self-check + speed table
    python -m gatedkernels --check    # config + self-check only
"""
import argparse
import sys

import numpy as np

import gatedkernels as gk
from gatedkernels import reference
from gatedkernels._timing import blas_threads, fmt_time, interleaved

VARIANTS = [
    ("lstm", {}), ("gru", {"linear_before_reset": True}), ("gru", {"linear_before_reset": False}),
    ("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"}),
]


def _variant_name(kind, kw):
    if kind == "gru":
        return "gru (linear_before_reset=%s)" % kw["linear_before_reset"]
    if kind == "rnn":
        return "rnn (%s)" % kw["nonlinearity"]
    return kind


def _flat(result):
    if isinstance(result, (tuple, list)):
        return np.concatenate([_flat(r) for r in result if r is not None])
    return np.asarray(result, dtype=np.float64).ravel()


def _error(got, oracle, ref32=None):
    """(ok, message) with SPEC §6's bound: float64 per element, float32 relative to a plain
    float32 implementation (the reference in float32)."""
    g, o = _flat(got), _flat(oracle)
    err = np.abs(g - o)
    if ref32 is None:
        ok = bool((err <= 1e-12 * np.abs(o) + 1e-14).all())
        return ok, f"max |diff| {err.max():.1e}"
    base = np.abs(_flat(ref32) - o).max()
    ok = bool(err.max() <= 2 * base + 1e-6)
    return ok, f"max |diff| {err.max():.1e} (float32 reference {base:.1e})"


def _cell_fns(kind):
    fname = {"lstm": "lstm_cell", "gru": "gru_cell", "rnn": "rnn_cell"}[kind]
    return getattr(gk, fname), getattr(reference, fname)


def _seq_fns(kind):
    return getattr(gk, kind), getattr(reference, kind)


def _identity(a):
    return a


def self_check(rng, put=_identity, get=_identity, tag=""):
    """Every cell and variant, float64 and float32, functional cell, cell module and a 2-layer
    bidirectional sequence with ragged lengths, against the float64 reference. `put` moves an
    input array where the call should run (the GPU check passes device copies) and `get` brings
    a result back to NumPy."""

    def put_all(a):
        return tuple(put(v) for v in a) if isinstance(a, tuple) else put(a)

    def get_all(a):
        if isinstance(a, (tuple, list)):
            return tuple(get_all(v) for v in a)
        return None if a is None else get(a)

    rows = []
    N, I, H, T = 3, 5, 11, 6
    G = {"lstm": 4, "gru": 3, "rnn": 1}
    for kind, kw in VARIANTS:
        for dt in (np.float64, np.float32):
            s = 1 / np.sqrt(H)
            w = [rng.uniform(-s, s, shp).astype(dt) for shp in
                 [(G[kind] * H, I), (G[kind] * H, H), (G[kind] * H,), (G[kind] * H,)]]
            x = rng.standard_normal((N, I)).astype(dt)
            h = rng.standard_normal((N, H)).astype(dt)
            hx = (h, rng.standard_normal((N, H)).astype(dt)) if kind == "lstm" else h
            f_gk, f_ref = _cell_fns(kind)

            def cast(a, to):
                return tuple(v.astype(to) for v in a) if isinstance(a, tuple) else a.astype(to)

            args64 = [cast(x, np.float64), cast(hx, np.float64)] + [a.astype(np.float64) for a in w]
            oracle = f_ref(*args64, **kw)
            ref32 = f_ref(x, hx, *w, **kw) if dt == np.float32 else None
            got = get_all(f_gk(put(x), put_all(hx), *[put(a) for a in w], **kw))
            ok, msg = _error(got, oracle, ref32)
            rows.append((f"{tag}{_variant_name(kind, kw)} cell, {np.dtype(dt).name}", ok, msg))

            cls = {"lstm": gk.LSTM, "gru": gk.GRU, "rnn": gk.RNN}[kind]
            m = cls(I, H, num_layers=2, bidirectional=True, dtype=dt, seed=1, **kw)
            xs = rng.standard_normal((T, N, I)).astype(dt)
            lengths = np.array([T, 1, 4])
            got = get_all(m(put(xs), lengths=lengths))
            s_ref = _seq_fns(kind)[1]
            sd64 = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
            seq_kw = dict(num_layers=2, bidirectional=True, lengths=lengths, **kw)
            oracle = s_ref(xs.astype(np.float64), None, sd64, **seq_kw)
            ref32 = s_ref(xs, None, m.state_dict(), **seq_kw) if dt == np.float32 else None
            ok, msg = _error(got, oracle, ref32)
            rows.append((f"{tag}{_variant_name(kind, kw)} 2-layer bidirectional sequence with "
                         f"lengths, "
                         f"{np.dtype(dt).name}", ok, msg))
    return rows


def gpu_self_check(rng):
    """The self-check on the GPU (Numba device arrays), or (None, why) without one."""
    from importlib import util

    if util.find_spec("numba") is None:
        return None, "numba-cuda is not installed (pip install 'gatedkernels[cuda12]')"
    from gatedkernels.cuda._numba import SIMULATOR, cuda, is_available

    if SIMULATOR or not is_available():
        return None, "no CUDA GPU (the test suite runs these kernels in the simulator)"
    return self_check(rng, put=cuda.to_device, get=lambda a: a.copy_to_host(),
                      tag="GPU "), None


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def speed_table(rng, budget_s):
    """Medians of interleaved rounds, float32: step calls and T=100 sequences."""
    torch = _torch()
    gk.set_num_threads(1)
    lines = []
    header = (f"{'case':<34}{'gatedkernels':>14}{'gk stream':>11}{'numpy ref':>12}{'torch':>12}"
              f"{'vs ref':>9}{'vs torch':>10}")
    lines.append(header)
    lines.append("-" * len(header))
    cases = [("lstm", "step", (1, 64, 64)), ("lstm", "step", (1, 128, 256)),
             ("lstm", "step", (8, 128, 256)), ("gru", "step", (1, 128, 256)),
             ("lstm", "seq", (1, 128, 128)), ("gru", "seq", (1, 128, 128)),
             ("lstm", "seq", (16, 256, 256)), ("gru", "seq", (16, 256, 256))]
    T = 100
    for kind, what, (N, I, H) in cases:
        dt = np.float32
        if what == "step":
            cls = gk.LSTMCell if kind == "lstm" else gk.GRUCell
            m = cls(I, H, seed=0)
            x = rng.standard_normal((N, I)).astype(dt)
            h = rng.standard_normal((N, H)).astype(dt)
            hx = (h, h.copy()) if kind == "lstm" else h
            sd = m.state_dict()
            w = (sd["weight_ih"], sd["weight_hh"], sd["bias_ih"], sd["bias_hh"])
            f_ref = getattr(reference, f"{kind}_cell")
            stream = m.stream(N, hx)
            out = np.empty((N, H), dt)
            cands = {"gk": lambda: m(x, hx), "stream": lambda: stream.step(x, out),
                     "ref": lambda: f_ref(x, hx, *w)}
            if torch is not None:
                tm = (torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell)(I, H)
                tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
                tx = torch.from_numpy(x)
                thx = tuple(torch.from_numpy(a) for a in hx) if kind == "lstm" else torch.from_numpy(hx)

                def t_call(tm=tm, tx=tx, thx=thx):
                    with torch.no_grad():
                        tm(tx, thx)

                cands["torch"] = t_call
            label = f"{kind} step (N,I,H)=({N},{I},{H})"
        else:
            cls = gk.LSTM if kind == "lstm" else gk.GRU
            m = cls(I, H, seed=0)
            x = rng.standard_normal((T, N, I)).astype(dt)
            f_ref = getattr(reference, kind)
            sd = m.state_dict()
            cands = {"gk": lambda: m(x), "ref": lambda: f_ref(x, None, sd)}
            if torch is not None:
                tm = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H)
                tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
                tx = torch.from_numpy(x)

                def t_call(tm=tm, tx=tx):
                    with torch.no_grad():
                        tm(tx)

                cands["torch"] = t_call
            label = f"{kind} seq T={T} (N,I,H)=({N},{I},{H})"
        res = interleaved(cands, rounds=7, budget_s=budget_s / len(cases))
        g = res["gk"][0]
        st = res["stream"][0] if "stream" in res else None
        r = res["ref"][0]
        t = res["torch"][0] if "torch" in res else None
        lines.append(
            f"{label:<34}{fmt_time(g):>14}{(fmt_time(st) if st else '-'):>11}{fmt_time(r):>12}"
            f"{(fmt_time(t) if t else 'n/a'):>12}{r / g:>8.1f}x"
            f"{(f'{t / g:>9.1f}x' if t else '       n/a')}"
        )
    return lines, torch


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gatedkernels", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="self-check only, no speed table")
    ap.add_argument("--budget", type=float, default=40.0,
                    help="seconds to spend on the speed table (default 40)")
    args = ap.parse_args(argv)
    gk.show_config()
    rng = np.random.default_rng(2024)
    print("\nSelf-check against gatedkernels.reference (float64 oracle, SPEC §6 bounds):")
    rows = self_check(rng)
    width = max(len(r[0]) for r in rows)
    for name, ok, msg in rows:
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<{width}}  {msg}")
    gpu_rows, why = gpu_self_check(rng)
    if gpu_rows is None:
        print(f"  (GPU self-check skipped: {why})")
    else:
        for name, ok, msg in gpu_rows:
            print(f"  {'ok  ' if ok else 'FAIL'} {name:<{width}}  {msg}")
        rows += gpu_rows
    failed = [r for r in rows if not r[1]]
    print(f"  {len(rows) - len(failed)} of {len(rows)} checks passed")
    if failed:
        return 1
    if not args.check:
        print("\nSpeed, float32, single thread, median per call of interleaved rounds "
              "(ratios: how many times faster a gatedkernels module call is; 'gk stream' is "
              "cell.stream(N).step(x, out), the zero-allocation streaming path):")
        blas, limited = blas_threads(1)
        with blas:
            lines, torch = speed_table(rng, args.budget)
        for line in lines:
            print("  " + line)
        if torch is None:
            print("  (torch is not installed: its column is skipped)")
        else:
            print(f"  torch {torch.__version__}, torch.set_num_threads(1); modules called under "
                  f"no_grad")
        print("  the numpy reference's BLAS: " + ("held to 1 thread (threadpoolctl)" if limited else
              "as configured (install threadpoolctl to hold it to 1 thread)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
