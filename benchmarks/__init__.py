"""Benchmarks of the fused multi-task loss against its peers.

``python -m benchmarks --help`` runs the table-printing runner;
``pytest benchmarks/`` runs the same cases under pytest-benchmark.
"""
