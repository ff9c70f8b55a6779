"""Benchmarks of the fused multi-task loss against its peers.

``python -m benchmarks --help``: the loss runner (tables, targets, per-call overhead);
``python -m benchmarks train-step --help``: a whole training step per loss variant;
``bash benchmarks/device_check.sh OUT``: everything, in one folder, on a fresh GPU machine;
``pytest benchmarks/``: the loss cases under pytest-benchmark.
"""
