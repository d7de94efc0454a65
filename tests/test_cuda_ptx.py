"""The CUDA kernels compiled to sm_90 PTX, without a GPU; and the import boundary of the CUDA
path (``import gatedkernels`` never imports numba; ``import gatedkernels.cuda`` without numba
says what to install).

The PTX checks run in subprocesses with ``NUMBA_ENABLE_CUDASIM=0`` (this process runs numba's
simulator when there is no GPU, and numba reads that setting once), so ``_kernels`` picks its
real block constants; ``numba.cuda.dispatcher.get_current_device`` is patched to a compute
capability 9.0 device so device functions compile without a driver. Every kernel the package
launches is compiled with ``numba.cuda.compile(..., output="ptx")`` (those of two of the six
cell variants by the default run, DEFAULT_VARIANTS; the other four by ``pytest -m slow``):

* float32 kernels contain no ``.f64`` instruction (a stray float64 constant or cast would run
  at 1/64 speed on consumer GPUs);
* the step, persistent and loop-step kernels, warp and tiled (the large-batch step and loop-step
  kernels), use no local memory (their per-thread arrays stay in registers: ``ld.local`` /
  ``st.local`` would mean spills);
* the float64 kernels compile too (and do contain ``.f64``: the detector is not blind).

The subprocesses exit with a distinct code when numba-cuda or libNVVM is missing: the only
reasons to skip. The test extras install both, so in CI these tests run.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

import gatedkernels as gk

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gk.__file__)))
EXIT_NO_NUMBA_CUDA, EXIT_NO_NVVM = 77, 78

# `python -c` puts its working directory first on sys.path: run the subprocesses outside the
# source tree, so they import the installed (compiled) package, not the bare sources.
OUTSIDE_SOURCE = tempfile.gettempdir()

# (name, kind code (gatedkernels._ext: LSTM 0, GRU 1, RNN 2), linear_before_reset, relu)
VARIANTS = [("lstm", 0, True, False), ("gru_lbr", 1, True, False), ("gru_cho", 1, False, False),
            ("rnn_tanh", 2, True, False), ("rnn_relu", 2, True, True),
            ("lstm_proj", 0, True, False)]  # LSTM with proj_size: c/m, then h' = W_hr m
TWO_PLANS = ("gru_cho", "lstm_proj")
GATES = {0: 4, 1: 3, 2: 1}
CACHE_P = 256  # the hidden size of the kernels that keep W_hh in shared memory


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


# The float32 variants the default run compiles: the LSTM (the most per-thread state, and its step
# kernel at every batch tile) and the Cho GRU (two kernels a step). The other four are compiled by
# the slow test at the end. The whole set took 112 s of a 7.5-minute test run on a 2-vCPU AMD EPYC
# (Zen 3), ~1.5 s a kernel; these two, ~60 %.
DEFAULT_VARIANTS = ("lstm", "gru_cho")
SLOW_VARIANTS = tuple(v[0] for v in VARIANTS if v[0] not in DEFAULT_VARIANTS)


def _float32_jobs(names):
    jobs = []
    for name, kind, lbr, relu in VARIANTS:
        if name not in names:
            continue
        v = dict(kind=kind, lbr=lbr, relu=relu, dtype="float32", variant=name,
                 tiles="all" if name == "lstm" else "widest", proj=name == "lstm_proj")
        jobs.append(dict(v, family="step"))
        jobs.append(dict(v, family="tiled", tiles="widest"))
        for bf in (False, True):
            for cache in (0, CACHE_P):
                jobs.append(dict(v, family="persistent", batch_first=bf, cache=cache,
                                 tiles="widest"))
            jobs.append(dict(v, family="loop", batch_first=bf, tiles="widest"))
            jobs.append(dict(v, family="tiled_loop", batch_first=bf, tiles="widest"))
    return jobs


def _jobs():
    """The kernels to compile: dicts the worker understands.

    Every float32 kernel of DEFAULT_VARIANTS at the widest batch tile (its per-thread arrays are
    sized by the tile, so that is where a spill would show first; not every tile of every kernel);
    the LSTM step kernel at every batch tile the drivers use; a float64 kernel of every factory
    (a compile check).
    """
    jobs = _float32_jobs(DEFAULT_VARIANTS)
    f64 = dict(dtype="float64", tiles="widest")
    jobs += [
        dict(f64, family="step", kind=0, lbr=True, relu=False, variant="lstm"),
        dict(f64, family="persistent", kind=1, lbr=True, relu=False, variant="gru_lbr",
             batch_first=False, cache=CACHE_P),
        dict(f64, family="loop", kind=2, lbr=True, relu=True, variant="rnn_relu",
             batch_first=True),
        dict(f64, family="tiled", kind=0, lbr=True, relu=False, variant="lstm"),
        dict(f64, family="tiled_loop", kind=1, lbr=False, relu=False, variant="gru_cho",
             batch_first=True),
    ]
    for dt in ("float32", "float64"):
        jobs += [dict(family="gemm", dtype=dt, variant="-", tiles="widest"),
                 dict(family="copy", dtype=dt, variant="-", tiles="widest")]
    # A kernel that must use local memory (a per-thread array indexed at run time).
    jobs.append(dict(family="probe", dtype="float32", variant="-", tiles="widest"))
    return jobs


WORKER = textwrap.dedent(r"""
    import inspect, json, re, sys

    jobs = json.loads(sys.stdin.read())
    try:
        import numba
        from numba import cuda
    except ImportError as e:
        print(f"numba-cuda is not installed ({e})", file=sys.stderr)
        sys.exit(%(no_numba)d)
    if getattr(cuda, "implementation", "") != "NVIDIA":
        print("numba.cuda is not NVIDIA's numba-cuda", file=sys.stderr)
        sys.exit(%(no_numba)d)
    assert not numba.config.ENABLE_CUDASIM, "the worker must compile for real, not simulate"
    from numba.cuda.cudadrv import nvvm
    if not nvvm.is_available():
        print("libNVVM is not available", file=sys.stderr)
        sys.exit(%(no_nvvm)d)

    import numba.cuda.dispatcher as dispatcher

    class CC90:
        compute_capability = (9, 0)
        id = 0

    dispatcher.get_current_device = lambda: CC90()

    from gatedkernels.cuda import _kernels as K

    assert not K.SIMULATOR
    has_bt = "BT" in inspect.signature(K.step_kernels).parameters
    # Batch tiles the drivers use: batch_tile(N) for every N (powers of two up to BT_MAX).
    if has_bt:
        all_bts = sorted({K.batch_tile(n) for n in range(1, 4 * K.BT_MAX + 1)})
        widest = [K.BT_MAX]
    else:
        all_bts = widest = [None]

    def bt_kw(bt):
        return {} if bt is None else {"BT": bt}

    def A(ndim, dt):
        return numba.types.Array(dt, ndim, "A")

    def compile_ptx(kernel, sig):
        ptx, _ = cuda.compile(kernel.py_func, sig, device=False, cc=(9, 0), output="ptx",
                              abi="numba")
        return ptx

    def scan(ptx):
        code = re.sub(r"//[^\n]*", "", ptx)
        return {
            "f64": sorted(set(re.findall(r"\b[a-z][a-z0-9.]*\.f64\b", code)))[:8],
            "local": sorted(set(re.findall(r"\b(?:ld|st)\.local\b[a-z0-9.]*", code)))[:8],
            "target_sm90": bool(re.search(r"^\s*\.target\s+sm_90\b", code, re.M)),
            "entries": len(re.findall(r"\.entry\b", code)),
        }

    results = []
    for job in jobs:
        fam, dt = job["family"], job["dtype"]
        bts = all_bts if job["tiles"] == "all" else widest
        f = numba.float32 if dt == "float32" else numba.float64
        i64 = numba.int64
        # xg, w_hh, w_hr, b_hh, lengths, hbuf, c, y, rh, m, reverse, col0
        seq_sig = (A(3, f), A(2, f), A(2, f), A(1, f), A(1, numba.int32), A(3, f), A(2, f),
                   A(3, f), A(2, f), A(2, f), i64, i64)
        pk = {"proj": True} if job.get("proj") else {}
        step_sig = (A(2, f),) * 5 + (A(1, f),) * 2 + (A(2, f),) * 3
        built = []  # (label, kernel, sig)
        if fam == "step":
            for bt in bts:
                ks = K.step_kernels(job["kind"], job["lbr"], job["relu"], dt, **bt_kw(bt), **pk)
                for i, k in enumerate(ks):
                    built.append((f"BT={bt} plan {i}", k, step_sig))
        elif fam in ("persistent", "loop"):
            G = K.GATES[job["kind"]]
            itemsize = 4 if dt == "float32" else 8
            for bt in bts:
                if fam == "persistent":
                    P = job["cache"]
                    U, fits = K.seq_units(G, P or %(cache_p)d, itemsize, **bt_kw(bt))
                    assert fits, (G, P, itemsize)
                    pers, _ = K.sequence_kernels(job["kind"], job["lbr"], job["relu"], dt,
                                                 job["batch_first"], P, U, **bt_kw(bt), **pk)
                    built.append((f"BT={bt} U={U}", pers, seq_sig))
                else:
                    _, steps = K.sequence_kernels(job["kind"], job["lbr"], job["relu"], dt,
                                                  job["batch_first"], 0, K.U_STEP, **bt_kw(bt),
                                                  **pk)
                    for i, k in enumerate(steps):
                        built.append((f"BT={bt} plan {i}", k, (i64,) + seq_sig))
        elif fam == "tiled":
            ks = K.tiled_step_kernels(job["kind"], job["lbr"], job["relu"], dt, **pk)
            for i, k in enumerate(ks):
                built.append((f"plan {i}", k, step_sig))
        elif fam == "tiled_loop":
            ks = K.tiled_sequence_steps(job["kind"], job["lbr"], job["relu"], dt,
                                        job["batch_first"], **pk)
            for i, k in enumerate(ks):
                built.append((f"plan {i}", k, (i64,) + seq_sig))
        elif fam == "gemm":
            built.append(("", K.gemm_bias_kernel(dt), (A(2, f), A(2, f), A(1, f), A(2, f))))
        elif fam == "copy":
            built.append(("", K.copy_kernel(dt), (A(2, f), A(2, f), numba.boolean)))
        elif fam == "probe":
            @cuda.jit
            def spill(a, i):
                buf = cuda.local.array(64, numba.float32)
                for k in range(64):
                    buf[k] = a[k]
                a[0] = buf[i]

            built.append(("", spill, (A(1, f), i64)))
        for label, kernel, sig in built:
            try:
                res = scan(compile_ptx(kernel, sig))
            except Exception as e:  # reported per kernel, asserted by the parent
                res = {"error": f"{type(e).__name__}: {e}"[:2000]}
            results.append(dict(job, label=label, **res))
    print("RESULT:" + json.dumps({"results": results, "KS": K.KS, "U_STEP": K.U_STEP,
                                  "TILED_BLOCK": K.TILED_BLOCK}))
