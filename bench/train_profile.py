"""Where a `deltaps train` process spends its time: once under cProfile (the main thread) and
once under py-spy (every thread), reported beside the planted and MovieLens figures.
"""
from __future__ import annotations

import os
import pstats
import re
import shutil
import sys
from pathlib import Path

from bench.processes import REPO, timed, with_cluster

PROFILE_TOP = 25


def sampled(ctx, name: str, source: Path, rate: int = 200) -> dict | None:
    """`deltaps train SOURCE` once under py-spy (every thread, non-idle samples): the share of
    samples in which each function is on the stack, and is the running frame. None when
    py-spy is not installed (the `bench` extra)."""
    spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                       os.environ.get("PATH", "")]))
    if spy is None:
        return None
    raw = ctx.workdir / f"{name}.spy"

    def run(cluster):
        return timed([spy, "record", "-o", str(raw), "-f", "raw", "--threads", "--rate",
                      str(rate), "--", sys.executable, "-m", "deploy.nodes.worker", str(source),
                      "--cluster", str(cluster.path), "--json"], ctx.workdir, name)

    r, _nodes = with_cluster(ctx, name, run)
    inclusive, own, threads, total = {}, {}, {}, 0
    for line in raw.read_text().splitlines():
        stack, _sep, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        # one entry per function, not per line it was at
        frames, n = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")], int(count)
        total += n
        threads[frames[0]] = threads.get(frames[0], 0) + n
        for frame in set(frames[1:]):
            if not any(w in frame for w in _SPY_WRAPPERS):
                inclusive[frame] = inclusive.get(frame, 0) + n
        if len(frames) > 1:
            own[frames[-1]] = own.get(frames[-1], 0) + n
    raw.unlink()
    top = lambda d: [{"function": _short(f), "share": round(c / max(total, 1), 4)}  # noqa: E731
                     for f, c in sorted(d.items(), key=lambda x: -x[1])[:PROFILE_TOP]]
    return {"command": f"py-spy record -f raw --threads --rate {rate} -- python -m "
                       f"deploy.nodes.worker {source.name} --json",
            "seconds": r["seconds"], "samples": total, "sampled_s": round(total / rate, 2),
            "threads": {t: round(c / max(total, 1), 4) for t, c in threads.items()},
            "by_inclusive": top(inclusive), "by_own": top(own)}


_SPY_WRAPPERS = ("runpy", "click/", "threading.py)", "nodes/worker.py)", "<module> (",
                 "importlib")


def _short(frame: str) -> str:
    for root in (str(REPO) + "/", "site-packages/", f"python{sys.version_info[0]}."
                 f"{sys.version_info[1]}/"):
        if root in frame:
            head, _sep, tail = frame.partition("(")
            frame = head + "(" + tail.split(root, 1)[1]
    return frame


def spy_note(p: dict, n: int = 12) -> str:
    return (f"All threads, sampled (`{p['command']}`, {p['seconds']:.1f}s, {p['samples']} samples "
            "py-spy counts as not idle; a wait on a Python-level lock counts): by thread "
            + ", ".join(f"{t} {v:.0%}" for t, v in p["threads"].items())
            + f"; top {n} functions on the stack: "
            + "; ".join(f"{x['function']} {x['share']:.0%}" for x in p["by_inclusive"][:n])
            + ". Running themselves: "
            + "; ".join(f"{x['function']} {x['share']:.0%}" for x in p["by_own"][:n]) + ".")


def profile(ctx, name: str, source: Path) -> dict:
    """`deltaps train SOURCE` once under cProfile (main thread only): top functions by
    cumulative and by own time."""
    prof = ctx.workdir / f"{name}.prof"

    def run(cluster):
        return timed([sys.executable, "-m", "cProfile", "-o", str(prof), "-m",
                      "deploy.nodes.worker", str(source), "--cluster", str(cluster.path),
                      "--json"], ctx.workdir, name)

    r, _nodes = with_cluster(ctx, name, run)
    stats = pstats.Stats(str(prof)).stats
    prof.unlink()
    rows = [{"function": _where(k), "ncalls": v[1], "tottime": round(v[2], 3),
             "cumtime": round(v[3], 3)} for k, v in stats.items() if not _wrapper(k)]
    imports = max((v[3] for k, v in stats.items() if k[2] == "_find_and_load"), default=0.0)
    rows = [x for x in rows if "importlib" not in x["function"]]
    top = lambda key: sorted(rows, key=lambda x: -x[key])[:PROFILE_TOP]  # noqa: E731
    return {"command": f"python -m cProfile -o OUT -m deploy.nodes.worker {source.name} --json",
            "seconds_under_profile": r["seconds"], "imports_s": round(imports, 3),
            "by_cumtime": top("cumtime"),
            "by_tottime": top("tottime")}


_WRAPPERS = ("runpy", "click/", "<string>")


def _wrapper(key: tuple) -> bool:
    """Frames every run has around the real work (runpy, click, exec, the module itself)."""
    path, _line, func = key
    return (any(w in path for w in _WRAPPERS) or func in ("<built-in method builtins.exec>",)
            or (path.endswith("deploy/nodes/worker.py") and func in ("<module>", "main")))


def _where(key: tuple) -> str:
    path, line, func = key
    for root in (str(REPO) + "/", "site-packages/", f"python{sys.version_info[0]}."
                 f"{sys.version_info[1]}/"):
        if root in path:
            path = path.split(root, 1)[1]
    return f"{path}:{line}({func})" if line else func


def profile_note(p: dict, n: int = 10) -> str:
    def cell(x):
        return f"{x['function']} {x['cumtime']:.2f}s"
    return (f"Where the time goes (`{p['command']}`, {p['seconds_under_profile']:.1f}s under "
            f"the profiler; main thread only): imports {p['imports_s']:.2f}s (the largest "
            f"top-level import's cumulative time); top {n} by cumulative time: "
            + "; ".join(cell(x) for x in p["by_cumtime"][:n])
            + ". Top by own time: " + "; ".join(f"{x['function']} {x['tottime']:.2f}s"
                                               for x in p["by_tottime"][:n]) + ".")
