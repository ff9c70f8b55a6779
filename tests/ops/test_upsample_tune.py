"""The tiling configurations ``benchmarks/tune_upsample.py`` sweeps, held to the design.

- Every configuration it would try, at its cases' shapes (batch 1: the batch changes
  no compiled specialisation) and in fp32 and bf16, compiles for sm_90a within its
  register cap, with at most SEMANTIC_SPILLS bytes of register spills in the semantic
  launch (CHUNK_SPILLS for the classes in chunks under their register cap) and
  REGRESSION_SPILLS bytes in the regressions' (outside their row loops, which
  test_upsample_compile.py checks for the default) (no GPU: Triton's ptxas, as in
  test_upsample_compile.py). Compiled in subprocesses without TRITON_INTERPRET; this file
  is their script.
- A few configurations other than the default give the loss and gradients of
  F.interpolate + the reference (tests/oracle.py) under the interpreter.
- ``python -m benchmarks.tune_upsample --help`` works without a GPU.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmtl.ops.upsample_tiles import DEFAULT, Config, use
from helpers import low_res_inputs, random_class_weight
from oracle import check_upsampled

REPO = Path(__file__).resolve().parents[2]
LOG_VARS = torch.tensor([0.3, -0.4, 0.8])
WORKERS = 2
REGRESSION_SPILLS = 160  # bytes (one column capped at 128 registers, the default: 140;
# two uncapped columns: 72)
SEMANTIC_SPILLS = 0  # bytes: the semantic launch of every candidate but the classes in
# chunks at their 168-register cap (measured: 624 bytes, outside both passes)
CHUNK_SPILLS = 640
# ``one_launch``: both launches as one kernel under the semantic launch's 168-register cap
# (measured: 24 bytes at C = 19, fp32, outside every row loop)
ONE_LAUNCH_SPILLS = 64


def _tune_module():
    if str(REPO) not in sys.path:  # benchmarks/ is not installed with the package
        sys.path.insert(0, str(REPO))
    from benchmarks import tune_upsample

    return tune_upsample


def test_tune_help_works_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tune_upsample", "--help"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--budget" in proc.stdout and "--out" in proc.stdout and "--quick" in proc.stdout


def test_tune_smoke_run_on_cpu_writes_both_reports(tmp_path):
    """The sweep's whole path (record, compare, replay alone, whole call, reports) on CPU
    under the interpreter, tiny, two configurations (the second: both launches as one)."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tune_upsample", "--smoke",
                           "--out", str(tmp_path), "--cases", "C19-full", "--dtypes", "fp32"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "tune_upsample.json").read_text())
    rows = result["cases"][0]["rows"]
    assert [r["config"] for r in rows] == ["default", "one_launch=True"]
    for r in rows:
        assert r["mismatch"] == [] and "error" not in r, r
    assert rows[0]["semantic"]["median_ms"] > 0 and rows[0]["regressions"]["median_ms"] > 0
    assert rows[1]["one launch"]["median_ms"] > 0 and "semantic" not in rows[1], rows[1]
    assert "eager_ms" in rows[0]["whole_call"], rows[0]
    assert "(best)" in (tmp_path / "tune_upsample.md").read_text()


def test_candidates_start_with_the_default_and_are_distinct():
    tune = _tune_module()
    for case in tune.CASES:
        configs = tune.candidates(case.classes)
        assert configs[0] == DEFAULT
        assert len({c.name() for c in configs}) == len(configs), [c.name() for c in configs]
        assert tune.candidates(case.classes, quick=True) == configs[:len(
            tune.candidates(case.classes, quick=True))]
        assert 3 <= len(configs) <= 12


