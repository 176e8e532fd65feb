"""The training loop: per mini-batch, featurize -> pull state -> learn event by event -> push
the state's changes.

Progressive validation comes for free: each event is scored before it is learned from, with
the state that already includes every earlier event (`worker.models.linear`). Several trainers
may run against the same model at once (asynchronous, Hogwild-style); shards add whatever
deltas arrive.

Declaration: a model the spec leaves open learns what its input declaration says
(`worker.declare`, `common.declaration`): the first trainer offers its source's schema and
recommended features, later ones learn what the cluster keeps, and every batch is conformed to
the declared schema before it is featurized, as replicas do with reads.

Pipelining: the next batches are read and featurized on a helper thread while batch i is
learned and its deltas pushed (the compiled kernel and numpy release the GIL for most of that
work; `READ_AHEAD` of them, so that the helper keeps a core busy while the learning thread
waits for a pull and the shards answer it, instead of idling until its one batch is taken), and
the pull of batch i+1 goes out before push i, so the shards answer it while
the worker learns batch i instead of after. The worker then adds to what that pull brings back
its own pushes the pull missed (`_patch_own`), in the order the shards add them; each reply
names the highest push of this worker its shard had applied, so the patch is exact also for a
pull sent again after a shard restart. A single worker gets exactly the weights of the
unpipelined loop (bit for bit), only sooner. One thread at a time touches the source, the
featurizer and the key indexer (on the helper or the learning thread, as the learner says:
`send_pull`).

Bounded delay (`max_delay=k`, Li et al., "Scaling Distributed Machine Learning with the
Parameter Server", OSDI 2014): the pulls of the next k batches are already out when batch i is
pushed, so batch i is scored and learned with weights that may miss this worker's last k pushes
(and no others); linear models learn from that staler state as it is, deep models patch it as
above. k = 0 is the exact loop. A single worker's run stays deterministic for every k: the
order in which a shard sees its pulls and pushes is fixed.

Acknowledged sources (`worker.journal`: Redis Streams, a followed file, the ZeroMQ ingest
socket): each push is journaled by the source before it is sent, and the batch's position is
acknowledged to the source, in order, once every shard acknowledged the push. A restarted
worker first sends its journaled push again, so no event is lost or learned twice.
"""
from __future__ import annotations

import queue
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np

from common.config import ClusterSpec
from common.declaration import Declaration
from common.features import Batch, Featurizer, Features
from common.features.conform import conform
from worker.declare import agree
from worker.helper import Helper
from worker.keys import BatchKeys, KeyIndexer
from worker.metrics import ProgressiveMetrics
from worker.models.linear import LinearLearner
from worker.models.prebuilt import kernel
from worker.ps_client import Pending, PSClient


class Source(Protocol):
    """What the trainer reads from: anything that hands out batches of at most `max_events`
    events and None at the end, so files, stdin, synthetic streams and test lists are alike."""

    def read(self, max_events: int) -> Batch | None: ...


@dataclass
class Summary:
    """What a training run reports: counts, speed and progressive quality of the whole run."""

    model: str
    events: int
    batches: int
    seconds: float
    events_per_s: float
    logloss: float
    auc: float
    malformed: int = 0
    last_seqs: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Prepared:
    """A batch featurized, its keys indexed and its pull sent."""

    batch: Batch
    features: Features
    keys: BatchKeys
    pull: Pending
    position: object = None  # where the batch is in an acknowledged source


