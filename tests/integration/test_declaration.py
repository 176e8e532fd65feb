"""A model's input declaration through real nodes (processes on 127.0.0.1): the first trainer
of the open default model declares MovieLens' schema and recommended features, the replica
featurizes HTTP reads with them (a JSON-number user id is an id), and the declaration survives
kill -9 of a shard, which still refuses a different one."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from common.config import load_spec
from common.declaration import Declaration
from common.errors import DeclarationConflict
from common.features import Featurizer
from common.hashing import hash_strings
from common.messages import Declare
from common.transport import Channel
from serving.client import ServingClient
from tests.integration.helpers import wait_replica_caught_up
from tests.integration.test_serving_http import http
from tests.unit.source_helpers import events_of, tiny_movielens
from worker.ps_client import PSClient
from worker.sources import MOVIELENS_SPEC_TOML, MovieLensSource
from worker.trainer import Trainer

MOVIELENS_LIKE = 400  # events: users and items repeat, so the trained weights are not all zero


def movielens_dir(tmp_path):
    """A small MovieLens directory: the tiny one's users and movies, rated many times."""
    directory = tiny_movielens(tmp_path / "ml")
    rng = np.random.default_rng(0)
    lines = [f"{rng.choice([1, 2, 3])}\t{rng.choice([10, 11])}\t{rng.integers(1, 6)}\t{t}"
             for t in range(MOVIELENS_LIKE)]
    (directory / "u.data").write_text("\n".join(lines) + "\n")
    return directory


def texts_of(directory) -> dict[int, str]:
    """The side tables' strings (and 3-letter prefixes, as zip3 takes) by their hashes: the
    source hands its categorical strings over hashed, a client sends them as text."""
    words = set()
    for name in ("u.user", "u.item", "u.genre"):
        for line in (directory / name).read_text(encoding="latin-1").splitlines():
            for field in line.split("|"):
                words.update((field, field[:3]))
    words = sorted(words)
    return dict(zip(hash_strings(np.array(words)).tolist(), words))


def instances_of(batch, texts: dict[int, str]) -> list[dict]:
    """The batch's events as a client would send them: ids and amounts as JSON numbers,
    strings as text."""
    hashed = {name for name, col in batch.columns.items() if col.values.dtype == np.uint64}
    out = []
    for event in events_of(batch):
        event.pop("label")
        event = {k: [texts[x] for x in v] if k in hashed else v for k, v in event.items()}
        out.append({k: (v if k == "genres" else v[0]) for k, v in event.items()})
    return out


@pytest.mark.timeout(180)
def test_declared_model_serves_what_it_learned_and_survives_kill_9(local_cluster, tmp_path):
    c = local_cluster("", shards=2, replicas=1).start_all()
    directory = movielens_dir(tmp_path)
    ps = PSClient(c.cluster.shards())
    trainer = Trainer(ps, c.spec, "default", batch_size=64)
    trainer.train(MovieLensSource(directory))
    declared = trainer.declared
    assert declared is not None and declared.schema["user"] == "id"
    assert ("user", "genres") in declared.crosses
    recommended = load_spec(text=MOVIELENS_SPEC_TOML).model("movielens").optimizer
    assert trainer.model.optimizer == recommended  # the recommended FTRL settings
    wait_replica_caught_up(c.address("replica", 0), "default", trainer.last_seqs)

    batch = MovieLensSource(directory).read(30)
    instances = instances_of(batch, texts_of(directory))
    assert isinstance(instances[0]["user"], int)
    base = c.cluster.replicas()[0].http_address
    status, body = http("POST", f"{base}/v1/models/default:predict", {"instances": instances})
    assert status == 200, body
    worker_features = trainer.featurizer.featurize(batch)  # the ids the worker learned from
    with ServingClient([c.address("replica", 0)]) as client:
        by_ids = client.predict_ids("default", worker_features)
        undeclared = Featurizer(c.spec.feature_spec("default")).featurize(batch)
        as_amounts = client.predict_ids("default", undeclared)
    got = np.array(body["predictions"], np.float32)
    assert len(set(got.tolist())) > 3  # a trained model, varied answers
    np.testing.assert_array_equal(got, by_ids.probabilities)
    assert not np.array_equal(got, as_amounts.probabilities)  # what serving did before

    # kill -9 a shard: it comes back with the declaration, and still refuses another one
    c.stop("shard", 1, sig=signal.SIGKILL)
    c.start("shard", 1)
    c.wait_ready(role="shard", index=1)
    asker = PSClient(c.cluster.shards())
    try:
        assert Declaration.from_dict(asker.declare("default", {})) == declared
        other = Declaration("elsewhere", {"user": "num"})
        with pytest.raises(DeclarationConflict, match="declared by 'movielens-100k'"):
            asker.declare("default", other.to_dict())
        restarted = Channel(c.address("shard", 1))
        assert restarted.request(Declare("default", {}), 5).declaration == declared.to_dict()
        restarted.close()
    finally:
        asker.close()
        ps.close()
    deadline = time.monotonic() + 60
    while True:  # the replica re-syncs the restarted shard (a new epoch): 503 meanwhile
        status, again = http("POST", f"{base}/v1/models/default:predict", {"instances": instances})
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200, again
    np.testing.assert_array_equal(np.array(again["predictions"], np.float32), got)
