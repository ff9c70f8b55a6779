"""``table1()``: data, floor and ceiling, the sweep, the selection, the seeds, the report."""
from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from fastmtl.commands.table1 import protocol as P
from fastmtl.commands.table1.runs import init_worker, run_job, split


def _settings(quick: bool, gpu: bool, overrides: dict) -> dict:
    settings = dict(P.QUICK if quick else P.GPU if gpu else P.CPU)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings.setdefault("data", "synthetic")
    settings.setdefault("data_seed", 0)
    settings["size"] = tuple(settings["size"])
    settings["lrs"] = tuple(float(v) for v in settings["lrs"])
    if settings["seeds"] < 1 or not settings["lrs"]:
        raise ValueError("the table needs at least one seed and one learning rate")
    if str(settings["device"]).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {settings['device']!r} (--gpu) needs CUDA, and torch sees no GPU here; "
                         "the CPU table is the default")
    return settings


def _data_root(settings: dict) -> Path:
    """The Cityscapes-layout tree with train, val and test splits (the synthetic city is generated)."""
    if settings["data"] != "synthetic":
        root = Path(settings["data"])
        missing = [s for s in ("train", "val", "test") if not (root / "leftImg8bit" / s).is_dir()]
        if missing:
            raise FileNotFoundError(f"{root} lacks labelled split(s) {missing}: the table selects on val and "
                                    "reports on test (for Cityscapes, hold out part of train as val and use "
                                    "val as test)")
        return root
    from fastmtl.data.synth import ensure_synthetic_city

    return ensure_synthetic_city(seed=settings["data_seed"], size=settings["size"], splits=settings["splits"])


def _job(row: P.Row, lr: float, seed: int, out: Path, root: Path, settings: dict) -> dict:
    keep = ("model", "width", "steps", "batch_size", "augment", "device")
    return {"row": row.key, "tasks": list(row.tasks), "weighting": row.weighting,
            "weights": None if row.weights is None else list(row.weights), "lr": lr, "seed": seed,
            "out": str(out / "runs" / row.key / f"lr{lr:g}-seed{seed}"), "root": str(root),
            "settings": {k: settings[k] for k in keep}}


class _Runner:
    """Runs jobs in ``workers`` processes (0: in this process), longest first, logging each."""

    def __init__(self, workers: int, threads: int, log):
        self.log, self.done, self.pool, self.threads = log, 0, None, threads
        self.cpu_seconds = 0.0  # of every run, in whichever process it ran
        self.reused = 0
        if workers > 0:
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=init_worker, initargs=(threads,))

    def __call__(self, jobs: list[dict]) -> list[dict]:
        order = sorted(range(len(jobs)), key=lambda i: (jobs[i]["weighting"] != "gradnorm", -len(jobs[i]["tasks"])))
        results = [None] * len(jobs)
        if self.pool is None:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                for i in order:
                    results[i] = self._logged(run_job(jobs[i]))
            finally:
                torch.set_num_threads(threads)
        else:
            futures = {self.pool.submit(run_job, jobs[i]): i for i in order}
            for f in as_completed(futures):
                results[futures[f]] = self._logged(f.result())
        return results

    def _logged(self, result: dict) -> dict:
        self.done += 1
        self.cpu_seconds += result["cpu_seconds"]
        self.reused += bool(result.get("reused"))
        job, val = result["job"], result["val"]
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in val.items() if v is not None)
        self.log(f"[{self.done}] {job['row']} lr {job['lr']:g} seed {job['seed']}: val {metrics} "
                 f"({result['seconds']:.0f} s{', reused' if result.get('reused') else ''})")
        return result

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