def test_every_tuned_configuration_compiles_for_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"),
                                         env.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, __file__, "compile", str(i), str(WORKERS)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(WORKERS)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=1500)
        assert proc.returncode == 0, out[-3000:] + err[-5000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    # Each worker compiled a share of the specialisations: merge their figures.
    jobs = results[0]
    for other in results[1:]:
        for job, theirs in zip(jobs, other):
            for launch, their in zip(job["launches"], theirs["launches"]):
                for key in ("ptxas", "row_loops", "local_in_row_loops"):
                    if launch.get(key) is None:
                        launch[key] = their.get(key)
    tune = _tune_module()
    expected = {(case.name, dtype, config.name()) for case in tune.CASES
                for dtype in ("fp32", "bf16") for config in tune.candidates(case.classes)}
    assert {tuple(r["config"]) for r in jobs} == expected
    for r in jobs:
        one_launch = "one_launch=True" in r["config"][2]
        # the semantic launch and the regressions', or both as one
        assert len(r["launches"]) == (1 if one_launch else 2), r
        for launch in r["launches"]:
            if one_launch:  # three programs per SM, no local memory in either row loop
                registers, spills = launch["ptxas"]
                assert launch["kernel"] == "upsample_both_kernel" and launch["maxnreg"] == 168, r
                assert registers <= 168 and spills <= ONE_LAUNCH_SPILLS, r
                assert launch["row_loops"] == 2 and not launch["local_in_row_loops"], r
                continue
            registers, spills = launch["ptxas"]
            chunks = launch["kernel"] == "upsample_chunks_kernel"
            limit = (REGRESSION_SPILLS if not launch["semantic"]
                     else CHUNK_SPILLS if chunks and launch["maxnreg"] is not None
                     else SEMANTIC_SPILLS)
            assert spills <= limit, r
            assert launch["maxnreg"] is None or registers <= launch["maxnreg"], r
    print(json.dumps([[r["config"], [lc["ptxas"] for lc in r["launches"]]] for r in jobs]))


@pytest.mark.parametrize("config", [
    Config(semantic_warps=2, semantic_registers=None, regression_columns=4),
    Config(semantic_warps=1, band_rows=(4,), regression_columns=2, regression_warps=2,
           class_chunk=None),
    Config(semantic_warps=8, regression_warps=8, target_warps=16384, band_rows=(8, 4, 2),
           chunk_rows=4),
], ids=lambda c: c.name())
@pytest.mark.parametrize("align_corners", [False, True])
def test_other_configurations_match_the_reference(config, align_corners):
    with use(config):
        pred, tgt = low_res_inputs(B=2, C=19, h=5, w=9, H=37, W=67, seed=7)
        check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS,
                        class_weight=random_class_weight(19))
        pred, tgt = low_res_inputs(B=1, C=40, h=3, w=4, H=20, W=29, seed=8)
        check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS)


# ------------------------------------------------------------------ subprocess side


def _compile_main(worker: int, workers: int):
    """Records every job's launches (cheap), then compiles this worker's share of the
    distinct loss-kernel specialisations; prints each job with its launches' ptxas usage
    where this worker compiled them."""
    sys.path.insert(0, str(REPO))
    from benchmarks import tune_upsample as tune
    from compiled import compile_for, innermost, loops, ptxas_usage, sass, within
    from helpers import launch_recorder, make_inputs

    from fastmtl.ops import upsample

    jobs, specs = [], {}
    for case in tune.CASES:
        _, H, W = case.size
        for dtype in ("fp32", "bf16"):
            torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
            pred, _ = make_inputs(B=1, C=case.classes, H=-(-H // 8), W=-(-W // 8),
                                  dtype=torch_dtype)
            _, tgt = make_inputs(B=1, C=case.classes, H=H, W=W)
            for config in tune.candidates(case.classes):
                calls = []
                with use(config):
                    upsample._forward(launch_recorder(calls), pred["semantic"], tgt["semantic"],
                                      None, pred["instance"], tgt["instance"],
                                      tgt["instance_mask"], pred["depth"], tgt["depth"],
                                      torch.zeros(3), [0, 1, 2], [1.0, 0.5, 0.5],
                                      [0.5, 0.5, 0.5], True, 255, False, True)
                launches = []
                for kernel, args, kwargs in calls:
                    if kernel.__name__ not in tune.LOSS_KERNELS:
                        continue
                    spec = repr((dtype, case.classes, sorted((k, str(v)) for k, v in kwargs.items())))
                    specs.setdefault(spec, (kernel, args, kwargs))
                    semantic = kernel.__name__ != "upsample_regressions_kernel"
                    launches.append(dict(spec=spec, semantic=semantic, kernel=kernel.__name__,
                                         num_warps=kwargs["num_warps"],
                                         maxnreg=kwargs.get("maxnreg"), block_x=kwargs["BLOCK_X"]))
                jobs.append(dict(config=[case.name, dtype, config.name()], launches=launches))
            del pred, tgt
    usage, row_loops = {}, {}
    for i, spec in enumerate(sorted(specs)):
        if i % workers == worker:
            kernel, args, kwargs = specs[spec]
            compiled = compile_for(kernel, args, kwargs, 90)
            usage[spec] = ptxas_usage(compiled.asm["ptx"], "sm_90a")
            if kernel.__name__ == "upsample_both_kernel":
                # the row loops: innermost loops without a barrier (one per kind of program)
                code = sass(compiled.asm["cubin"])
                spans = loops(code)
                bodies = [within(code, s) for s in spans if innermost(s, spans)]
                rows = [b for b in bodies if not any(" BAR" in f" {i}" for i in b)]
                row_loops[spec] = (len(rows), any("LDL" in i or "STL" in i
                                                  for b in rows for i in b))
    for job in jobs:
        for launch in job["launches"]:
            launch["ptxas"] = usage.get(launch["spec"])
            if launch["spec"] in row_loops:
                launch["row_loops"], launch["local_in_row_loops"] = row_loops[launch["spec"]]
    print(json.dumps(jobs))


if __name__ == "__main__":
    assert "TRITON_INTERPRET" not in os.environ
    assert sys.argv[1] == "compile"
    _compile_main(int(sys.argv[2]), int(sys.argv[3]))
