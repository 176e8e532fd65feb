"""A shard's slice of one model: optimizer state plus weights, with validated pull and push.

Workers run the optimizer (`common.optim`); a shard keeps the state columns, answers a pull with
them, and merges a push by adding its deltas, so the pushes of many workers merge in any order.
Plain object, no sockets: tests drive it directly and the shard node wires it to the network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import optim
from common.config import ModelSpec
from common.errors import InvalidValue
from common.sharding import shard_size


@dataclass
class CheckedPush:
    """A push that passed every check, with the new values of its rows' state columns."""

    rows: np.ndarray
    columns: dict[str, np.ndarray]


class RowState:
    """What every store of a model's rows shares: each store's own `check_push` makes a
    `CheckedPush`, `apply` writes it, and local rows map to slots the same way."""

    state: dict[str, np.ndarray]
    shard: int
    n_shards: int
    pushes: int

    def check_push(self, keys: np.ndarray, deltas: np.ndarray) -> CheckedPush:
        raise NotImplementedError

    def apply(self, push: CheckedPush) -> None:
        for name, values in push.columns.items():
            self.state[name][push.rows] = values
        self.pushes += 1

    def push(self, keys: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """Validate and add deltas; returns the local rows changed."""
        checked = self.check_push(keys, deltas)
        self.apply(checked)
        return checked.rows

    def slots_of_rows(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.uint64) * np.uint64(self.n_shards) + np.uint64(self.shard)


class ModelShard(RowState):
    """One model's rows that this shard owns (slot ``row * n_shards + shard``), stored densely,
    one float32 array per state column and one for the weights ("w"; for FTRL derived from z
    and n), so a pull is one gather per column and a push one add per column. A push is checked
    whole before anything changes: its keys, its deltas' shape and size (|delta| <= `max_delta`),
    and that columns which cannot be negative stay >= 0."""

    def __init__(self, spec: ModelSpec, shard: int, n_shards: int, max_delta: float = 1e6):
        self.spec = spec
        self.shard = shard
        self.n_shards = n_shards
        self.max_delta = max_delta
        self.size = shard_size(spec.bits, n_shards, shard)
        self.optimizer = optim.layout(spec.optimizer.name)  # numpy only: a shard loads no numba
        self.columns: tuple[str, ...] = self.optimizer.columns
        self._nonneg = self.optimizer.nonneg_index()
        names = self.columns if "w" in self.columns else ("w", *self.columns)
        self.state = {name: np.zeros(self.size, dtype=np.float32) for name in names}
        self.pushes = 0
        self.pulls = 0

    @property
    def weights(self) -> np.ndarray:
        return self.state["w"]

    def rows_for(self, keys: np.ndarray) -> np.ndarray:
        """Local rows of `keys`, after checking every invariant a message's keys must meet."""
        if keys.ndim != 1:
            raise InvalidValue("keys must be one-dimensional")
        if keys.size and int(keys[-1]) >= (1 << self.spec.bits):
            raise InvalidValue(f"key {int(keys[-1])} is outside model {self.spec.name!r} "
                               f"({self.spec.bits} bits)")
        if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            raise InvalidValue("keys must be sorted and unique")
        # one division: a key is owned here when it is its row times n_shards plus this shard
        # (keys are below 2**bits <= 2**32, so the rows are the same numbers as int64)
        n = np.uint64(self.n_shards)
        rows = keys // n
        if keys.size and bool(np.any(rows * n + np.uint64(self.shard) != keys)):
            raise InvalidValue(f"keys not owned by shard {self.shard} of {self.n_shards}")
        return rows.view(np.int64)

    def pull(self, keys: np.ndarray) -> np.ndarray:
        """The state of `keys`, float32 of shape (len(keys), len(columns))."""
        rows = self.rows_for(keys)
        self.pulls += 1
        out = np.empty((rows.size, len(self.columns)), np.float32)
        for j, name in enumerate(self.columns):
            np.take(self.state[name], rows, out=out[:, j])
        return out

    def check_push(self, keys: np.ndarray, deltas: np.ndarray) -> CheckedPush:
        """Validate a push against what only the shard can judge and work out its result;
        raises InvalidValue naming the problem and changes nothing. That deltas are finite the
        wire codec checked when it decoded the push."""
        rows = self.rows_for(keys)
        want = (keys.size, len(self.columns))
        if deltas.shape != want:
            raise InvalidValue(f"deltas of shape {list(deltas.shape)} for {keys.size} keys: "
                               f"model {self.spec.name!r} ({self.spec.optimizer.name}) needs "
                               f"{list(want)}, columns {list(self.columns)}")
        if not keys.size:
            return CheckedPush(rows, {name: np.zeros(0, np.float32) for name in self.state})
        # whole-array reductions first, the element that failed only when one did
        if float(np.abs(deltas).max()) > self.max_delta:
            i, j = np.argwhere(np.abs(deltas) > self.max_delta)[0]
            raise InvalidValue(f"delta {float(deltas[i, j]):g} of {self.columns[j]} for key "
                               f"{int(keys[i])} exceeds max_delta = {self.max_delta:g}")
        new = {}
        with np.errstate(over="ignore"):  # an overflow is refused below, by name
            for j, name in enumerate(self.columns):
                new[name] = self.state[name].take(rows)
                new[name] += deltas[:, j]
        for j in self._nonneg:
            name = self.columns[j]
            if new[name].min() < 0:
                i = int(np.argmax(new[name] < 0))
                raise InvalidValue(f"delta {float(deltas[i, j]):g} would make {name} of key "
                                   f"{int(keys[i])} negative ({float(new[name][i]):g}); "
                                   f"{name} must stay >= 0")
        for name, values in new.items():
            if not (np.isfinite(values.max()) and np.isfinite(values.min())):
                raise InvalidValue(f"deltas would make {name} overflow to inf")
        if "w" not in self.columns:
            new["w"] = self.optimizer.weights(new, self.spec.optimizer)
        return CheckedPush(rows, new)
