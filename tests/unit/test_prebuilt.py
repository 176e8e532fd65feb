"""The worker's kernel compiled ahead of time (worker/models/prebuilt.py) learns exactly what
numba's JIT learns, and a missing or unusable build falls back to the JIT.

The build is real (numba.pycc and the C compiler, tens of seconds), once for the module, into
a temporary directory: the user's cache is not touched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from common.config import OptimizerSpec, load_spec
from common.hashing import hash_strings
from common.features import Featurizer
from worker.keys import KeyIndexer
from worker.models import prebuilt
from worker.models.linear import LinearLearner
from worker.sources import compiled
from worker.sources.arrow_columns import hashes_of, offsets_and_data
from worker.sources.delimited_scan import BlockScanner
from worker.sources.synthetic import SyntheticStream, synthetic_spec_toml

BITS = 18


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kernel")
    path = prebuilt.build(directory)
    assert path == prebuilt.module_path(directory) and path.is_file()
    module = prebuilt.load(directory)
    assert module is not None
    return prebuilt.Kernel(module)


def learn_stream(kernel: prebuilt.Kernel, opt: OptimizerSpec, batch_size: int, wide: bool):
    spec = load_spec(text=synthetic_spec_toml(BITS))
    featurizer = Featurizer(spec.feature_spec("ctr"))
    indexer = KeyIndexer(BITS)
    learner = LinearLearner(opt, kernel)
    table = np.zeros((1 << BITS, len(learner.columns)), np.float32)
    source = SyntheticStream(4000, seed=5)
    probabilities = []
    while (batch := source.read(batch_size)) is not None:
        features = featurizer.featurize(batch)
        keys = indexer.index(features.ids)
        if wide:  # both index widths the key indexer may hand out
            keys.inverse = keys.inverse.astype(np.int64)
        else:
            keys.inverse = keys.inverse.astype(np.int32)
        rows = keys.slots.astype(np.int64)
        p, deltas = learner.learn(features, keys, table[rows], batch.labels, batch.weights)
        table[rows] += deltas
        probabilities.append(p)
    return np.concatenate(probabilities), table


@pytest.mark.parametrize("name", ["ftrl", "adagrad", "sgd", "lazy_adam"])
@pytest.mark.parametrize("wide", [False, True])
def test_prebuilt_kernel_learns_what_the_jit_learns_bit_for_bit(built, name, wide):
    opt = OptimizerSpec(name, learning_rate=0.05 if name != "lazy_adam" else 0.002,
                        l1=0.1 if name != "lazy_adam" else 0.0, l2=0.5)
    assert built.prebuilt and not prebuilt.Kernel().prebuilt
    p_aot, table_aot = learn_stream(built, opt, 512, wide)
    p_jit, table_jit = learn_stream(prebuilt.Kernel(), opt, 512, wide)
    np.testing.assert_array_equal(p_aot, p_jit)
    np.testing.assert_array_equal(table_aot, table_jit)
    assert np.count_nonzero(table_aot) > 100


def test_no_build_or_a_broken_one_means_the_jit(tmp_path):
    assert prebuilt.load(tmp_path) is None
    prebuilt.module_path(tmp_path).write_bytes(b"not a shared object")
    assert prebuilt.load(tmp_path) is None
    assert prebuilt.Kernel(prebuilt.load(tmp_path)).prebuilt is False


def test_a_build_is_named_by_the_sources_it_was_made_from(monkeypatch, tmp_path):
    before = prebuilt.key()
    edited = tmp_path / "worker" / "models"
    edited.mkdir(parents=True)
    for rel in prebuilt.SOURCES:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((prebuilt._ROOT / rel).read_bytes())
    monkeypatch.setattr(prebuilt, "_ROOT", tmp_path)
    assert prebuilt.key() == before
    (tmp_path / "common/optim/ftrl.py").write_text("# edited\n", encoding="utf-8")
    assert prebuilt.key() != before


def test_a_build_is_named_by_the_cpu_it_was_made_for(monkeypatch):
    """Built for the host's instruction set, a module must not be loaded on another CPU (a
    home directory that several machines share): the CPU's extensions are part of its name.
    Without a list of them the build is the architecture's portable one."""
    monkeypatch.setattr(prebuilt, "_cpu_features", lambda: "fpu sse2 avx2 popcnt")
    host = prebuilt.key()
    assert prebuilt.target_cpu() == "host"
    monkeypatch.setattr(prebuilt, "_cpu_features", lambda: "fpu sse2")
    assert prebuilt.key() != host
    monkeypatch.setattr(prebuilt, "_cpu_features", lambda: "")
    assert prebuilt.key() != host and prebuilt.target_cpu() == ""


def test_prebuilt_kernel_releases_the_gil_while_it_learns(built):
    """The trainer featurizes the next batch on a helper thread while a batch is learned: the
    kernel must let go of the GIL, as the JIT's nogil=True does. pycc's Python wrappers release
    it through PyEval_SaveThread / PyEval_RestoreThread only when built to (a build holding the
    GIL links neither), so the built module must name both."""
    path = Path(built.module.__file__)
    code = path.read_bytes()
    assert b"PyEval_SaveThread" in code and b"PyEval_RestoreThread" in code, \
        f"{path.name} holds the GIL while it learns"


