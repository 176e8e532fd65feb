"""What a spec says about CPUs: which ones serving keeps (CPU lists), and the time slices a
replica may ask for.

A spec names the CPUs it reserves for serving (`[cluster] serving_cpus`) and every node reports
the CPUs it runs on in its status, both in the kernel's list format ("1", "2-3", "0,4-7"), and
a spec's `replica_slice_ms` must lie in the range the kernel accepts. This is shared
vocabulary: the spec is validated with it, nodes report with it, and the node runtime that
pins processes and asks for slices acts on it. Only the standard library is imported, so a
process can use it without starting anything (numpy's thread pool, for one).
"""
from __future__ import annotations

import os

MIN_SLICE_MS, MAX_SLICE_MS = 0.1, 100.0  # the kernel clamps a requested slice to this range


def parse_cpu_list(text: str) -> frozenset[int]:
    """CPUs in the kernel's list format ("1", "2-3", "0,4-7"); empty text: none. Raises
    ValueError naming the part that is wrong."""
    if not text.strip():
        return frozenset()
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ValueError(f"{part!r} is not a CPU number or a range like 2-3") from None
        if first < 0 or last < first:
            raise ValueError(f"{part!r} is not a CPU number or an increasing range")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpu_list(cpus) -> str:
    """The kernel's list format of a set of CPUs: {0, 1, 2, 5} -> "0-2,5"."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def current_cpus() -> str:
    """The CPUs this process may run on, in list format (what a node reports in its status)."""
    return format_cpu_list(os.sched_getaffinity(0))