class Trainer:
    """One worker's training loop for one model against the shards (see the module docstring).

    Kept apart from the node process and its CLI so that tests, benchmarks and the Python API
    drive the very same loop with any source and any PS client."""

    def __init__(self, client: PSClient, spec: ClusterSpec, model: str, batch_size: int = 512,
                 pipeline: bool = True, max_delay: int = 0, declare: bool = True):
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0, not {max_delay}")
        if max_delay and not pipeline:
            raise ValueError("max_delay > 0 needs the pipelined loop (pipeline=True)")
        self.client = client
        self.max_delay = max_delay
        self.ack_delay = max_delay  # pushes an acknowledged source's input may trail by
        self.model = spec.model(model)
        self.featurizer = _featurizer(spec.feature_spec(model))
        self.indexer = KeyIndexer(self.model.bits)
        # the next pull goes out before the push and is patched with it (`_patch_own`): the
        # exact loop for linear models (no delay asked), and for deep models always
        self.patch = pipeline and (self.model.kind == "deep" or max_delay == 0)
        if self.patch:
            self.max_delay = max_delay or 1
        self.own: deque = deque(maxlen=self.max_delay)  # (push number, keys, deltas)
        self.learner = _learner(self.model)
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.metrics = ProgressiveMetrics()
        self.last_seqs: dict[int, int] = {}
        self.spec, self.declare = spec, declare
        self.declared: Declaration | None = None  # the model's input, once agreed (train)
        self.acked = None  # the acknowledged source being trained on (`worker.journal`)

    def adopt(self, declared: Declaration | None) -> None:
        """Learn what the model's declaration says (`worker.declare`): its features, schema
        and optimizer; None leaves the spec's."""
        self.declared = declared
        if declared is not None:
            self.model = declared.model_spec(self.model)
            self.featurizer = _featurizer(declared.feature_spec())
            self.learner = _learner(self.model)

    def featurize(self, batch: Batch) -> tuple[Batch, Features, BatchKeys | None]:
        if self.declared is not None:
            batch = conform(batch, self.declared.schema)
        features = self.featurizer.featurize(batch)
        if self.learner.keys_on_helper:  # see `send_pull`
            return batch, features, self.learner.batch_keys(self.indexer.index(features.ids),
                                                            features)
        return batch, features, None

    def send_pull(self, ready: tuple) -> _Prepared:
        """Send the pull of a featurized batch's keys, indexing them first unless `featurize`
        did. The learner says which thread indexes (`keys_on_helper`), the one with less to
        do: a linear model's keys are indexed here, on the learning thread, because reading
        and featurizing alone keep the helper about as busy as learning and pushing keep this
        one; a deep model's on the helper, with its step's (event, row) pairs, because its
        TensorFlow step makes the learning thread the busier."""
        batch, features, keys, *position = ready
        if keys is None:
            keys = self.learner.batch_keys(self.indexer.index(features.ids))
        return _Prepared(batch, features, keys,
                         self.client.pull_async(self.model.name, keys.slots, self.patch),
                         position[0] if position else None)

    def prepare(self, batch: Batch) -> _Prepared:
        return self.send_pull(self.featurize(batch))

    def learn(self, prep: _Prepared) -> Pending:
        """Learn the batch event by event from its pulled state (each event predicted first:
        progressive validation), push the state's changes."""
        state = prep.pull.wait()
        if self.patch:
            state = self._patch_own(prep.keys.slots, *state)
        p, deltas = self.learner.learn(prep.features, prep.keys, state, prep.batch.labels,
                                       prep.batch.weights)
        self.metrics.update(p, prep.batch.labels)
        number = self.client.push_no + 1
        if self.acked is not None:
            from worker.journal import JournalRecord
            self.acked.journal(JournalRecord(self.model.name, number, prep.keys.slots, deltas,
                                             prep.batch.n, prep.position))
        pending = self.client.push_async(self.model.name, prep.keys.slots, deltas,
                                         prep.batch.n, number)
        pending.position, pending.push_no = prep.position, number
        if self.patch:
            self.own.append((number, prep.keys.slots, deltas))
        return pending

    def _done(self, pending: Pending) -> None:
        """Wait for a push's acknowledgements, then acknowledge its input to the source."""
        self.last_seqs.update(pending.wait())
        if self.acked is not None:
            self.acked.acknowledge(pending.position, pending.push_no)

    def replay_journal(self, source) -> int:
        """Send the pushes an acknowledged source journaled and that a killed worker may not
        have delivered to every shard, and acknowledge their input; returns how many."""
        records = source.journaled()
        for record in records:
            if record.model != self.model.name:
                raise ValueError(f"the source's push journal holds a push of model "
                                 f"{record.model!r}; this worker trains {self.model.name!r}")
            self.last_seqs.update(self.client.push_async(
                record.model, record.keys, record.deltas, record.events, record.push_no).wait())
            source.acknowledge(record.position, record.push_no)
        return len(records)

    def _patch_own(self, slots: np.ndarray, state: np.ndarray,
                   applied: np.ndarray) -> np.ndarray:
        """The pulled state plus this worker's pushes it misses, added in order as the shards
        add them (float32): bit for bit the state the exact loop would have pulled, so the
        pull overlaps the learning of the batch before it at no cost in exactness for a single
        worker. Which pushes a row misses its shard's reply says (`applied`, the highest push
        of this worker it had applied): usually the pushes sent after the pull, but fewer when
        the pull was sent again after a shard restart and the shard had meanwhile applied
        some. Deep models always train this way: every batch touches every dense row, so a
        stale pull would fold the same Adam step into the dense rows again. One compiled merge
        of the two sorted key lists per push (`kernel.patch_rows`)."""
        if state.dtype != np.float32 or not state.flags.c_contiguous:
            state = np.ascontiguousarray(state, np.float32)
        for number, keys, deltas in self.own:
            if keys.size:
                kernel().patch_rows(slots, state, applied, keys, deltas, number)
        return state

    def step(self, batch: Batch) -> None:
        """Train on one batch, unpipelined."""
        self.last_seqs.update(self.learn(self.prepare(batch)).wait())

    def train(self, source: Source, limit: int | None = None,
              progress: Callable[[dict], None] | None = None,
              progress_every_s: float = 2.0) -> Summary:
        if self.declare and self.declared is None:
            self.adopt(agree(self.client, self.spec, self.model.name, source))
        if hasattr(source, "acknowledge"):
            self.replay_journal(source)
            self.acked = source
        start = last_report = time.monotonic()
        batches = 0
        read = 0

        def read_and_featurize() -> tuple | None:
            nonlocal read
            while limit is None or read < limit:
                want = self.batch_size if limit is None else min(self.batch_size, limit - read)
                batch = source.read(want)
                if batch is None:
                    return None
                if batch.n:
                    read += batch.n
                    if self.acked is not None:
                        return (*self.featurize(batch), self.acked.position())
                    return self.featurize(batch)
            return None

        def next_batch() -> _Prepared | None:
            ready = read_and_featurize()
            return self.send_pull(ready) if ready else None

        def tick() -> None:
            nonlocal batches, last_report
            batches += 1
            now = time.monotonic()
            if progress and now - last_report >= progress_every_s:
                last_report = now
                progress(self._progress(now - start))

        if self.pipeline and self.acked is not None:
            self._train_live(read_and_featurize, tick)
        elif not self.pipeline:
            prepared = next_batch()
            while prepared is not None:
                self._done(self.learn(prepared))
                prepared = next_batch()
                tick()
        else:
            helper = Helper()
            try:
                # pulls out ahead of the batch being learned: max_delay of them
                ahead: deque[_Prepared] = deque()
                while len(ahead) <= self.max_delay and (prepared := next_batch()) is not None:
                    ahead.append(prepared)
                # the batch after those, featurized; the helper works READ_AHEAD further on
                ready = read_and_featurize() if ahead else None
                for _ in range(READ_AHEAD if ready else 0):
                    helper.submit(read_and_featurize)
                pushes: deque[Pending] = deque()
                while ahead:
                    pushes.append(self.learn(ahead.popleft()))
                    if ready:
                        # sent after the push: the shard applies them in this order
                        ahead.append(self.send_pull(ready))
                        ready = helper.result()  # featurized while earlier batches were learned
                        if ready:
                            helper.submit(read_and_featurize)
                    while len(pushes) > self.max_delay or (pushes and not ahead):
                        self._done(pushes.popleft())
                    tick()
            finally:
                helper.close()
        seconds = time.monotonic() - start
        stats = getattr(source, "stats", None)
        return Summary(self.model.name, self.metrics.count, batches, round(seconds, 3),
                       round(self.metrics.count / seconds, 1) if seconds > 0 else 0.0,
                       self.metrics.logloss, self.metrics.auc(),
                       getattr(stats, "malformed", 0), dict(self.last_seqs))

    def _train_live(self, read_and_featurize: Callable[[], tuple | None],
                    tick: Callable[[], None]) -> None:
        """The pipelined loop for an acknowledged source, whose reads wait for input: batch
        i+1 is read and featurized on the helper while batch i is pulled, learned and pushed,
        and a batch's pull goes out after every earlier push (exact for every max_delay, which
        here only lets acknowledgements trail). While the helper waits for input, the pushes
        out are finished and acknowledged, so a quiet stream leaves nothing half done."""
        helper = Helper()
        pushes: deque[Pending] = deque()
        try:
            helper.submit(read_and_featurize)
            while True:
                while True:
                    try:
                        ready = helper.result(0.05 if pushes else None)
                        break
                    except queue.Empty:
                        while pushes:
                            self._done(pushes.popleft())
                if ready is None:
                    break
                helper.submit(read_and_featurize)
                pushes.append(self.learn(self.send_pull(ready)))
                while len(pushes) > self.ack_delay:
                    self._done(pushes.popleft())
                tick()
            while pushes:
                self._done(pushes.popleft())
        finally:
            helper.close()

    def _progress(self, elapsed: float) -> dict:
        return {"events": self.metrics.count,
                "events_per_s": round(self.metrics.count / elapsed, 1) if elapsed else 0.0,
                "logloss": self.metrics.logloss, "recent_logloss": self.metrics.recent_logloss,
                "auc": self.metrics.auc(), "recent_auc": self.metrics.recent_auc(),
                **(self.acked.lag() if hasattr(self.acked, "lag") else {})}


READ_AHEAD = 2  # batches the helper reads and featurizes beyond the one about to be pulled


def _featurizer(spec) -> Featurizer:
    """A featurizer of `spec` with the worker's compiled mixers (`worker.models.kernel`)."""
    compiled = kernel()
    return Featurizer(spec, compiled.mix_fields, compiled.mix_entries)


def _learner(model):
    """The learner of a model's kind (TensorFlow is loaded for deep models only)."""
    if model.kind == "deep":
        from worker.models.deep import DeepLearner
        return DeepLearner(model)
    return LinearLearner(model.optimizer)
