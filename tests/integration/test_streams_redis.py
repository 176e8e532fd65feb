"""Redis Streams learned exactly once: real redis-server, real shards (threads of this process).

The kill test with worker processes is in tests/e2e/test_streams_kill.py; here a "crash" is
a push that reached only some shards before the trainer stopped, so the hard case is certain.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.integration.helpers import planted_events
from tests.integration.streams_helpers import (TWO_MODELS, DiesMidPush, Killed, events_learned,
                                               train_source, weights)
from worker.ps_client import PSClient
from worker.sources.redis_stream import RedisStreamSource
from worker.trainer import Trainer

EVENTS = planted_events(6000, seed=3)


def train(c, url: str, model: str, client_cls=PSClient, batch: int = 500, **kw) -> Trainer:
    source = RedisStreamSource(url, until_empty=True, block_ms=100, **kw)
    return train_source(c, source, model, client_cls, batch)


def assert_all_acknowledged(redis_server, stream: str, group: str) -> None:
    info = {g["name"].decode(): g for g in redis_server.client.xinfo_groups(stream)}[group]
    assert info["pending"] == 0 and info["lag"] == 0, info


def test_a_worker_killed_mid_push_resumes_exactly(inprocess_cluster, redis_server):
    """The hard case: push 4 reached shard 0 and not shard 1 when the worker died. The restarted
    worker (same consumer) re-sends the journaled push, so the shards end with the weights of
    an undisturbed run, every entry acknowledged and every event counted once."""
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    redis_server.add_events("ev", EVENTS)
    train(c, redis_server.url("ev", "ref", "a"), "ref")
    DiesMidPush.die_at = 4
    with pytest.raises(Killed):
        train(c, redis_server.url("ev", "run", "a"), "run", DiesMidPush)
    assert redis_server.client.hlen("ev:journal:run:a") == 1
    assert events_learned(c, "run") == 4 * 500  # push 4 counted by shard 0, which has it
    train(c, redis_server.url("ev", "run", "a"), "run")
    assert redis_server.client.hlen("ev:journal:run:a") == 0
    assert_all_acknowledged(redis_server, "ev", "run")
    assert events_learned(c, "run") == events_learned(c, "ref") == len(EVENTS)
    np.testing.assert_allclose(weights(c, "run"), weights(c, "ref"), rtol=1e-5, atol=1e-6)


def test_two_workers_of_one_group_split_the_stream(inprocess_cluster, redis_server):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    redis_server.add_events("ev", EVENTS[:3000])
    first = RedisStreamSource(redis_server.url("ev", "g", "w1"), until_empty=True, block_ms=100)
    second = RedisStreamSource(redis_server.url("ev", "g", "w2"), until_empty=True,
                               block_ms=100)
    clients = [PSClient(c.cluster.shards(), worker_id=s.worker_id) for s in (first, second)]
    trainers = [Trainer(cl, c.spec, "run", 200) for cl in clients]
    # interleaved by hand (one thread): each takes a batch in turn until the group is drained
    sources = [first, second]
    for t, s in zip(trainers, sources):
        t.replay_journal(s)
        t.acked = s
    learned = [0, 0]
    while True:
        progressed = False
        for j, (t, s) in enumerate(zip(trainers, sources)):
            batch = s.read(200)
            if batch is None:
                continue
            progressed = True
            prep = t.send_pull((*t.featurize(batch), s.position()))
            t._done(t.learn(prep))
            learned[j] += batch.n
        if not progressed:
            break
    for cl in clients:
        cl.close()
    for s in sources:
        s.close()
    assert all(learned), learned
    assert sum(learned) == 3000
    assert events_learned(c, "run") == 3000
    assert_all_acknowledged(redis_server, "ev", "g")


def test_malformed_entries_go_to_the_dead_letter_stream(inprocess_cluster, redis_server):
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    good = EVENTS[:100]
    redis_server.add_events("ev", good[:50])
    r = redis_server.client
    r.xadd("ev", {"data": "{not json"})
    r.xadd("ev", {"data": '{"label": 7, "features": {"user": "u1"}}'})
    r.xadd("ev", {"label": "1", "user": "u3", "item": "i4"})  # a field map: a good event
    redis_server.add_events("ev", good[50:])
    trainer = train(c, redis_server.url("ev", "run", "a"), "run", batch=64)
    assert trainer.metrics.count == 101
    assert events_learned(c, "run") == 101
    dead = r.xrange("ev:dead")
    assert [d[1][b"reason"].decode()[:12] for d in dead] == ["invalid JSON", "label must b"]
    assert dead[0][1][b"data"] == b"{not json"
    assert_all_acknowledged(redis_server, "ev", "run")


def test_entries_a_silent_consumer_left_pending_are_claimed(inprocess_cluster, redis_server):
    """Consumer a read a batch and vanished before learning it (no journaled push): the next
    worker of the group claims its pending entries, so they are learned, once."""
    c = inprocess_cluster(TWO_MODELS, shards=2, replicas=0)
    c.start_all()
    redis_server.add_events("ev", EVENTS[:2000])
    gone = RedisStreamSource(redis_server.url("ev", "g", "a"), block_ms=100)
    assert gone.read(700).n == 700  # delivered to a, never acknowledged
    gone.close()
    trainer = train(c, redis_server.url("ev", "g", "b"), "run", claim_idle_ms=0)
    assert trainer.metrics.count == 2000
    assert events_learned(c, "run") == 2000
    assert_all_acknowledged(redis_server, "ev", "g")
    consumers = [x["name"].decode() for x in redis_server.client.xinfo_consumers("ev", "g")]
    assert consumers == ["b"]
