"""No silent data loss, no silent wrong numbers: each way a careless or hostile user lost a run or
got a wrong number, replayed on both loss backends (triton under the interpreter) so none of it
comes back. Tiny images and a step or two per run keep it quick.

PyTorch is the oracle wherever it defines the behaviour (F.cross_entropy, F.l1_loss,
F.interpolate).
"""
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fastmtl
from fastmtl.commands.cli import main
from fastmtl.engine import TrainConfig, Trainer, checkpoint, rundir
from fastmtl.engine.guard import DivergenceError
from fastmtl.engine.resume import ResumeError
from helpers import make_inputs

BACKENDS = ["reference", "triton"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from fastmtl.data.synth import generate

    return generate(tmp_path_factory.mktemp("city"), n=4, n_val=2, size=(16, 32))


def _config(tree, out, backend, **kw):
    # The full-resolution loss: the fused op is the quicker of the two under the interpreter.
    base = dict(out=str(out), data=str(tree), size="native", steps=2, batch_size=2, eval_every=-1,
                checkpoint_every=0, log_every=1, progress=False, augment="none", backend=backend,
                upsample_in_loss=False)
    return TrainConfig(**{**base, **kw})


def _strict_json(text):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


# --- 1. an existing run is never replaced silently ---------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_1_run_is_refused_then_overwritten_on_request(tree, tmp_path, backend):
    Trainer(_config(tree, tmp_path, backend, steps=1)).run()
    with rundir.recording(tmp_path, tmp_path / "eval-val"):
        (tmp_path / "eval-val").mkdir()
        (tmp_path / "eval-val" / "eval.json").write_text("{}")
    log = (tmp_path / "log.jsonl").read_text()
    with pytest.raises(rundir.RunExistsError, match="--resume.*--overwrite"):
        Trainer(_config(tree, tmp_path, backend, steps=1))
    assert (tmp_path / "log.jsonl").read_text() == log and checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 1
    Trainer(_config(tree, tmp_path, backend, steps=1, seed=1, overwrite=True)).run()
    assert not (tmp_path / "eval-val").exists()  # the old run's eval went with it
    assert checkpoint.load(tmp_path / "checkpoint.pt")["config"]["seed"] == 1


# --- 2. changed settings on resume are applied or refused, never recorded and ignored ------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_2_resume_applies_a_new_lr_and_refuses_a_new_batch(tree, tmp_path, backend):
    Trainer(_config(tree, tmp_path, backend, steps=3)).run(until=1)
    with pytest.raises(ResumeError, match="batch_size 2 -> 1"):
        Trainer(_config(tree, tmp_path, backend, steps=3, batch_size=1, resume=True))
    with pytest.warns(UserWarning, match="lr 0.0025 -> 0.5"):
        resumed = Trainer(_config(tree, tmp_path, backend, steps=3, lr=0.5, resume=True))
    resumed.run(until=2)
    last = [_strict_json(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 2 and last["lr"] == pytest.approx(0.5 * (1 - 2 / 3) ** 0.9)  # poly from 0.5
    assert checkpoint.load(tmp_path / "checkpoint.pt")["config"]["lr"] == 0.5


# --- 3. divergence stops training; nothing non-finite is saved or printed -----------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_3_nan_stops_training_and_keeps_the_last_good_checkpoint(tree, tmp_path, backend, monkeypatch):
    trainer = Trainer(_config(tree, tmp_path, backend, checkpoint_every=1))
    real = trainer.batches

    def nan_from_step_2():
        for batch in real():
            yield {**batch, "image": batch["image"] * (math.nan if trainer.step >= 1 else 1.0)}

    monkeypatch.setattr(trainer, "batches", nan_from_step_2)
    with pytest.raises(DivergenceError, match=r"step 2: .*still holds step 1"):
        trainer.run()
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    for line in (tmp_path / "log.jsonl").read_text().splitlines():
        _strict_json(line)


@pytest.mark.parametrize("backend", BACKENDS)
def test_3_fp16_scaling_skips_up_to_max_bad_steps(tree, tmp_path, backend, monkeypatch):
    trainer = Trainer(_config(tree, tmp_path, backend, amp="fp16", max_bad_steps=0))
    real = trainer.objective.forward
    monkeypatch.setattr(trainer.objective, "forward", lambda i, t: (real(i, t)[0] * math.nan, {}))
    with pytest.raises(DivergenceError, match="step 1: non-finite loss total nan"):
        trainer.run()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # GradScaler skipped it


@pytest.mark.parametrize("argv", [["--lr", "nan"], ["--weighting", "fixed", "--weights", "nan,1,1"],
                                  ["--lr", "-1"], ["--log-var-lr", "inf"]])
def test_3_bad_numbers_are_refused_before_training(tree, tmp_path, capsys, argv):
    assert main(["train", "--data", str(tree), "--out", str(tmp_path), *argv]) == 1
    assert "must be" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# --- 4. class_weight: finite, >= 0, positive sum, on both backends ------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weight", [[math.nan, 1, 1, 1, 1], [-1.0] * 5, [0.0] * 5])
def test_4_bad_class_weight_is_an_error_not_a_dropped_task(backend, weight):
    pred, tgt = make_inputs(C=5)
    with pytest.raises(ValueError, match="class_weight must"):
        fastmtl.multitask_loss(pred, tgt, class_weight=torch.tensor(weight), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_4_valid_class_weight_is_cross_entropy(backend):
    pred, tgt = make_inputs(C=5, tasks=("semantic",), seed=2)
    w = torch.tensor([0.5, 0.0, 2.0, 1.0, 3.0])
    out = fastmtl.multitask_loss(pred, tgt, class_weight=w, backend=backend)
    expected = F.cross_entropy(pred["semantic"], tgt["semantic"], weight=w, ignore_index=255)
    torch.testing.assert_close(out.losses["semantic"], expected)


# --- 5. ignore_index: an int the labels can hold ------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, value, error", [
    (torch.uint8, -100, ValueError), (torch.uint8, 256, ValueError), (torch.int64, 1.5, TypeError),
    (torch.int64, None, TypeError), (torch.int64, True, TypeError)])
def test_5_ignore_index_is_checked(backend, dtype, value, error):
    pred, tgt = make_inputs(C=5, target_dtype=dtype)
    with pytest.raises(error, match="ignore_index"):
        fastmtl.multitask_loss(pred, tgt, ignore_index=value, backend=backend)


# --- 6 and 7. the backends agree with PyTorch ------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_6_zero_height_head_with_upsample_is_an_error(backend):
    # F.interpolate raises "Input and output sizes should be greater than 0".
    pred = {"semantic": torch.randn(1, 5, 0, 3, requires_grad=True)}
    tgt = {"semantic": torch.zeros(1, 8, 8, dtype=torch.long)}
    with pytest.raises((RuntimeError, ValueError)):
        fastmtl.multitask_loss(pred, tgt, upsample="bilinear", backend=backend)


def _nan_at_ignored_pixels(H=4, W=6, C=5):
    pred, tgt = make_inputs(C=C, H=H, W=W, tasks=("semantic",), ignore_frac=0.5, seed=4)
    x, ignored = pred["semantic"], (tgt["semantic"] == 255).nonzero()
    x[ignored[0, 0], :, ignored[0, 1], ignored[0, 2]] = math.nan
    x[ignored[1, 0], 0, ignored[1, 1], ignored[1, 2]] = math.inf
    return x, tgt


@pytest.mark.parametrize("backend", BACKENDS)
def test_7_gradient_at_ignored_non_finite_logits_is_cross_entropys(backend):
    # F.cross_entropy's gradient is NaN at an ignored pixel whose logits are NaN or inf.
    x, tgt = _nan_at_ignored_pixels()
    oracle = x.clone().requires_grad_()
    F.cross_entropy(oracle, tgt["semantic"], ignore_index=255).backward()
    ours = x.clone().requires_grad_()
    fastmtl.multitask_loss({"semantic": ours}, tgt, weights=[1.0], backend=backend).total.backward()
    torch.testing.assert_close(ours.grad, oracle.grad, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_7_gradient_at_ignored_non_finite_logits_with_upsample(backend):
    # The oracle: F.interpolate, then F.cross_entropy; NaN reaches the gradient as there.
    x = torch.randn(2, 5, 2, 3, generator=torch.Generator().manual_seed(1))
    x[0, :, 0, 0], x[1, 0, 0, 0] = math.nan, math.inf  # head pixels whose 4x footprint ...
    tgt = torch.randint(0, 5, (2, 8, 12), generator=torch.Generator().manual_seed(1))
    tgt[:, :6, :6] = 255  # ... holds ignored pixels only: the loss stays finite
    oracle = x.clone().requires_grad_()
    loss = F.cross_entropy(F.interpolate(oracle, size=(8, 12), mode="bilinear"), tgt, ignore_index=255)
    assert torch.isfinite(loss) and oracle.grad is None
    loss.backward()
    ours = x.clone().requires_grad_()
    fastmtl.multitask_loss({"semantic": ours}, {"semantic": tgt}, weights=[1.0], upsample="bilinear",
                           backend=backend).total.backward()
    torch.testing.assert_close(ours.grad, oracle.grad, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_7_targets_that_require_grad_get_l1_gradients(backend):
    # F.l1_loss differentiates its target too: d/dz mean|d - z| = -sign(d - z) / N.
    pred, tgt = make_inputs(C=5, seed=6)
    z = tgt["depth"].clone().requires_grad_()
    g = tgt["instance"].clone().requires_grad_()
    fastmtl.multitask_loss(pred, {**tgt, "depth": z, "instance": g}, weights=[0.0, 1.0, 1.0],
                           backend=backend).total.backward()
    z_oracle, g_oracle = tgt["depth"].clone().requires_grad_(), tgt["instance"].clone().requires_grad_()
    valid, mask = tgt["depth"] > 0, tgt["instance_mask"].unsqueeze(1).expand_as(g)
    (F.l1_loss(pred["depth"][valid], z_oracle[valid])
     + F.l1_loss(pred["instance"][mask], g_oracle[mask], reduction="sum") / tgt["instance_mask"].sum()).backward()
    assert z.grad is not None and g.grad is not None
    torch.testing.assert_close(z.grad, z_oracle.grad)
    torch.testing.assert_close(g.grad, g_oracle.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_7_class_weight_that_requires_grad_is_refused_like_cross_entropy(backend):
    # F.cross_entropy: "not differentiable with respect to argument 'weight'".
    pred, tgt = make_inputs(C=5, seed=7)
    pred = {k: v.requires_grad_() for k, v in pred.items()}
    with pytest.raises((RuntimeError, ValueError), match="weight"):
        fastmtl.multitask_loss(pred, tgt, class_weight=torch.ones(5, requires_grad=True),
                               backend=backend).total.backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_7_per_task_loss_dtype_follows_each_prediction(backend):
    # F.cross_entropy of fp32 logits is fp32, F.l1_loss of fp64 depth is fp64; their sum is fp64.
    pred, tgt = make_inputs(C=5, seed=8)
    pred["depth"] = pred["depth"].double()
    out = fastmtl.multitask_loss(pred, tgt, backend=backend)
    assert {k: v.dtype for k, v in out.losses.items()} == {
        "semantic": torch.float32, "instance": torch.float32, "depth": torch.float64}
    assert out.total.dtype == torch.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_7_empty_batch_with_upsample_has_zero_gradients(backend):
    # F.interpolate + the losses of an empty batch give empty (not missing) gradients.
    pred = {"semantic": torch.randn(0, 5, 2, 3, requires_grad=True),
            "depth": torch.randn(0, 1, 2, 3, requires_grad=True)}
    tgt = {"semantic": torch.zeros(0, 8, 12, dtype=torch.long), "depth": torch.zeros(0, 1, 8, 12)}
    out = fastmtl.multitask_loss(pred, tgt, upsample="bilinear", backend=backend)
    out.total.backward()
    assert out.total.item() == 0.0
    assert all(p.grad is not None and p.grad.shape == p.shape for p in pred.values())


# --- 8. every user mistake is one line from the CLI ----------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_8_mistakes_are_one_line(tree, tmp_path, capsys, backend):
    good = torch.load(_trained(tree, tmp_path / "run"), weights_only=True)
    del good["config"]
    torch.save(good, tmp_path / "no_config.pt")
    (tmp_path / "short.pt").write_bytes((tmp_path / "run" / "checkpoint.pt").read_bytes()[:100])
    train = ["train", "--data", str(tree), "--out", str(tmp_path / "new"), "--backend", backend]
    for argv, says in [
        (["eval", "--checkpoint", str(tmp_path / "none.pt")], "no checkpoint at"),
        (["eval", "--checkpoint", str(tmp_path / "short.pt")], "cannot load checkpoint"),
        (["eval", "--checkpoint", str(tmp_path / "no_config.pt")], "no_config.pt is an incomplete"),
        ([*train, "--log-every", "0"], "log_every"),
        ([*train, "--width", "0"], "width"),
        ([*train, "--size", "0x8"], "size"),
        ([*train, "--backend", "cuda"], "backend"),
    ] + ([] if torch.cuda.is_available() else [([*train, "--device", "cuda"], "CUDA is not available")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "Traceback" not in err, err


def _trained(tree, out) -> Path:
    Trainer(_config(tree, out, "reference", steps=1)).run()
    return out / "checkpoint.pt"


# --- 9. temporary files, odd paths, inputs checked at construction ------------------------------

def test_9_killed_writes_leave_no_temp_files_and_odd_paths_fail_early(tree, tmp_path, capsys):
    (tmp_path / ".checkpoint.pt.k1.tmp").write_bytes(b"killed")
    (tmp_path / ".checkpoint.pt.k2.tmp").write_bytes(b"killed")
    checkpoint.save({"step": 1}, tmp_path / "checkpoint.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    (tmp_path / "run" / "checkpoint.pt").mkdir(parents=True)
    with pytest.raises(checkpoint.CheckpointError, match="is a directory"):
        Trainer(_config(tree, tmp_path / "run", "reference", resume=True))
    with pytest.raises(SystemExit):
        main(["data", "synth", "--n", "-5", "--out", str(tmp_path / "synth")])
    assert "expected a positive number, got -5" in capsys.readouterr().err


def test_9_predict_keeps_same_named_images_apart(tree, tmp_path, capsys):
    ckpt = _trained(tree, tmp_path / "run")  # predict runs the network alone: no loss backend
    image = next((tree / "leftImg8bit" / "val").glob("*/*.png"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "x.png")
    assert main(["predict", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
                 "--checkpoint", str(ckpt), "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "p" / d / "x_pred.png") for d in ("a", "b")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_9_fixed_weighting_and_constructor_arguments(backend):
    pred, tgt = make_inputs(C=5)
    loss = fastmtl.MultiTaskLoss(weighting=fastmtl.FixedWeighting({"depth": 1.0}), backend=backend)
    with pytest.raises(ValueError, match="no weight for task"):  # as UncertaintyWeighting does
        loss(pred, tgt)
    with pytest.raises(ValueError, match="no log-variance for task"):
        fastmtl.MultiTaskLoss(tasks=["depth"], backend=backend)(pred, tgt)
    for kwargs in (dict(upsample="bicubic"), dict(ignore_index=None), dict(ignore_index=0.5),
                   dict(class_weight=torch.tensor([1.0, math.nan]))):
        with pytest.raises((TypeError, ValueError)):
            fastmtl.MultiTaskLoss(backend=backend, **kwargs)
    with pytest.raises(ValueError, match="unknown backend"):
        fastmtl.MultiTaskLoss(backend="gpu")


# --- 10. what a new user sees --------------------------------------------------------------------

def test_10_readme_main_command_evaluates_along_training():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = re.search(r"^fastmtl train --out runs/synth .*$", readme, flags=re.M).group(0)
    steps = int(re.search(r"--steps (\d+)", command).group(1))
    assert 0 < int(re.search(r"--eval-every (\d+)", command).group(1)) < steps


@pytest.mark.parametrize("backend", BACKENDS)
def test_10_metrics_plot_has_points_along_training_in_the_logs_units(tree, tmp_path, backend, monkeypatch):
    from fastmtl.engine import plots

    figures, real_save = {}, plots._save

    def keep(fig, path):
        figures[path.name] = fig
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    Trainer(_config(tree, tmp_path, backend, eval_every=1)).run()
    logged = [_strict_json(line)["metrics"]["miou"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
              if '"val"' in line]
    ax = next(a for a in figures["metrics.png"].axes if "mIoU" in a.get_title())
    assert "fraction" in ax.get_title()
    assert list(ax.lines[0].get_ydata()) == pytest.approx(logged) and len(logged) == 2


def test_10_train_help_and_task_names(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: 2000)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--tasks", "semantic,depht"])
    assert "known tasks are ['semantic', 'instance', 'depth']" in capsys.readouterr().err


def test_10_predict_picture_is_titled_with_legend_and_colour_bar(tree, tmp_path):
    from fastmtl.commands.predict import panels, render

    rgb = torch.randint(0, 255, (16, 32, 3), dtype=torch.uint8).numpy()
    preds = {"semantic": torch.randn(1, 19, 16, 32), "instance": torch.randn(1, 2, 16, 32),
             "depth": torch.rand(1, 1, 16, 32)}
    shown = panels(rgb, preds)
    assert [p["title"].split(" ")[0] for p in shown] == ["input", "semantic", "instances", "disparity"]
    assert shown[1]["classes"] == sorted(set(preds["semantic"][0].argmax(0).flatten().tolist()))
    picture = render(rgb, preds)
    assert picture.shape[1] >= 4 * 400 and picture.shape[0] >= 250  # enlarged from 16x32
