"""CPU priority of a training worker: training is throughput work, serving is latency-critical.

On a machine a worker shares with shards and serving replicas, a CPU-bound training loop at
the same priority delays the replicas' wake-ups and so their read latency. A worker started
nicer (`worker_nice` in the spec, `deltaps train --nice`) yields the CPU to them and takes the
rest, like a batch QoS class next to a latency-critical one.
"""
from __future__ import annotations

import os


def _threads() -> list[int]:
    """Ids of this process's threads; [0] (the process itself) where /proc does not list them."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def lower_cpu_priority(nice: int) -> int:
    """Run this process at niceness `nice` (0..19) at least; return the niceness it has now.

    Only ever lowers priority: a process already nicer is left as it is (raising priority back
    needs privileges a worker should not have). Every thread is changed, not only the calling
    one, because Linux keeps a nice value per thread and threads started at import (OpenBLAS's)
    would otherwise keep competing at the old priority; threads started later inherit it.
    """
    for tid in _threads():
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)
