"""The compiled per-event learning loop: one numba function runs a whole batch event by event.

For each event in order: its margin from the current weights of its features, p = sigmoid
(recorded: progressive validation, every event predicted before it is learned), then the
optimizer's per-coordinate update of every feature entry with g = (p - y) * importance weight.
Each event therefore sees every earlier event of the batch, as one-event-at-a-time learning
(VW) does, and the batch size no longer changes what is learned. Features are binary (value 1);
a slot named twice by one event is updated twice, as two features would be.

`nogil=True`: the trainer's helper thread featurizes the next batch while this runs. The
optimizer is chosen by its code (`common.optim.CODES`); its functions are inlined into the loop.

`_nrt=False`: these functions allocate nothing (their callers hand them every array,
`worker.models.prebuilt.Kernel`), so they are compiled without numba's reference counting.
With it, an inlined helper that takes an array counts a reference to it (an atomic add and
subtract, not always pruned) each time it runs: once per row or feature entry in these loops.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from common.features.entries import DROP, LOG2, ROUND
from common.optim import adagrad, ftrl, lazy_adam, sgd
from worker.sources.string_hash import splitmix
from worker.sources.swar import popcount

FTRL, ADAGRAD, SGD, LAZY_ADAM = 0, 1, 2, 3  # common.optim.CODES


@intrinsic
def _float_bits(typingctx, x):
    """The IEEE 754 bits of a float64, as a uint64 (a register move, not a conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint64))
    return types.uint64(types.float64), codegen


@numba.njit(cache=True, inline="always")
def _exponent(v):
    """floor(log2(v)) of a finite float64 v >= 1: its binary exponent, exactly (what
    `np.frexp(v)[1] - 1` gives)."""
    return np.int64((_float_bits(v) >> np.uint64(52)) & np.uint64(0x7FF)) - 1023


@numba.njit(cache=True, nogil=True, _nrt=False)
def group_by_event(rows, inverse, offsets, entries):
    """CSR of a batch's entries, into `offsets` (n + 1 zeros) and `entries` (rows.size):
    event i's entries (indices into the unique rows) are ``entries[offsets[i]:offsets[i +
    1]]``, in the order they have in `rows` (a stable counting sort: features made from a
    batch's columns come field by field; those made from its entries come grouped by event
    already and skip this, `Kernel.group_by_event`). While entries are placed,
    `offsets[i + 1]` is where event i's next one goes: it starts at event i's first (each
    event's count is added two places on, then summed), and ends one past its last, which is
    the CSR's value."""
    n = offsets.size - 1
    for e in range(rows.size):
        r = rows[e] + 2
        if r <= n:
            offsets[r] += 1
    for i in range(1, n):
        offsets[i + 1] += offsets[i]
    for e in range(rows.size):
        r = rows[e] + 1
        entries[offsets[r]] = inverse[e]
        offsets[r] += 1


@numba.njit(cache=True, nogil=True, _nrt=False)
def index_slots(ids, mask, bitmap, prefix, uniq, inverse):
    """A batch's distinct slots (``ids & mask``: the hashing trick, `common.sharding.slots_of`)
    in sorted order into `uniq[:count]`, each entry's index into them into `inverse`; returns
    the count. `bitmap` (one bit per slot of the model, all 0 between batches, and left so)
    gets a bit per entry's slot; reading it in order gives the slots sorted, and a slot's
    index is the bits set before it: `prefix` (one int32 per word) counts those of the words
    before, a popcount those of its own word. The bitmap is an eighth of a byte per slot
    (512 KiB for 2**22), so the entries' random reads and writes stay in the core's cache."""
    one = np.uint64(1)
    six, low = np.uint64(6), np.uint64(63)
    for i in range(ids.size):
        s = ids[i] & mask
        bitmap[s >> six] |= one << (s & low)
    count = 0
    for w in range(bitmap.size):
        x = bitmap[w]
        prefix[w] = count
        while x:
            uniq[count] = w * 64 + np.int64(trailing_zeros(x))
            count += 1
            x &= x - one
    for i in range(ids.size):
        s = ids[i] & mask
        at = s >> six
        inverse[i] = prefix[at] + np.int32(popcount(bitmap[at] & ((one << (s & low)) - one)))
    for j in range(count):
        bitmap[uniq[j] >> 6] = 0
    return count


@numba.njit(cache=True, nogil=True, _nrt=False)
def mix_fields(words, seeds, ends, ids):
    """`common.features.featurizer.mix_fields`, compiled: ``ids[e] = splitmix64(words[e] ^
    seeds[k])`` for the entries of field k, ``ends[k - 1] <= e < ends[k]``, in one pass
    (numpy's takes a dozen, and an array of seeds repeated per entry)."""
    lo = 0
    for k in range(ends.size):
        seed = seeds[k]
        for e in range(lo, ends[k]):
            ids[e] = splitmix(words[e] ^ seed)
        lo = ends[k]


