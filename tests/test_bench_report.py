"""bench/compare.py's check of issue 3's targets against a run's rows (no timing: rows made up)."""
import pytest

import _helpers


@pytest.fixture(scope="module")
def compare():
    return _helpers.load_bench_script("compare")


def _row(kind, what, T, N, H, gk, threads=1, pct=50.0, pct_numpy=50.0, pct_best=None, **peers):
    row = dict(threads=threads, kind=kind, what=what, T=T, N=N, I=H, H=H, gk=gk,
               med=dict(peers), gflops=1.0, pct=pct, pct_numpy=pct_numpy)
    if pct_best is not None:
        row["pct_best"] = pct_best
    return row


def test_targets_met_missed_and_left_out(compare):
    rows = [
        _row("lstm", "step", 1, 1, 64, 1.2e-6, torch=30e-6, ort=9e-6),      # 25x torch, 7.5x ort
        _row("gru", "step", 1, 8, 256, 1e-5, torch=3e-5),                   # exactly 3x: met
        _row("lstm", "seq", 100, 16, 256, 1.0, torch=1.149, pct=85.0),      # 1.149x < 1.15
        _row("gru", "seq", 50, 64, 1024, 1.0, pct=99.0, pct_numpy=84.9),   # numpy's rate: missed
        _row("lstm", "seq", 100, 64, 512, 1.0, threads=2, torch=0.5),       # 2 threads: not a target
    ]
    got = {label: (value, ok) for label, value, ok in compare.targets(rows)}
    assert got["lstm step (1,64,64): <= 1.5 us per call"] == ("1.20 us", True)
    assert got["lstm step (1,64,64): >= 20x torch"] == ("25.00x", True)
    assert got["lstm step (1,64,64): >= 8x ort"] == ("7.50x", False)
    assert got["gru step (N=8, H=256): >= 3x torch"] == ("3.00x", True)
    assert got["lstm T100 N16 H256: >= 1.15x torch"] == ("1.15x", False)
    assert got["lstm T100 N16 H256: >= 85% of the GEMM peak"] == ("85%", True)
    assert got["gru T50 N64 H1024: >= 85% of NumPy's SGEMM rate"] == ("85%", False)
    # Peers that did not run and shapes that were not run give no line.
    assert "lstm T100 N16 H256: >= 1.1x ort" not in got
    assert not any("T100 N64 H512" in label for label in got)
    assert len(got) == 7


def test_row_percent_of_the_sgemm_timed_in_the_same_rounds(compare):
    g = compare.GEMM_FLOPS
    res = {"gk": (0.01,), "torch": (0.02,), "sgemm": (g / 200e9,), "sgemm_torch": (g / 210e9,)}
    r = compare._row(1, "lstm", "seq", 100, 16, 128, 128, res, roof=250.0, numpy_peak=240.0)
    gf = compare.flops("lstm", 100, 16, 128, 128) / 0.01 / 1e9
    assert r["gflops"] == pytest.approx(gf)
    assert r["gemm"] == pytest.approx(210.0)                 # the faster of the two, same rounds
    assert r["pct"] == pytest.approx(100 * gf / 210.0)
    assert r["pct_numpy"] == pytest.approx(100 * gf / 200.0)
    assert r["pct_best"] == pytest.approx(100 * gf / 250.0)  # the section's best-of burst
    # A case without SGEMM in its rounds (a step) falls back to the best-of burst.
    s = compare._row(1, "lstm", "step", 1, 8, 128, 256, {"gk_stream": (1e-5,), "gk": (2e-5,)},
                     roof=250.0, numpy_peak=240.0)
    sf = compare.flops("lstm", 1, 8, 128, 256) / 1e-5 / 1e9
    assert "gemm" not in s
    assert s["pct"] == pytest.approx(100 * sf / 250.0)
    assert s["pct_numpy"] == pytest.approx(100 * sf / 240.0)


def test_target_shows_both_percentages_when_they_differ(compare):
    rows = [_row("lstm", "seq", 100, 64, 256, 1.0, pct=86.0, pct_best=80.0),
            _row("gru", "seq", 100, 64, 256, 1.0, pct=84.6, pct_best=84.9)]
    got = {label: (value, ok) for label, value, ok in compare.targets(rows)}
    assert got["lstm T100 N64 H256: >= 85% of the GEMM peak"] == ("86% (best-of 80%)", True)
    assert got["gru T100 N64 H256: >= 85% of the GEMM peak"] == ("85%", False)  # 84.6 < 85