""") % {"no_numba": EXIT_NO_NUMBA_CUDA, "no_nvvm": EXIT_NO_NVVM, "cache_p": CACHE_P}


@pytest.fixture(scope="module")
def ptx():
    """Compile the default jobs (_jobs), split over two concurrent worker processes; {results,
    KS, U_STEP, TILED_BLOCK}."""
    return _compile(_jobs())


def _compile(jobs):
    nproc = 2
    env = _env(NUMBA_ENABLE_CUDASIM="0")

    def run(part):
        p = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=OUTSIDE_SOURCE)
        try:
            out, err = p.communicate(json.dumps(part), timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return p.returncode, out, err

    with ThreadPoolExecutor(nproc) as pool:  # the workers run at the same time
        outs = list(pool.map(run, [jobs[w::nproc] for w in range(nproc)]))
    results = []
    for rc, out, err in outs:
        if rc == EXIT_NO_NUMBA_CUDA:
            pytest.skip(f"numba-cuda is not installed: {err.strip()[-300:]}")
        if rc == EXIT_NO_NVVM:
            pytest.skip(f"libNVVM is not installed (pip install 'cuda-toolkit[nvvm]'): "
                        f"{err.strip()[-300:]}")
        assert rc == 0, f"PTX worker failed (exit {rc}):\n{err[-4000:]}"
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT:")]
        assert line, f"PTX worker printed no result:\n{out[-2000:]}\n{err[-2000:]}"
        data = json.loads(line[-1][len("RESULT:"):])
        results += data["results"]
    return {"results": results, "KS": data["KS"], "U_STEP": data["U_STEP"],
            "TILED_BLOCK": data["TILED_BLOCK"]}


def _select(ptx, dtype, *families):
    rows = [r for r in ptx["results"] if r["dtype"] == dtype and r["family"] in families]
    assert rows, f"no {dtype} {families} kernel was compiled"
    return rows


def _name(r):
    opts = "".join(f" {k}={r[k]}" for k in ("batch_first", "cache") if k in r)
    return f"{r['family']}[{r['variant']}{opts} {r['label']}]".replace(" ]", "]")


def _assert_compiled(rows):
    errors = [f"{_name(r)}: {r['error']}" for r in rows if "error" in r]
    assert not errors, "kernels failed to compile:\n" + "\n".join(errors)
    bad = [_name(r) for r in rows if not r["target_sm90"] or r["entries"] != 1]
    assert not bad, f"expected one .entry for .target sm_90 in: {bad}"


def test_real_block_constants_are_compiled(ptx):
    # The worker compiled the GPU configuration, not the simulator's tiny blocks.
    assert ptx["KS"] == 32, ptx["KS"]
    assert ptx["U_STEP"] >= 2, ptx["U_STEP"]
    assert ptx["TILED_BLOCK"] >= 32, ptx["TILED_BLOCK"]


@pytest.mark.parametrize("families", [("step",), ("persistent",), ("loop",), ("tiled",),
                                      ("tiled_loop",), ("gemm", "copy")],
                         ids=["step", "persistent", "loop", "tiled", "tiled_loop", "helpers"])
def test_float32_kernels_have_no_f64(ptx, families):
    rows = _select(ptx, "float32", *families)
    _assert_compiled(rows)
    _assert_no_f64(rows)


def _assert_no_f64(rows):
    bad = {_name(r): r["f64"] for r in rows if r["f64"]}
    assert not bad, f"float32 kernels with float64 instructions: {bad}"


@pytest.mark.parametrize("families", [("step",), ("persistent",), ("loop",), ("tiled",),
                                      ("tiled_loop",)],
                         ids=["step", "persistent", "loop", "tiled", "tiled_loop"])
def test_float32_recurrent_kernels_use_no_local_memory(ptx, families):
    rows = _select(ptx, "float32", *families)
    _assert_compiled(rows)
    _assert_no_local(rows)


def _assert_no_local(rows):
    bad = {_name(r): r["local"] for r in rows if r["local"]}
    assert not bad, f"kernels that spill to local memory: {bad}"


def test_local_memory_detector_sees_a_spill(ptx):
    (probe,) = _select(ptx, "float32", "probe")
    _assert_compiled([probe])
    assert probe["local"], "a runtime-indexed per-thread array compiled without ld/st.local"


def test_every_variant_and_layout_compiled(ptx):
    _assert_every_layout(ptx, DEFAULT_VARIANTS)


def _assert_every_layout(ptx, names):
    rows = _select(ptx, "float32", "step", "persistent", "loop", "tiled", "tiled_loop")
    seen = {(r["family"], r["variant"], r.get("batch_first"), r.get("cache")) for r in rows}
    assert {r["variant"] for r in rows} == set(names)
    for name in names:
        assert ("step", name, None, None) in seen
        assert ("tiled", name, None, None) in seen
        for bf in (False, True):
            assert ("loop", name, bf, None) in seen
            assert ("tiled_loop", name, bf, None) in seen
            for cache in (0, CACHE_P):
                assert ("persistent", name, bf, cache) in seen
    # The Cho GRU (r first) and the projected LSTM (c and m, then W_hr m) run in two kernels per
    # step, every other cell in one.
    for fam in ("step", "loop", "tiled", "tiled_loop"):
        plans = {r["variant"]: set() for r in rows if r["family"] == fam}
        for r in rows:
            if r["family"] == fam:
                plans[r["variant"]].add(r["label"].split("plan ")[1])
        assert all(plans[v] == {"0", "1"} for v in TWO_PLANS if v in names), plans
        assert all(p == {"0"} for v, p in plans.items() if v not in TWO_PLANS), plans


def test_float64_kernels_compile(ptx):
    families = {"step", "persistent", "loop", "tiled", "tiled_loop", "gemm", "copy"}
    rows = _select(ptx, "float64", *families)
    _assert_compiled(rows)
    assert {r["family"] for r in rows} == families
    # The .f64 detector sees the float64 arithmetic (so its silence on float32 means something).
    blind = [_name(r) for r in rows if not r["f64"]]
    assert not blind, f"no .f64 found in float64 kernels: {blind}"


@pytest.mark.slow
def test_other_variants_compile_without_f64_or_local_memory():
    # The float32 kernels of the variants the default set leaves out, held to the same checks.
    ptx = _compile(_float32_jobs(SLOW_VARIANTS))
    _assert_every_layout(ptx, SLOW_VARIANTS)
    rows = ptx["results"]  # only recurrent float32 kernels (_float32_jobs)
    _assert_compiled(rows)
    _assert_no_f64(rows)
    _assert_no_local(rows)


# --------------------------------------------------------------------------- import boundary


def _run_python(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=_env(**env), cwd=OUTSIDE_SOURCE)


def test_cpu_use_never_imports_numba():
    r = _run_python("""
        import contextlib, io, sys
        import numpy as np
        import gatedkernels as gk

        x = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
        y, (h, c) = gk.LSTM(4, 5, num_layers=2, bidirectional=True, seed=0)(x)
        assert type(y) is np.ndarray and y.shape == (2, 3, 10), (type(y), y.shape)
        h1 = gk.GRUCell(4, 5, seed=0)(x[0])
        assert type(h1) is np.ndarray
        w = {"weight_ih_l0": np.ones((5, 4)), "weight_hh_l0": np.ones((5, 5))}
        assert type(gk.rnn(x.astype(np.float64), None, w)[0]) is np.ndarray
        with contextlib.redirect_stdout(io.StringIO()):
            gk.show_config()
        loaded = sorted(m for m in sys.modules if m == "numba" or m.startswith("numba."))
        assert not loaded, loaded
        assert "gatedkernels.cuda" not in sys.modules
        print("OK")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]


def test_cuda_import_without_numba_names_the_extra():
    r = _run_python("""
        import sys
        sys.modules["numba"] = None  # as if numba were not installed
        import numpy as np
        import gatedkernels as gk

        try:
            import gatedkernels.cuda
        except ImportError as e:
            assert "gatedkernels[cuda12]" in str(e), str(e)
        else:
            raise AssertionError("import gatedkernels.cuda worked without numba")

        # A device array reaching the functional API gives the same hint.
        class DeviceArray:
            __cuda_array_interface__ = {"shape": (1, 1), "typestr": "<f4", "data": (0, False),
                                        "version": 3}

        w = np.ones((4, 1), np.float32)
        try:
            gk.lstm_cell(DeviceArray(), None, w, w)
        except ImportError as e:
            assert "gatedkernels[cuda12]" in str(e), str(e)
        else:
            raise AssertionError("a device array ran without numba")

        # The CPU path is unaffected.
        h, c = gk.lstm_cell(np.ones((1, 1), np.float32), None, w, w)
        assert type(h) is np.ndarray and h.shape == (1, 1)
        print("OK")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]
