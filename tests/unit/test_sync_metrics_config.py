import numpy as np
import pytest

from common.config import ClusterSpec, load_spec
from common.errors import ConfigError, InvalidValue, NotReady
from common.messages import Update
from serving.model import ServingModel
from serving.sync import ShardSync
from worker.metrics import auc


def upd(seq, keys=(0,), values=(1.0,), shard=0, epoch=1):
    return Update("m", shard, epoch, seq, np.array(keys, np.uint64), np.array(values, np.float32))


def test_updates_before_snapshot_are_buffered_then_applied_in_order():
    s = ShardSync(0)
    assert s.on_update(upd(3)) == [] and s.on_update(upd(2)) == []
    applied = s.on_snapshot(1, 1)
    assert [u.seq for u in applied] == [2, 3] and s.in_sync and s.seq == 3


def test_duplicates_are_ignored_and_gaps_ask_for_a_snapshot():
    s = ShardSync(0)
    s.on_snapshot(1, 5)
    assert s.on_update(upd(5)) == []
    assert [u.seq for u in s.on_update(upd(6))] == [6]
    assert s.on_update(upd(8)) == [] and not s.in_sync and s.snapshot_wanted
    assert [u.seq for u in s.on_snapshot(1, 7)] == [8] and s.in_sync


def test_snapshot_with_a_hole_in_the_buffer_stays_out_of_sync():
    s = ShardSync(0)
    s.on_update(upd(4))
    assert s.on_snapshot(1, 2) == [] and not s.in_sync and s.snapshot_wanted
    assert [u.seq for u in s.on_snapshot(1, 3)] == [4] and s.in_sync


def test_a_new_epoch_means_the_shard_restarted_and_forces_a_snapshot():
    s = ShardSync(0)
    s.on_snapshot(1, 9)
    assert s.on_update(upd(3, epoch=2)) == [] and not s.in_sync
    assert [u.seq for u in s.on_snapshot(2, 2)] == [3] and s.in_sync and s.epoch == 2
    s.on_heartbeat(3, 3)
    assert not s.in_sync


def test_heartbeat_reveals_a_missed_tail():
    s = ShardSync(0)
    s.on_snapshot(1, 4)
    s.on_heartbeat(1, 4)
    assert s.in_sync
    s.on_heartbeat(1, 5)
    assert not s.in_sync and s.gaps == 1


def test_serving_model_refuses_reads_until_every_shard_is_synced():
    spec = load_spec(text="[models.m]\nbits = 4")
    model = ServingModel(spec.model("m"), spec.feature_spec("m"), 2)
    from common.features import columnarize
    batch = columnarize([{"a": "x"}], with_labels=False)
    model.apply_snapshot(0, 2, 1, 0, np.arange(8, dtype=np.float32))
    with pytest.raises(NotReady, match=r"shard\(s\) \[1\] syncing"):
        model.check_ready()
    model.apply_snapshot(1, 2, 1, 3, -np.arange(8, dtype=np.float32))
    assert model.weights[:4].tolist() == [0, 0, 1, -1] and model.version == [0, 3]
    model.apply_update(upd(4, keys=(1,), values=(9.0,), shard=1))
    model.check_ready()
    assert model.weights[1] == 9.0 and model.score(batch).shape == (1,)


def test_a_snapshot_with_no_rows_sets_every_value_of_its_shard_to_zero():
    """An empty model's snapshot (a shard's new epoch before any push) carries no rows; the
    replica then holds 0 for that shard's slots, whatever it held before; other wrong shapes
    are still refused."""
    spec = load_spec(text="[models.m]\nbits = 4")
    model = ServingModel(spec.model("m"), spec.feature_spec("m"), 2)
    model.apply_snapshot(0, 2, 1, 0, np.arange(1, 9, dtype=np.float32))
    model.apply_snapshot(1, 2, 1, 0, np.arange(1, 9, dtype=np.float32))
    model.apply_snapshot(0, 2, 2, 0, np.zeros(0, np.float32))
    assert model.weights[0::2].tolist() == [0.0] * 8
    assert model.weights[1::2].tolist() == list(range(1, 9))
    with pytest.raises(InvalidValue, match="values of shape"):
        model.apply_snapshot(1, 2, 2, 0, np.zeros(3, np.float32))


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(300), 1)  # many ties
    labels = rng.random(300) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(scores, labels) == pytest.approx(pairs / (pos.size * neg.size))


@pytest.mark.parametrize("text, err", [
    ("[cluster]\nshard = 3", "unknown key"),
    ("[cluster]\nshards = 'two'", "expected int"),
    ("[models.a]\nbits = 40", "bits must be"),
    ("[models.a.optimizer]\nname = 'lbfgs'", "must be one of"),
    ("[models.a]\ntransforms = ['age']", "not defined"),
    ("[transforms.age]\nkind = 'buckets'\nboundaries = [3, 1]", "sorted"),
    ("[cluster", "cannot read spec"),
    ("[cluster]\nworker_nice = 25", "worker_nice = 25: must be between 0 and 19"),
    ("[cluster]\nreplica_slice_ms = 0.01", "replica_slice_ms = 0.01: must be 0 or between 0.1"),
    ("[cluster]\nserving_cpus = '1-'", "serving_cpus = '1-': '1-' is not a CPU number"),
    ("[cluster]\nserving_cpus = 1", "serving_cpus = 1: expected str"),
])
def test_spec_errors_name_the_problem(text, err):
    with pytest.raises(ConfigError, match=err):
        load_spec(text=text)


def test_spec_round_trips_through_the_cluster_file_form():
    spec = load_spec(text="[transforms.age]\nkind='buckets'\nboundaries=[1,2]\n"
                          "[models.a]\ntransforms=['age']\ncrosses=[['x','y']]\n"
                          "[models.b]\nbits=10\n[models.b.optimizer]\nname='sgd'")
    again = ClusterSpec.from_dict(spec.to_dict())
    assert again == spec and again.feature_spec("a") == spec.feature_spec("a")
