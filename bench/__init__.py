"""Benchmarks of deltaps against Vowpal Wabbit: `python -m bench.run`, `python -m bench.compare`.

Why a suite: throughput and learning quality regress silently; every figure is recorded with
the machine and command that produced it, so a later run can be compared against a baseline.
"""
