"""How close the CPU kernels run to this machine's limits, one thread, float32.

    python bench/roofline.py            # needs a C compiler (cc) for the probes in roofline.c

Two limits bound a call: the float32 FMA peak of one core (probed with register-only FMAs), and
the rate at which the weights can be read from wherever they live (probed by summing a warm
buffer of the same size: L1, L2, L3 or memory). Each streaming step reads all of its weights
once, so its floor is max(weight bytes / read rate, FLOPs / peak); a sequence with N = 1 pays
the W_hh read every time step, a batched one is FLOP-bound. The table gives that floor next to
the measured median of gatedkernels (the zero-allocation stream for steps, the module for
sequences) and the fraction of the floor reached. Python's call overhead (~0.15 us per step
call) is part of the measured time and not of the floor.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import gatedkernels as gk
from gatedkernels._timing import fmt_time, interleaved

HERE = os.path.dirname(os.path.abspath(__file__))
GATES = {"lstm": 4, "gru": 3}
STEPS = [("lstm", 1, 64, 64), ("gru", 1, 64, 64), ("lstm", 1, 128, 256), ("gru", 1, 128, 256),
         ("lstm", 8, 128, 256), ("gru", 8, 128, 256)]
SEQS = [("lstm", 1, 128), ("lstm", 1, 256), ("lstm", 1, 512), ("gru", 1, 256),
        ("lstm", 16, 256), ("lstm", 64, 256), ("gru", 16, 256)]
T = 100


def probe(sizes):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        sys.exit("roofline.py needs a C compiler (cc, gcc or clang) for its probes")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "roofline")
        subprocess.run([cc, "-O2", "-march=native", os.path.join(HERE, "roofline.c"), "-o", exe],
                       check=True)
        out = subprocess.run([exe, "20000000", *map(str, sizes)], check=True, capture_output=True,
                             text=True).stdout
    peak, bw = None, {}
    for line in out.splitlines():
        f = line.split()
        if f[0] == "peak_gflops":
            peak = float(f[1])
        elif f[0] == "read_gbs":
            bw[int(f[1])] = float(f[2])
    return peak, bw


def main():
    gk.set_num_threads(1)
    rng = np.random.default_rng(0)
    w_bytes = {(k, I, H): 4 * GATES[k] * H * (I + H) for k, _, I, H in STEPS}
    whh_bytes = {(k, H): 4 * GATES[k] * H * H for k, _, H in SEQS}
    levels = [16 << 10, 128 << 10, 512 << 10, 2 << 20, 8 << 20, 256 << 20]
    peak, bw = probe(sorted(set(levels) | set(w_bytes.values()) | set(whh_bytes.values())))
    print(f"one core: float32 FMA peak {peak:.1f} GFLOP/s; read rate " +
          ", ".join(f"{b >> 10} KiB {bw[b]:.0f} GB/s" for b in levels))

    print(f"\n{'case':<24}{'weights':>10}{'read':>9}{'floor':>11}{'limit':>7}"
          f"{'gk':>11}{'of floor':>10}")
    for kind, N, I, H in STEPS:
        cell = {"lstm": gk.LSTMCell, "gru": gk.GRUCell}[kind](I, H, seed=0)
        s = cell.stream(N)
        x = rng.standard_normal((N, I)).astype(np.float32)
        out = np.empty((N, H), np.float32)
        med = interleaved({"gk": lambda: s.step(x, out)}, rounds=7, target_s=0.02)["gk"][0]
        nb = w_bytes[(kind, I, H)]
        t_mem = nb / (bw[nb] * 1e9)
        t_flop = 2 * N * GATES[kind] * H * (I + H) / (peak * 1e9)
        floor = max(t_mem, t_flop)
        print(f"{kind} step ({N},{I},{H})".ljust(24) + f"{nb >> 10:>6} KiB{bw[nb]:>5.0f}GB/s"
              f"{fmt_time(floor):>11}{'read' if t_mem > t_flop else 'FMA':>7}"
              f"{fmt_time(med):>11}{100 * floor / med:>9.0f}%")
    for kind, N, H in SEQS:
        m = {"lstm": gk.LSTM, "gru": gk.GRU}[kind](H, H, seed=0)
        x = rng.standard_normal((T, N, H)).astype(np.float32)
        med = interleaved({"gk": lambda: m(x)}, rounds=5, target_s=0.05)["gk"][0]
        nb = whh_bytes[(kind, H)]
        G = GATES[kind]
        t_proj = 2 * T * N * G * H * H / (peak * 1e9)
        t_rec = T * max(nb / (bw[nb] * 1e9), 2 * N * G * H * H / (peak * 1e9))
        floor = t_proj + t_rec
        limit = "read" if nb / (bw[nb] * 1e9) > 2 * N * G * H * H / (peak * 1e9) else "FMA"
        print(f"{kind} T{T} N{N} H{H}".ljust(24) + f"{nb >> 10:>6} KiB{bw[nb]:>5.0f}GB/s"
              f"{fmt_time(floor):>11}{limit:>7}{fmt_time(med):>11}{100 * floor / med:>9.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
