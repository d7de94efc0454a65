"""GPU cases of the pytest-benchmark suite (`pytest bench --benchmark-only -m cuda`): whole
sequences, T = 512, I = H, float32, gatedkernels.cuda against cuDNN (TF32 off). Skipped with a
reason without an NVIDIA GPU, torch with CUDA, or numba-cuda. Each round ends with a device
synchronisation so the wall clock covers the GPU work; bench/gpu_compare.py has the
CUDA-event report with the per-step table.
"""
import pytest

import gatedkernels as gk

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to torch", allow_module_level=True)
pytest.importorskip("numba", reason="gatedkernels[cuda12] or [cuda13] is not installed")

pytestmark = pytest.mark.cuda
T = 512


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("H", [256, 512, 1024])
@pytest.mark.parametrize("N", [1, 8, 16, 64])
@pytest.mark.parametrize("backend", ["gk", "cudnn"])
def test_sequence_gpu(benchmark, kind, H, N, backend):
    benchmark.group = f"gpu {kind} T{T} N{N} H{H}"
    m = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](H, H).cuda().eval()
    x = torch.randn(T, N, H, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    if backend == "gk":
        g = {"lstm": gk.LSTM, "gru": gk.GRU}[kind].from_torch(m).to("cuda")
        fn = lambda: g(x)  # noqa: E731
    else:
        fn = lambda: m(x)  # noqa: E731

    def run():
        fn()
        torch.cuda.synchronize()

    with torch.no_grad():
        run()
        benchmark.extra_info["per_step_hint"] = "divide by T=512"
        benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
