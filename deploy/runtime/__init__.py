"""How a node process sets itself up before it serves: command-line options, malloc tuning,
CPU priority and time slice, CPU placement.

This is process runtime, not shared vocabulary: only the entry points in `deploy/nodes/` (and
benchmarks that imitate a node) use it, so it lives beside them rather than in `common/`. What
a spec says about CPUs (lists, slice bounds) stays in `common/` and is imported from there.
"""
