"""``fastmtl experiment table1``: the paper's Table 1 under a protocol that isolates the weighting.

``protocol``: rows, budgets and the learning-rate selection; ``runs``: one
training run in a worker process; ``experiment``: ``table1()``, the whole
protocol; ``report`` and ``figures``: statistics, markdown, JSON, PNG.
"""
from fastmtl.commands.table1.experiment import read_report, table1
from fastmtl.commands.table1.protocol import CPU, GPU, QUICK, ROWS, Row

__all__ = ["CPU", "GPU", "QUICK", "ROWS", "Row", "read_report", "table1"]