def _scan_and_hash(functions: dict, monkeypatch):
    """What the TSV scan and the Arrow string hash give with these compiled functions."""
    monkeypatch.setattr(compiled, "_functions", dict(functions))
    scanner = BlockScanner(["label", "num", "cat", "skip", "cat"], "\t")
    rng = np.random.default_rng(2)
    words = ["", "a", "Zürich", "日本語", "x" * 40, "-1", "tab:", "🙂"]
    block = "".join(f"{rng.choice(['0', '1', '-1', '+1'])}\t{rng.integers(-10**6, 10**6) / 8}\t"
                    f"{rng.choice(words)}\tskip\t{rng.choice(words)}{k}\n" for k in range(3000))
    taken = scanner.scan(block.encode(), 3000)
    declined = scanner.scan(b"1\t2\tx\ty\n1\tnot a number\tx\ty\tz\n", 2)
    strings = pa.array([b"ok", "Zürich".encode(), b"\xff\xfe bad", b""], pa.binary())
    first_bad = compiled.hash_values(*offsets_and_data(strings), np.arange(4), np.empty(4, np.uint64))
    return taken, declined, hashes_of(strings.slice(0, 2), np.arange(2)), first_bad


def test_prebuilt_reader_scan_and_hash_are_the_jits_bit_for_bit(built, monkeypatch):
    from worker.sources import scan_kernel, string_hash
    aot = _scan_and_hash({"scan_block": built.module.scan_block,
                          "hash_values": built.module.hash_values}, monkeypatch)
    jit = _scan_and_hash({"scan_block": scan_kernel.scan_block,
                          "hash_values": string_hash.hash_values}, monkeypatch)
    assert aot[0] is not None
    taken, jit_taken = aot[0], jit[0]
    for name in ("labels", "offsets", "fields", "words"):  # numbers as their float64 bits
        np.testing.assert_array_equal(getattr(taken, name), getattr(jit_taken, name))
    assert taken.words.size < 3 * 3000  # empty values are missing, not hashed
    assert aot[1] is None and jit[1] is None  # the malformed block is declined by both
    np.testing.assert_array_equal(aot[2], jit[2])
    np.testing.assert_array_equal(aot[2], hash_strings(np.array(["ok", "Zürich"])))
    assert aot[3] == jit[3] == 2


def test_prebuilt_sparse_scan_is_the_jits_bit_for_bit(built, monkeypatch):
    """The VW/libsvm scan from the prebuilt module and from the JIT: the same events."""
    from tests.unit.test_sparse_scan import _libsvm_lines, _vw_lines
    from worker.sources import sparse_kernel, sparse_scan
    rng = np.random.default_rng(4)
    blocks = [("\n".join(_vw_lines(rng, 800)) + "\n", False),
              ("\n".join(_libsvm_lines(rng, 800)) + "\n", True),
              ("1 |a b\n2 |a b\n", False)]
    results = []
    for fn in (built.module.scan_sparse, sparse_kernel.scan_sparse):
        monkeypatch.setattr(compiled, "_functions", {"scan_sparse": fn})
        results.append([sparse_scan.scan(text.encode(), text.count("\n"), libsvm)
                        for text, libsvm in blocks])
    aot, jit = results
    for mine, theirs in zip(aot[:2], jit[:2]):
        assert mine is not None and theirs is not None and mine.n == theirs.n
        np.testing.assert_array_equal(mine.labels, theirs.labels)
        assert (mine.weights is None) == (theirs.weights is None)
        if mine.weights is not None:
            np.testing.assert_array_equal(mine.weights, theirs.weights)
        assert list(mine.columns) == list(theirs.columns) and len(mine.columns) > 3
        for name, col in mine.columns.items():
            assert col.kind == theirs.columns[name].kind
            np.testing.assert_array_equal(col.rows, theirs.columns[name].rows)
            np.testing.assert_array_equal(col.values, theirs.columns[name].values)
    assert aot[2] is None and jit[2] is None  # a bad label: declined by both


def test_prebuilt_json_scan_is_the_jits_bit_for_bit(built, monkeypatch):
    """The JSON lines scan from the prebuilt module and from the JIT: the same events."""
    from tests.unit.test_json_scan import _block, _lines, assert_same_batch
    from worker.sources import json_kernel
    from worker.sources.json_scan import JsonScanner
    rng = np.random.default_rng(5)
    blocks = [_block(_lines(rng, 800)), _block(_lines(rng, 300, bools=True)),
              _block(['{"label": 1, "features": {"a": 1}}', '{"label": 1, "features": {"a": "x"}}'])]
    results = []
    for fn in (built.module.scan_json, json_kernel.scan_json):
        monkeypatch.setattr(compiled, "_functions", {"scan_json": fn})
        results.append([JsonScanner().scan(block, n) for block, n in blocks])
    aot, jit = results
    for mine, theirs in zip(aot[:2], jit[:2]):
        assert mine is not None and theirs is not None and len(mine.columns) > 3
        assert_same_batch(mine, theirs)
    assert aot[2] is None and jit[2] is None  # a field of two kinds: declined by both


def test_compiled_id_mixer_gives_the_featurizers_ids_bit_for_bit(built):
    """The worker featurizes with its kernel's `mix_fields`; replicas with numpy's. A
    training batch and a predict request of the same event must get the same ids."""
    spec = load_spec(text=synthetic_spec_toml(BITS)).feature_spec("ctr")
    batch = SyntheticStream(3000, seed=9).read(3000)
    plain = Featurizer(spec).featurize(batch)
    for kernel in (built, prebuilt.Kernel()):
        mixed = Featurizer(spec, kernel.mix_fields).featurize(batch)
        np.testing.assert_array_equal(mixed.rows, plain.rows)
        np.testing.assert_array_equal(mixed.ids, plain.ids)
