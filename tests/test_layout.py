"""The package layout (docs/architecture.md), read from the source: which way imports run."""
from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastmtl"
LOSS_LIBRARY = ("fastmtl", "fastmtl.functional", "fastmtl.module", "fastmtl.weighting",
                "fastmtl.tasks", "fastmtl.validation", "fastmtl.reference", "fastmtl._moved")
APPLICATION = ("fastmtl.models", "fastmtl.data", "fastmtl.engine", "fastmtl.commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """fastmtl modules that ``name`` imports anywhere in its body (lazy imports included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def within(name: str, areas) -> bool:
    return any(name == a or name.startswith(a + ".") for a in areas)


def test_every_module_is_read():
    assert {"fastmtl.functional", "fastmtl.ops.fused", "fastmtl.engine.trainer",
            "fastmtl.commands.cli"} <= set(MODULES)
    assert imports_of("fastmtl.engine.trainer") >= {"fastmtl.engine.config", "fastmtl.module"}


def test_loss_library_and_ops_import_nothing_from_the_application():
    for name in MODULES:
        if name in LOSS_LIBRARY or within(name, ["fastmtl.ops"]):
            wrong = {m for m in imports_of(name) if within(m, APPLICATION)}
            assert not wrong, f"{name} imports {sorted(wrong)}"


def test_imports_run_from_commands_to_engine_to_models_and_data():
    below = {"fastmtl.models": ["fastmtl.engine", "fastmtl.commands", "fastmtl.data"],
             "fastmtl.data": ["fastmtl.engine", "fastmtl.commands", "fastmtl.models"],
             "fastmtl.engine": ["fastmtl.commands"]}
    for name in MODULES:
        for area, forbidden in below.items():
            if within(name, [area]):
                wrong = {m for m in imports_of(name) if within(m, forbidden)}
                assert not wrong, f"{name} imports {sorted(wrong)}"


def test_no_import_circles():
    graph = {name: imports_of(name) for name in MODULES}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_modules_stay_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > 400} == {}


@pytest.mark.parametrize("old", ["fastmtl.loss", "fastmtl.train", "fastmtl.evaluate", "fastmtl.cli"])
def test_old_module_paths_still_import_with_a_warning(old):
    from fastmtl._moved import MOVED

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.") + " has moved to"):
        module = importlib.import_module(old)
    for new in MOVED[old]:
        public = [k for k in vars(importlib.import_module(new)) if not k.startswith("_")]
        assert all(getattr(module, k) is getattr(sys.modules[new], k) for k in public)


def test_every_moved_path_points_at_a_module():
    from fastmtl._moved import MOVED

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for new in sorted({n for targets in MOVED.values() for n in targets}):
            importlib.import_module(new)
