"""A model's input declaration: its rules on a shard, its persistence, what it does to a batch
(`conform`), and what sources offer (no sockets)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.config import load_spec
from common.declaration import Declaration
from common.errors import DeclarationConflict, InvalidInstance, InvalidValue
from common.features import CATEGORICAL, NUMERIC, Batch, Column, FeatureSpec, Featurizer
from common.features import columnarize
from common.features.conform import conform
from ps.declared import Declarations
from ps.durable import ShardState
from tests.unit.source_helpers import tiny_movielens
from worker.declare import proposal
from worker.sources import MovieLensSource, open_source

MOVIELENS_KINDS = {"user": "id", "item": "id", "age": "num", "gender": "cat"}


def declaration(source="a", **changes) -> Declaration:
    base = Declaration(source, dict(MOVIELENS_KINDS), ("user", "item"), (("user", "item"),),
                       {"age": {"kind": "buckets", "boundaries": [18.0, 25.0]}})
    return dataclasses.replace(base, **changes)


def open_spec(shards: int = 1, **cluster):
    text = "[cluster]\n" + "".join(f"{k} = {v!r}\n" for k, v in cluster.items())
    return load_spec(text=text.replace("'", '"') + f"shards = {shards}\n")


# --- the rules ------------------------------------------------------------------------------

def test_first_declaration_wins_identical_agrees_different_is_refused(tmp_path):
    spec = open_spec().model("default")
    kept = Declarations(tmp_path)
    assert kept.offer("default", spec, None, trained=False) == (None, False)  # only asking
    first = declaration("movielens-100k")
    assert kept.offer("default", spec, first, trained=False) == (first, True)
    # the same declaration from another copy of the data set (another source name) agrees
    assert kept.offer("default", spec, declaration("/elsewhere/ml"), False) == (first, False)
    with pytest.raises(DeclarationConflict, match=r"declared by 'movielens-100k'.*\['crosses'\]"):
        kept.offer("default", spec, declaration("b", crosses=()), trained=False)
    # on disk before the answer: a new process reads the same one back
    again = Declarations(tmp_path)
    assert again.get("default") == first
    assert again.offer("default", spec, None, trained=True) == (first, False)


def test_a_model_trained_undeclared_or_named_in_the_spec_takes_no_declaration(tmp_path):
    kept = Declarations(tmp_path)
    spec = open_spec().model("default")
    assert kept.offer("default", spec, declaration(), trained=True) == (None, False)
    assert kept.get("default") is None and not (tmp_path / "declarations.json").exists()
    named = load_spec(text='[models.ctr]\nfields = ["user"]\n').model("ctr")
    with pytest.raises(DeclarationConflict, match="names its fields in the cluster spec"):
        kept.offer("ctr", named, declaration(), trained=False)


@pytest.mark.parametrize("change, message", [
    ({"schema": {"user": "integer"}}, "'schema' must map"),
    ({"crosses": [["user"]]}, "two or more"),
    ({"transforms": {"age": {"kind": "buckets", "boundaries": [30, 18]}}}, "sorted"),
    ({"optimizer": {"name": "adam"}}, "optimizer name"),
    ({"optimizer": {"learning_rate": "fast"}}, "settings numbers"),
    ({"colour": "blue"}, "unknown key"),
])
def test_a_bad_declaration_is_refused_naming_the_fault_and_nothing_is_kept(tmp_path, change,
                                                                            message):
    state = ShardState(open_spec(), 0, tmp_path)
    with pytest.raises(InvalidValue, match=message):
        state.declare("default", {**declaration().to_dict(), **change})
    assert state.declarations.get("default") is None
    assert state.declare("default", {}) == (None, False)


def test_a_declaration_sets_the_shards_optimizer_and_survives_restart_and_replay(tmp_path):
    """The store is rebuilt with the declared optimizer; after a restart (kill -9: nothing
    but the files), the declaration is read before the log is replayed, so the replayed
    pushes land in a store of the declared layout and weights are derived with its settings."""
    spec = open_spec(fsync="always")
    state = ShardState(spec, 0, tmp_path)
    state.recover()
    adam = dataclasses.asdict(spec.model("default").optimizer) | {"name": "lazy_adam"}
    kept, new = state.declare("default", declaration(optimizer=adam).to_dict())
    assert new and state.store("default").columns == ("w", "m", "v", "t")
    keys = np.array([1, 5], np.uint64)
    deltas = np.array([[0.5, 0.1, 0.2, 1.0], [-0.25, 0.0, 0.3, 1.0]], np.float32)
    state.push("default", keys, deltas, "w1", 1)
    before = {k: a.copy() for k, a in state.store("default").state.items()}
    with pytest.raises(DeclarationConflict):  # trained now: a different one is still refused
        state.declare("default", declaration(fields=("user",)).to_dict())
    state.close()  # no snapshot: recovery replays the log

    again = ShardState(spec, 0, tmp_path)
    report, _ = again.recover()
    assert report.replayed == 1 and again.declarations.get("default") == kept
    for name, array in before.items():
        np.testing.assert_array_equal(again.store("default").state[name], array)
    again.close()


def test_an_untrained_model_rebuilt_by_a_declaration_keeps_the_spec_bits(tmp_path):
    spec = open_spec()
    state = ShardState(spec, 0, tmp_path)
    state.declare("default", declaration().to_dict())
    store = state.store("default")
    assert store.spec.bits == spec.model("default").bits
    assert store.spec.fields == ["user", "item"] and store.spec.crosses == [["user", "item"]]
    state.close()


def test_a_declaration_of_the_stores_optimizer_keeps_its_arrays(tmp_path):
    """Declaring what is featurized only (the spec's optimizer) leaves the empty store's
    arrays as they are, with the declared spec; another optimizer makes a store anew."""
    spec = open_spec()
    state = ShardState(spec, 0, tmp_path / "same")
    store = state.store("default")
    optimizer = dataclasses.asdict(spec.model("default").optimizer)
    kept, new = state.declare("default", declaration(optimizer=optimizer).to_dict())
    assert new and state.store("default") is store
    assert store.spec == kept.model_spec(spec.model("default"))
    state.close()
    other = ShardState(spec, 0, tmp_path / "other")
    before = other.store("default")
    _, new = other.declare("default", declaration(optimizer=optimizer | {"learning_rate": 0.5})
                           .to_dict())
    assert new and other.store("default") is not before
    assert other.store("default").spec.optimizer.learning_rate == 0.5
    other.close()


def test_a_model_restored_from_a_snapshot_counts_as_trained(tmp_path):
    spec = open_spec(fsync="always")
    state = ShardState(spec, 0, tmp_path)
    state.recover()
    state.push("default", np.array([3], np.uint64), np.array([[0.5, 0.25]], np.float32), "w1", 1)
    state.snapshot({})
    state.close()
    again = ShardState(spec, 0, tmp_path)
    report, _ = again.recover()
    assert report.replayed == 0 and again.store("default").pushes == 0  # all from the snapshot
    assert again.declare("default", declaration().to_dict()) == (None, False)
    again.close()


# --- conforming a batch to the schema -------------------------------------------------------

def test_a_json_number_for_an_id_field_gets_the_id_the_source_column_got(tmp_path):
    source_batch = MovieLensSource(tiny_movielens(tmp_path / "ml")).read(1)  # user 2, item 11
    featurizer = Featurizer(FeatureSpec(("user", "item"), {}, (("user", "item"),), bias=False))
    trained = featurizer.featurize(conform(source_batch, MOVIELENS_KINDS)).ids
    for instance in ({"user": 2, "item": 11}, {"user": 2.0, "item": 11}, {"user": "2", "item": "11"}):
        served = featurizer.featurize(conform(columnarize([instance], with_labels=False),
                                              MOVIELENS_KINDS)).ids
        np.testing.assert_array_equal(np.sort(served), np.sort(trained))
    unconformed = featurizer.featurize(columnarize([{"user": 2, "item": 11}], with_labels=False))
    assert not set(unconformed.ids.tolist()) & set(trained.tolist())  # log2 buckets


def test_conform_converts_by_kind_and_refuses_what_cannot_be_that_kind():
    batch = columnarize([{"age": "31", "gender": 1, "user": 7, "other": 2.5}], with_labels=False)
    out = conform(batch, MOVIELENS_KINDS)
    assert out.columns["age"].kind == NUMERIC and out.columns["age"].values.tolist() == [31.0]
    assert out.columns["gender"].kind == CATEGORICAL
    assert out.columns["gender"].values.tolist() == ["1"]
    assert out.columns["user"].values.dtype == np.int64
    assert out.columns["other"] is batch.columns["other"]  # not in the schema: untouched
    for bad, message in [({"user": 7.5}, "integer id.*7.5"), ({"user": "seven"}, "'seven'"),
                         ({"age": "old"}, "a number.*'old'"), ({"age": "inf"}, "a number")]:
        with pytest.raises(InvalidInstance, match=message):
            conform(columnarize([bad], with_labels=False), MOVIELENS_KINDS)
    same = Batch(1, {"user": Column(CATEGORICAL, np.zeros(1, np.int64), np.array([3]))})
    assert conform(same, MOVIELENS_KINDS) is same


# --- what sources offer ---------------------------------------------------------------------

def test_movielens_offers_its_recommended_model_and_a_spec_optimizer_stays(tmp_path):
    source = MovieLensSource(tiny_movielens(tmp_path / "ml"))
    offered = proposal(source, open_spec(), "default")
    assert offered.schema["user"] == "id" and offered.schema["age"] == "num"
    assert ("user", "genres") in offered.crosses and offered.optimizer["learning_rate"] == 0.25
    tuned = load_spec(text="[models.default.optimizer]\nlearning_rate = 0.3\n")
    assert proposal(source, tuned, "default").optimizer["learning_rate"] == 0.3


def test_a_delimited_file_offers_its_schema_and_json_lines_nothing(tmp_path):
    tsv = tmp_path / "e.csv"
    tsv.write_text("label,age,city\n1,31,7\n")
    offered = proposal(open_source(str(tsv), schema="label,age:num,city:cat,x:skip"),
                       open_spec(), "default")
    assert offered.schema == {"age": "num", "city": "cat"} and offered.fields == ()
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text('{"label": 1, "features": {"a": "x"}}\n')
    assert proposal(open_source(str(jsonl)), open_spec(), "default") is None


def test_movielens_reports_malformed_lines_with_their_numbers(tmp_path):
    directory = tiny_movielens(tmp_path / "ml")
    (directory / "u.data").write_text("1\t10\t5\t300\n\n2\t11\t3\n1\tx\t4\t200\n3\t10\t1\t100\n")
    source = MovieLensSource(directory)
    batch = source.read(10)
    assert batch.columns["user"].values.tolist() == [3, 1]  # timestamp order, bad lines gone
    assert source.stats.malformed == 2
    assert [line for line, _ in source.stats.examples] == [3, 4]
    assert "expected 4 fields, got 3" in source.stats.examples[0][1]
    assert "not an integer: 'x'" in source.stats.examples[1][1]
