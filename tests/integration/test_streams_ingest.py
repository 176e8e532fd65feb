"""The ZeroMQ ingest socket and its producer client: batches learned exactly once, resends
recognised, a full queue pushes back (real shards as threads, real sockets)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from common.messages import Ingest
from deploy.layout import free_ports
from tests.integration.helpers import ListSource, planted_events
from tests.integration.streams_helpers import (TWO_MODELS, DiesMidPush, Killed, events_learned,
                                               weights)
from worker.producer import Producer
from worker.ps_client import PSClient
from worker.sources.ingest import IngestSource
from worker.trainer import Trainer

EVENTS = planted_events(6000, seed=6)
BATCH = 500


class Worker:
    """A trainer on an ingest source in a thread, until `stop()`."""

    def __init__(self, c, url: str, model: str = "run", client_cls=PSClient, source=None):
        self.source = source or open_ingest(url)
        self.client = client_cls(c.cluster.shards(), retry_s=0.3,
                                 worker_id=self.source.worker_id)
        self.trainer = Trainer(self.client, c.spec, model, BATCH)
        self.error = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        try:
            self.trainer.train(self.source)
        except BaseException as exc:
            self.error = exc

    def stop(self):
        self.source.stop()
        self.thread.join(30)
        self.source.close()
        self.client.close()


def open_ingest(url: str) -> IngestSource:
    deadline = time.monotonic() + 10
    while True:  # a socket closed in this process frees its port a moment later
        try:
            return IngestSource(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def reference(c) -> None:
    client = PSClient(c.cluster.shards())
    Trainer(client, c.spec, "ref", BATCH).train(ListSource(EVENTS))
    client.close()


@pytest.fixture
def url(tmp_path):
    return f"zmq://127.0.0.1:{free_ports('127.0.0.1', 1)[0]}?state={tmp_path / 'ingest'}"


def test_producer_batches_are_learned_once_also_when_resent(inprocess_cluster, url):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    reference(c)
    w = Worker(c, url)
    try:
        with Producer(w.source.address, "p1") as p:
            for i in range(0, len(EVENTS), BATCH):
                p.send(EVENTS[i:i + BATCH])
            p.flush(60)
            again = p.channel.request(Ingest("p1", 3, b'{"label": 1, "features": {}}'), 10)
            assert (again.state, again.acked) == ("learned", len(EVENTS) // BATCH)
            gap = p.channel.request(Ingest("p1", 99, b'{"label": 1, "features": {}}'), 10)
            assert (gap.state, gap.expect) == ("gap", len(EVENTS) // BATCH + 1)
    finally:
        w.stop()
    assert w.error is None
    assert events_learned(c, "run") == len(EVENTS)
    np.testing.assert_allclose(weights(c, "run"), weights(c, "ref"), rtol=1e-5, atol=1e-6)


def test_a_full_queue_makes_the_producer_wait(inprocess_cluster, url):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    source = IngestSource(url, max_queued=2)  # nobody reads it yet
    try:
        p = Producer(source.address, "fast", window=4, timeout_s=60)
        for i in range(4):
            p.send(EVENTS[i * BATCH:(i + 1) * BATCH])
        while p.resent == 0:  # batch 3 was answered "busy" and is being sent again
            p._pump(0.05)
        assert source._queue.qsize() == 2
        client = PSClient(c.cluster.shards(), worker_id=source.worker_id)
        trainer = Trainer(client, c.spec, "run", BATCH)
        thread = threading.Thread(target=trainer.train, args=(source,))
        thread.start()
        p.flush(60)
        source.stop()
        thread.join(30)
        client.close()
        p.close()
    finally:
        source.close()
    assert events_learned(c, "run") == 4 * BATCH


def test_a_worker_killed_mid_push_resumes_exactly(inprocess_cluster, url):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    reference(c)
    DiesMidPush.die_at = 4
    w = Worker(c, url, client_cls=DiesMidPush)
    with Producer(w.source.address, "p1", timeout_s=1.0) as p:
        for i in range(0, 6 * BATCH, BATCH):
            p.send(EVENTS[i:i + BATCH])
        w.thread.join(30)
        assert isinstance(w.error, Killed)
        w.source.close()
        w.client.close()
        source = open_ingest(url)  # the same socket and state directory
        # the new socket answers: the producer's connection is the new one, not the closed
        # socket's, on which a send made before the drop was noticed would be lost
        p._status(10.0)
        # the producer resends what is unacknowledged before the new worker replays its
        # journal: the journaled batch must not be queued to be learned a second time
        p._resend_from(next(iter(p.unacked)))
        replies = []
        for _ in range(len(p.unacked)):
            assert p.channel.poll(10.0), "a resent batch went unanswered"
            replies.append(p.channel.read()[0])
        assert "queued" in {r.state for r in replies}
        w = Worker(c, url, source=source)
        try:
            for i in range(6 * BATCH, len(EVENTS), BATCH):
                p.send(EVENTS[i:i + BATCH])
            p.flush(60)
        finally:
            w.stop()
    assert w.error is None
    assert events_learned(c, "run") == len(EVENTS)
    np.testing.assert_allclose(weights(c, "run"), weights(c, "ref"), rtol=1e-5, atol=1e-6)


def test_batches_a_dead_worker_held_are_sent_again_to_the_next(inprocess_cluster, url):
    """A worker queued batches and died before learning them: the next one on the same socket
    expects them again, and the producer, which hears from it only when it asks for the
    status (nothing else comes back), sends them again when the answer names one it holds."""
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    dead = IngestSource(url)  # takes the batches into its queue; nobody learns them
    p = Producer(dead.address, "p1", timeout_s=60)  # a resend by timeout would come too late
    try:
        for i in range(3):
            p.send(EVENTS[i * BATCH:(i + 1) * BATCH])
        while dead._queue.qsize() < 3:
            p._pump(0.05)
        dead.close()
        w = Worker(c, url)  # the same socket and state directory
        try:
            p.flush(20)
        finally:
            w.stop()
    finally:
        p.close()
    assert w.error is None
    assert events_learned(c, "run") == 3 * BATCH


def test_a_read_waiting_when_training_fails_ends_with_the_source(inprocess_cluster, url):
    """A trainer that fails mid-run (here at its push 2) leaves its helper thread waiting in
    the socket's read for a batch that never comes: closing the source ends that read."""
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    DiesMidPush.die_at = 2
    w = Worker(c, url, client_cls=DiesMidPush)
    with Producer(w.source.address, "p1", timeout_s=1.0) as p:
        for i in range(0, 2 * BATCH, BATCH):  # batch 3, which the helper waits for, never comes
            p.send(EVENTS[i:i + BATCH])
        w.thread.join(30)
        assert isinstance(w.error, Killed)
        w.source.close()
        w.client.close()
    deadline = time.monotonic() + 5
    while any(t.name == "featurize" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the helper's read outlived its closed source"
        time.sleep(0.01)
