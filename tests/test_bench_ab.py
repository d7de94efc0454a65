"""bench/ab_kernels.py: its argument checks (no compiler needed), and under -m slow a whole run
that compiles two builds of the generic kernels (a few minutes)."""
import shutil

import pytest

import _helpers

_ROOT = _helpers.ROOT


@pytest.fixture(scope="module")
def ab():
    return _helpers.load_bench_script("ab_kernels")


@pytest.mark.parametrize("argv,message", [
    (["--build", "new=/nonexistent/csrc", "seq:lstm:2:1:4"], "not a kernel source tree"),
    (["--build", "new", "seq:lstm:2:1:4"], "want NAME=DIR"),
    (["--build", "=.", "seq:lstm:2:1:4"], "want NAME=DIR"),
    (["--no-null", "seq:lstm:2:1:4"], "nothing to compare"),
    (["seq:lstm:2:1"], "want seq:KIND:T:N:H"),
    (["seq:lstmcell:2:1:4"], "want seq:KIND:T:N:H"),
    (["step:gru:0:4:4"], "sizes >= 1"),
])
def test_bad_arguments_are_refused_before_compiling(ab, argv, message, monkeypatch):
    monkeypatch.setattr(ab, "compile_build", lambda *a: pytest.fail("compiled bad arguments"))
    with pytest.raises(SystemExit, match=message):
        ab.main(argv)


def test_best_isa_is_a_build(ab):
    assert ab.best_isa() in ab.ISAS


def test_a_checkout_or_its_csrc_is_a_source_tree(ab):
    assert ab.source_dir(_ROOT) == ab.source_dir(_ROOT / "csrc") == _ROOT / "csrc"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_a_run_against_the_same_source(ab, capsys):
    cases = ["step:lstm:1:3:5", "step:gru:2:4:9", "seq:gru_cho:3:2:7", "seq:rnn:2:1:1"]
    assert ab.main(["--isa", "generic", "--build", "same=" + str(_ROOT / "csrc"), "--pairs", "3",
                    "--sample-ms", "1", *cases]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-len(cases) - 1].split() == ["case", "base", "GFLOP/s", "null", "same"]
    for case, line in zip(cases, out[-len(cases):]):
        fields = line.split()
        assert fields[0] == case
        ratios = fields[-2:]
        # the same source: bitwise equal outputs (no '*'), and a ratio near 1 at these sizes
        assert all(not r.endswith("*") and 0.2 < float(r) < 5 for r in ratios), line
