"""Module paths of fastmtl 0.1.0 that moved in 0.2.0.

They stay importable for one release: importing one warns (DeprecationWarning)
and gives a module holding the names of the modules it was split into.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED: dict[str, tuple[str, ...]] = {
    "fastmtl.loss": ("fastmtl.module",),
    "fastmtl.ops_upsample": ("fastmtl.ops.upsample",),
    "fastmtl.train": ("fastmtl.engine.config", "fastmtl.engine.sampling", "fastmtl.engine.objective",
                      "fastmtl.engine.trainer", "fastmtl.commands.train"),
    "fastmtl.evaluate": ("fastmtl.engine.evaluation", "fastmtl.commands.eval"),
    "fastmtl.checkpoint": ("fastmtl.engine.checkpoint",),
    "fastmtl.distributed": ("fastmtl.engine.distributed",),
    "fastmtl.metrics": ("fastmtl.engine.metrics",),
    "fastmtl.plots": ("fastmtl.engine.plots",),
    "fastmtl.postprocess": ("fastmtl.engine.postprocess",),
    "fastmtl.cityscapes_eval": ("fastmtl.engine.cityscapes_eval",),
    "fastmtl.cli": ("fastmtl.commands.cli",),
    "fastmtl.predict": ("fastmtl.commands.predict",),
    "fastmtl.experiments": ("fastmtl.commands.experiments",),
    "fastmtl.demo": ("fastmtl.commands.demo",),
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths (after every real module) and fills them from the new ones."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} has moved to {' and '.join(new)}; the old path will be "
                      "removed in the next release", DeprecationWarning, stacklevel=2)
        for name in new:
            public = vars(importlib.import_module(name))
            module.__dict__.update({k: v for k, v in public.items() if not k.startswith("__")})


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
