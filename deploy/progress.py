"""What `deltaps train` shows while it runs, and the learning curve it can draw afterwards.

Why here and not in the trainer: the trainer hands a dict to a `progress` callback and knows
nothing of terminals; how a person watches (a live bar on a terminal, plain lines in a log or
pipe, a PNG of the curve) is the command line's business. The bar uses rich, which redraws in
place and degrades cleanly; anything that is not a terminal gets the plain lines, so logs and
pipes hold no escape codes. How far along a run is comes from the source when it can tell:
bytes read of a file's size, or the events of a stream of known length, or `--limit`.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import IO

import click

PLAIN_EVERY_S = 2.0  # a line every 2 s: enough to follow a log, few enough to read it
LIVE_EVERY_S = 0.25  # how often the trainer reports when something is drawn from it


class Curve:
    """Points of the progressive metrics against events, at most `max_points` of them: when
    full, every other point is dropped, so a run of any length keeps an even spread (older
    points at a coarser spacing) in bounded memory."""

    FIELDS = ("events", "logloss", "recent_logloss", "auc", "recent_auc")

    def __init__(self, max_points: int = 2000):
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, not {max_points}")
        self.max_points = max_points
        self.points: list[tuple[float, ...]] = []
        self._stride, self._seen = 1, 0

    def add(self, p: dict) -> None:
        self._seen += 1
        if (self._seen - 1) % self._stride:
            return
        self.points.append(tuple(float(p.get(k, math.nan)) for k in self.FIELDS))
        if len(self.points) >= self.max_points:
            self.points = self.points[::2]
            self._stride *= 2

    def finish(self, p: dict) -> None:
        """The run's last figures, kept whatever the thinning."""
        self.points.append(tuple(float(p.get(k, math.nan)) for k in self.FIELDS))


