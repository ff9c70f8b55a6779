"""The rows of Table 1, the budgets, and how a row's learning rate is chosen.

Every row trains the same network with the same data, steps, batch and
optimiser; only the tasks and the weighting differ. The weighting also sets
the overall scale of the gradient (equal thirds give each task a third of
what it gets alone; uncertainty weighting scales task k by about
r_k / L_k), so a shared learning rate would compare learning rates, not
weightings. The protocol therefore gives every row the same small sweep:

1. sweep: each row (and each candidate of the fixed-weight grid) trains with
   seed 0 at every rate of ``lrs``;
2. select on the validation split: single-task rows by their own metric,
   multi-task rows by delta-m against the selected single-task rows (same
   seed, same split); where a row's best rate is the highest or lowest it
   tried, it also tries the next rate beyond (``lrs``' ratio), up to
   ``extend`` times, so that every row's optimum is bracketed; the grid
   row is the candidate with the best delta-m;
3. seeds: seeds 1 .. seeds-1 train at the selected rate.

Reported numbers come from the test split, which no choice looked at, so
selecting on seed 0 does not bias them; all seeds of a row share its rate.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastmtl.engine.metrics import HIGHER_IS_BETTER, delta_m
from fastmtl.tasks import TASK_ORDER

ALL = TASK_ORDER


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    tasks: tuple[str, ...]
    weighting: str                      # a TrainConfig weighting
    weights: tuple[float, ...] | None = None
    group: str = "fixed"                # single, fixed, grid (a candidate only), uncertainty, adaptive


def _grid(key, w):
    total = sum(w)
    weights = tuple(round(v / total, 4) for v in w)
    return Row(key, "Fixed " + " / ".join(f"{v:g}" for v in weights), ALL, "fixed", weights, "grid")


ROWS = (
    Row("semantic", "Segmentation only", ("semantic",), "single", group="single"),
    Row("instance", "Instance only", ("instance",), "single", group="single"),
    Row("depth", "Depth only", ("depth",), "single", group="single"),
    Row("equal", "Unweighted sum (equal thirds)", ALL, "equal"),
    Row("ones", "Weights 1, 1, 1", ALL, "fixed", (1.0, 1.0, 1.0)),
    Row("paper", "Paper's approx. optimal", ALL, "fixed", (0.89, 0.01, 0.1)),
    # The grid search: one task up-weighted four-fold at a time, beside equal thirds and the paper's set.
    _grid("grid-sem", (4, 1, 1)),
    _grid("grid-inst", (1, 4, 1)),
    _grid("grid-depth", (1, 1, 4)),
    Row("unc-sem-inst", "2 task uncertainty (sem + inst)", ("semantic", "instance"), "uncertainty",
        group="uncertainty"),
    Row("unc-sem-depth", "2 task uncertainty (sem + depth)", ("semantic", "depth"), "uncertainty",
        group="uncertainty"),
    Row("unc-inst-depth", "2 task uncertainty (inst + depth)", ("instance", "depth"), "uncertainty",
        group="uncertainty"),
    Row("unc-all", "3 task uncertainty", ALL, "uncertainty", group="uncertainty"),
    Row("dwa", "DWA (Liu et al. 2019)", ALL, "dwa", group="adaptive"),
    Row("rlw", "RLW (Lin et al. 2022)", ALL, "rlw", group="adaptive"),
    Row("gradnorm", "GradNorm (Chen et al. 2018)", ALL, "gradnorm", group="adaptive"),
)
BY_KEY = {r.key: r for r in ROWS}
SINGLE = {t: t for t in TASK_ORDER}      # the single-task row of each task
GRID_CANDIDATES = ("equal", "paper", "grid-sem", "grid-inst", "grid-depth")
GRID_KEY = "grid"                        # the reported grid-search row: the best candidate
METRIC_OF_TASK = {"semantic": "miou", "instance": "instance_error", "depth": "depth_error"}

# The CPU table: about 90 runs of 0.06 to 0.15 s of CPU time per step (one thread), in two processes
# (docs/results/table1-synthetic.md). The rates span the optima of the single tasks (about 0.05 for
# instance offsets, 0.15 or more for segmentation and depth) and of equal thirds (three times higher).
CPU = dict(model="tiny", width=8, size=(64, 128), steps=400, batch_size=8, lrs=(0.05, 0.15, 0.45), seeds=3,
           extend=2, splits={"train": 400, "val": 100, "test": 200}, augment="flip", device="cpu", workers=2)
# The paper-scale run on a GPU: Tiny Cityscapes size, a full-width ResNet, a longer budget.
GPU = dict(model="resnet18", width=None, size=(128, 256), steps=4000, batch_size=8, lrs=(0.005, 0.015, 0.045),
           seeds=3, extend=2, splits={"train": 2000, "val": 250, "test": 500}, augment="flip", device="cuda",
           workers=1)
# A seconds-long smoke run: every code path, meaningless numbers.
QUICK = dict(model="tiny", width=4, size=(16, 32), steps=2, batch_size=2, lrs=(0.01, 0.02), seeds=2, extend=1,
             splits={"train": 4, "val": 2, "test": 2}, augment="none", device="cpu", workers=0)


def selected_rows(keys=None) -> tuple[Row, ...]:
    """Rows to train: ``keys`` (and the single-task rows every comparison needs), or all."""
    if keys is None:
        return ROWS
    unknown = [k for k in keys if k not in BY_KEY and k != GRID_KEY]
    if unknown:
        raise ValueError(f"unknown row(s) {unknown}; rows are {[r.key for r in ROWS] + [GRID_KEY]}")
    wanted = set(keys) | set(SINGLE.values())
    if GRID_KEY in wanted:
        wanted |= set(GRID_CANDIDATES)
    return tuple(r for r in ROWS if r.key in wanted)


def score(row: Row, metrics: dict, single: dict[str, dict]) -> float:
    """What selection maximises: a single-task row's own metric (sign-corrected), else delta-m
    against the single-task rows' metrics ``single[task]`` of the same seed and split."""
    if row.group == "single":
        key = METRIC_OF_TASK[row.tasks[0]]
        value = metrics.get(key, float("nan"))
        return value if HIGHER_IS_BETTER[key] else -value
    reference = {METRIC_OF_TASK[t]: single[t][METRIC_OF_TASK[t]] for t in row.tasks if t in single}
    return delta_m(metrics, reference)


def beyond(best: float, tried: list[float], lrs) -> float | None:
    """The next rate past ``best`` when it is the highest or lowest rate ``tried``, else None."""
    if len(lrs) < 2 or len(tried) < 2:
        return None
    ratio = max(lrs) / min(lrs)
    ratio = ratio ** (1 / (len(lrs) - 1))  # the sweep's step between neighbouring rates
    if best == max(tried):
        return float(f"{best * ratio:.6g}")
    if best == min(tried):
        return float(f"{best / ratio:.6g}")
    return None


def choose_rate(row: Row, sweep: dict[float, dict], single: dict[str, dict]) -> float:
    """The rate of ``sweep`` ({lr: validation metrics}) with the best score; NaN scores lose."""
    scored = {lr: score(row, m, single) for lr, m in sweep.items()}
    finite = {lr: s for lr, s in scored.items() if s == s}
    if not finite:
        return min(sweep)
    return max(finite, key=finite.get)
