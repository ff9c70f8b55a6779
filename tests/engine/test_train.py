"""Trainer: exact resume, interruption, optimiser set-up, logs and plots; CLI smoke runs."""
import json
import math
import os
import re
import signal

import pytest
import torch
from PIL import Image

from fastmtl.engine import checkpoint
from fastmtl.engine import TrainConfig, Trainer
from helpers import LateLabelChecks


def _config(tree, out, **kw):
    base = dict(out=str(out), data=str(tree), size="native", steps=6, batch_size=2, checkpoint_every=0,
                eval_every=-1, log_every=1, progress=False, augment="flip")
    return TrainConfig(**{**base, **kw})


def _state(trainer):
    return {**trainer.model.state_dict(), **{f"loss.{k}": v for k, v in trainer.criterion.state_dict().items()}}


def test_resume_is_bitwise_exact(tree, tmp_path):
    straight = Trainer(_config(tree, tmp_path / "a"))
    straight.run()

    first = Trainer(_config(tree, tmp_path / "b"))
    first.run(until=3)  # mid-epoch: 4 images, batch 2
    assert checkpoint.load(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    resumed = Trainer(_config(tree, tmp_path / "b", resume=True))
    assert resumed.step == 3
    resumed.run()

    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["loss.weighting.log_vars"], torch.zeros(3))  # they did train
    # The resumed log continues the first one without gaps or repeats.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_ctrl_c_stops_at_a_step_boundary_and_checkpoints(tree, tmp_path, monkeypatch):
    trainer = Trainer(_config(tree, tmp_path))
    real_step = trainer.train_step

    def step_then_signal(batch):
        out = real_step(batch)
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(trainer, "train_step", step_then_signal)
    with pytest.raises(KeyboardInterrupt, match="step 2"):
        trainer.run()
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_exception_still_checkpoints_last_complete_step(tree, tmp_path, monkeypatch):
    trainer = Trainer(_config(tree, tmp_path, checkpoint_every=100))
    real_step = trainer.train_step

    def fail_on_fourth(batch):
        if trainer.step == 3:
            raise RuntimeError("boom")
        return real_step(batch)

    monkeypatch.setattr(trainer, "train_step", fail_on_fourth)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run()
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["step"] == 3
    assert len(state["rng"]) == 1 and set(state["rng"][0]) >= {"python", "numpy", "torch"}


def test_a_bad_label_left_by_the_last_step_is_raised_by_the_run(tree, tmp_path, monkeypatch):
    from fastmtl.ops import label_check

    LateLabelChecks(monkeypatch)  # read one call late, as on CUDA
    trainer = Trainer(_config(tree, tmp_path, steps=2))
    real_step = trainer.train_step

    def step_leaving_a_bad_label(batch):
        out = real_step(batch)
        if trainer.step == 2:  # what the fused loss leaves behind on CUDA: (count, flat index, value)
            row = label_check.buffer(torch.empty(0), True)
            row[:3] = torch.tensor([1, 70, 40])
            label_check.record(row, 19, 255, (2, 32, 64))
        return out

    monkeypatch.setattr(trainer, "train_step", step_leaving_a_bad_label)
    with pytest.raises(ValueError, match=r"40.*targets\['semantic'\]\[0, 1, 6\]"):
        trainer.run()
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 2
    assert not label_check._pending


def test_optimiser_and_schedule_follow_the_paper(tree, tmp_path):
    trainer = Trainer(_config(tree, tmp_path, steps=4))
    model_group, loss_group = trainer.optimizer.param_groups
    assert model_group["weight_decay"] == 1e-4 and loss_group["weight_decay"] == 0.0
    assert loss_group["params"] == [trainer.criterion.weighting.log_vars]
    assert model_group["nesterov"] and model_group["momentum"] == 0.9
    lrs = []
    for _ in range(3):
        trainer.train_step(next(iter(trainer.batches())))
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([2.5e-3 * (1 - k / 4) ** 0.9 for k in (1, 2, 3)], rel=1e-6)


