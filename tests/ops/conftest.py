"""Fixtures shared by the op tests."""
import pytest


@pytest.fixture(params=[None, 16], ids=["warps-share-classes", "class-chunks"])
def class_chunks(request):
    """Both layouts of the upsample loss's semantic launch at C > 32: the warps share out the
    classes, or each thread takes them in chunks of 16 (``class_chunk=16``, the default)."""
    from fastmtl.ops.upsample_tiles import use

    with use(class_chunk=request.param):
        yield request.param


@pytest.fixture
def problems(monkeypatch):
    """The fused op's problems built during a test: which layout each call took. An eager
    CUDA call keeps its problem for later calls with the same launch key, so the kept
    calls are forgotten before and after the test (every call builds its own)."""
    from fastmtl.ops import common, fused

    built = []

    class Recorded(fused.Problem):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            built.append(self)
            common.clear_call_caches()  # the next call builds its problem too

    monkeypatch.setattr(fused, "Problem", Recorded)
    common.clear_call_caches()
    yield built
    common.clear_call_caches()
