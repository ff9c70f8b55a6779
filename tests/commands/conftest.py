import pytest


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A tiny synthetic city: 4 train and 2 val scenes of 32x64."""
    from fastmtl.data.synth import generate

    return generate(tmp_path_factory.mktemp("city"), n=4, n_val=2, size=(32, 64))


@pytest.fixture(scope="module")
def run(tree, tmp_path_factory):
    """A run directory with a one-step checkpoint."""
    from fastmtl.engine import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("run")
    Trainer(TrainConfig(out=str(out), data=str(tree), size="native", steps=1, batch_size=2, eval_every=-1,
                        progress=False)).run()
    return out
