"""A run never loses data or reports wrong numbers silently: existing runs, changed settings on
resume, divergence, killed checkpoint writes, bad settings."""
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from fastmtl.engine import TrainConfig, Trainer, checkpoint, rundir
from fastmtl.engine.guard import DivergenceError
from fastmtl.engine.resume import ResumeError


def _config(tree, out, **kw):
    base = dict(out=str(out), data=str(tree), size="native", steps=6, batch_size=2, checkpoint_every=0,
                eval_every=-1, log_every=1, progress=False, augment="none")
    return TrainConfig(**{**base, **kw})


def _strict_json_lines(path):
    def no_constants(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")
    return [json.loads(line, parse_constant=no_constants) for line in path.read_text().splitlines()]


# --- an existing run is refused, resumed or explicitly overwritten ---

def test_existing_run_is_refused_without_resume_or_overwrite(tree, tmp_path):
    Trainer(_config(tree, tmp_path, steps=2)).run()
    log_before = (tmp_path / "log.jsonl").read_text()
    with pytest.raises(rundir.RunExistsError, match=r"checkpoint at step 2.*--resume.*--overwrite"):
        Trainer(_config(tree, tmp_path, steps=2))
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 2
    assert (tmp_path / "log.jsonl").read_text() == log_before


def test_overwrite_removes_the_old_run_and_only_it(tree, tmp_path):
    Trainer(_config(tree, tmp_path, steps=3, checkpoint_every=1)).run()
    with rundir.recording(tmp_path, tmp_path / "eval-val"):  # what `fastmtl eval` records
        (tmp_path / "eval-val" / "semantic").mkdir(parents=True)
        (tmp_path / "eval-val" / "eval.json").write_text("{}")
        (tmp_path / "eval-val" / "semantic" / "a_pred.png").write_bytes(b"png")
    (tmp_path / "notes.txt").write_text("mine")  # the user's own files stay
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "keep.png").write_bytes(b"mine")
    (tmp_path / ".checkpoint.pt.killed.tmp").write_bytes(b"partial")

    trainer = Trainer(_config(tree, tmp_path, steps=1, overwrite=True))
    assert trainer.step == 0
    assert not (tmp_path / "eval-val").exists() and not (tmp_path / "checkpoint.pt").exists()
    assert not (tmp_path / ".checkpoint.pt.killed.tmp").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "pred" / "keep.png").exists()
    trainer.run()
    assert [r["step"] for r in _strict_json_lines(tmp_path / "log.jsonl")] == [1]
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 1


def test_resume_and_overwrite_together_are_refused(tree, tmp_path):
    with pytest.raises(ValueError, match="--resume .* or --overwrite .* not both"):
        _config(tree, tmp_path, resume=True, overwrite=True)


def test_checkpoint_path_that_is_a_directory_fails_at_start(tree, tmp_path):
    (tmp_path / "checkpoint.pt").mkdir()
    for resume in (False, True):
        with pytest.raises(checkpoint.CheckpointError, match="checkpoint.pt is a directory"):
            Trainer(_config(tree, tmp_path, resume=resume))


# --- settings changed on resume: applied or refused, never recorded and ignored ---

def test_resume_applies_a_new_learning_rate(tree, tmp_path):
    Trainer(_config(tree, tmp_path, steps=4)).run(until=2)
    with pytest.warns(UserWarning, match=r"lr 0.0025 -> 0.5"):
        resumed = Trainer(_config(tree, tmp_path, steps=4, lr=0.5, resume=True))
    poly = lambda k: 0.5 * (1 - k / 4) ** 0.9  # noqa: E731  the paper's schedule at the new rate
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([poly(2)] * 2, rel=1e-12)
    resumed.run()
    train = [r for r in _strict_json_lines(tmp_path / "log.jsonl") if r["kind"] == "train"]
    assert [r["lr"] for r in train[2:]] == pytest.approx([poly(k) for k in (3, 4)], rel=1e-9, abs=1e-15)
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.5
    assert checkpoint.load(tmp_path / "checkpoint.pt")["config"]["lr"] == 0.5


