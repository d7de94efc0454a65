"""GFLOP/s of the recurrence alone: LSTM modules with input size 1 (the input projection is then
negligible), T=50, float32, one thread; median of interleaved rounds per shape.

    python bench/recurrence_rate.py
"""
import numpy as np

import gatedkernels as gk
from gatedkernels._timing import interleaved


def main():
    T = 50
    rng = np.random.default_rng(0)
    gk.set_num_threads(1)
    for H in (128, 256, 512):
        for N in (8, 16, 64):
            m = gk.LSTM(1, H, seed=0)
            x = rng.standard_normal((T, N, 1)).astype(np.float32)
            med = interleaved({"gk": lambda: m(x)}, rounds=5)["gk"][0]
            flops = 2 * T * N * 4 * H * H
            print(f"lstm recurrence H{H} N{N}: {med * 1e3:.2f} ms  {flops / med / 1e9:.1f} GFLOP/s",
                  flush=True)


if __name__ == "__main__":
    main()
