"""``python -m benchmarks.tune_upsample --out DIR``: time the upsample loss kernel's tilings.

For each case (heads at 1/8 of the targets, all three tasks, fp32 and bf16), every
candidate ``fastmtl.ops.upsample_tiles.Config`` is applied with
``upsample_tiles.use`` and:

1. the op's forward runs once through a recording launcher (the first launch of a
   new configuration compiles it: 1-3 s each); its outputs (total, per-task losses,
   stored gradients) are compared with the default configuration's and a mismatch
   is flagged;
2. each loss launch (``upsample_loss_kernel`` for the semantic task,
   ``upsample_regressions_kernel`` for the regressions, or ``upsample_both_kernel`` for
   both with ``one_launch``) is replayed alone under
   ``benchmarks.timing.measure`` (``triton.testing.do_bench`` with an L2 flush before
   every repetition), and registers and spills are read from the compiled kernel;
3. for the default and the fastest configurations, the whole forward + backward call
   (``benchmarks.implementations`` "upsample-fused", ``step``) is timed eagerly and
   replayed from a CUDA graph.

The sweep stops starting new configurations once ``--budget`` seconds are spent
(each case gets its share; the default always runs). ``tune_upsample.json`` and
``tune_upsample.md`` under ``--out`` are rewritten after every case. The two
launches are independent: the best semantic settings and the best regression
settings can be combined (the markdown names both).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from benchmarks.problem import Problem

CASES_HELP = "C19-full (8x1024x2048, C=19) and C150-half (8x512x1024, C=150), heads at 1/8"
TOLERANCE = {"fp32": 2e-5, "bf16": 2e-2}  # relative, of the loss and of max |gradient|


@dataclass(frozen=True)
class Case:
    name: str
    classes: int
    size: tuple  # (B, H, W) of the targets

    def problem(self, dtype: str) -> Problem:
        B, H, W = self.size
        return Problem("custom", B, H, W, self.classes, dtype)


CASES = (Case("C19-full", 19, (8, 1024, 2048)), Case("C150-half", 150, (8, 512, 1024)))
# --smoke: the same sweep on CPU under TRITON_INTERPRET=1, tiny, to check the script.
SMOKE_CASES = (Case("C19-full", 19, (1, 16, 40)), Case("C150-half", 150, (1, 16, 24)))


def candidates(classes: int, quick: bool = False) -> list:
    """The configurations tried for C classes, the default first (importable without a GPU:
    the tests compile every one of them for sm_90a)."""
    from fastmtl.ops.upsample_tiles import DEFAULT

    # Dropped: slower than the default in every sweep that timed them, last on an H200
    # (2026-11-27, benchmarks/results/nvidia-h200-2026-11-27-1b50243.tune-upsample.md): at
    # C <= 32 semantic_registers=128 and None and band_rows=(4,) (and the shifted softmax
    # and the early tap loads, since removed); at C > 32 chunk_registers=None and 128 and
    # class_chunk=None.
    if classes <= 32:
        changes = [
            {},
            dict(one_launch=True),                             # both launches as one grid
            dict(band_rows=(16,)),                             # longer bands, fewer programs
            dict(capped_regressions=None),     # two uncapped columns (a torch.compile graph)
            dict(capped_regressions=None, regression_columns=1),  # one uncapped column
            dict(regression_rows=4),                           # chunks of 4 rows
            dict(regression_warps=2),
        ]
        keep = 3
    else:
        changes = [{}, dict(band_rows=(4,)), dict(band_rows=(32, 16, 8)),
                   dict(capped_regressions=None), dict(target_warps=16384)]
        keep = 2
    configs = [replace(DEFAULT, **c) for c in changes]
    return configs[:keep] if quick else configs


# ------------------------------------------------------------------ measuring


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _recorder(calls: list):
    """A ``launch`` that runs each kernel and keeps (kernel, grid, args, kwargs, compiled)."""
    def launch(kernel):
        class Grid:
            def __getitem__(self, grid):
                def run(*args, **kwargs):
                    compiled = kernel[grid](*args, **kwargs)
                    calls.append((kernel, grid, args, kwargs, compiled))
                    return compiled
                return run
        return Grid()
    return launch


def _forward(predictions, targets, calls):
    """The op's forward (all three tasks, log-variances), launches recorded."""
    from fastmtl.ops import upsample

    x, o, d = predictions["semantic"], predictions["instance"], predictions["depth"]
    coef = torch.zeros(3, device=x.device)
    return upsample._forward(_recorder(calls), x, targets["semantic"], None, o,
                             targets["instance"], targets["instance_mask"], d,
                             targets["depth"], coef, [0, 1, 2], [1.0, 0.5, 0.5],
                             [0.5, 0.5, 0.5], True, 255, False, True)


def _outputs(outs) -> dict:
    total, losses, _, gx, go, gd = outs[:6]
    return {"total": total.double().clone(), "losses": losses.double().clone(),
            "gx": gx.double().clone(), "go": go.double().clone(), "gd": gd.double().clone()}


