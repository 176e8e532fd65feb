"""CPU placement: keep serving replicas on CPUs that training does not use.

Priority (`deploy/runtime/priority.py`) decides who runs first on a CPU that training and
serving share; it cannot stop a read from waiting behind a shard or worker that is inside a
system call, or behind the other tasks a wake-up has to queue after. Reserving CPUs removes the
sharing: with `[cluster] serving_cpus` set, every replica pins itself to those CPUs and every
shard and training worker (`deltaps train`) to the CPUs left, so a read's path (the replica's
threads and the network work they do) never queues behind training. What it costs: training
has fewer CPUs (bench/reads.py measures both sides).

Pinning applies to every thread of the process (Linux keeps affinity per thread, and threads
started at import, such as OpenBLAS's, exist already); threads started later inherit it.
"""
from __future__ import annotations

import os

from common.cpus import format_cpu_list, parse_cpu_list
from common.errors import ConfigError
from deploy.runtime.priority import own_threads

SERVING_ROLES = ("replica",)
TRAINING_ROLES = ("shard", "worker")


def cpus_for(role: str, serving_cpus: str, allowed=None) -> frozenset[int] | None:
    """The CPUs a process of `role` ("replica", "shard" or "worker") runs on under
    `serving_cpus`; None when nothing is reserved (no pinning). `allowed`: the CPUs this process
    may use (default: its affinity now). Raises ConfigError when the reservation names a CPU
    that is not allowed here, or leaves training none."""
    reserved = parse_cpu_list(serving_cpus)
    if not reserved:
        return None
    allowed = frozenset(os.sched_getaffinity(0) if allowed is None else allowed)
    missing = reserved - allowed
    if missing:
        raise ConfigError(f"[cluster] serving_cpus = {serving_cpus!r} names CPU(s) "
                          f"{format_cpu_list(missing)}, which this process may not run on "
                          f"(allowed: {format_cpu_list(allowed)})")
    if role in SERVING_ROLES:
        return reserved
    if role not in TRAINING_ROLES:
        raise ValueError(f"unknown role {role!r}")
    left = allowed - reserved
    if not left:
        raise ConfigError(f"[cluster] serving_cpus = {serving_cpus!r} leaves no CPU for shards "
                          f"and workers (allowed: {format_cpu_list(allowed)})")
    return left


def pin_to_cpus(cpus) -> frozenset[int]:
    """Run every thread of this process (and threads it starts later) on `cpus` only;
    returns the affinity now in effect."""
    for tid in own_threads():
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # the thread has exited meanwhile
            continue
    return frozenset(os.sched_getaffinity(0))


def place(role: str, serving_cpus: str) -> frozenset[int] | None:
    """Pin this process as `role` under the cluster's `serving_cpus` (nothing when it is
    empty); returns the CPUs it now runs on, or None. Raises ConfigError as `cpus_for`."""
    cpus = cpus_for(role, serving_cpus)
    return None if cpus is None else pin_to_cpus(cpus)