def _choose_rates(run, rows, sweep, single, settings, job_of) -> dict[str, float]:
    """Each row's rate with the best validation score (``protocol.choose_rate``). Where that is the
    highest or lowest rate the row has tried, the row also tries the next rate beyond it (the
    sweep's ratio): the same rule for every row, so each
    row's optimum is bracketed whatever the scale of its weights (``settings["extend"]`` times at most)."""
    rate, extended, pending = {}, {r.key: 0 for r in rows}, list(rows)
    while pending:
        jobs = []
        for row in pending:
            rate[row.key] = P.choose_rate(row, {lr: r["val"] for lr, r in sweep[row.key].items()}, single)
            beyond = P.beyond(rate[row.key], sorted(sweep[row.key]), settings["lrs"])
            if beyond is not None and extended[row.key] < settings["extend"]:
                extended[row.key] += 1
                jobs.append(job_of(row, beyond))
        for res in run(jobs):
            sweep[res["job"]["row"]][res["job"]["lr"]] = res
        pending = [P.BY_KEY[j["row"]] for j in jobs]
    return rate


def table1(out="runs/table1", *, quick: bool = False, gpu: bool = False, rows=None, log=None,
           **overrides) -> dict:
    """Run the protocol of ``protocol.py``; write OUT/table1.md, table1.json and the figures.

    ``overrides``: any key of ``protocol.CPU`` (model, width, size, steps,
    batch_size, lrs, seeds, splits, augment, device, workers, threads) and
    ``data`` (a Cityscapes-layout root with labelled train, val and test
    splits instead of the synthetic city), ``data_seed``. Finished runs found
    under OUT/runs are reused. Returns the report (also in table1.json).
    """
    from fastmtl.commands.table1.report import write_report
    from fastmtl.engine.baselines import head_ceiling, prior_baselines

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    settings = _settings(quick, gpu, overrides)
    out = Path(out)
    started, cpu_started = time.time(), time.process_time()
    root = _data_root(settings)
    floor = prior_baselines(split(root, "train"), split(root, "test"))
    ceiling = head_ceiling(split(root, "test"))
    chosen = P.selected_rows(rows)
    workers = settings["workers"]
    run = _Runner(workers, settings.get("threads") or (1 if workers != 1 else torch.get_num_threads()), log)
    try:
        job_of = lambda row, lr: _job(row, lr, 0, out, root, settings)  # noqa: E731
        sweep = {}
        for res in run([job_of(r, lr) for r in chosen for lr in settings["lrs"]]):
            sweep.setdefault(res["job"]["row"], {})[res["job"]["lr"]] = res
        # Single-task rows first: the others are scored against them.
        rate = _choose_rates(run, [r for r in chosen if r.group == "single"], sweep, {}, settings, job_of)
        single = {P.BY_KEY[k].tasks[0]: sweep[k][lr]["val"] for k, lr in rate.items()}
        rate.update(_choose_rates(run, [r for r in chosen if r.group != "single"], sweep, single, settings, job_of))
        grid = None
        candidates = [k for k in P.GRID_CANDIDATES if k in rate]
        if len(candidates) == len(P.GRID_CANDIDATES):
            grid = max(candidates, key=lambda k: P.score(P.BY_KEY[k], sweep[k][rate[k]]["val"], single))
        reported = [r.key for r in chosen if r.group != "grid" or r.key == grid]
        seed_jobs = [_job(P.BY_KEY[k], rate[k], s, out, root, settings)
                     for k in reported for s in range(1, settings["seeds"])]
        seeds = {k: {0: sweep[k][rate[k]]} for k in reported}
        for res in run(seed_jobs):
            seeds[res["job"]["row"]][res["job"]["seed"]] = res
    finally:
        run.close()
    report = {
        "settings": {**settings, "size": list(settings["size"]), "lrs": list(settings["lrs"])},
        "quick": quick, "root": str(root), "floor": floor, "ceiling": ceiling, "grid": grid, "rate": rate,
        "sweep": {k: {str(lr): r["val"] for lr, r in sorted(v.items())} for k, v in sweep.items()},
        "runs": {k: [v[s] for s in sorted(v)] for k, v in seeds.items()},
        "seconds": time.time() - started, "cpu_seconds": time.process_time() - cpu_started,
        "runs_cpu_seconds": run.cpu_seconds, "runs_count": run.done, "runs_reused": run.reused,
        "machine": _machine(),
    }
    write_report(report, out)
    return report


def _machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}


def read_report(out) -> dict:
    return json.loads((Path(out) / "table1.json").read_text())