def test_logs_and_plots(tree, tmp_path):
    summary = Trainer(_config(tree, tmp_path, steps=4, eval_every=2, log_every=2)).run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == [2, 4] and [r["step"] for r in val] == [2, 4]
    assert set(train[0]["sigma"]) == {"semantic", "instance", "depth"}
    assert {"miou", "instance_error", "depth_error"} <= set(val[-1]["metrics"])
    for key in ("miou", "instance_error", "depth_error"):
        assert summary["metrics"][key] == pytest.approx(val[-1]["metrics"][key])
    for name in ("losses.png", "sigmas.png", "metrics.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 100


@pytest.mark.parametrize("kw, tasks", [
    (dict(weighting="fixed", weights=(0.89, 0.01, 0.1)), ("semantic", "instance", "depth")),
    (dict(weighting="single", tasks=("depth",)), ("depth",)),
    (dict(weighting="uncertainty", tasks=("instance", "semantic")), ("semantic", "instance")),
    (dict(weighting="equal", amp="bf16"), ("semantic", "instance", "depth")),
])
def test_weightings_and_task_subsets(tree, tmp_path, kw, tasks):
    trainer = Trainer(_config(tree, tmp_path, steps=1, **kw))
    trainer.run()
    assert trainer.model.tasks == tasks
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert set(record["losses"]) == set(tasks)
    assert torch.isfinite(torch.tensor(record["total"]))
    if kw["weighting"] == "fixed":
        assert record["weight"] == {"semantic": 0.89, "instance": 0.01, "depth": 0.1}


def test_upsample_in_loss_trains_like_upsampled_heads(tree, tmp_path):
    runs = [Trainer(_config(tree, tmp_path / str(flag), steps=2, upsample_in_loss=flag)) for flag in (False, True)]
    for t in runs:
        t.run()
    a, b = (_state(t) for t in runs)
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-5, atol=1e-6), k


def test_config_errors():
    with pytest.raises(ValueError, match="one weight per task"):
        TrainConfig(weighting="fixed", weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="single"):
        TrainConfig(weighting="single")
    with pytest.raises(ValueError, match="unknown task"):
        TrainConfig(tasks=("semantic", "normals"))
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")
    for clamp in ((1.0, 1.0), (2.0, -2.0), (-math.inf, 3.0), (math.nan, 1.0), (1.0,), (0.0, 1.0, 2.0), "12"):
        with pytest.raises(ValueError, match=r"log_var_clamp \(--log-var-clamp\) must be two finite numbers"):
            TrainConfig(log_var_clamp=clamp)
    for value in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=re.escape(f"dwa_temperature (--dwa-temperature) must be > 0, got {value}")):
            TrainConfig(dwa_temperature=value)
    for value in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=re.escape(f"gradnorm_alpha (--gradnorm-alpha) must be >= 0, got {value}")):
            TrainConfig(gradnorm_alpha=value)
    assert TrainConfig(log_var_clamp=[-3, 3], gradnorm_alpha=0.0).log_var_clamp == (-3.0, 3.0)


def test_resume_refuses_a_different_setup(tree, tmp_path):
    Trainer(_config(tree, tmp_path, steps=1)).run()
    with pytest.raises(ValueError, match="weighting"):
        Trainer(_config(tree, tmp_path, steps=1, weighting="equal", resume=True))


def test_cli_train_eval_predict(tree, tmp_path, capsys):
    from fastmtl.commands.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(tree), "--size", "native", "--steps", "2", "--batch-size", "2",
                 "--out", str(run), "--no-progress", "--log-every", "1"]) == 0
    assert (run / "checkpoint.pt").is_file() and (run / "losses.png").is_file()

    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--official", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert {"miou", "instance_error", "depth_error", "official_miou", "official_ap"} <= set(metrics)
    assert 0.0 <= metrics["official_miou"] <= 1.0

    image = next((tree / "leftImg8bit" / "val").glob("*/*.png"))
    assert main(["predict", str(image), "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "pr")]) == 0
    with Image.open(tmp_path / "pr" / f"{image.stem}_pred.png") as im:
        assert im.size[0] >= 4 * 400 and im.size[1] >= 200  # four titled panels, enlarged from 32x64
