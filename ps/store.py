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
from common.rows import as_rows, of_rows
from common.sharding import shard_size


@dataclass
class CheckedPush:
    """A push that passed every check, with the new values of its rows' state columns.

    `block`: the same new values as one (rows, columns) array, when the store keeps its columns
    side by side (`ModelShard`, which writes them with one scatter)."""

    rows: np.ndarray
    columns: dict[str, np.ndarray]
    block: np.ndarray | None = None


class RowState:
    """What every store of a model's rows shares: each store's own `check_push` makes a
    `CheckedPush`, `apply` writes it, and local rows map to slots the same way."""

    state: dict[str, np.ndarray]  # views into `_block`, every row's values in one array
    _block: np.ndarray
    spec: ModelSpec
    shard: int
    n_shards: int
    pushes: int
    derived: tuple[str, ...] = ()  # arrays a snapshot holds that the store computes from `state`

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

    @property
    def weights(self) -> np.ndarray:
        return self.state["w"]

    def weights_of(self, rows: np.ndarray) -> np.ndarray:
        """The weights of local rows `rows` (what replicas are published)."""
        return self.weights[rows]

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the arrays a snapshot holds, `derived` ones included (computed)."""
        return {name: a.copy() for name, a in self.state.items()}

    def holds_values(self) -> bool:
        """Whether any row holds anything but zeros (pushed, or restored from a snapshot)."""
        return bool(self._block.any())

    def keeps_layout_for(self, spec: ModelSpec) -> bool:
        """Whether a store of `spec` would hold the very arrays this one does (the same kind,
        bits and optimizer: a declaration that changes only what is featurized), so that an
        empty store need not be made again (a fresh block of every row, tens of ms)."""
        return (spec.kind == self.spec.kind == "linear" and spec.bits == self.spec.bits
                and spec.optimizer == self.spec.optimizer)


def owned_rows(keys: np.ndarray, shard: int, n_shards: int) -> np.ndarray:
    """Local rows of sorted unique `keys` (below 2**62), after checking that shard `shard` of
    `n_shards` owns every one. A key is owned here when it is its row times n_shards plus this
    shard: with a power of two shards a shift and a mask tell, otherwise one (uint64, slow)
    division does (the keys are below 2**62, so the rows are the same numbers as int64)."""
    if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        raise InvalidValue("keys must be sorted and unique")
    mine = np.uint64(shard)
    if n_shards & (n_shards - 1) == 0:
        rows = keys >> np.uint64(n_shards.bit_length() - 1)
        owned = (keys & np.uint64(n_shards - 1)) == mine
    else:
        n = np.uint64(n_shards)
        rows = keys // n
        owned = rows * n + mine == keys
    if keys.size and not bool(owned.all()):
        raise InvalidValue(f"keys not owned by shard {shard} of {n_shards}")
    return rows.view(np.int64)


class ModelShard(RowState):
    """One model's rows that this shard owns (slot ``row * n_shards + shard``), stored densely:
    the optimizer's state columns side by side in one float32 block of (rows, columns). The
    weights ("w") are a column of it, or, for FTRL, computed from z and n where they are asked
    for (the checked push publishes the ones it computes; a snapshot, a checksum and a
    replica's snapshot compute all of them), so they are never stored.

    A row's columns are one element of `_rows` (the block seen as a 1-D array of row-wide
    elements), so a pull is one gather and a push one gather and one scatter, each touching
    one cache line per row; with one array per column every column costs its own gather or
    scatter and its own cache miss per row. `state` names the columns (views into the block).
    A push is checked whole before anything changes: its keys, its deltas' shape and size
    (|delta| <= `max_delta`), that columns which cannot be negative stay >= 0, and that no
    value overflows."""

    def __init__(self, spec: ModelSpec, shard: int, n_shards: int, max_delta: float = 1e6):
        self.spec = spec
        self.shard = shard
        self.n_shards = n_shards
        self.max_delta = max_delta
        self.size = shard_size(spec.bits, n_shards, shard)
        self.optimizer = optim.layout(spec.optimizer.name)  # numpy only: a shard loads no numba
        self.columns: tuple[str, ...] = self.optimizer.columns
        self._nonneg = self.optimizer.nonneg_index()
        width = len(self.columns)
        # every page written now, at start: left to the first pushes, each first write to a
        # page would take a fault that zeroes it (2 MB at a time with transparent huge pages)
        # in the middle of a push; the first pushes touch nearly every page anyway
        self._block = np.empty((self.size, width), dtype=np.float32)
        self._block.fill(0.0)
        self._rows = as_rows(self._block)
        self.state = {name: self._block[:, j] for j, name in enumerate(self.columns)}
        self.derived = () if "w" in self.state else ("w",)
        self.pushes = 0
        self.pulls = 0

    def _weights_of_columns(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self.optimizer.weights(columns, self.spec.optimizer)

    @property
    def weights(self) -> np.ndarray:
        """Every row's weight (for FTRL a new array, computed)."""
        return self._weights_of_columns(self.state) if self.derived else self.state["w"]

    def weights_of(self, rows: np.ndarray) -> np.ndarray:
        if not self.derived:
            return self.state["w"][rows]
        block = self._gather(rows)
        return self._weights_of_columns({n: block[:, j] for j, n in enumerate(self.columns)})

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """As a snapshot has always held them: the weights first, then the columns."""
        columns = super().snapshot_arrays()
        return {"w": self.weights, **columns} if self.derived else columns

    def rows_for(self, keys: np.ndarray) -> np.ndarray:
        """Local rows of `keys`, after checking every invariant a message's keys must meet."""
        if keys.ndim != 1:
            raise InvalidValue("keys must be one-dimensional")
        if keys.size and int(keys[-1]) >= (1 << self.spec.bits):
            raise InvalidValue(f"key {int(keys[-1])} is outside model {self.spec.name!r} "
                               f"({self.spec.bits} bits)")
        return owned_rows(keys, self.shard, self.n_shards)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """The block's rows `rows`, as a new float32 array of (len(rows), columns)."""
        return of_rows(self._rows.take(rows), len(self.columns))

    def pull(self, keys: np.ndarray) -> np.ndarray:
        """The state of `keys`, float32 of shape (len(keys), len(columns))."""
        rows = self.rows_for(keys)
        self.pulls += 1
        return self._gather(rows)

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
        # whole-array reductions first, the element that failed only when one did
        if deltas.size and float(np.abs(deltas).max()) > self.max_delta:
            i, j = np.argwhere(np.abs(deltas) > self.max_delta)[0]
            raise InvalidValue(f"delta {float(deltas[i, j]):g} of {self.columns[j]} for key "
                               f"{int(keys[i])} exceeds max_delta = {self.max_delta:g}")
        block = self._gather(rows)
        with np.errstate(over="ignore"):  # an overflow is refused below, by name
            block += deltas
        new = {name: block[:, j] for j, name in enumerate(self.columns)}
        if block.size:
            for j in self._nonneg:
                if block[:, j].min() < 0:
                    name, i = self.columns[j], int(np.argmax(block[:, j] < 0))
                    raise InvalidValue(f"delta {float(deltas[i, j]):g} would make {name} of key "
                                       f"{int(keys[i])} negative ({float(block[i, j]):g}); "
                                       f"{name} must stay >= 0")
            if not (np.isfinite(block.max()) and np.isfinite(block.min())):
                name = next(n for n, v in new.items() if not np.isfinite(v).all())
                raise InvalidValue(f"deltas would make {name} overflow to inf")
        if self.derived:
            new["w"] = self._weights_of_columns(new)
        return CheckedPush(rows, new, block)

    def apply(self, push: CheckedPush) -> None:
        self._rows[push.rows] = push.block.view(self._rows.dtype).reshape(-1)
        self.pushes += 1
