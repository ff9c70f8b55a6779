"""The trainer's weighting options: what each builds, that each trains, and exact resume."""
import json

import pytest
import torch

import fastmtl
from fastmtl.commands.train import add_config_arguments, config_from_args
from fastmtl.engine import TrainConfig, Trainer


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from fastmtl.data.synth import generate

    return generate(tmp_path_factory.mktemp("city"), n=4, n_val=1, size=(32, 64))


def _config(tree, out, **kw):
    base = dict(out=str(out), data=str(tree), size="native", model="tiny", width=4, steps=4, batch_size=2,
                checkpoint_every=0, eval_every=-1, log_every=1, progress=False, augment="flip")
    return TrainConfig(**{**base, **kw})


def test_equal_means_equal_thirds(tree, tmp_path):
    trainer = Trainer(_config(tree, tmp_path, weighting="equal"))
    assert trainer.criterion.weighting.effective_weights() == pytest.approx({t: 1 / 3 for t in fastmtl.TASK_ORDER})
    ones = Trainer(_config(tree, tmp_path / "ones", weighting="fixed", weights=(1, 1, 1)))
    assert ones.criterion.weighting.effective_weights() == {t: 1.0 for t in fastmtl.TASK_ORDER}


@pytest.mark.parametrize("weighting, cls", [("dwa", fastmtl.DynamicWeightAverage),
                                            ("rlw", fastmtl.RandomLossWeighting), ("gradnorm", fastmtl.GradNorm)])
def test_adaptive_weightings_train_and_log_their_weights(tree, tmp_path, weighting, cls):
    trainer = Trainer(_config(tree, tmp_path, weighting=weighting, steps=5))
    w = trainer.criterion.weighting
    assert isinstance(w, cls)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    weights = [r["weight"] for r in records if r["kind"] == "train"]
    assert all(sum(x.values()) == pytest.approx(1.0) for x in weights)
    if weighting == "dwa":
        assert w.period == trainer.steps_per_epoch == 2
        assert int(w.periods) == 2 and weights[-1] != weights[0]  # two epochs seen: weights moved
    if weighting == "rlw":
        assert w.draws == 5 and len({tuple(x.values()) for x in weights}) == 5
    if weighting == "gradnorm":
        assert not torch.equal(w.theta.detach(), torch.zeros(3))  # the optimiser stepped theta
        assert w.theta in trainer.optimizer.param_groups[1]["params"]


@pytest.mark.parametrize("weighting", ["dwa", "rlw", "gradnorm"])
def test_resume_is_bitwise_exact_for_adaptive_weightings(tree, tmp_path, weighting):
    straight = Trainer(_config(tree, tmp_path / "a", weighting=weighting, steps=6))
    straight.run()
    first = Trainer(_config(tree, tmp_path / "b", weighting=weighting, steps=6))
    first.run(until=3)
    resumed = Trainer(_config(tree, tmp_path / "b", weighting=weighting, steps=6, resume=True))
    resumed.run()
    for name, a in {**straight.model.state_dict(), **straight.criterion.state_dict()}.items():
        b = {**resumed.model.state_dict(), **resumed.criterion.state_dict()}[name]
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name


def test_log_variance_clamp_option(tree, tmp_path):
    trainer = Trainer(_config(tree, tmp_path, log_var_clamp=(-0.5, 0.5)))
    assert trainer.criterion.weighting.clamp == (-0.5, 0.5)
    with pytest.raises(ValueError, match="LO < HI"):
        TrainConfig(log_var_clamp=(1.0, -1.0))


def test_command_line_options():
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--weighting", "dwa", "--dwa-temperature", "1.5",
                                              "--gradnorm-alpha", "0.5", "--log-var-clamp=-3,3"]))
    assert (cfg.weighting, cfg.dwa_temperature, cfg.gradnorm_alpha, cfg.log_var_clamp) == ("dwa", 1.5, 0.5, (-3.0, 3.0))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
