"""Options and fixtures of the pytest-benchmark suite, run as ``pytest benchmarks/``.

A plain ``pytest`` collects only tests/ (testpaths), never this suite.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.implementations import IMPLEMENTATIONS
from benchmarks.problem import DTYPES, SIZES, Problem, parse_size
from benchmarks.run import QUICK_CPU_SIZE


def pytest_addoption(parser):
    group = parser.getgroup("fastmtl benchmarks")
    group.addoption("--bench-device", choices=["cuda", "cpu"],
                    help="default: cuda if available, else cpu")
    group.addoption("--bench-impls", help=f"comma list of {', '.join(IMPLEMENTATIONS)} "
                    "(default all; torch.compile peers run on CPU only when named)")
    group.addoption("--bench-sizes", help=f"comma list of {', '.join(SIZES)} or BxHxW "
                    f"(default: all named sizes on CUDA, {QUICK_CPU_SIZE} on CPU)")
    group.addoption("--bench-small-batch", action="store_true", help="batch of named sizes / 4")
    group.addoption("--bench-classes", default="19,150", help="comma list of C (default 19,150)")
    group.addoption("--bench-dtypes", default="fp32,bf16", help=f"comma list of {', '.join(DTYPES)}")
    group.addoption("--bench-rounds", type=int, help="timed rounds (default 50 on CUDA, 5 on CPU)")


def _device(config) -> torch.device:
    name = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def pytest_generate_tests(metafunc):
    if "problem" not in metafunc.fixturenames:
        return
    config = metafunc.config
    device = _device(config)
    sizes = config.getoption("--bench-sizes")
    sizes = _split(sizes) if sizes else (list(SIZES) if device.type == "cuda" else [QUICK_CPU_SIZE])
    problems = []
    for spec in sizes:
        label, (b, h, w) = parse_size(spec, config.getoption("--bench-small-batch"))
        for c in _split(config.getoption("--bench-classes")):
            for dtype in _split(config.getoption("--bench-dtypes")):
                problems.append(Problem(label, b, h, w, int(c), dtype))
    impls = config.getoption("--bench-impls")
    metafunc.parametrize("problem", problems,
                         ids=[f"{p.shape}-C{p.classes}-{p.dtype}" for p in problems])
    metafunc.parametrize("impl", _split(impls) if impls else list(IMPLEMENTATIONS))


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    return _device(pytestconfig)


@pytest.fixture(scope="session")
def rounds(pytestconfig, device) -> int:
    return pytestconfig.getoption("--bench-rounds") or (50 if device.type == "cuda" else 5)


@pytest.fixture(scope="session")
def explicit_impls(pytestconfig) -> bool:
    return bool(pytestconfig.getoption("--bench-impls"))


_INPUTS: dict = {}


@pytest.fixture
def inputs_for(device):
    """inputs_for(problem, factory) -> (predictions, targets, log_vars); keeps one set alive."""
    def get(problem, factory):
        key = (problem, factory)
        if key not in _INPUTS:
            _INPUTS.clear()
            _INPUTS[key] = factory(problem, device)
        return _INPUTS[key]
    return get
