"""``python -m benchmarks.tune_prepass`` under the interpreter (``--smoke``): every launch shape
of the pre-pass gives the default's normalisers, label check and byte labels. Times nothing."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(ROOT))

from benchmarks import tune_prepass  # noqa: E402


def test_smoke_run_checks_every_shape_against_the_default(tmp_path):
    assert tune_prepass.main(["--out", str(tmp_path), "--smoke"]) == 0
    result = json.loads((tmp_path / "tune_prepass.json").read_text())
    assert [c["dtype"] for c in result["cases"]] == list(tune_prepass.CASES)
    for case in result["cases"]:
        rows = case["rows"]
        assert [(r["vector"], r["warps"], r["max_programs"]) for r in rows] == \
            tune_prepass.CANDIDATES
        assert all("error" not in r and r["correct"] for r in rows), rows
    table = (tmp_path / "tune_prepass.md").read_text()
    assert table.count("| ok |") == 2 * len(tune_prepass.CANDIDATES)