def check_plot_path(path: str) -> Path:
    """Fail before training, not after it: matplotlib present, the PNG's folder there."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install 'deltaps[plot]'")
    out = Path(path)
    if not out.parent.is_dir():
        raise click.ClickException(f"--plot {path}: no such directory {out.parent}")
    return out


def plot_curve(curve: Curve, path: Path, title: str, bayes: float | None = None,
               window: int | None = None) -> None:
    """Progressive log loss and AUC (whole run and recent window) against events, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cols = list(zip(*curve.points)) if curve.points else [()] * len(Curve.FIELDS)
    events, loss, recent_loss, auc, recent_auc = cols
    recent = f"recent {window:,d} events" if window else "recent window"
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6), dpi=110)
    top.plot(events, loss, label="progressive (whole run)", color="tab:blue")
    top.plot(events, recent_loss, label=recent, color="tab:blue", alpha=0.4)
    if bayes is not None:
        top.axhline(bayes, color="gray", linestyle="--", label=f"Bayes-optimal {bayes:.4f}")
    top.set_ylabel("log loss")
    top.legend(loc="best")
    top.grid(alpha=0.3)
    bottom.plot(events, auc, label="progressive (whole run)", color="tab:green")
    bottom.plot(events, recent_auc, label=recent, color="tab:green", alpha=0.4)
    bottom.set_ylabel("AUC")
    bottom.set_xlabel("events")
    bottom.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    bottom.legend(loc="best")
    bottom.grid(alpha=0.3)
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class TrainingDisplay:
    """The `progress` callback of `deltaps train`: a live bar on a terminal, plain lines
    otherwise, and the points of an optional learning curve. Call `finish` after training;
    used as a context manager, the bar is stopped however training ends."""

    def __init__(self, source, limit: int | None = None, curve: Curve | None = None,
                 stream: IO | None = None, live: bool | None = None):
        self.source, self.limit, self.curve = source, limit, curve
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = LIVE_EVERY_S if (self.live or curve is not None) else PLAIN_EVERY_S
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar = None
        if self.live:
            self._bar = _RichBar(self.stream, self.fraction(0) is not None)

    def fraction(self, events: int) -> float | None:
        """How far along the run is, 0..1, or None where the end is unknown."""
        total = getattr(self.source, "events", None)  # a stream of known length
        total = total if isinstance(total, int) and total > 0 else None
        if self.limit is not None:
            total = min(total or self.limit, self.limit)
        if total is not None:
            return min(events / total, 1.0)
        # a file: the source reads a chunk ahead of training, so bytes read are scaled by the
        # share of the lines read that training has reached
        done, size = getattr(self.source, "bytes_read", None), getattr(self.source,
                                                                       "bytes_total", None)
        lines = getattr(self.source, "lines_read", None)
        if not (isinstance(done, int) and isinstance(size, int) and size > 0):
            return None
        if isinstance(lines, int) and lines > 0:
            done = done * min(events / lines, 1.0)
        return min(done / size, 1.0)

    def __call__(self, p: dict) -> None:
        if self.curve is not None:
            self.curve.add(p)
        now = time.monotonic()
        elapsed = now - self._start
        f = self.fraction(p["events"])
        eta = elapsed * (1 - f) / f if f else None
        if self._bar is not None:
            self._bar.update(p, f, eta)
        elif now - self._last_line >= PLAIN_EVERY_S:
            self._last_line = now
            self.stream.write(plain_line(p, f, eta) + "\n")
            self.stream.flush()

    def finish(self, p: dict) -> None:
        """The run is over: the bar shows its last figures and stops; the curve keeps them."""
        if self.curve is not None:
            self.curve.finish(p)
        if self._bar is not None:
            self._bar.update(p, 1.0 if self.fraction(0) is not None else None, 0.0)
        self.close()

    def close(self) -> None:
        """Stop the bar (also when training failed), giving the terminal back."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "TrainingDisplay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plain_line(p: dict, fraction: float | None = None, eta: float | None = None) -> str:
    line = (f"  {p['events']:>10,d} events  {p['events_per_s']:>10,.0f} ev/s  "
            f"logloss {p['logloss']:.4f}  (recent {p['recent_logloss']:.4f})  "
            f"AUC {p['auc']:.4f}")
    if fraction is not None:
        line += f"  {100 * fraction:3.0f}%  ETA {_fmt_eta(eta)}"
    return line + _lag(p)


def _lag(p: dict) -> str:
    """A stream source's consumer lag (unread entries) and pending (unacknowledged) ones."""
    return f"  lag {p['lag']:,d} pending {p['pending']:,d}" if "lag" in p else ""


class _RichBar:
    """rich's Progress drawing one task, redrawn only when the trainer reports (no thread)."""

    def __init__(self, stream: IO, bounded: bool):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=stream, force_terminal=True)
        self.narrow = console.width < 140  # an 80-column terminal gets the short form
        columns = [TextColumn("[bold]train"), BarColumn(bar_width=12 if self.narrow else 30)]
        if bounded:
            columns.append(TextColumn("{task.percentage:>3.0f}%"))
        columns.append(TextColumn("{task.fields[stats]}"))
        if not self.narrow:
            columns.append(TimeElapsedColumn())
        if bounded:
            columns.append(TextColumn("ETA {task.fields[eta]}"))
        self.progress = Progress(*columns, console=console, auto_refresh=False, transient=False)
        self.task = self.progress.add_task("train", total=1.0 if bounded else None,
                                           stats="starting", eta="-:--")
        self.progress.start()

    def update(self, p: dict, fraction: float | None, eta: float | None) -> None:
        if self.narrow:
            stats = (f"{p['events']:,d} ev {p['events_per_s']:,.0f}/s "
                     f"loss {p['logloss']:.4f} AUC {p['auc']:.4f}")
        else:
            stats = (f"{p['events']:,d} ev  {p['events_per_s']:,.0f} ev/s  "
                     f"logloss {p['logloss']:.4f} (recent {p['recent_logloss']:.4f})  "
                     f"AUC {p['auc']:.4f} (recent {p.get('recent_auc', math.nan):.4f})"
                     + _lag(p))
        self.progress.update(self.task, completed=fraction or 0.0, stats=stats,
                             eta=_fmt_eta(eta))
        self.progress.refresh()

    def stop(self) -> None:
        self.progress.stop()
