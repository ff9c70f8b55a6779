"""``python -m benchmarks train-step``: a whole training step per loss variant.

A model preset of ``fastmtl.models.build_model`` is fed random images and
targets of the right shapes (labels 0..C-1 with ~10% 255, instance offsets and
mask, depth with ~10% zeros as invalid; no data set), forward under bf16
autocast, loss, backward and an SGD step (Nesterov 0.9, weight decay 1e-4, as
the trainer). Variants:

    eager        the network upsamples (F.interpolate), eager PyTorch losses
    fastmtl      the network upsamples, fastmtl's loss at full resolution
    fastmtl-low  1/8-resolution heads, fastmtl's loss with upsample="bilinear"
    no-loss      1/8-resolution heads and a trivial loss: the rest of the step

Reported: step time, peak memory, and on CUDA the largest batch that fits,
by doubling then bisection, one step per trial, each out-of-memory error
caught, memory freed, and the search carried on. The loss's share of the step
is the variant's time (memory) minus no-loss's, over the variant's.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import train_report
from benchmarks.environment import environment
from benchmarks.problem import Problem, make_targets
from benchmarks.run import RESULTS_DIR
from benchmarks.timing import measure, release, summarize, timer_name

NAMED_SIZES = {"half": (512, 1024), "full": (1024, 2048)}


@dataclass(frozen=True)
class Variant:
    description: str
    upsample_in_network: bool
    loss: dict | None  # MultiTaskLoss keyword arguments; None: no loss, a trivial objective


VARIANTS = {
    "eager": Variant("F.interpolate + eager losses", True, {"backend": "reference"}),
    "fastmtl": Variant("fastmtl at full resolution, network upsampling", True, {}),
    "fastmtl-low": Variant("fastmtl from the 1/8 heads, upsample='bilinear'", False,
                           {"upsample": "bilinear"}),
    "no-loss": Variant("1/8 heads, no loss (the rest of the step)", False, None),
}
CUDA_DEFAULTS = {"models": ["resnet50", "resnet101"], "sizes": ["512x1024", "1024x2048"],
                 "batch": 8, "repeats": 10, "warmup": 3}
CPU_DEFAULTS = {"models": ["tiny"], "sizes": ["32x64"], "batch": 1, "repeats": 2, "warmup": 1}


def parse_hw(spec: str) -> tuple[int, int]:
    if spec in NAMED_SIZES:
        return NAMED_SIZES[spec]
    try:
        h, w = (int(v) for v in spec.split("x"))
    except ValueError:
        raise ValueError(f"size {spec!r} is neither one of {list(NAMED_SIZES)} nor HxW") from None
    return h, w


def make_batch(batch: int, hw: tuple[int, int], classes: int, device: torch.device, seed: int = 0):
    """Random images (B, 3, H, W) and the targets of ``problem.make_targets`` in fp32."""
    gen = torch.Generator(device=device).manual_seed(seed)
    images = torch.randn(batch, 3, *hw, generator=gen, device=device)
    return images, make_targets(Problem("custom", batch, *hw, classes, "fp32"), device, gen)


def make_step(model, criterion, optimizer, variant: Variant, amp: bool):
    device_type = next(model.parameters()).device.type

    def step(images, targets):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            predictions = model(images, upsample=variant.upsample_in_network)
        if criterion is None:
            total = sum(p.float().mean() for p in predictions.values())
        else:
            total = criterion(predictions, targets).total
        total.backward()
        optimizer.step()
        return total
    return step


def build(preset: str, hw, classes: int, variant: Variant, device, check_labels: bool):
    import fastmtl
    from fastmtl.models import build_model

    torch.manual_seed(0)
    model = build_model(preset, num_classes=classes, resolution=hw).to(device).train()
    criterion = None
    params = list(model.parameters())
    if variant.loss is not None:
        criterion = fastmtl.MultiTaskLoss(check_labels=check_labels, **variant.loss).to(device)
        params += list(criterion.parameters())
    optimizer = torch.optim.SGD(params, lr=2.5e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return model, criterion, optimizer


def largest_batch(fits, start: int, cap: int, deadline: float) -> dict:
    """Largest b <= cap with ``fits(b)``: doubling from ``start``, then bisection.

    ``status``: "exact" (largest fits, largest + 1 does not), "cap" (cap fits)
    or "time limit" (stopped at ``deadline``, time.monotonic(); largest is a lower bound).
    """
    lo, hi, b, trials = 0, None, max(1, min(start, cap)), 0
    while True:
        if time.monotonic() > deadline:
            status = "time limit"
            break
        trials += 1
        if fits(b):
            lo = b
        else:
            hi = b
        if hi is None and lo >= cap:
            status = "cap"
            break
        if hi is not None and hi - lo <= 1:
            status = "exact"
            break
        b = min(2 * lo, cap) if hi is None else (lo + hi) // 2
    return {"largest_batch": lo, "fails_at": hi, "status": status, "trials": trials}


def fits_on_device(step, hw, classes: int, device: torch.device, errors: list):
    """fits(b): one training step at batch b runs without an error. Out of memory is the
    expected failure; any other (cuDNN reports some allocation failures in its own words)
    also counts as not fitting and is appended to ``errors``."""
    def fits(batch: int) -> bool:
        ok, data = True, None
        try:
            data = make_batch(batch, hw, classes, device, seed=batch)
            step(*data)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except torch.OutOfMemoryError:
            ok = False
        except Exception as exc:  # noqa: BLE001  (the search goes on; the message is kept)
            ok = False
            errors.append(f"batch {batch}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
        data = None  # noqa: F841  (freed outside the handler, whose traceback held the step's tensors)
        release(device)
        print(f"    batch {batch}: {'fits' if ok else 'does not fit'}", flush=True)
        return ok
    return fits


def run_case(preset, hw, name, args, device, deadline) -> dict:
    variant = VARIANTS[name]
    row = {"model": preset, "size": f"{hw[0]}x{hw[1]}", "variant": name,
           "description": variant.description, "batch": args.batch, "classes": args.classes,
           "largest_batch": None, "largest_batch_note": None, "error": None}
    model = criterion = optimizer = data = None
    try:
        model, criterion, optimizer = build(preset, hw, args.classes, variant, device,
                                            not args.no_check_labels)
        step = make_step(model, criterion, optimizer, variant, args.amp == "bf16")
        data = make_batch(args.batch, hw, args.classes, device)
        row.update(summarize(measure(lambda: step(*data), device, args.warmup, args.repeats)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step(*data)
            torch.cuda.synchronize(device)
            row["peak_bytes"] = torch.cuda.max_memory_allocated(device)
    except Exception as exc:  # one failing variant must not end the run
        if not isinstance(exc, torch.OutOfMemoryError):
            traceback.print_exc()
        row["error"] = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else \
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    data = None
    release(device)
    if name == "no-loss" or not args.largest_batch or model is None:
        row["largest_batch_note"] = "not searched" if device.type == "cuda" else "CUDA only"
    elif time.monotonic() > deadline:
        row["largest_batch_note"] = "not searched: time limit"
    else:
        errors: list[str] = []
        found = largest_batch(fits_on_device(step, hw, args.classes, device, errors), args.batch,
                              args.max_batch, min(deadline, time.monotonic() + args.bisect_seconds))
        row["largest_batch"], row["largest_batch_note"] = found["largest_batch"], found["status"]
        row["largest_batch_search"] = {**found, "errors_other_than_out_of_memory": errors}
    model = criterion = optimizer = step = None  # noqa: F841
    release(device)
    return row


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks train-step",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if available, else cpu")
    p.add_argument("--models", nargs="+", help="build_model presets (default resnet50 resnet101; CPU: tiny)")
    p.add_argument("--sizes", nargs="+", help="HxW or half (512x1024) / full (1024x2048) "
                   "(default 512x1024 1024x2048; CPU: 32x64)")
    p.add_argument("--batch", type=int, help="batch of the timed steps (default 8; CPU: 1)")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--amp", choices=["bf16", "none"], default="bf16", help="autocast (default bf16)")
    p.add_argument("--repeats", type=int, help="timed steps (default 10; CPU: 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 3; CPU: 1)")
    p.add_argument("--no-largest-batch", dest="largest_batch", action="store_false",
                   help="skip the search for the largest batch (CUDA only in any case)")
    p.add_argument("--max-batch", type=int, default=512, help="largest batch tried (default 512)")
    p.add_argument("--bisect-seconds", type=float, default=60,
                   help="time for one variant's batch search (default 60)")
    p.add_argument("--time-limit", type=float, default=float("inf"),
                   help="seconds after which no new variant starts and searches stop")
    p.add_argument("--no-check-labels", action="store_true",
                   help="fastmtl's label check off (default: on, as the library's default)")
    p.add_argument("--cpu-threads", type=int, help="torch.set_num_threads on CPU")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--stem", help="file name without suffix (default train-step-<device>-<date>)")
    p.add_argument("--plot", action="store_true", help="also write a PNG next to the JSON")
    args = p.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    d = CUDA_DEFAULTS if args.device.type == "cuda" else CPU_DEFAULTS
    for key in d:
        if getattr(args, key) is None:
            setattr(args, key, d[key])
    try:
        args.hw = [parse_hw(s) for s in args.sizes]
    except ValueError as exc:
        p.error(str(exc))
    args.largest_batch = args.largest_batch and args.device.type == "cuda"
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    device = args.device
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here", file=sys.stderr)
        return 2
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    deadline = time.monotonic() + args.time_limit
    settings = {k: getattr(args, k) for k in ("models", "sizes", "batch", "classes", "variants", "amp",
                                              "repeats", "warmup", "largest_batch", "max_batch",
                                              "bisect_seconds")}
    settings.update(check_labels=not args.no_check_labels, timer=timer_name(device),
                    optimizer="SGD lr 2.5e-3, Nesterov momentum 0.9, weight decay 1e-4")
    result = {"schema": 1, "kind": "train-step", "date": datetime.date.today().isoformat(),
              "command": "python -m benchmarks train-step " + shlex.join(argv),
              **environment(device), "settings": settings,
              "variants": {k: v.description for k, v in VARIANTS.items()}, "results": []}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.stem or f"train-step-{result['device']['slug']}-{result['date']}")
    for preset in args.models:
        for hw in args.hw:
            for name in args.variants:
                print(f"{preset} {hw[0]}x{hw[1]} batch {args.batch}: {name}", flush=True)
                if time.monotonic() > deadline:
                    row = {"model": preset, "size": f"{hw[0]}x{hw[1]}", "variant": name,
                           "batch": args.batch, "error": "not run: time limit"}
                else:
                    row = run_case(preset, hw, name, args, device, deadline)
                result["results"].append(row)
                train_report.add_derived(result["results"])
                stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
                stem.with_suffix(".md").write_text(train_report.markdown(result))
    print("\n" + train_report.markdown(result))
    print(f"wrote {stem}.json and {stem}.md")
    if args.plot:
        from benchmarks.plot import plot
        print(f"wrote {plot(stem.with_suffix('.json'))}")
    return 0
