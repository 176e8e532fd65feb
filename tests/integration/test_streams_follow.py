"""`--follow FILE`: a growing, rotated JSON lines file learned exactly once (real shards as
threads of this process)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tests.integration.helpers import planted_events
from tests.integration.streams_helpers import (TWO_MODELS, DiesMidPush, Killed, events_learned,
                                               train_source, weights)
from worker.ps_client import PSClient
from worker.sources import JsonLinesSource
from worker.sources.follow import FollowSource
from worker.trainer import Trainer

EVENTS = planted_events(6000, seed=4)


def write(path, events, mode="a", last_newline=True) -> None:
    text = "\n".join(json.dumps(e) for e in events) + ("\n" if last_newline else "")
    with open(path, mode) as f:
        f.write(text)


def train(c, source, model: str, client_cls=PSClient, batch: int = 500) -> Trainer:
    return train_source(c, source, model, client_cls, batch)


def test_a_followed_file_killed_mid_push_resumes_exactly(inprocess_cluster, tmp_path):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    path = tmp_path / "events.jsonl"
    write(path, EVENTS)
    train(c, JsonLinesSource(path), "ref")
    DiesMidPush.die_at = 5
    with pytest.raises(Killed):
        train(c, FollowSource(path, until_empty=True), "run", DiesMidPush)
    assert len(FollowSource(path).journaled()) == 1
    train(c, FollowSource(path, until_empty=True), "run")
    assert FollowSource(path).journaled() == []
    assert events_learned(c, "run") == events_learned(c, "ref") == len(EVENTS)
    np.testing.assert_allclose(weights(c, "run"), weights(c, "ref"), rtol=1e-5, atol=1e-6)
    # learned to its end: a restart finds nothing new
    assert train(c, FollowSource(path, until_empty=True), "run").metrics.count == 0


def test_follow_learns_appends_across_rotation_and_truncation(inprocess_cluster, tmp_path):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    path = tmp_path / "events.jsonl"
    write(path, EVENTS[:1000])
    source = FollowSource(path, poll_s=0.02)
    result = {}
    thread = threading.Thread(target=lambda: result.update(t=train(c, source, "run", batch=300)))
    thread.start()
    try:
        def learned(n):
            deadline = time.monotonic() + 30
            while events_learned(c, "run") < n:
                assert time.monotonic() < deadline and thread.is_alive(), n
                time.sleep(0.02)
        learned(1000)
        write(path, EVENTS[1000:2000], last_newline=False)  # the last line not yet ended
        time.sleep(0.1)
        path.rename(tmp_path / "events.jsonl.1")  # rotated: the unended line is its last
        write(path, EVENTS[2000:3000], mode="w")
        learned(3000)
        write(path, EVENTS[3000:3500], mode="w")  # truncated and rewritten, shorter
        learned(3500)
        assert events_learned(c, "run") == 3500
    finally:
        source.stop()
        thread.join(30)
    assert result["t"].metrics.count == 3500
    assert FollowSource(path).journaled() == []