@numba.njit(cache=True, nogil=True, _nrt=False)
def mix_entries(offsets, fields, words, numbers, codes, seeds, bias, with_bias, ids,
                out_offsets):
    """The feature ids of a batch's entries (`common.features.entries.Entries`; `numbers`
    views `words` as float64), event by event as they come: each entry of field f becomes
    ``splitmix64(word ^ seeds[f])``, its word made as ``codes[f]`` says (the word itself, the
    log2 bucket of the number, sign(x) * floor(log2(1 + |x|)) from the binary exponent of
    1 + |x| as `common.features.Transform` takes it, or the number rounded half to even) or
    left out;
    then the event's `bias` id when `with_bias`. Writes `ids`, and each event's start into
    `out_offsets` (n + 1); returns how many ids."""
    out = 0
    out_offsets[0] = 0
    for i in range(offsets.size - 1):
        for e in range(offsets[i], offsets[i + 1]):
            f = fields[e]
            code = codes[f]
            if code == DROP:
                continue
            word = words[e]
            if code == LOG2:
                x = numbers[e]
                bucket = _exponent(1.0 + abs(x))
                word = np.uint64(-bucket if x < 0 else bucket)
            elif code == ROUND:
                word = np.uint64(np.int64(np.rint(numbers[e])))
            ids[out] = splitmix(word ^ seeds[f])
            out += 1
        if with_bias:
            ids[out] = bias
            out += 1
        out_offsets[i + 1] = out
    return out


@numba.njit(cache=True, nogil=True, _nrt=False)
def patch_rows(slots, state, applied, keys, deltas, number):
    """Add push `number`'s `deltas` (rows `keys`) to the pulled `state` (rows `slots`) where
    both name a slot and the slot's shard had not applied that push (``applied < number``):
    float32 additions, as the shards make them. Both key arrays are sorted: one merge."""
    i = 0
    j = 0
    width = state.shape[1]
    while i < slots.size and j < keys.size:
        a = slots[i]
        b = keys[j]
        if a < b:
            i += 1
        elif a > b:
            j += 1
        else:
            if applied[i] < number:
                for c in range(width):
                    state[i, c] = state[i, c] + deltas[j, c]
            i += 1
            j += 1


@numba.njit(cache=True, nogil=True, _nrt=False)
def count_scores(p, y, counts, bins):
    """Progressive validation's counts of one batch (`worker.metrics`): adds each event to
    the histogram `counts` (flat, label-major, `bins` score bins over [0, 1]) and returns the
    batch's summed log loss (probabilities clipped to [1e-15, 1 - 1e-15], as
    `common.linear.logloss`). Returns -1.0 and counts nothing when a probability is not in
    [0, 1] (NaN included), -2.0 when a label is not 0 or 1."""
    for i in range(p.size):
        if not (p[i] >= 0.0 and p[i] <= 1.0):
            return -1.0
        if y[i] != 0.0 and y[i] != 1.0:
            return -2.0
    loss = 0.0
    for i in range(p.size):
        b = min(int(p[i] * bins), bins - 1)
        counts[int(y[i]) * bins + b] += 1.0
        q = min(max(p[i], 1e-15), 1.0 - 1e-15)
        # y*log(q) + (1-y)*log1p(-q) for a label of 0 or 1: the other term is 0 exactly
        loss -= math.log(q) if y[i] == 1.0 else math.log1p(-q)
    return loss


@numba.njit(cache=True, inline="always")
def _begin(kind, st, r, hp):
    if kind == FTRL:
        ftrl.begin(st, r, hp)


@numba.njit(cache=True, inline="always")
def _weight(kind, st, r, hp):
    if kind == FTRL:
        return ftrl.cached_weight(st, r, hp)
    if kind == ADAGRAD:
        return adagrad.weight(st, r, hp)
    if kind == SGD:
        return sgd.weight(st, r, hp)
    return lazy_adam.weight(st, r, hp)


@numba.njit(cache=True, inline="always")
def _update(kind, st, r, g, hp):
    if kind == FTRL:
        ftrl.cached_update(st, r, g, hp)
    elif kind == ADAGRAD:
        adagrad.update(st, r, g, hp)
    elif kind == SGD:
        sgd.update(st, r, g, hp)
    else:
        lazy_adam.update(st, r, g, hp)


@numba.njit(cache=True, nogil=True, _nrt=False)
def learn_events(offsets, entries, labels, importance, state, st, kind, hp, p_out, deltas):
    """Learn the events in order from the pulled `state` (float32 (k, S)) on the float64 block
    `st` (k, S + scratch): the state columns, copied in, then the optimizer's scratch columns
    (`common.optim.state.Layout.scratch`). Each event's probability before it was learned
    goes to `p_out`, and the change of every state column, rounded to float32, to `deltas`
    (k, S). An event's gradient is weighted by its `importance`, or 1 when that is empty."""
    width = state.shape[1]
    for r in range(st.shape[0]):
        for c in range(width):
            st[r, c] = state[r, c]
        _begin(kind, st, r, hp)
    weighted = importance.size > 0
    n = offsets.size - 1
    for i in range(n):
        lo, hi = offsets[i], offsets[i + 1]
        margin = 0.0
        for e in range(lo, hi):
            margin += _weight(kind, st, entries[e], hp)
        margin = min(max(margin, -35.0), 35.0)
        p = 1.0 / (1.0 + math.exp(-margin))
        p_out[i] = p
        g = p - labels[i]
        if weighted:
            g *= importance[i]
        for e in range(lo, hi):
            _update(kind, st, entries[e], g, hp)
    for r in range(st.shape[0]):
        for c in range(width):
            deltas[r, c] = np.float32(st[r, c] - np.float64(state[r, c]))
