"""Strict JSON for logs and command output: NaN and infinities become null."""
from __future__ import annotations

import json
import math


def finite(obj):
    """``obj`` with every non-finite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` that never writes NaN or Infinity (which JSON does not have)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
