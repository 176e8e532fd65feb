"""CPU scheduling class of a process: training is throughput work, serving is latency-critical.

On a machine that shards, workers and replicas share, a read is answered late when the replica
it wakes has to wait for a CPU that training holds. Two levers, neither needing privileges:

- a training worker runs nicer (`worker_nice`, `deltaps train --nice`): it gets a smaller share
  of the CPU when others want it, and all of what is left otherwise;
- a replica asks the kernel for a short time slice (`replica_slice_ms`). Linux's EEVDF
  scheduler (6.6+; per-task slices since 6.12) runs the task with the earliest virtual deadline
  (eligible time + slice / weight), so a replica woken by a read with a 0.1 ms slice is run
  ahead of tasks on the default ~1-3 ms slice, rather than after the running one's slice. Its
  share of the CPU does not change: it only waits less, and is preempted sooner when it runs
  long.

Both are set on every thread of the process (Linux keeps them per thread; threads started at
import, such as OpenBLAS's, would otherwise keep the old values). Threads and processes started
afterwards inherit them.
"""
from __future__ import annotations

import ctypes
import os
import struct

from common.cpus import MAX_SLICE_MS, MIN_SLICE_MS

# sched_setattr / sched_getattr syscall numbers (glibc has no wrapper); other machines: none.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")  # struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes)
_SCHED_OTHER = 0


def own_threads() -> list[int]:
    """Ids of this process's threads; [0] (the process itself) where /proc does not list them."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def lower_cpu_priority(nice: int) -> int:
    """Run this process at niceness `nice` (0..19) at least; return the niceness it has now.

    Only ever lowers priority: a process already nicer is left as it is (raising priority back
    needs privileges a worker should not have).
    """
    for tid in own_threads():
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


def _libc_syscall():
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None or not hasattr(os, "sched_getscheduler"):
        return None, None
    return ctypes.CDLL(None, use_errno=True).syscall, numbers


def time_slice_ms(tid: int = 0) -> float | None:
    """The time slice the kernel gives thread `tid` (0: the caller), in ms; None where the
    kernel does not report one (before Linux 6.12, or not Linux)."""
    syscall, numbers = _libc_syscall()
    if syscall is None:
        return None
    buf = ctypes.create_string_buffer(_SCHED_ATTR.size)
    if syscall(numbers[1], tid, buf, _SCHED_ATTR.size, 0) != 0:
        return None
    runtime_ns = _SCHED_ATTR.unpack(buf.raw)[5]
    return runtime_ns / 1e6 if runtime_ns else None


def request_time_slice(slice_ms: float) -> float | None:
    """Ask for a `slice_ms` time slice on every thread of this process (0: the kernel's
    default). Returns the slice now in effect in ms, or None where the kernel has no per-task
    slices (nothing changes then). Threads not on the normal policy (SCHED_BATCH, SCHED_IDLE,
    real-time) are left as they are, and so is every thread's niceness."""
    if slice_ms and not MIN_SLICE_MS <= slice_ms <= MAX_SLICE_MS:
        raise ValueError(f"time slice {slice_ms} ms is outside [{MIN_SLICE_MS}, {MAX_SLICE_MS}]")
    syscall, numbers = _libc_syscall()
    if syscall is None:
        return None
    for tid in own_threads():
        try:
            if os.sched_getscheduler(tid) != _SCHED_OTHER:
                continue
            nice = os.getpriority(os.PRIO_PROCESS, tid)
        except OSError:  # the thread has exited meanwhile
            continue
        attr = _SCHED_ATTR.pack(_SCHED_ATTR.size, _SCHED_OTHER, 0, nice, 0,
                                int(slice_ms * 1e6), 0, 0)
        if syscall(numbers[0], tid, ctypes.create_string_buffer(attr, len(attr)), 0) != 0:
            err = ctypes.get_errno()
            if err == 3:  # ESRCH: the thread has exited meanwhile
                continue
            raise OSError(err, f"sched_setattr: {os.strerror(err)}")
    return time_slice_ms()
