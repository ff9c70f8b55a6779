import pytest


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A tiny synthetic city: 4 train and 2 val scenes of 32x64."""
    from fastmtl.data.synth import generate

    return generate(tmp_path_factory.mktemp("city"), n=4, n_val=2, size=(32, 64))