@pytest.fixture(scope="module")
def one_step_run(tree, tmp_path_factory):
    """A run of 6 steps stopped after the first (a resume that is refused changes nothing)."""
    out = tmp_path_factory.mktemp("one_step")
    Trainer(_config(tree, out, steps=6)).run(until=1)
    return out


def test_resume_applies_new_momentum_and_weight_decay(tree, tmp_path):
    Trainer(_config(tree, tmp_path)).run(until=1)
    with pytest.warns(UserWarning, match="momentum 0.9 -> 0.5, .*weight_decay 0.0001 -> 0.01"):
        resumed = Trainer(_config(tree, tmp_path, momentum=0.5, weight_decay=0.01, resume=True))
    model_group, loss_group = resumed.optimizer.param_groups
    assert model_group["momentum"] == loss_group["momentum"] == 0.5
    assert model_group["weight_decay"] == 0.01 and loss_group["weight_decay"] == 0.0


@pytest.mark.parametrize("change, listed", [
    (dict(batch_size=4), "batch_size 2 -> 4"),
    (dict(seed=1, augment="flip"), "augment 'none' -> 'flip', seed 0 -> 1"),
    (dict(weighting="equal"), "weighting 'uncertainty' -> 'equal'"),
    (dict(steps=8), "steps 6 -> 8"),
    (dict(amp="bf16"), "amp 'none' -> 'bf16'"),
])
def test_resume_refuses_what_it_cannot_apply(tree, one_step_run, change, listed):
    with pytest.raises(ResumeError, match=rf"with changed settings \(checkpoint -> this run\): {listed};"):
        Trainer(_config(tree, one_step_run, resume=True, **change))
    assert checkpoint.load(one_step_run / "checkpoint.pt")["step"] == 1


# --- divergence: stop with a clear message, the last good checkpoint intact ---

def _nan_images_from(trainer, step):
    real = trainer.batches

    def batches():
        for batch in real():
            if trainer.step + 1 >= step:
                batch = {**batch, "image": torch.full_like(batch["image"], float("nan"))}
            yield batch
    return batches


def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tree, tmp_path, monkeypatch):
    trainer = Trainer(_config(tree, tmp_path, checkpoint_every=2))
    monkeypatch.setattr(trainer, "batches", _nan_images_from(trainer, 4))
    with pytest.raises(DivergenceError, match=r"diverged at step 4: parameter .* non-finite .*"
                                              r"checkpoint.pt still holds step 2"):
        trainer.run()
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    records = _strict_json_lines(tmp_path / "log.jsonl")  # strict JSON: no NaN tokens
    assert records[-1]["kind"] == "diverged" and records[-1]["step"] == 4


