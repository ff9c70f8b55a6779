"""The launch configurations ``python -m benchmarks.tune`` tries, checked without a GPU.

Every C = 150 configuration compiles for sm_90a without spills (ptxas of Triton's own
toolchain, in a subprocess without TRITON_INTERPRET: this file is also that script,
``python test_tune_configs.py static``); a few non-default ones give PyTorch's loss
and gradients under the interpreter; the command line and its config list build on
CPU. Times nothing.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(ROOT))

from benchmarks import tune  # noqa: E402
from fastmtl.kernels.semantic import sweeps_step  # noqa: E402

# The probe's shape: every integer argument divisible by 16, as at the benchmark's sizes.
PROBE = (2, 128, 256)


# --------------------------------------------------------------------------- tests


def test_help_and_config_list_build_on_cpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tune", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--budget" in proc.stdout and "--quick" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tune", "--out", "unused", "--list"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == [c.tag for c in tune.CASES]
    for case in tune.CASES:
        configs = tune.candidates(case)
        assert len(configs) == len(set(configs)), case
        c150 = case.classes == 150
        assert configs == tune.CANDIDATES[case.tag]
        assert (4 <= len(configs) <= 8) if c150 else (2 <= len(configs) <= 6), case
        # one-read layouts and the sweeps (their layout where the others do not fit)
        if c150:
            one_read = {tune.RESIDENT if case.dtype == "fp32" else tune.PAIRS, tune.SPLIT}
            assert {c.chunk for c in configs} == one_read | {8, 16}, case
        # C = 150: the exponentials kept (the default, fp32 and the bf16 pairs) and taken
        # again, both timed
        assert {c.kept for c in configs} == ({None, False} if c150 else {None})
        default = configs[0]
        assert default.warps == 4 and default.stages == 1
        # C = 150: one tile per program (fused_layout.ONE_TILE), one pixel per thread with
        # every plane in registers (fp32) or half a pixel pair's planes (bf16, the split
        # pairs); C = 19: 8-byte accesses, 2-4 tiles per program
        if c150:
            assert default.max_programs == tune.ONE_TILE_PROGRAMS and default.vector == 1, case
            assert default.chunk == (tune.RESIDENT if case.dtype == "fp32" else tune.SPLIT), case
        else:
            assert default.max_programs == tune.DEFAULT_PROGRAMS
            assert default.vector == 8 // case.element_size
        for config in configs:
            assert (config.chunk is not None) == c150, config
            assert config.max_programs in (*tune.PERSISTENT, tune.DEFAULT_PROGRAMS,
                                           tune.ONE_TILE_PROGRAMS), config
    args = tune.parse_args(["--out", "x", "--quick"])
    assert [(c.tag, len(cs)) for c, cs in tune.plan(args)] == [
        ("C150-fp32", 4), ("C150-bf16", 4), ("C19-fp32", 1), ("C19-bf16", 1)]


def test_run_case_checks_every_config_and_writes_the_table(tmp_path):
    """The measuring loop under the interpreter at a tiny size: every config's gradients and
    partial sums agree with the default's, the table marks a best row, the budget skips."""
    import math

    from fastmtl.ops.common import interpreted

    if not interpreted():
        pytest.skip("runs the kernels under TRITON_INTERPRET=1")
    case = tune.Case("C150-fp32", 150, "fp32", "1x8x32")
    # the default, each pixel split between two threads, the running sum kept and taken
    # again, and one sum over steps of 32 (the third candidate, two tiles per program, is
    # the default's launch at this size)
    candidates = tune.candidates(case)
    configs = candidates[:2] + candidates[3:5] + [tune.Config(1, 2, 1, 528, 32)]
    result = tune.run_case(case, configs, torch.device("cpu"), copy_gbps=1.0, repeats=1,
                           deadline=math.inf, log=lambda s: None)
    rows = result["rows"]
    assert [r["config"] for r in rows] == [c.name for c in configs]
    assert all("error" not in r and r["correct"] for r in rows), rows
    assert rows[0]["library_default"] and not any(r["library_default"] for r in rows[1:])
    assert rows[0]["grad_error"] == 0 and rows[0]["sum_error"] == 0
    assert result["bytes_per_pixel"] == 1245
    # the default's access pattern alone (benchmarks/access_floor.py), checked and timed
    assert [f["floor"] for f in result["floors"]] == ["copy", "wait"]
    assert all(f["correct"] and f["median_ms"] > 0 for f in result["floors"]), result["floors"]
    late = tune.run_case(tune.Case("C150-bf16", 150, "bf16", "1x8x8"), configs,
                         torch.device("cpu"), 1.0, 1, deadline=0.0, log=lambda s: None)
    assert late["rows"] == [] and late["skipped"] == [c.name for c in configs]
    assert late["floors"] == []
    md = tune.markdown(dict(device="cpu", command="python -m benchmarks.tune --out x",
                            date="today", commit=None, copy_gbps=1.0, cases=[result, late],
                            skipped_cases=["C19-fp32"]))
    assert md.count("| * |") == 1 and "(default)" in md and "Skipped (budget)" in md
    assert md.count("Access floor, ") == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_run_on_gpu(tmp_path):
    """``--quick`` end to end on the compiled kernels (run with TRITON_INTERPRET=0), one
    case: the device check's tune part runs the whole sweep."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tune", "--out", str(tmp_path),
                           "--quick", "--cases", "C150-bf16", "--budget", "120"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "tune.json").read_text())
    rows = [r for case in result["cases"] for r in case["rows"]]
    assert rows and all(r.get("correct") for r in rows), rows
    assert all(r["spills"] == 0 for r in rows), rows
    assert (tmp_path / "tune.md").read_text().count("| * |") == len(result["cases"])


def test_configure_sets_the_library_default_and_the_layout():
    from benchmarks.problem import Problem, make_inputs

    for case in tune.CASES:
        bench = Problem("probe", 1, 16, 32, case.classes, case.dtype)
        args = tune.forward_args(*make_inputs(bench, torch.device("cpu")))
        default = tune.make_problem(args, None, None, None)
        configs = tune.candidates(case)
        first = tune.configure(tune.make_problem(args, None, None, None), configs[0])
        assert tune.launch_settings(first) == tune.launch_settings(default), case
        for config in configs[1:]:
            p = tune.configure(tune.make_problem(args, None, None, None), config)
            assert p.block_p == config.vector * 32 * config.warps
            if config.chunk is None or config.chunk in ONE_READ:
                assert p.classes == (case.classes, 1, 0)  # every plane in registers
            else:
                assert p.classes == (0, config.chunk, -(-150 // config.chunk))
            fp32 = case.dtype == "fp32"
            assert p.pairs == (config.chunk in (tune.PAIRS, tune.SPLIT) and not fp32), config
            assert p.split == (config.chunk == tune.SPLIT), config
            # kept by default where the layout keeps them: fp32 one read, the bf16 pairs
            keeps = config.chunk in ((tune.RESIDENT, tune.SPLIT) if fp32
                                     else (tune.PAIRS, tune.SPLIT))
            assert p.kept == (keeps and config.kept is not False), config


def test_every_c150_config_compiles_for_sm90_without_spills():
    from helpers import run_compiled

    report = run_compiled(__file__, "static", timeout=900)
    tags = {c.tag for c in tune.CASES if c.classes == 150}
    assert {r["case"] for r in report} == tags
    assert len(report) == sum(len(_compiled_candidates(c)) for c in tune.CASES
                              if c.classes == 150)
    by_name = {(r["case"], r["config"]): r for r in report}
    # The library's default is among them, as the design test knows it (docs/kernel.md).
    assert by_name[("C150-fp32", "V2 w4 s1 c8 p16384")]["programs_per_sm"] >= 7
    assert by_name[("C150-bf16", "V4 w4 s1 c8 p16384")]["programs_per_sm"] >= 4
    # fp32 one read, one tile per program (the default): no tile loop, so each plane's load
    # and store address is one IMAD.WIDE where the loop's running pointers take two IADD3
    # (1696 instructions against 2064; docs/kernel.md, "One tile per program").
    two_tiles = by_name[("C150-fp32", "V1 w4 s1 resident p16384")]
    one_tile = by_name[("C150-fp32", "V1 w4 s1 resident p32768")]
    assert two_tiles["tiles_per_program"] == 2 and one_tile["tiles_per_program"] == 1
    assert one_tile["instructions"] <= 0.85 * two_tiles["instructions"], (one_tile, two_tiles)
    # The bf16 pairs keeping their exponentials as float16: half the MUFU.EX2, and fewer
    # instructions though each word is packed, fenced and unpacked (3448 against 3720;
    # docs/kernel.md, "Exponentials kept in 16 bits").
    pairs = by_name[("C150-bf16", "V2 w4 s1 pairs p16384 exps-again")]
    kept = by_name[("C150-bf16", "V2 w4 s1 pairs p16384")]
    assert kept["exps"] <= pairs["exps"] // 2 + 8, (kept, pairs)
    assert kept["instructions"] <= 0.95 * pairs["instructions"], (kept, pairs)
    # The pairs split between two threads: 75 words each, so four programs of 4 warps per
    # SM where the pairs have two; the lanes' max and sum meet by one shuffle each. Keeping
    # their exponentials (the default) takes 138 registers uncapped: under the cap of 128
    # (fused_layout.SPLIT_KEPT_REGISTERS) no spills and four programs still.
    split = by_name[("C150-bf16", "V1 w4 s1 split p32768 exps-again")]
    assert split["registers"] <= 128 and split["programs_per_sm"] == 4, split
    assert split["shuffles"] >= pairs["shuffles"] + 4
    split_kept = by_name[("C150-bf16", "V1 w4 s1 split p32768")]
    assert split_kept["registers"] <= 128 and split_kept["programs_per_sm"] == 4, split_kept
    assert split_kept["exps"] <= split["exps"] // 2 + 8, (split_kept, split)
    # fp32 each pixel split between two threads (fused_layout.SPLIT_PLANES), the tile in two
    # rounds of 75 planes: four programs per SM under the 128-register cap, which spills up
    # to two of the second round's 64-bit store addresses (32 bytes; docs/kernel.md).
    split_planes = by_name[("C150-fp32", "V1 w4 s1 split p32768")]
    assert split_planes["registers"] <= 128 and split_planes["programs_per_sm"] == 4
    for r in report:
        fp32_split = r["chunk"] == tune.SPLIT and r["case"] == "C150-fp32"
        planes = 150 // 2 if r["chunk"] == tune.SPLIT and not fp32_split else 150
        if r["chunk"] in (tune.PAIRS, tune.SPLIT) and not fp32_split:
            # The max of both pixels on the packed words (3-input, 2 x 16-bit), no unpacking.
            assert r["packed_max"] >= planes // 2, r
        assert r["registers"] <= 255 and r["spills"] <= (32 if fp32_split else 0), r
        assert r["programs_per_sm"] >= 1, r
        if r["chunk"] in ONE_READ:
            # One read: the tile's class planes held in registers (150 per thread, up to 255
            # registers at fp32 and bf16: two programs of 4 warps per SM, 256 pixels x 150
            # planes in flight; 75 per thread for the split pairs), no barrier in the tile
            # loop; each logit and gradient element moved once (one access per plane and
            # thread; the target class's again, from cache, after the class loops).
            assert r["programs_per_sm"] >= 2 and r["loop_barriers"] == 0, r
            # No class compares its index with the label: each pixel's target logit is
            # loaded and its gradient stored again after the class loops (before: 611 ISETP
            # in the pairs, 166 with one pixel per thread).
            assert r["compares"] <= 40, r
            extra = 1 if r["chunk"] == tune.RESIDENT else 2
            assert r["loads"] <= planes + 12 + extra, r
            # A running max and sum over steps of planes (fp32's default): at least a quarter
            # of the exponentials issue before the last planes have arrived (docs/kernel.md,
            # "The sum as the planes arrive"). One max, then one sum (the pairs' default,
            # tune.ONE_SUM): they wait for every plane.
            pixels = 1 if r["chunk"] == tune.RESIDENT or fp32_split else 2
            if r["sum_chunk"] < 150:
                assert r["exps_before_last_planes"] >= 150 * pixels // 4, r
            else:
                assert r["exps_before_last_planes"] == 0, r
            assert planes + 3 <= r["stores"] <= planes + 6 + extra, r
            # fp32 keeps the sum's exponentials for the gradient (fused_layout.KEPT_EXPS), and
            # the bf16 pairs can (KEPT_PAIRS): one MUFU.EX2 per class and pixel, where taking
            # them again costs two.
            if r["kept"]:
                assert r["exps"] <= planes * pixels + 24, r
            else:
                assert r["exps"] >= 2 * planes * pixels, r
        print(json.dumps(r))


# A few configurations other than the library's, each moving one or more knobs.
NON_DEFAULT = [
    (150, torch.float32, tune.Config(1, 4, 1, 264, 16)),
    (150, torch.float32, tune.Config(1, 2, 3, 528, 16)),
    (150, torch.float32, tune.Config(2, 8, 2, 264, 8)),
    (150, torch.bfloat16, tune.Config(2, 4, 1, 264, 16)),
    (150, torch.bfloat16, tune.Config(4, 2, 2, 528, 32)),
    (19, torch.float32, tune.Config(4, 4, 2, 1056)),
    (150, torch.float32, tune.Config(1, 4, 1, 16384, tune.RESIDENT)),
    (150, torch.bfloat16, tune.Config(1, 4, 1, 16384, tune.RESIDENT)),
    (150, torch.float32, tune.Config(1, 4, 1, 2, tune.SPLIT)),  # split pixels, 2 rounds a tile
]


@pytest.mark.parametrize("C,dtype,config", NON_DEFAULT, ids=lambda v: getattr(v, "name", str(v)))
def test_non_default_configs_match_pytorch(C, dtype, config, monkeypatch):
    """Under the interpreter: the op with ``config`` set on every problem it builds gives the
    oracle's loss and gradients (ragged tiles, several tiles per program, masked tails)."""
    from helpers import make_inputs
    from oracle import assert_match, run_both
    from fastmtl.ops import fused as ops
    from fastmtl.ops.fused_layout import tile_grid

    built = []

    class Configured(ops.Problem):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            tune.configure(self, config)
            built.append(tune.launch_settings(self))

    monkeypatch.setattr(ops, "Problem", Configured)
    # 3 x 13 x 21 pixels: tiles cross image ends and the last program's tiles run past the end.
    pred, tgt = make_inputs(B=3, C=C, H=13, W=21, dtype=dtype, seed=C + config.vector)
    cw = torch.rand(C, generator=torch.Generator().manual_seed(1)) + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8]),
                                class_weight=cw)
    assert_match(kernel, expected, dtype)
    grid = tile_grid(3, 13 * 21, config.block_p, config.max_programs)[:2]
    assert built and all(s[:4] == (config.vector, config.warps, config.stages, grid)
                         for s in built)


