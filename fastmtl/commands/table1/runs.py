"""One training run of the table: train, score on the validation and test splits, summarise the log.

``run_job`` is what the worker processes execute; it writes ``result.json``
into the run directory, and a later call with the same job reuses that file,
so an interrupted table continues where it stopped. A run that was stopped
before its result (Ctrl-C saves a checkpoint) is resumed from its checkpoint
when that was trained with the same settings; any other unfinished or stale
run directory is removed and the run starts afresh. Worker processes keep
the decoded splits in memory: every run reads the same few hundred small
images thousands of times.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import torch

from fastmtl.weighting import uncertainty_factors

_SPLITS: dict[tuple[str, str], list] = {}


class InMemory(torch.utils.data.Dataset):
    """A data set's samples decoded once and kept."""

    def __init__(self, dataset):
        self.samples = [dataset[i] for i in range(len(dataset))]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return dict(self.samples[index])


def split(root: str, name: str, size=None) -> InMemory:
    """The decoded split ``name`` of the tree at ``root`` (every task's targets), cached per process."""
    from fastmtl.data import Cityscapes

    key = (str(root), name)
    if key not in _SPLITS:
        _SPLITS[key] = InMemory(Cityscapes(root, name, size=size))
    return _SPLITS[key]


def init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def job_config(job: dict):
    from fastmtl.engine import TrainConfig

    s = job["settings"]
    return TrainConfig(out=job["out"], data=job["root"], size="native", model=s["model"], width=s["width"],
                       tasks=tuple(job["tasks"]), weighting=job["weighting"],
                       weights=None if job["weights"] is None else tuple(job["weights"]),
                       steps=s["steps"], batch_size=s["batch_size"], lr=job["lr"], seed=job["seed"],
                       augment=s["augment"], device=s["device"], checkpoint_every=0, eval_every=0,
                       log_every=max(1, s["steps"] // 200), progress=False)


def run_job(job: dict) -> dict:
    """Train ``job`` (a dict: row, tasks, weighting, weights, lr, seed, out, root, settings) unless its
    result.json exists for the same job; return the result."""
    from fastmtl.engine import Trainer
    from fastmtl.engine.evaluation import evaluate
    from fastmtl.engine.metrics import HIGHER_IS_BETTER

    out = Path(job["out"])
    done = out / "result.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("job") == _plain(job):
            return {**result, "reused": True}
    started, cpu = time.time(), time.process_time()
    trainer = _resumed(out, job_config(job))
    if trainer is None:
        shutil.rmtree(out, ignore_errors=True)  # a stale run, or an interrupted one without a usable checkpoint
        trainer = Trainer(job_config(job))
    resumed_at = trainer.step
    trainer.data.base = split(job["root"], "train")
    trainer.val_set = split(job["root"], "val")
    trainer.plot = lambda: []  # the table draws its own figures
    summary = trainer.run()
    test = evaluate(trainer.model, split(job["root"], "test"), batch_size=job["settings"]["batch_size"])
    keep = lambda m: {k: v for k, v in m.items() if k in HIGHER_IS_BETTER}  # noqa: E731
    result = {"job": _plain(job), "val": keep(summary["metrics"]), "test": keep(test),
              "seconds": time.time() - started, "cpu_seconds": time.process_time() - cpu,
              "threads": torch.get_num_threads(), "resumed_at": resumed_at,
              "weights": trainer.criterion.weighting.effective_weights(),
              "convergence": convergence(trainer.log_path, job)}
    done.write_text(json.dumps(_finite(result), indent=1) + "\n")
    (out / "checkpoint.pt").unlink(missing_ok=True)  # the table keeps metrics, not 76 networks
    return result


def _resumed(out: Path, cfg):
    """A trainer continuing the interrupted run in ``out`` (no result.json, a checkpoint), if that run
    has exactly ``cfg``'s settings; else None."""
    from fastmtl.engine import Trainer, checkpoint, resume, rundir

    if (out / "result.json").exists() or not (out / rundir.CHECKPOINT).is_file():
        return None
    try:
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
        changed = set(resume.changes(saved, cfg)) - {"resume", "overwrite"}
    except (OSError, ValueError, AttributeError):
        return None
    if changed:
        return None
    try:
        return Trainer(dataclasses.replace(cfg, resume=True))
    except (checkpoint.CheckpointError, resume.ResumeError):
        return None


def convergence(log_path: Path, job: dict) -> dict:
    """How much the run was still moving over its last 10% of steps.

    ``loss_change[task]``: the mean training loss over the last 10% of steps
    relative to the 10% before (-0.02: 2% lower). For uncertainty weighting,
    ``s_change[task]``: s at the end minus s at 90% of the steps, and
    ``s_balance[task]``: log(c L / r), where s would settle for the mean
    loss L of the last 10% (d total / d s = 0).
    """
    from fastmtl.engine.plots import read_log

    # The last record of each step: a run resumed from an earlier checkpoint logs some steps again.
    records = sorted({r["step"]: r for r in read_log(log_path) if r.get("kind") == "train"}.values(),
                     key=lambda r: r["step"])
    steps = job["settings"]["steps"]
    last = [r for r in records if r["step"] > 0.9 * steps]
    before = [r for r in records if 0.8 * steps < r["step"] <= 0.9 * steps]
    out = {"loss_change": {}, "loss_last": {}}
    for task in job["tasks"]:
        a = _mean(r["losses"].get(task) for r in last)
        b = _mean(r["losses"].get(task) for r in before)
        out["loss_last"][task] = a
        out["loss_change"][task] = (a - b) / b if b else math.nan
    if job["weighting"] == "uncertainty" and last:
        at_90 = min(records, key=lambda r: abs(r["step"] - 0.9 * steps))
        factors, regulariser = uncertainty_factors(job["tasks"])
        out["s_final"] = dict(last[-1]["log_var"])
        out["s_change"] = {t: last[-1]["log_var"][t] - at_90["log_var"][t] for t in job["tasks"]}
        out["s_balance"] = {t: math.log(c * out["loss_last"][t] / r) if out["loss_last"][t] > 0 else math.nan
                            for t, c, r in zip(job["tasks"], factors, regulariser)}
    return out


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else math.nan


def _plain(job: dict) -> dict:
    return json.loads(json.dumps(job))


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj
