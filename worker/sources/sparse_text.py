"""Vowpal Wabbit text (`.vw`) and libsvm/svmlight (`.svm`, `.libsvm`) events, parsed with numpy
over a block of lines.

Why these formats: they are what other online learners read, so a data set prepared for VW
or LIBLINEAR trains here as it is. The mapping onto deltaps' fields:

- VW ``label [importance] ['tag] |ns a b:1 c:2.5 |other d``: each namespace is a field; a
  feature without a value (or with value 1) is a categorical value of its namespace's field
  ("ns" gets "a" and "b"), a feature with another value is a numeric field of its own
  ("ns.c" = 2.5; bucketed like any number). The bare namespace ``|`` is DEFAULT_NAMESPACE,
  and a numeric feature in it is named by itself ("c"). A namespace weight (``|ns:0.5``) is
  not supported and is ignored. A third header number (VW's initial prediction) and the tag
  are ignored.
- libsvm ``label idx:val ...`` is a VW line in the default namespace: ``idx:1`` (one-hot, the
  common case) is the categorical value "idx" of field DEFAULT_NAMESPACE, any other value the
  numeric field "idx". ``qid:n`` is skipped.

A block of lines first goes through the compiled scan (`sparse_scan`), which reads nearly
every block of a real file; a block it declines is parsed here. Either way a categorical
column holds its values' string hashes (`common.hashing.hash_strings`), so blocks from both
paths join into one batch and featurize alike.

Labels are 1/0 or 1/-1 (also +1, 1.0, 0.0). A line without a label (a VW line that starts
with ``|``), with a label that is not one of those, a bad importance weight or a feature value
that is not a finite number is skipped and reported with its line number. Why numpy over the
bytes: token boundaries, namespaces, colons and numbers are whole-array operations on the
block, so the Python work per block is per distinct field, never per line or feature.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from common.features import CATEGORICAL, NUMERIC, Batch, Column
from common.hashing import hash_strings
from worker.sources import sparse_scan
from worker.sources.delimited import SCAN_LINES  # blocks as the TSV reader scans them
from worker.sources.fields import Fields, byte_window, parse_labels
from worker.sources.lines import DEFAULT_CHUNK_LINES, LineReader, LineSource, MalformedLines

DEFAULT_NAMESPACE = sparse_scan.DEFAULT_NAMESPACE
_SPACE, _TAB, _CR, _NL, _BAR, _COLON, _QUOTE = 32, 9, 13, 10, ord("|"), ord(":"), ord("'")


class SparseTextSource(LineSource):
    """Vowpal Wabbit text (``libsvm=False``) or libsvm/svmlight (``libsvm=True``) events."""

    def __init__(self, path_or_file, libsvm: bool = False,
                 chunk_lines: int = DEFAULT_CHUNK_LINES):
        self.libsvm, self.chunk_lines = libsvm, chunk_lines
        self._lines = LineReader(path_or_file, binary=True)
        self._scanner = sparse_scan.SparseScanner(libsvm)
        super().__init__(self._lines)

    def _chunks(self) -> Iterator[Batch]:
        for first_line, lines, block in self._lines.line_blocks(min(self.chunk_lines,
                                                                     SCAN_LINES)):
            batch = self._scanner.scan(block, lines)
            if batch is None:
                bad = MalformedLines()
                batch = hashed(parse_block(block, self.libsvm, bad))
                bad.report(self.stats, self.name, first_line)
            yield batch


def hashed(batch: Batch) -> Batch:
    """`batch` with each categorical column's strings as their `hash_strings` hashes, as the
    compiled scan gives them."""
    columns = {name: Column(CATEGORICAL, col.rows, hash_strings(col.values))
               if col.kind == CATEGORICAL else col for name, col in batch.columns.items()}
    return Batch(batch.n, columns, batch.labels, batch.weights)


def parse_block(block: bytes, libsvm: bool, bad: MalformedLines) -> Batch:
    """Events of a block of whole lines; bad lines are added to `bad` by 0-based index."""
    if not libsvm and b"|" in block:
        block = block.replace(b"|", b" |")  # a namespace always starts a token
    if not block.endswith(b"\n"):
        block += b"\n"
    buf = np.frombuffer(block, np.uint8)
    sep = (buf == _SPACE) | (buf == _TAB) | (buf == _CR) | (buf == _NL)
    starts = np.flatnonzero(~sep & np.concatenate(([True], sep[:-1])))
    ends = np.flatnonzero(~sep & np.concatenate((sep[1:], [True]))) + 1
    newlines = np.flatnonzero(buf == _NL)
    n_lines = newlines.size
    line = np.searchsorted(newlines, starts)
    first = np.concatenate(([True], line[1:] != line[:-1])) if line.size else line.astype(bool)
    token = np.arange(starts.size)
    line_first_token = np.maximum.accumulate(np.where(first, token, 0)) if token.size else token
    is_ns = (buf[starts] == _BAR) if not libsvm else np.zeros(starts.size, bool)
    ns_seen = np.cumsum(is_ns)
    ns_before = ns_seen - (ns_seen - is_ns)[line_first_token]  # namespaces so far on the line
    header = (ns_before == 0) & ~is_ns if not libsvm else first
    window = byte_window(buf, int((ends - starts).max(initial=0)))

    has_tokens = np.zeros(n_lines, bool)
    has_tokens[line] = True
    invalid = np.zeros(n_lines, bool)
    for i in np.flatnonzero(first & is_ns):
        bad.add(line[i], "no label (the line starts with a namespace)")
        invalid[line[i]] = True
    label_tok = np.flatnonzero(first & header)
    labels = np.zeros(n_lines, np.float32)
    label_fields = Fields.from_bytes(window, starts[label_tok], ends[label_tok])
    values, not_label = parse_labels(label_fields)
    labels[line[label_tok]] = values
    for k in np.flatnonzero(not_label):
        bad.add(line[label_tok[k]], f"label must be 0 or 1 (or -1), got "
                                    f"{label_fields.text(k)!r}")
    invalid[line[label_tok[not_label]]] = True
    weights = _importance(buf, window, starts, ends, line, header & ~first, token,
                          line_first_token, n_lines, invalid, bad)

    feature = ~header & ~is_ns
    if libsvm:
        feature &= ~_starts_with(window, starts, ends, b"qid:")
    columns = _features(buf, window, starts, ends, line, is_ns, feature, invalid, bad, libsvm)
    keep = has_tokens & ~invalid
    new_row = np.cumsum(keep) - 1
    out = {}
    for name, (kind, rows, vals) in columns.items():
        kept = keep[rows]
        out[name] = Column(kind, new_row[rows[kept]], vals[kept])
    n = int(keep.sum())
    w = weights[keep] if weights is not None else None
    return Batch(n, out, labels[keep], w)


def _importance(buf, window, starts, ends, line, extra, token, line_first_token, n_lines,
                invalid, bad) -> np.ndarray | None:
    """Per-line importance weights from the second header token (None if no line has one);
    a tag (a token starting with "'") or a third number is ignored."""
    second = np.flatnonzero(extra & (token - line_first_token == 1) & (buf[starts] != _QUOTE))
    if second.size == 0:
        return None
    fields = Fields.from_bytes(window, starts[second], ends[second])
    values, not_number = fields.numbers()
    weights = np.ones(n_lines, np.float32)
    ok = ~not_number & (values >= 0)
    weights[line[second[ok]]] = values[ok]
    for k in np.flatnonzero(~ok):
        bad.add(line[second[k]], "importance weight must be a finite number >= 0, got "
                                 f"{fields.text(k)!r}")
        invalid[line[second[k]]] = True
    return weights


def _features(buf, window, starts, ends, line, is_ns, feature, invalid, bad, libsvm
              ) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """(kind, line of each value, values) per field, from the feature tokens."""
    colons = np.flatnonzero(buf == _COLON)
    tok = np.flatnonzero(feature)
    s, e = starts[tok], ends[tok]
    k = np.searchsorted(colons, s)
    colon = colons[np.minimum(k, max(colons.size - 1, 0))] if colons.size else np.zeros_like(s)
    has_value = (k < colons.size) & (colon < e) if colons.size else np.zeros(s.size, bool)
    name_end = np.where(has_value, colon, e)
    names = Fields.from_bytes(window, s, name_end)
    value = np.ones(s.size)
    if has_value.any():
        vf = Fields.from_bytes(window, colon[has_value] + 1, e[has_value])
        parsed, not_number = vf.numbers()
        value[has_value] = np.where(not_number, np.nan, parsed)
        for j in np.flatnonzero(not_number):
            at = tok[np.flatnonzero(has_value)[j]]
            bad.add(line[at], f"feature value is not a finite number: "
                              f"{buf[starts[at]:ends[at]].tobytes().decode('utf-8', 'replace')!r}")
            invalid[line[at]] = True
    nameless = names.lengths == 0
    for j in np.flatnonzero(nameless):
        bad.add(line[tok[j]], "a feature has no name")
        invalid[line[tok[j]]] = True
    if libsvm:
        ns_name = np.full(tok.size, DEFAULT_NAMESPACE)
    else:
        ns_tok = np.flatnonzero(is_ns)
        raw = Fields.from_bytes(window, starts[ns_tok] + 1, ends[ns_tok]).strings()
        ns_names = np.char.partition(raw, ":")[:, 0] if raw.size else raw
        ns_names = np.where(np.char.str_len(ns_names) == 0, DEFAULT_NAMESPACE, ns_names)
        owner = np.searchsorted(ns_tok, tok) - 1  # the last namespace before each feature
        ns_name = ns_names[owner] if tok.size else np.zeros(0, "<U1")
    text = names.strings()
    usable = ~nameless & np.isfinite(value)
    categorical = usable & (value == 1.0)
    numeric = usable & ~categorical
    out = _group(CATEGORICAL, ns_name[categorical], line[tok[categorical]], text[categorical])
    keys = text[numeric]
    ns_num = ns_name[numeric]
    named = np.flatnonzero(ns_num != DEFAULT_NAMESPACE)
    if named.size:  # a numeric feature outside the default namespace is "ns.name"
        keys = keys.astype(object)
        keys[named] = np.char.add(np.char.add(ns_num[named], "."), text[numeric][named])
        keys = keys.astype(str)
    out.update(_group(NUMERIC, keys, line[tok[numeric]], value[numeric]))
    return out


def _starts_with(window: np.ndarray, starts: np.ndarray, ends: np.ndarray, prefix: bytes
                 ) -> np.ndarray:
    """Which tokens begin with `prefix` (and are longer than it)."""
    k = len(prefix)
    if window.shape[1] < k or starts.size == 0:
        return np.zeros(starts.size, bool)
    head = window[:, :k][starts]
    return (ends - starts > k) & (head == np.frombuffer(prefix, np.uint8)).all(axis=1)


def _group(kind: str, keys: np.ndarray, rows: np.ndarray, values: np.ndarray
           ) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Entries grouped by field name, each field's entries in line order (a stable sort)."""
    if keys.size == 0:
        return {}
    if bool((keys == keys[0]).all()):  # one field (a VW file with one namespace)
        return {str(keys[0]): (kind, rows, values)}
    names, code = np.unique(keys, return_inverse=True)
    order = np.argsort(code, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(code, minlength=names.size))))
    rows, values = rows[order], values[order]
    return {str(name): (kind, rows[a:b], values[a:b])
            for name, a, b in zip(names.tolist(), bounds[:-1], bounds[1:])}