def _mismatch(ref: dict, got: dict, tol: float) -> list[str]:
    bad = []
    for key, a in ref.items():
        b = got[key]
        if a.shape != b.shape:
            bad.append(f"{key}: shape {tuple(b.shape)} != {tuple(a.shape)}")
            continue
        scale = max(a.abs().max().item(), 1e-30) if a.numel() else 1.0
        err = (a - b).abs().max().item() / scale if a.numel() else 0.0
        if not err <= tol:  # NaN counts as a mismatch
            bad.append(f"{key}: max relative error {err:.2e} > {tol:.0e}")
    return bad


LOSS_KERNELS = ("upsample_loss_kernel", "upsample_regressions_kernel", "upsample_chunks_kernel",
                "upsample_both_kernel")
LAUNCH = {"upsample_regressions_kernel": "regressions", "upsample_both_kernel": "one launch"}


def _kernel_row(calls, device, repeats, warmup) -> dict:
    """Device time of each recorded loss launch (semantic: upsample_loss_kernel, or
    upsample_chunks_kernel at C > 32; regressions; or both as one launch) replayed alone."""
    from benchmarks.timing import measure, summarize

    row = {}
    for kernel, grid, args, kwargs, compiled in calls:
        if kernel.__name__ not in LOSS_KERNELS:
            continue
        which = LAUNCH.get(kernel.__name__, "semantic")
        times = measure(lambda: kernel[grid](*args, **kwargs), device, warmup, repeats)
        row[which] = dict(median_ms=1e3 * summarize(times)["median_s"], grid=list(grid),
                          num_warps=kwargs.get("num_warps"), maxnreg=kwargs.get("maxnreg"),
                          registers=getattr(compiled, "n_regs", None),
                          spills=getattr(compiled, "n_spills", None),
                          block_x=kwargs.get("BLOCK_X"))
    row["kernels_ms"] = sum(v["median_ms"] for v in row.values())
    return row


def _whole_call(config, predictions, targets, log_vars, device, repeats, warmup) -> dict:
    from benchmarks.implementations import IMPLEMENTATIONS, step
    from benchmarks.timing import graph_times, measure, summarize
    from fastmtl.ops.upsample_tiles import use

    loss = IMPLEMENTATIONS["upsample-fused"].build()
    with use(config):
        fn = lambda: step(loss, predictions, targets, log_vars, True)  # noqa: E731
        eager = summarize(measure(fn, device, warmup, repeats))["median_s"]
        graph = graph_times(fn, device, repeats)
    return {"eager_ms": 1e3 * eager,
            "graph_ms": 1e3 * summarize(graph)["median_s"] if graph else None}