def test_sweeps_are_right_with_every_chunk_and_stage_count():
    """The sweeps alone under the interpreter (which runs ``tl.range`` whatever its
    num_stages) against log_softmax's gradient: ragged last chunks, masked pixels."""
    from fastmtl.ops.common import interpreted

    if not interpreted():
        pytest.skip("runs the kernel under TRITON_INTERPRET=1")
    C, P = 37, 100
    g = torch.Generator().manual_seed(0)
    x = torch.randn(C, P, generator=g) * 3
    t = torch.randint(0, C, (P,), generator=g)
    t[::7] = -1  # not valid: gradient 0
    w = (t >= 0).float()
    lsm = torch.log_softmax(x, 0)
    expected_loss = -(lsm.gather(0, t.clamp(min=0)[None])[0] * w)
    expected_grad = (lsm.exp() - F.one_hot(t.clamp(min=0), C).T.float()) * w * 0.5
    for chunk, stages, block in ((8, 1, 64), (16, 3, 128), (32, 2, 64), (4, 2, 32)):
        gx = torch.full_like(x, float("nan"))
        loss = torch.empty(P)
        _sweeps_probe_kernel[(triton_cdiv(P, block),)](
            x, gx, t, loss, C, P, CHUNK=chunk, NUM_CHUNKS=triton_cdiv(C, chunk), BLOCK_P=block,
            STAGES=stages)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx, expected_grad, rtol=1e-5, atol=1e-6)


