"""Progressive validation in constant memory: every event is scored before it is learned from.

Why constant: `deltaps train -` may read a stream that never ends, so nothing here may grow
with the number of events. Log loss is a running sum. AUC comes from a histogram of the scores
per label (`ScoreBins`): the AUC of a histogram counts a positive/negative pair as won or lost
when their scores fall in different bins, and as one half when they share a bin. The exact AUC
counts pairs in different bins the same way, so the two differ only on pairs sharing a bin,
by at most one half each: |binned - exact| <= 0.5 * sum_b pos_b * neg_b / (P * N), which
`ScoreBins.auc_error_bound` reports. With 2^16 bins of width 1/65536 over [0, 1] few pairs
share a bin unless the scores bunch into a narrow range, and then the bound says so. Equal
scores are ties for the exact AUC too, so a model that predicts few distinct values loses
nothing.

A recent window (about the last `window` events) comes from the same histogram: the totals at
the start of each of the last few blocks of events are kept (at 2^12 bins), and the window is
the totals now minus the oldest of them.
"""
from __future__ import annotations

import numpy as np

from worker.models.prebuilt import kernel

CUMULATIVE_BITS = 16
WINDOW_BITS = 12


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
    module docstring for the error this AUC can have); `ProgressiveMetrics.update` adds to
    them."""

    def __init__(self, bits: int):
        self.bits = bits
        # float64: whole numbers up to 2^53 are exact, and sums over bins run as BLAS
        self.counts = np.zeros((2, 1 << bits), np.float64)

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

    The window costs nothing per batch: a block ends with the batch that brings it to at
    least `window / blocks` events, the running totals are then marked (the histogram summed
    down to 2^12 bins), the last `blocks` marks are kept, and the window is the totals now
    minus the oldest mark. It so covers the block being filled plus the `blocks - 1` before
    it: at least (blocks - 1) / blocks of `window` events, and more by up to a batch a block
    when batches do not divide a block.
    """

    def __init__(self, window: int = 100_000, blocks: int = 16):
        if window < blocks or blocks < 2:
            raise ValueError(f"window ({window}) must be >= blocks ({blocks}) >= 2")
        self.count = 0
        self.loss_sum = 0.0
        self.bins = ScoreBins(CUMULATIVE_BITS)
        self.window = window
        self.block_events = window // blocks
        # ring of marks: coarse histogram, loss sum and count at the start of each block
        self._mark_bins = np.zeros((blocks, 2, 1 << WINDOW_BITS))
        self._mark_loss = np.zeros(blocks)
        self._mark_count = np.zeros(blocks, np.int64)
        self._newest = 0  # the block being filled started at this mark
        self._oldest = 0  # the window starts at this mark

    def _coarse(self) -> np.ndarray:
        merged = self.bins.counts.reshape(-1, 1 << (CUMULATIVE_BITS - WINDOW_BITS))
        return (merged @ np.ones(merged.shape[1])).reshape(2, 1 << WINDOW_BITS)

    def _mark(self) -> None:
        blocks = len(self._mark_count)
        self._newest = k = (self._newest + 1) % blocks
        if k == self._oldest:
            self._oldest = (k + 1) % blocks
        self._mark_bins[k] = self._coarse()
        self._mark_loss[k], self._mark_count[k] = self.loss_sum, self.count

    def update(self, p: np.ndarray, y: np.ndarray) -> None:
        """Count one batch: `p` the predicted probabilities, `y` the 0/1 labels, in one
        compiled pass (`kernel.count_scores`). Checked first: a bad batch raises ValueError
        and changes nothing."""
        p, y = np.asarray(p), np.asarray(y)
        if p.shape != y.shape or p.ndim != 1:
            raise ValueError(f"predictions {p.shape} and labels {y.shape} must be 1-d arrays "
                             "of one length")
        if not y.size:
            return
        loss = kernel().count_scores(p, y, self.bins.counts.reshape(-1), 1 << CUMULATIVE_BITS)
        if loss == -1.0:
            raise ValueError("predictions must be probabilities in [0, 1]; got "
                             f"{p[~((p >= 0) & (p <= 1))][:3].tolist()} ...")
        if loss == -2.0:
            raise ValueError(f"labels must be 0 or 1; got {np.unique(y)[:5].tolist()}")
        self.loss_sum += loss
        self.count += y.size
        if self.count - self._mark_count[self._newest] >= self.block_events:  # a new block
            self._mark()

    @property
    def logloss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    def auc(self) -> float:
        return self.bins.auc()

    def auc_error_bound(self) -> float:
        return self.bins.auc_error_bound()

    @property
    def recent_events(self) -> int:
        return int(self.count - self._mark_count[self._oldest])

    @property
    def recent_logloss(self) -> float:
        n = self.recent_events
        return float(self.loss_sum - self._mark_loss[self._oldest]) / n if n else float("nan")

    def recent_auc(self) -> float:
        """The window's AUC, at 2^12 bins (so within 0.5 * the share of its positive/negative
        pairs sharing one of those bins of the window's exact AUC)."""
        return binned_auc(self._coarse() - self._mark_bins[self._oldest])