def run_case(case: Case, dtype: str, configs, device, budget_end: float, args) -> dict:
    from benchmarks.implementations import make_low_res_inputs
    from benchmarks.timing import release
    from fastmtl.ops.upsample_tiles import use

    problem = case.problem(dtype)
    predictions, targets, log_vars = make_low_res_inputs(problem, device)
    rows, reference = [], None
    for i, config in enumerate(configs):
        row = {"config": config.name(), "fields": asdict(config)}
        if i > 0 and time.monotonic() > budget_end:
            row["skipped"] = "budget"
            rows.append(row)
            continue
        try:
            calls = []
            start = time.monotonic()
            with use(config), torch.no_grad():
                outs = _forward(predictions, targets, calls)
                _sync(device)
                row["first_call_s"] = time.monotonic() - start  # compiles included
                got = _outputs(outs)
                del outs
                if reference is None:
                    reference = got
                row["mismatch"] = _mismatch(reference, got, TOLERANCE[dtype])
                row.update(_kernel_row(calls, device, args.repeats, args.warmup))
        except Exception as exc:  # a configuration that fails is reported, not fatal
            row["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500]
        rows.append(row)
        print(f"  {case.name} {dtype} {row['config']}: "
              f"{row.get('kernels_ms', float('nan')):.3f} ms"
              f"{' MISMATCH' if row.get('mismatch') else ''}{' ' + row['error'] if 'error' in row else ''}",
              flush=True)
    timed = [r for r in rows if "kernels_ms" in r and not r.get("mismatch")]
    timed.sort(key=lambda r: r["kernels_ms"])
    whole = [rows[0]] + [r for r in timed if r is not rows[0]][:args.whole_calls]
    for row in whole:
        if "kernels_ms" not in row or time.monotonic() > budget_end + args.whole_grace:
            continue
        config = next(c for c in configs if c.name() == row["config"])
        try:
            row["whole_call"] = _whole_call(config, predictions, targets, log_vars, device,
                                            args.repeats, args.warmup)
        except Exception as exc:
            row["whole_call"] = {"error": str(exc)[:500]}
    del predictions, targets, log_vars, reference
    release(device)
    return {"case": case.name, "dtype": dtype, "shape": "x".join(map(str, case.size)),
            "classes": case.classes, "rows": rows}


# ------------------------------------------------------------------ reporting


def _best(rows, key):
    ok = [r for r in rows if key(r) is not None and not r.get("mismatch") and "error" not in r]
    return min(ok, key=key) if ok else None


def markdown(result: dict) -> str:
    out = ["# Upsample loss kernel: tiling sweep", "",
           f"Device: {result['device']}. Command: `{result['command']}`. "
           f"{result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s budget.", "",
           "Kernel times: each loss launch (semantic, regressions) replayed alone (median, L2 "
           "flushed before each repetition). Whole call: forward + backward of `upsample-fused`, eager "
           "median and CUDA-graph replay. Rows sorted by the sum of both launches; **best** marks "
           "the fastest matching configuration per case, and the best per launch is named under "
           "each table.", ""]
    for case in result["cases"]:
        rows = case["rows"]
        out += [f"## {case['case']} ({case['shape']}, C = {case['classes']}, {case['dtype']})", "",
                "| config | semantic ms | regs | regressions ms | regs | both ms (one launch: "
                "regs) | whole call "
                "eager / graph ms | check |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        best = _best(rows, lambda r: r.get("kernels_ms"))
        for r in sorted(rows, key=lambda r: r.get("kernels_ms", float("inf"))):
            sem, reg, one = r.get("semantic", {}), r.get("regressions", {}), r.get("one launch")
            whole = r.get("whole_call") or {}
            wtxt = whole.get("error", "")
            if "eager_ms" in whole:
                graph = whole.get("graph_ms")
                wtxt = f"{whole['eager_ms']:.3f} / " + (f"{graph:.3f}" if graph else "-")
            check = ("skipped (budget)" if r.get("skipped") else r.get("error")
                     or ("; ".join(r["mismatch"]) if r.get("mismatch") else "ok"))
            name = f"**{r['config']}** (best)" if r is best else r["config"]
            fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ""  # noqa: E731
            regs = lambda d: (f"{d['registers']}" + (f" (+{d['spills']} spilled)"  # noqa: E731
                              if d.get("spills") else "")) if d.get("registers") else ""
            out.append(f"| {name} | {fmt(sem.get('median_ms'))} | {regs(sem)} | "
                       f"{fmt(reg.get('median_ms'))} | {regs(reg)} | {fmt(r.get('kernels_ms'))}"
                       f"{f' ({regs(one)})' if one else ''} | "
                       f"{wtxt} | {check} |")
        for launch in ("semantic", "regressions"):
            b = _best(rows, lambda r, k=launch: r.get(k, {}).get("median_ms"))
            if b:
                out.append(f"\nBest {launch} launch: `{b['config']}` "
                           f"({b[launch]['median_ms']:.3f} ms).")
        out.append("")
    return "\n".join(out) + "\n"


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune_upsample.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "tune_upsample.md").write_text(markdown(result))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune_upsample",
                                description=__doc__.splitlines()[0].split(": ", 1)[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"Cases: {CASES_HELP}. Needs a CUDA device.")
    p.add_argument("--out", type=Path, required=True, help="folder for tune_upsample.json/.md")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds after which no new configuration starts (default 420)")
    p.add_argument("--quick", action="store_true",
                   help="fewer configurations (3 at C=19, 2 at C=150) and repetitions")
    p.add_argument("--cases", nargs="+", choices=[c.name for c in CASES],
                   help="default: all")
    p.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, help="timed repetitions (default 50; --quick 20)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 5; --quick 3)")
    p.add_argument("--whole-calls", type=int, default=2,
                   help="besides the default, the fastest configurations whose whole call is timed")
    p.add_argument("--whole-grace", type=float, default=60.0,
                   help="seconds past the budget the whole-call timings may still start")
    p.add_argument("--smoke", action="store_true",
                   help="check the script on CPU (set TRITON_INTERPRET=1): tiny cases, "
                   "2 configurations each, one repetition")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.smoke else 20 if args.quick else 50)
    args.warmup = args.warmup if args.warmup is not None else (
        0 if args.smoke else 3 if args.quick else 5)
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.smoke and not torch.cuda.is_available():
        print("tune_upsample needs a CUDA device (--smoke checks the script on CPU)",
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    start = time.monotonic()
    jobs = [(case, dtype) for case in (SMOKE_CASES if args.smoke else CASES)
            if not args.cases or case.name in args.cases for dtype in args.dtypes]
    result = {"device": "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(device),
              "command": " ".join(["python -m benchmarks.tune_upsample", *(argv or sys.argv[1:])]),
              "budget_s": args.budget, "elapsed_s": 0.0, "cases": []}
    try:
        from benchmarks.environment import environment
        result["environment"] = environment(device)
    except Exception as exc:  # the sweep does not depend on it
        result["environment"] = {"error": str(exc)}
    for i, (case, dtype) in enumerate(jobs):
        # Each remaining case gets an equal share of the budget left.
        left = args.budget - (time.monotonic() - start)
        case_end = time.monotonic() + max(0.0, left) / (len(jobs) - i)
        configs = candidates(case.classes, args.quick)[:2 if args.smoke else None]
        print(f"{case.name} {dtype}: {len(configs)} configurations", flush=True)
        result["cases"].append(run_case(case, dtype, configs, device, case_end, args))
        result["elapsed_s"] = time.monotonic() - start
        write(result, args.out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
