"""The train display's parts without a cluster: the bounded curve, how far along a run is,
plain lines with no escape codes, and the PNG."""
from __future__ import annotations

import io

import pytest

from deploy import progress
from deploy.progress import Curve, TrainingDisplay, plot_curve
from worker.sources import open_source


def point(events: int) -> dict:
    return {"events": events, "events_per_s": 1000.0, "logloss": 0.5, "recent_logloss": 0.4,
            "auc": 0.7, "recent_auc": 0.75}


def test_curve_keeps_at_most_its_points_evenly_spread():
    curve = Curve(max_points=100)
    for i in range(1, 100_001):
        curve.add(point(i))
    events = [p[0] for p in curve.points]
    assert 50 <= len(events) < 100
    gaps = {b - a for a, b in zip(events, events[1:])}
    assert len(gaps) == 1  # one spacing throughout, after any number of thinnings
    assert events[0] == 1 and events[-1] > 99_000
    curve.finish(point(100_000))
    assert curve.points[-1][0] == 100_000


class Sized:
    def __init__(self, events=None, bytes_read=None, bytes_total=None, lines_read=None):
        self.events, self.bytes_read = events, bytes_read
        self.bytes_total, self.lines_read = bytes_total, lines_read


@pytest.mark.parametrize("source, limit, events, fraction", [
    (Sized(events=1000), None, 250, 0.25),
    (Sized(events=1000), 500, 250, 0.5),             # --limit below the stream's length
    (Sized(), 400, 100, 0.25),                       # --limit alone
    (Sized(bytes_read=600, bytes_total=1000, lines_read=60), None, 30, 0.3),  # read ahead
    (Sized(bytes_read=600, bytes_total=1000), None, 30, 0.6),
    (Sized(bytes_read=600), None, 30, None),         # a pipe: no end known
    (Sized(), None, 30, None),
])
def test_fraction_comes_from_what_the_source_can_tell(source, limit, events, fraction):
    display = TrainingDisplay(source, limit, stream=io.StringIO(), live=False)
    assert display.fraction(events) == (pytest.approx(fraction) if fraction else None)


def test_a_file_source_tells_how_far_it_has_read(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"label": 1, "features": {"a": "x"}}\n' * 1000)
    src = open_source(str(path), chunk_lines=100)
    assert src.bytes_total == path.stat().st_size and src.lines_read == 0
    batch = src.read(50)
    assert batch.n == 50 and src.lines_read >= 50 and 0 < src.bytes_read <= src.bytes_total
    while src.read(1000):
        pass
    assert src.lines_read == 1000 and src.bytes_read == src.bytes_total
    display = TrainingDisplay(src, None, stream=io.StringIO(), live=False)
    assert display.fraction(1000) == 1.0


def test_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    out = io.StringIO()
    display = TrainingDisplay(Sized(events=1000), None, stream=out)  # StringIO: not a tty
    assert not display.live and display.interval == progress.PLAIN_EVERY_S
    display(point(500))
    display.finish(point(1000))
    text = out.getvalue()
    assert "\x1b" not in text
    assert "500 events" in text and "logloss 0.5000" in text and "50%  ETA" in text


def test_plot_writes_a_png(tmp_path):
    curve = Curve()
    for i in range(1, 50):
        curve.add({**point(i * 1000), "logloss": 0.7 - i / 200})
    plot_curve(curve, tmp_path / "c.png", "test", bayes=0.4, window=10_000)
    data = (tmp_path / "c.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
