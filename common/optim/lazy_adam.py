"""Lazy Adam for sparse rows (the sparse-layer optimizer of Twitter's DeepBird; TensorFlow's
LazyAdamOptimizer): Adam (Kingma and Ba, ICLR 2015, Algorithm 1) applied only to the rows an
event touches. Each row keeps its own step count t, so its bias correction counts the steps it
took, not the steps the model took: a rare feature's first step is a full-sized one.
Per coordinate: g += l2 w; t += 1; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). L1 is not part of Adam: a spec
asking for it is refused (`common.config`)."""
from __future__ import annotations

import math

import numba
import numpy as np

from common.optim.stored import weight, weights  # noqa: F401  (re-exported)
from common.optim.state import LAYOUTS
from common.optim.params import BETA1, BETA2, EPS, L2, LR

COLUMNS = LAYOUTS["lazy_adam"].columns
NONNEG = LAYOUTS["lazy_adam"].nonneg


@numba.njit(cache=True, inline="always")
def update(st, r, g, hp):
    w = st[r, 0]
    g = g + hp[L2] * w
    t = st[r, 3] + 1.0
    m = hp[BETA1] * st[r, 1] + (1.0 - hp[BETA1]) * g
    v = hp[BETA2] * st[r, 2] + (1.0 - hp[BETA2]) * g * g
    m_hat = m / (1.0 - hp[BETA1] ** t)
    v_hat = v / (1.0 - hp[BETA2] ** t)
    st[r, 0] = w - hp[LR] * m_hat / (math.sqrt(v_hat) + hp[EPS])
    st[r, 1] = m
    st[r, 2] = v
    st[r, 3] = t



@numba.njit(cache=True, inline="always", error_model="numpy")
def _step_row(state, r, g, out, hp, dw, dm, dv):
    """`update` on every value of row r (``[w(h), m(h), v(h), t]``) with gradient `g` (h),
    its change written to out[r]. The bias corrections are computed once for the row, and the
    new values go to contiguous float64 buffers before they are stored, so that the
    arithmetic loop compiles to vector instructions."""
    h = g.size
    b1, b2, lr, eps, l2 = hp[BETA1], hp[BETA2], hp[LR], hp[EPS], hp[L2]
    t = float(state[r, 3 * h]) + 1.0
    c1 = 1.0 - b1 ** t
    c2 = 1.0 - b2 ** t
    for j in range(h):
        w = float(state[r, j])
        m0 = float(state[r, h + j])
        v0 = float(state[r, 2 * h + j])
        gj = g[j] + l2 * w
        m = b1 * m0 + (1.0 - b1) * gj
        v = b2 * v0 + (1.0 - b2) * gj * gj
        dw[j] = -lr * (m / c1) / (math.sqrt(v / c2) + eps)
        dm[j] = m - m0
        dv[j] = v - v0
    for j in range(h):
        out[r, j] = dw[j]
        out[r, h + j] = dm[j]
        out[r, 2 * h + j] = dv[j]
    out[r, 3 * h] = 1.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def step_rows(state, g, hp):
    """One step of `update` on whole rows laid out as a deep model's are (`common.deep`):
    ``state[r] = [w(h), m(h), v(h), t]`` (float32, one step count per row), with the gradient
    `g` (k, h). Returns the float32 change of every state value (computed in float64): the
    push. Divisions follow NumPy's error model (no check for a zero divisor, which 1 - b^t and
    sqrt(v) + eps never are): the same operations as `update`, so the same bits, which
    tests/unit/test_deep.py checks."""
    k, h = g.shape
    out = np.empty((k, 3 * h + 1), np.float32)
    dw, dm, dv = np.empty(h), np.empty(h), np.empty(h)
    for r in range(k):
        _step_row(state, r, g[r], out, hp, dw, dm, dv)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def step_summed_rows(state, g_events, offsets, events, g_dense, hp):
    """`step_rows` where the gradient of sparse row r is the sum of the gradients of the
    events that hold it, ``g_events[events[offsets[r]:offsets[r + 1]]]`` (float32, added in
    that order), and the rows after the sparse ones take `g_dense` (one gradient row each).

    This is the backward pass of a sparse layer whose output is the sum of an event's rows:
    the gradient of a segment sum is a segment sum of the output gradients the other way
    round. Summing them here, row by row just before the row's step, spares a (rows, h)
    gradient array and TensorFlow's dispatch of a second segment sum, which cost more than
    the additions."""
    sparse = offsets.size - 1
    h = g_events.shape[1]
    out = np.empty((sparse + g_dense.shape[0], 3 * h + 1), np.float32)
    dw, dm, dv = np.empty(h), np.empty(h), np.empty(h)
    g = np.empty(h, np.float32)
    for r in range(sparse):
        g[:] = 0.0
        for i in range(offsets[r], offsets[r + 1]):
            e = events[i]
            for j in range(h):
                g[j] += g_events[e, j]
        _step_row(state, r, g, out, hp, dw, dm, dv)
    for d in range(g_dense.shape[0]):
        _step_row(state, sparse + d, g_dense[d], out, hp, dw, dm, dv)
    return out