def test_pipelined_sweeps_compile_to_asynchronous_copies_without_spills():
    from helpers import run_compiled

    report = run_compiled(__file__, "stages", timeout=600)
    for r in report:
        assert r["spills"] == 0, r
        assert (r["cp_async"] > 0) == (r["stages"] > 1), r
        assert (r["shared"] >= 1024) == (r["stages"] > 1), r
        print(json.dumps(r))


def triton_cdiv(a, b):
    return -(-a // b)


@triton.jit
def _sweeps_probe_kernel(x_ptr, gx_ptr, t_ptr, loss_ptr, C, P, CHUNK: tl.constexpr,
                         NUM_CHUNKS: tl.constexpr, BLOCK_P: tl.constexpr, STAGES: tl.constexpr):
    # The sweeps alone on a (C, P) plane: label t (-1: not valid), weight 1, scale 0.5.
    q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_image = q < P
    t = tl.load(t_ptr + q, mask=in_image, other=-1).to(tl.int32)
    valid = in_image & (t >= 0)
    off = q.to(tl.int64)
    x_t = tl.load(x_ptr + off + t.to(tl.int64) * P, mask=valid, other=0.0)
    w = valid.to(tl.float32)
    loss = sweeps_step(x_ptr, off, P, x_t, t, w, 0.5, gx_ptr, off, P, in_image, C, CHUNK,
                       NUM_CHUNKS, BLOCK_P, True, tl.float32, STAGES)
    tl.store(loss_ptr + q, loss, mask=in_image)


# ------------------------------------------------------------------ subprocess side


def stages_report() -> list:
    """The sweeps alone compiled for sm_90a at 1-3 stages (fp32, 128 and 256 pixels)."""
    from compiled import compile_for, ptxas_usage

    out = []
    x, gx = torch.empty(150, 4096), torch.empty(150, 4096)
    t, loss = torch.empty(4096, dtype=torch.int64), torch.empty(4096)
    for block, chunk, stages in ((128, 16, 1), (128, 16, 2), (128, 16, 3), (256, 8, 3)):
        kw = dict(CHUNK=chunk, NUM_CHUNKS=triton_cdiv(150, chunk), BLOCK_P=block, STAGES=stages,
                  num_warps=4)
        compiled = compile_for(_sweeps_probe_kernel, (x, gx, t, loss, 150, 4096), kw, 90)
        registers, spills = ptxas_usage(compiled.asm["ptx"])
        out.append(dict(block_p=block, chunk=chunk, stages=stages, registers=registers,
                        spills=spills, shared=compiled.metadata.shared,
                        cp_async=compiled.asm["ptx"].count("cp.async.c")))
    return out


ONE_READ = (tune.RESIDENT, tune.PAIRS, tune.SPLIT)  # every plane of a tile in registers


def _compiled_candidates(case) -> list:
    return tune.candidates(case)


def static_report(cases=None, classes=150) -> list:
    """Per candidate of ``benchmarks.tune`` at ``classes`` (C = 150; 19 by hand): registers,
    spills, shared memory, programs per SM, asynchronous copies, as compiled for sm_90a with
    the benchmark's tiles per program (a probe of PROBE pixels stands in for the tensors)."""
    from compiled import map_in_processes

    from benchmarks.problem import SIZES, Problem, make_inputs
    from fastmtl.ops import fused_layout as layout
    import fastmtl.kernels as K

    launches = []  # (case, config, tile grid of the benchmark, kernel, args, kwargs)
    for case in tune.CASES:
        if case.classes != classes or (cases and case.tag not in cases):
            continue
        B, H, W = SIZES[case.size]
        bench = Problem("probe", *PROBE, case.classes, case.dtype)
        args = tune.forward_args(*make_inputs(bench, torch.device("cpu")))
        grads = [torch.empty_like(args[i]) for i in (0, 3, 6)]
        for config in _compiled_candidates(case):
            problem = tune.configure(tune.make_problem(args, *grads), config)
            real = layout.tile_grid(B, H * W, config.block_p, config.max_programs)
            probe_tiles = problem.fused_grid()[3]
            assert real[1] <= probe_tiles, (config, real)
            problem.max_programs = max(1, probe_tiles // real[1])  # the benchmark's tile loop
            calls = []

            def launch(kernel):
                class Grid:
                    def __getitem__(self, grid):
                        return lambda *a, **kw: calls.append((kernel, a, kw))
                return Grid()

            state = torch.empty((K.STATE_ROWS, K.SLOTS), dtype=torch.float64)
            part = torch.empty((3, problem.fused_grid()[0]))
            labels = (layout.compact_labels(args[1], case.classes, args[13]) if problem.compact
                      else None)
            problem.launch_fused(launch, args[:8], *grads, state, part, True, state, labels)
            ((kernel, a, kw),) = calls
            assert kw["TILES_PER_PROGRAM"] == real[1]
            launches.append((case, config, real, kernel, a, kw))
    out = map_in_processes(lambda i: _static_facts(*launches[i]), len(launches))
    for row in out:
        print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def _static_facts(case, config, real, kernel, args, kwargs) -> dict:
    from compiled import (compile_for, exps_before_last_planes, loops, programs_per_sm,
                          ptxas_usage, sass_control, within)
    from sass_model import estimate_ms

    from benchmarks.problem import SIZES

    compiled = compile_for(kernel, args, kwargs, 90)
    registers, spills = ptxas_usage(compiled.asm["ptx"])
    control = sass_control(compiled.asm["cubin"])
    code = [(address, text) for address, text, *_ in control]
    shared = compiled.metadata.shared
    per_sm = programs_per_sm(registers, config.warps, shared)
    one_read = config.chunk in ONE_READ and config.stages == 1
    B, H, W = SIZES[case.size]
    # the cost model (tests/sass_model.py) where the only loop is the tile loop, and short:
    # it replays whole programs, and the one-wave grids' 64-128 tiles each would take minutes
    model_ms = (round(estimate_ms(control, per_sm * config.warps // 4, B * H * W,
                                  config.block_p // config.warps, real[1]), 3)
                if one_read and real[1] <= 2 else None)
    return dict(
        case=case.tag, config=config.name, vector=config.vector, warps=config.warps,
        stages=config.stages, chunk=config.chunk, sum_chunk=kwargs["SUM_CHUNK"],
        max_programs=config.max_programs,
        programs=real[0], tiles_per_program=real[1], registers=registers, spills=spills,
        shared=shared, programs_per_sm=per_sm,
        wide_loads=sum(1 for _, i in code if "LDG.E.64" in i or "LDG.E.128" in i),
        narrow_loads=sum(1 for _, i in code if i.startswith("LDG.E ")
                         or " LDG.E " in i or "LDG.E.U16" in i),
        loads=sum(1 for _, i in code if "LDG." in i),
        stores=sum(1 for _, i in code if "STG." in i),
        exps_before_last_planes=exps_before_last_planes(
            control, case.classes // 2 if config.chunk == tune.SPLIT else case.classes),
        model_ms=model_ms,
        loop_barriers=sum(1 for span in loops(code) for i in within(code, span) if "BAR." in i),
        loop_local_stores=sum(1 for span in loops(code) for i in within(code, span)
                              if "STL" in i),
        compares=sum(1 for _, i in code if "ISETP" in i),
        packed_max=sum(1 for _, i in code if "HMNMX2" in i or "VHMNMX" in i),
        shuffles=sum(1 for _, i in code if "SHFL" in i),
        kept=kwargs["KEPT"], exps=sum(1 for _, i in code if "MUFU.EX2" in i),
        instructions=len(code))


if __name__ == "__main__":
    assert "TRITON_INTERPRET" not in os.environ
    {"static": lambda: print(json.dumps(static_report(sys.argv[2:]))),
     "static19": lambda: print(json.dumps(static_report(classes=19))),
     "stages": lambda: print(json.dumps(stages_report()))}[sys.argv[1]]()
