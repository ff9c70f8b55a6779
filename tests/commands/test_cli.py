"""The command line answers every user mistake with one line (a traceback only with --debug),
prints strict JSON, and names its outputs without collisions."""
import json
import shutil

import pytest
import torch
from PIL import Image

from fastmtl.commands.cli import main


def _fails_in_one_line(capsys, argv, *expected, status=1):
    code = main(argv) if status == 1 else _exit_status(argv)
    err = capsys.readouterr().err
    assert code == status, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _exit_status(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def _train(tree, out, *extra):
    return ["train", "--data", str(tree), "--size", "native", "--steps", "2", "--batch-size", "2",
            "--out", str(out), "--no-progress", "--eval-every", "-1", *extra]


@pytest.mark.parametrize("extra, expected", [
    (["--log-every", "0"], "log_every (--log-every) must be >= 1, got 0"),
    (["--width", "0"], "width (--width) must be >= 1, got 0"),
    (["--size", "0x64"], "positive height and width"),
    (["--size", "wide"], "must be tiny, half, full, native or HxW, got 'wide'"),
    (["--lr", "nan"], "lr (--lr) must be > 0, got nan"),
    (["--lr", "-0.1"], "lr (--lr) must be > 0, got -0.1"),
    (["--weighting", "fixed", "--weights", "nan,1,1"], "weights (--weights) must be finite"),
    (["--batch-size", "100"], "give no full batch of 100"),
    (["--checkpoint-every", "-1"], "checkpoint_every (--checkpoint-every) must be >= 0"),
    (["--log-var-clamp=3,-3"], "log_var_clamp (--log-var-clamp) must be two finite numbers LO,HI with LO < HI, "
                               "got [3.0, -3.0]"),
    (["--log-var-clamp=-inf,3"], "log_var_clamp (--log-var-clamp) must be two finite numbers"),
    (["--weighting", "dwa", "--dwa-temperature", "0"], "dwa_temperature (--dwa-temperature) must be > 0, got 0.0"),
    (["--weighting", "gradnorm", "--gradnorm-alpha", "nan"], "gradnorm_alpha (--gradnorm-alpha) must be >= 0, got nan"),
])
def test_train_mistakes_are_one_line(tree, tmp_path, capsys, extra, expected):
    _fails_in_one_line(capsys, _train(tree, tmp_path / "run", *extra), "fastmtl train: error:", expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda(tree, tmp_path, capsys):
    _fails_in_one_line(capsys, _train(tree, tmp_path, "--device", "cuda"), "CUDA is not available")


@pytest.mark.parametrize("argv, expected", [
    (["train", "--tasks", "semantic,depht"], "unknown task name(s) ['depht']; known tasks are "
                                             "['semantic', 'instance', 'depth']"),
    (["train", "--weights", "a,b"], "expected comma-separated numbers, got 'a,b'"),
    (["train", "--resume", "--overwrite"], "not allowed with argument"),
    (["data", "synth", "--n", "-5"], "argument --n: expected a positive number, got -5"),
    (["data", "synth", "--n", "0"], "expected a positive number, got 0"),
    (["eval", "--checkpoint", "x.pt", "--limit", "0"], "expected a positive number"),
    (["predict", "x.png", "--checkpoint", "x.pt", "--out", "o", "--size", "0x0"], "--size"),
])
def test_argument_mistakes_name_the_valid_values(capsys, argv, expected):
    _fails_in_one_line(capsys, argv, expected, status=2)


def test_checkpoint_mistakes_name_the_file(run, tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    _fails_in_one_line(capsys, ["eval", "--checkpoint", str(missing)], f"no checkpoint at {missing}")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "checkpoint.pt").read_bytes()[:200])
    _fails_in_one_line(capsys, ["eval", "--checkpoint", str(truncated)], f"cannot load checkpoint {truncated}")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["config"]
    no_config = tmp_path / "no_config.pt"
    torch.save(state, no_config)
    for argv in (["eval", "--checkpoint", str(no_config)],
                 ["predict", str(no_config), "--checkpoint", str(no_config), "--out", str(tmp_path / "p")]):
        _fails_in_one_line(capsys, argv, f"{no_config} is an incomplete fastmtl training checkpoint",
                           "no ['config']")
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    _fails_in_one_line(capsys, ["eval", "--checkpoint", str(folder)], "is a directory")


def test_debug_shows_the_traceback(tmp_path, capsys):
    from fastmtl.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoint at"):
        main(["--debug", "eval", "--checkpoint", str(tmp_path / "missing.pt")])
    with pytest.raises(CheckpointError):
        main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--debug"])


def test_unexpected_errors_are_one_line_naming_their_type(capsys, monkeypatch):
    import fastmtl.commands.demo as demo

    monkeypatch.setattr(demo, "main", lambda steps: {}["boom"])
    _fails_in_one_line(capsys, ["demo"], "KeyError: 'boom'", "--debug")


def test_an_existing_run_is_refused_naming_both_flags(tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train(tree, out)) == 0
    before = (out / "checkpoint.pt").read_bytes()
    _fails_in_one_line(capsys, _train(tree, out), "already holds a run", "--resume", "--overwrite")
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(_train(tree, out, "--overwrite", "--steps", "1")) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1


def test_train_prints_strict_json(tree, tmp_path, capsys):
    assert main(_train(tree, tmp_path / "run", "--eval-every", "0")) == 0
    out = capsys.readouterr().out
    text = out[: out.rindex("}") + 1]

    def no_constants(name):
        raise AssertionError(f"printed {name}, which is not JSON")
    metrics = json.loads(text, parse_constant=no_constants)
    assert {"miou", "instance_error", "depth_error"} <= set(metrics)


def test_train_help_shows_defaults(capsys):
    assert _exit_status(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("--steps STEPS optimiser steps (default: 2000)", "(default: 0.0025)",
                    "(default: semantic,instance,depth)", "(default: 10)", "--overwrite"):
        assert default in text, default


def test_predict_keeps_inputs_apart_and_records_its_outputs(tree, run, tmp_path, capsys):
    image = next((tree / "leftImg8bit" / "val").glob("*/*.png"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "x.png")
    out = run / "pred"
    assert main(["predict", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
                 "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out)]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(out / "a" / "x_pred.png"), str(out / "b" / "x_pred.png")]
    assert {"pred/a/x_pred.png", "pred/b/x_pred.png"} <= set((run / "outputs.txt").read_text().split())
    with Image.open(written[0]) as im:
        # input, classes (with a legend), instances, disparity (with a colour bar): titled and enlarged
        assert im.size[0] >= 4 * 400 and im.size[1] >= 250, im.size
