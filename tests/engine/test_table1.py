"""fastmtl experiment table1: a seconds-long smoke run of the whole protocol, checked against its own runs."""
import json
import math
from pathlib import Path

import pytest

from fastmtl.commands.table1 import protocol as P
from fastmtl.commands.table1 import table1
from fastmtl.engine.metrics import delta_m
from fastmtl.engine.stats import mean_interval, paired_difference

ROWS = ["unc-all", "equal"]  # with the three single-task rows every comparison needs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1")
    return out, table1(out, quick=True, rows=ROWS, log=lambda msg: None)


def test_files_and_rows(report):
    out, rep = report
    for name in ("table1.md", "table1.json", "table1.png", "table1-training.png"):
        assert (out / name).stat().st_size > 0
    assert [r["key"] for r in rep["rows"]] == ["semantic", "instance", "depth", "equal", "unc-all"]
    text = (out / "table1.md").read_text()
    assert "Floor: no-image priors" in text and "Ceiling: ground truth at head resolution" in text
    assert "--quick smoke run" in text
    assert json.loads((out / "table1.json").read_text())["rate"] == rep["rate"]


def test_each_row_takes_the_best_rate_of_the_sweep_on_validation(report):
    _, rep = report
    single = {t: rep["sweep"][t][str(rep["rate"][t])] for t in P.SINGLE}
    for key, by_lr in rep["sweep"].items():
        row = P.BY_KEY[key]
        tried = sorted(float(lr) for lr in by_lr)
        # The sweep, plus one rate beyond an end when the best was there (QUICK allows one such step).
        assert set(P.QUICK["lrs"]) <= set(tried) and len(tried) <= len(P.QUICK["lrs"]) + P.QUICK["extend"]
        if len(tried) > len(P.QUICK["lrs"]):
            extra = (set(tried) - set(P.QUICK["lrs"])).pop()
            assert extra in (pytest.approx(0.005), pytest.approx(0.04)), extra
        if row.group == "single":
            metric = P.METRIC_OF_TASK[row.tasks[0]]
            sign = 1 if metric == "miou" else -1
            best = max(by_lr, key=lambda lr: sign * by_lr[lr][metric])
        else:
            best = max(by_lr, key=lambda lr: delta_m(by_lr[lr], {P.METRIC_OF_TASK[t]: single[t][P.METRIC_OF_TASK[t]]
                                                                 for t in row.tasks}))
        assert rep["sweep"][key][best] == rep["sweep"][key][str(rep["rate"][key])], key


def test_statistics_come_from_the_test_split_of_every_seed(report):
    out, rep = report
    rows = {r["key"]: r for r in rep["rows"]}
    results = {}
    for key in ("semantic", "instance", "depth", "unc-all"):
        for seed in range(P.QUICK["seeds"]):
            path = out / "runs" / key / f"lr{rep['rate'][key]:g}-seed{seed}" / "result.json"
            results[key, seed] = json.loads(path.read_text())
            assert results[key, seed]["job"]["seed"] == seed
    miou = [results["unc-all", s]["test"]["miou"] for s in range(P.QUICK["seeds"])]
    assert rows["unc-all"]["miou"]["mean_ci"] == pytest.approx(mean_interval(miou), nan_ok=True)
    for s in range(P.QUICK["seeds"]):
        ref = {P.METRIC_OF_TASK[t]: results[t, s]["test"][P.METRIC_OF_TASK[t]] for t in P.SINGLE}
        assert rows["unc-all"]["delta_m"]["values"][s] == pytest.approx(delta_m(results["unc-all", s]["test"], ref))
    depth = [results["unc-all", s]["test"]["depth_error"] - results["depth", s]["test"]["depth_error"]
             for s in range(P.QUICK["seeds"])]
    assert rows["unc-all"]["depth_error"]["paired"] == pytest.approx(mean_interval(depth), nan_ok=True)
    equal = rows["equal"]["delta_m"]
    assert equal["vs_uncertainty"] == pytest.approx(
        paired_difference(equal["values"], rows["unc-all"]["delta_m"]["values"]), nan_ok=True)
    conv = results["unc-all", 0]["convergence"]
    assert set(conv["s_final"]) == set(P.SINGLE) and all(math.isfinite(v) for v in conv["s_final"].values())


def test_finished_runs_are_reused(report, tmp_path):
    out, rep = report
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")}
    again = table1(out, quick=True, rows=ROWS, log=lambda msg: None)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")} == stamps
    assert again["rate"] == rep["rate"]


def test_unknown_rows_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown row"):
        table1(tmp_path, quick=True, rows=["nope"])
    with pytest.raises(ValueError, match="at least one seed"):
        table1(tmp_path, quick=True, seeds=0)


def _interrupted(job: dict, at: int, **settings) -> None:
    """Train ``job`` (its settings updated by ``settings``) up to step ``at`` and stop, as Ctrl-C leaves it:
    a checkpoint and a log, no result.json."""
    from fastmtl.commands.table1.runs import job_config, split
    from fastmtl.engine import Trainer

    trainer = Trainer(job_config({**job, "settings": {**job["settings"], **settings}}))
    trainer.data.base = split(job["root"], "train")
    trainer.plot = lambda: []
    trainer.run(until=at)
    assert (Path(job["out"]) / "checkpoint.pt").is_file() and not (Path(job["out"]) / "result.json").exists()


def test_an_interrupted_table_resumes_or_restarts_its_unfinished_runs(report, tmp_path):
    from fastmtl.commands.table1.runs import run_job

    _, rep = report
    base = rep["runs"]["unc-all"][0]["job"]
    job = lambda name: {**base, "out": str(tmp_path / name), "settings": {**base["settings"], "steps": 10}}  # noqa: E731
    whole = run_job(job("whole"))
    assert whole["resumed_at"] == 0

    _interrupted(job("stopped"), 5)  # the same settings: continued from its checkpoint
    with open(tmp_path / "stopped" / "log.jsonl", "a") as f:  # a later attempt, killed before its checkpoint
        f.write(json.dumps({"kind": "train", "step": 9, "losses": {t: 1e6 for t in base["tasks"]},
                            "log_var": {t: 9.0 for t in base["tasks"]}}) + "\n")
    resumed = run_job(job("stopped"))
    assert resumed["resumed_at"] == 5
    assert (resumed["val"], resumed["test"]) == (whole["val"], whole["test"])
    assert resumed["convergence"] == whole["convergence"]  # no step counted twice
    assert all(math.isfinite(v) for v in whole["convergence"]["loss_change"].values())

    _interrupted(job("other"), 5, steps=12)  # other settings: started afresh, not refused
    restarted = run_job(job("other"))
    assert restarted["resumed_at"] == 0 and restarted["test"] == whole["test"]

    killed = tmp_path / "killed"  # a log and config but no checkpoint
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (killed / "log.jsonl").write_text('{"kind": "train", "step": 1}\n')
    assert run_job(job("killed"))["test"] == whole["test"]
