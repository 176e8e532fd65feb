"""Progressive validation in constant memory: every event is scored before it is learned from.

Why constant: `deltaps train -` may read a stream that never ends, so nothing here may grow
with the number of events. Log loss is a running sum. AUC comes from a histogram of the scores
per label (`ScoreBins`): the AUC of a histogram counts a positive/negative pair as won or lost
when their scores fall in different bins, and as one half when they share a bin. The exact AUC
counts pairs in different bins the same way, so the two differ only on pairs sharing a bin,
by at most one half each: |binned - exact| <= 0.5 * sum_b pos_b * neg_b / (P * N), which
`ScoreBins.auc_error_bound` reports. With 2^16 bins of width 1/65536 over [0, 1] that is far
below 1e-3 unless the scores bunch into a few bins (then the bound says so). Equal scores are
ties for the exact AUC too, so a model that predicts few distinct values loses nothing.

A recent window (about the last `window` events) is kept the same way, at 2^12 bins: a ring of
blocks of `window / blocks` events each, the oldest block dropped as a new one starts.
"""
from __future__ import annotations

import numpy as np

from common.linear import logloss

CUMULATIVE_BITS = 16
WINDOW_BITS = 12
_ADD_AT_BELOW = 4096  # np.add.at is faster for small batches, np.bincount for large ones


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class
    only. Keeps every score: for evaluations of a known size, not for endless streams."""
    labels = labels.astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binned_auc(counts: np.ndarray) -> float:
    """AUC of a (2, bins) histogram: row 0 negatives, row 1 positives, bins in score order; a
    pair sharing a bin counts one half. NaN if one class is empty."""
    neg, pos = counts[0].astype(np.float64), counts[1].astype(np.float64)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(pos @ (neg_below + 0.5 * neg) / (n_pos * n_neg))


class ScoreBins:
    """Counts of scores in `2**bits` equal bins over [0, 1], one row per label (see the
    module docstring for the error this AUC can have)."""

    def __init__(self, bits: int):
        self.bits = bits
        self.counts = np.zeros((2, 1 << bits), np.int64)

    def add(self, bins: np.ndarray, labels: np.ndarray) -> None:
        """`bins` already at this resolution, `labels` int 0/1."""
        if bins.size < _ADD_AT_BELOW:
            np.add.at(self.counts, (labels, bins), 1)
        else:
            size = self.counts.size
            self.counts += np.bincount(labels * (size // 2) + bins,
                                       minlength=size).reshape(self.counts.shape)

    def auc(self) -> float:
        return binned_auc(self.counts)

    def auc_error_bound(self) -> float:
        """Largest possible |binned AUC - exact AUC| for the scores counted."""
        neg, pos = self.counts[0].astype(np.float64), self.counts[1].astype(np.float64)
        pairs = neg.sum() * pos.sum()
        return float(0.5 * (neg @ pos) / pairs) if pairs else float("nan")

    def clear(self) -> None:
        self.counts[:] = 0


class ProgressiveMetrics:
    """Progressive log loss and AUC, over the whole run and over about the last `window`
    events, in memory that does not grow with the events (module docstring).

    The window is a ring of `blocks` blocks; it covers the block being filled plus the
    `blocks - 1` before it, so between (blocks - 1) / blocks of `window` and `window` events
    (a batch larger than a block fills one block alone)."""

    def __init__(self, window: int = 100_000, blocks: int = 16):
        if window < blocks or blocks < 2:
            raise ValueError(f"window ({window}) must be >= blocks ({blocks}) >= 2")
        self.count = 0
        self.loss_sum = 0.0
        self.bins = ScoreBins(CUMULATIVE_BITS)
        self.window = window
        self.block_events = window // blocks
        self._ring = [ScoreBins(WINDOW_BITS) for _ in range(blocks)]
        self._ring_loss = np.zeros(blocks)
        self._ring_count = np.zeros(blocks, np.int64)
        self._block = 0

    def update(self, p: np.ndarray, y: np.ndarray) -> None:
        """Count one batch: `p` the predicted probabilities, `y` the 0/1 labels. Checked
        first: a bad batch raises ValueError and changes nothing."""
        p, y = np.asarray(p), np.asarray(y)
        if p.shape != y.shape or p.ndim != 1:
            raise ValueError(f"predictions {p.shape} and labels {y.shape} must be 1-d arrays "
                             "of one length")
        if not np.all((p >= 0) & (p <= 1)):  # NaN fails too
            raise ValueError("predictions must be probabilities in [0, 1]; got "
                             f"{p[~((p >= 0) & (p <= 1))][:3].tolist()} ...")
        labels = y.astype(np.int64)
        if not np.array_equal(labels, y) or np.any((labels < 0) | (labels > 1)):
            raise ValueError(f"labels must be 0 or 1; got {np.unique(y)[:5].tolist()}")
        if not y.size:
            return
        loss = float(logloss(p, y).sum())
        bins = np.minimum((p * (1 << CUMULATIVE_BITS)).astype(np.int64),
                          (1 << CUMULATIVE_BITS) - 1)
        self.loss_sum += loss
        self.count += y.size
        self.bins.add(bins, labels)
        k = self._block
        self._ring[k].add(bins >> (CUMULATIVE_BITS - WINDOW_BITS), labels)
        self._ring_loss[k] += loss
        self._ring_count[k] += y.size
        if self._ring_count[k] >= self.block_events:  # block full: the oldest one goes
            self._block = k = (k + 1) % len(self._ring)
            self._ring[k].clear()
            self._ring_loss[k] = 0.0
            self._ring_count[k] = 0

    @property
    def logloss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    def auc(self) -> float:
        return self.bins.auc()

    def auc_error_bound(self) -> float:
        return self.bins.auc_error_bound()

    @property
    def recent_events(self) -> int:
        return int(self._ring_count.sum())

    @property
    def recent_logloss(self) -> float:
        n = self.recent_events
        return float(self._ring_loss.sum() / n) if n else float("nan")

    def recent_auc(self) -> float:
        return binned_auc(sum(b.counts for b in self._ring))
