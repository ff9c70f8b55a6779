"""Two processes, gloo on CPU: DDP keeps parameters and log-variances identical on every rank."""
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, tree, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from fastmtl.engine import distributed
    from fastmtl.engine import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(out=out, data=tree, size="native", steps=STEPS, batch_size=1, device="cpu",
                                  checkpoint_every=1, eval_every=0, log_every=1, progress=False))
    initial = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    shard = list(iter(trainer.sampler))
    summary = trainer.run()
    torch.save({
        "initial": initial,
        "params": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
        "log_vars": trainer.criterion.weighting.log_vars.detach().clone(),
        "shard": shard, "metrics": summary["metrics"], "step": trainer.step,
    }, os.path.join(out, f"rank{rank}.pt"))
    distributed.shutdown(trainer.ctx)


def test_two_process_gloo_training(tmp_path):
    from fastmtl.data.synth import generate

    tree = generate(tmp_path / "city", n=4, n_val=3, size=(32, 64))
    out = tmp_path / "run"
    out.mkdir()
    ctx = mp.spawn(_worker, args=(_free_port(), str(tree), str(out)), nprocs=WORLD, join=False)
    deadline = time.time() + 150
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed training did not finish in time")

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["step"] for r in ranks] == [STEPS, STEPS]
    for r in ranks[1:]:
        assert r["params"].keys() == ranks[0]["params"].keys()
        for k in r["params"]:
            assert torch.equal(r["params"][k], ranks[0]["params"][k]), k
        assert torch.equal(r["log_vars"], ranks[0]["log_vars"])
        assert r["metrics"] == pytest.approx(ranks[0]["metrics"], nan_ok=True)
    assert not torch.equal(ranks[0]["log_vars"], torch.zeros(3))  # they trained
    assert any(not torch.equal(ranks[0]["params"][k], ranks[0]["initial"][k]) for k in ranks[0]["params"])
    # Each rank read its own half of the data.
    assert set(ranks[0]["shard"]).isdisjoint(ranks[1]["shard"])
    assert sorted(ranks[0]["shard"] + ranks[1]["shard"]) == list(range(4))
    # Only rank 0 wrote the run's files; the checkpoint holds both ranks' RNG states.
    from fastmtl.engine import checkpoint

    state = checkpoint.load(out / "checkpoint.pt")
    assert state["step"] == STEPS and state["world_size"] == WORLD and len(state["rng"]) == WORLD
    assert torch.equal(state["criterion"]["weighting.log_vars"], ranks[0]["log_vars"])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("rank")) == [
        "checkpoint.pt", "config.json", "log.jsonl", "losses.png", "metrics.png", "sigmas.png"]

    # The sharded, all-reduced validation equals one process evaluating the checkpoint on every image.
    from fastmtl.data.cityscapes import Cityscapes
    from fastmtl.engine import evaluate, load_model

    model, cfg, size = load_model(out / "checkpoint.pt")
    expected = evaluate(model, Cityscapes(tree, "val", size=size, tasks=cfg.tasks))
    assert ranks[0]["metrics"] == pytest.approx(expected, nan_ok=True)