def test_a_non_finite_loss_alone_stops_at_once(tree, tmp_path, monkeypatch):
    trainer = Trainer(_config(tree, tmp_path))
    real = trainer.objective.forward
    monkeypatch.setattr(trainer.objective, "forward", lambda *a: (real(*a)[0] * math.inf, real(*a)[1]))
    with pytest.raises(DivergenceError, match=r"step 1: .*(non-finite loss total|parameter)"):
        trainer.run()
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("tolerate, stops", [(2, False), (1, True)])
def test_fp16_scaling_tolerates_max_bad_steps(tree, tmp_path, monkeypatch, tolerate, stops):
    # GradScaler skips a step whose gradients are not finite; two such steps in a row here.
    trainer = Trainer(_config(tree, tmp_path, steps=5, amp="fp16", max_bad_steps=tolerate))
    real = trainer.objective.forward

    def nan_loss_on_steps_2_and_3(images, targets):
        total, losses = real(images, targets)
        return (total * float("nan"), losses) if trainer.step in (1, 2) else (total, losses)

    monkeypatch.setattr(trainer.objective, "forward", nan_loss_on_steps_2_and_3)
    if stops:
        with pytest.raises(DivergenceError, match=r"step 3: non-finite loss total nan \(2 consecutive steps\)"):
            trainer.run()
    else:
        trainer.run()
        assert trainer.step == 5
        assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_bad_numbers_are_refused_when_the_config_is_built():
    for kw, match in [(dict(lr=float("nan")), r"lr \(--lr\) must be > 0, got nan"),
                      (dict(lr=-0.1), "lr .* must be > 0"),
                      (dict(weighting="fixed", weights=(float("nan"), 1, 1)), r"weights .* finite"),
                      (dict(weighting="fixed", weights=(-1, 1, 1)), r"weights .* >= 0"),
                      (dict(log_every=0), r"log_every \(--log-every\) must be >= 1"),
                      (dict(width=0), r"width \(--width\) must be >= 1"),
                      (dict(size="0x64"), "positive height and width"),
                      (dict(size="big"), "size .* must be tiny, half, full, native or HxW"),
                      (dict(momentum=float("inf")), "momentum"),
                      (dict(weight_decay=-1e-4), "weight_decay"),
                      (dict(log_var_lr=0.0), "log_var_lr"),
                      (dict(eval_every=-2), "eval_every"),
                      (dict(max_bad_steps=-1), "max_bad_steps"),
                      (dict(synthetic_n=-5), "synthetic_n")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda(tree, tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        Trainer(_config(tree, tmp_path, device="cuda"))


# --- a checkpoint write killed with SIGKILL leaves no stray temporary file ---

def test_killed_checkpoint_write_leaves_no_temp_file_behind(tmp_path):
    target = tmp_path / "checkpoint.pt"
    checkpoint.save({"step": 1}, target)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from fastmtl.engine import checkpoint
        def die_mid_write(obj, f):
            f.write(b"x" * 1000); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = die_mid_write
        checkpoint.save({{"step": 2}}, {str(target)!r})
    """)
    for _ in range(3):
        assert subprocess.run([sys.executable, "-c", script]).returncode == -9
        # each write removes what the kills before it left: one stray file, never more
        assert len(list(tmp_path.glob(".checkpoint.pt.*.tmp"))) == 1
    assert checkpoint.load(target)["step"] == 1
    checkpoint.save({"step": 3}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_stale_temp_files_are_removed_when_a_run_starts(tree, tmp_path):
    Trainer(_config(tree, tmp_path, steps=2)).run(until=1)
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"partial")
    Trainer(_config(tree, tmp_path, steps=2, resume=True))
    assert not list(tmp_path.glob(".checkpoint.pt.*.tmp"))


def test_checkpoint_without_config_names_the_file(tmp_path):
    path = tmp_path / "odd.pt"
    checkpoint.save({"format": "fastmtl-train", "step": 1, "model": {}}, path)
    with pytest.raises(checkpoint.CheckpointError, match=r"odd.pt is an incomplete .* no \['config'"):
        checkpoint.require(checkpoint.load(path), ("step", "config", "model"), path)


def test_guard_names_the_parameter_or_buffer():
    from fastmtl.engine.guard import DivergenceGuard

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    guard = DivergenceGuard({"net.": net}, tolerate=1)
    ok = {"total": torch.tensor(1.0)}
    guard.check(1, ok)
    guard.check(2, {"total": torch.tensor(math.nan)})  # one bad step tolerated
    with pytest.raises(DivergenceError, match=r"step 3: non-finite loss total inf \(2 consecutive steps\)"):
        guard.check(3, {"total": torch.tensor(math.inf)})
    guard.check(4, ok)  # a good step resets the count
    net[1].running_var[1] = math.inf
    with pytest.raises(DivergenceError, match=r"step 5: parameter net.1.running_var holds 1 non-finite value\(s\) \(e.g. inf\)"):
        guard.check(5, ok)
    net[1].running_var[1] = 1.0
    with torch.no_grad():
        net[0].weight[0, 0] = 1e30  # finite, but its norm overflows: diverging all the same
    with pytest.raises(DivergenceError, match="net.0.weight has grown to 1e\\+30"):
        guard.check(6, ok)


def test_overwrite_with_a_mistake_in_the_new_settings_loses_nothing(tree, tmp_path):
    Trainer(_config(tree, tmp_path, steps=1)).run()
    with pytest.raises(ValueError, match="no full batch of 64"):
        Trainer(_config(tree, tmp_path, batch_size=64, overwrite=True))
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 1
