"""Progressive validation: every event is scored before it is learned from.

Accumulates log loss exactly and keeps predictions and labels (8 bytes an event) so the AUC is
exact too. AUC uses average ranks, so tied scores count one half.
"""
from __future__ import annotations

import numpy as np

from common.linear import logloss


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class only."""
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


class ProgressiveMetrics:
    """Progressive validation: every event is scored before it is learned from, so the
    running log loss and AUC measure how the model predicts unseen events."""

    def __init__(self):
        self.count = 0
        self.loss_sum = 0.0
        self.recent: list[tuple[float, int]] = []
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, p: np.ndarray, y: np.ndarray) -> None:
        loss = float(logloss(p, y).sum())
        self.loss_sum += loss
        self.count += y.size
        self.recent.append((loss, y.size))
        if len(self.recent) > 50:
            self.recent.pop(0)
        self._scores.append(np.asarray(p, np.float32))
        self._labels.append(np.asarray(y, np.int8))

    @property
    def logloss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def recent_logloss(self) -> float:
        n = sum(c for _, c in self.recent)
        return sum(s for s, _ in self.recent) / n if n else float("nan")

    def auc(self) -> float:
        if not self._scores:
            return float("nan")
        return auc(np.concatenate(self._scores), np.concatenate(self._labels))
