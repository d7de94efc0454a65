"""GPU report: gatedkernels.cuda against cuDNN (torch.nn.LSTM / nn.GRU) and a PyTorch loop over
LSTMCell / GRUCell, per time step, timed with CUDA events. Needs an NVIDIA GPU, torch with CUDA
and gatedkernels[cuda12] or [cuda13].

    python bench/gpu_compare.py                  # H in {256, 512, 1024}, N in {1, 8, 16, 64}, T=512
    python bench/gpu_compare.py --quick          # H=256, N in {1, 16}, T=128
    python bench/gpu_compare.py --csv out.csv

Candidates, float32 forward, one layer, unidirectional, I = H:
  gk_persist  gk.LSTM/GRU module on torch CUDA tensors: one input GEMM (cuBLAS via torch) + one
              persistent cooperative kernel for all T steps
  gk_loop     the same with one step-kernel launch per time step (impl="loop"): the
              warp-per-unit kernel up to N = 8, the tiled kernel above
  cudnn       torch.nn.LSTM/GRU, float32 with TF32 off (allow_tf32 = False)
  cudnn_tf32  the same with TF32 allowed (PyTorch's cuDNN default for RNNs)
  cudnn_fp16  the same in float16 (for reference: another precision)
  torch_loop  a Python loop over nn.LSTMCell/GRUCell (T launches of cuBLAS + pointwise)
The candidates of one case run in interleaved rounds (A, B, C, A, B, C ...); the table has the
median per-step time (whole-sequence time / T) and the ratio cudnn / gk_persist.

A second table times one step call from Python end to end at (N, I, H) = (1, 256, 256) on torch
tensors (wall clock, including the launch; no synchronisation inside the call, one
torch.cuda.synchronize per batch of calls): the gk.LSTMCell module, the functional
gk.lstm_cell on raw weights, the device stream (cell.stream(1, device="cuda").step), and
torch.nn.LSTMCell.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import gatedkernels as gk


def _need_gpu():
    try:
        import torch
    except ImportError:
        sys.exit("gpu_compare: needs torch with CUDA")
    if not torch.cuda.is_available():
        sys.exit("gpu_compare: no CUDA GPU visible to torch")
    try:
        import gatedkernels.cuda as gkc  # noqa: F401
    except ImportError as e:
        sys.exit(f"gpu_compare: {e}")
    return torch


def event_time(torch, fn, reps):
    """Median over `reps` of one fn() call, in seconds, timed by CUDA events on the current
    stream."""
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(times)


def interleaved_events(torch, fns, rounds, reps):
    """{name: median seconds} of candidates timed in interleaved rounds."""
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(event_time(torch, fn, reps))
    return {k: statistics.median(v) for k, v in samples.items()}


def sequence_case(torch, kind, T, N, H, rounds, reps):
    dev = torch.device("cuda")
    tmod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](H, H).to(dev).eval()
    tcell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](H, H).to(dev).eval()
    tcell.load_state_dict({k.replace("_l0", ""): v for k, v in tmod.state_dict().items()})
    half = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](H, H).to(dev).half().eval()
    half.load_state_dict(tmod.state_dict())
    g = {"lstm": gk.LSTM, "gru": gk.GRU}[kind].from_torch(tmod).to("cuda")
    x = torch.randn(T, N, H, device=dev)
    xh = x.half()
    cudnn = torch.backends.cudnn

    def gk_persist():
        g(x)

    def gk_loop():
        import gatedkernels.cuda._run as run

        p = g._device_params()
        run.sequence(g._kind, g._lbr, g._relu, [(p["weight_ih_l0"], p["weight_hh_l0"],
                     p["bias_ih_l0"], p["bias_hh_l0"])], H, H, 1, 1, x, None, None, False,
                     impl="loop", dtype=g.dtype)

    def cudnn_fp32():
        cudnn.allow_tf32 = False
        tmod(x)

    def cudnn_tf32():
        cudnn.allow_tf32 = True
        tmod(x)

    def cudnn_fp16():
        half(xh)

    def torch_loop():
        h = torch.zeros(N, H, device=dev)
        c = torch.zeros(N, H, device=dev)
        for t in range(T):
            if kind == "lstm":
                h, c = tcell(x[t], (h, c))
            else:
                h = tcell(x[t], h)

    fns = dict(gk_persist=gk_persist, gk_loop=gk_loop, cudnn=cudnn_fp32, cudnn_tf32=cudnn_tf32,
               cudnn_fp16=cudnn_fp16, torch_loop=torch_loop)
    with torch.no_grad():
        for fn in fns.values():  # compile, autotune, warm the caches
            fn()
        torch.cuda.synchronize()
        # the correctness of what is timed: gk against cuDNN with TF32 off
        cudnn.allow_tf32 = False
        ref = tmod(x)[0]
        err = (g(x)[0] - ref).abs().max().item()
        med = interleaved_events(torch, fns, rounds, reps)
    cudnn.allow_tf32 = True
    return {k: v / T for k, v in med.items()}, err


def step_call_case(torch, rounds, calls):
    """Wall-clock seconds per step call from Python at (1, 256, 256)."""
    dev = torch.device("cuda")
    tcell = torch.nn.LSTMCell(256, 256).to(dev).eval()
    g = gk.LSTMCell.from_torch(tcell).to("cuda")
    x = torch.randn(1, 256, device=dev)
    h = torch.zeros(1, 256, device=dev)
    c = torch.zeros(1, 256, device=dev)

    w = {k: v.detach() for k, v in tcell.state_dict().items()}
    stream = g.stream(1, device="cuda")

    def run_gk():
        for _ in range(calls):
            g(x, (h, c))

    def run_gk_fn():
        for _ in range(calls):
            gk.lstm_cell(x, (h, c), w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"])

    def run_gk_stream():
        for _ in range(calls):
            stream.step(x)

    def run_torch():
        for _ in range(calls):
            tcell(x, (h, c))

    cands = (("gk LSTMCell", run_gk), ("gk lstm_cell", run_gk_fn),
             ("gk stream", run_gk_stream), ("torch LSTMCell", run_torch))
    out = {name: [] for name, _ in cands}
    with torch.no_grad():
        for _, fn in cands:
            fn()
        for _ in range(rounds):
            for name, fn in cands:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                out[name].append((time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    torch = _need_gpu()
    Hs, Ns, T = ((256,), (1, 16), 128) if args.quick else ((256, 512, 1024), (1, 8, 16, 64), 512)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"cuDNN {torch.backends.cudnn.version()}  gatedkernels {gk.__version__}")
    print(f"per-step µs (median of {args.rounds} interleaved rounds, CUDA events), T={T}, I=H")
    cols = ["gk_persist", "gk_loop", "cudnn", "cudnn_tf32", "cudnn_fp16", "torch_loop"]
    print(f"{'case':<18}" + "".join(f"{c:>12}" for c in cols)
          + f"{'cudnn/gk':>10}{'loop/gk':>9}{'max|err|':>10}")
    rows = []
    for kind in ("lstm", "gru"):
        for H in Hs:
            for N in Ns:
                med, err = sequence_case(torch, kind, T, N, H, args.rounds, 1)
                name = f"{kind} N{N} H{H}"
                print(f"{name:<18}" + "".join(f"{med[c] * 1e6:12.2f}" for c in cols)
                      + f"{med['cudnn'] / med['gk_persist']:10.2f}"
                      + f"{med['torch_loop'] / med['gk_persist']:9.1f}{err:10.2e}", flush=True)
                rows.append((kind, N, H, T, *[med[c] for c in cols], err))
    step = step_call_case(torch, args.rounds, 200)
    print("\nstep call from Python, (N, I, H) = (1, 256, 256), wall clock per call:")
    for k, v in step.items():
        print(f"  {k:<16} {v * 1e6:8.2f} µs")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("kind,N,H,T," + ",".join(cols) + ",max_err\n")
            for r in rows:
                f.write(",".join(str(v) for v in r) + "\n")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
