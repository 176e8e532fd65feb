"""MovieLens 100k as an event source, and the model spec that goes with it.

Why a built-in reader: MovieLens is a small, real, public data set with users who rate in
bursts, which makes it the quality check for mini-batching (stale weights within a batch
hurt). Its ratings and attributes live in separate files joined by id; the reader joins them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from common.config import load_spec
from common.declaration import Declaration
from common.features import CATEGORICAL, NUMERIC, Batch, Column
from common.hashing import hash_strings
from worker.sources.base import ChunkedSource

if TYPE_CHECKING:
    import pyarrow as pa

MOVIELENS_SPEC_TOML = """\
# A model for MovieLens 100k (MovieLensSource): will a user rate a movie 4 or 5 stars?
[transforms.age]
kind = "buckets"
boundaries = [18, 25, 35, 45, 50, 56]

# User and item ids arrive as numbers in JSON ({"user": 196}): treat them as ids, not amounts.
[transforms.user]
kind = "categorical"

[transforms.item]
kind = "categorical"

[transforms.year]
kind = "buckets"
boundaries = [1940, 1960, 1970, 1980, 1990, 1994, 1996, 1997]

[models.movielens]
bits = 22
fields = ["user", "item", "age", "gender", "occupation", "zip3", "genres", "year"]
transforms = ["user", "item", "age", "year"]
# Per-user taste for genres and eras; per-movie appeal by gender and age group (crosses and
# the optimizer below were chosen by progressive logloss over the data set, as VW's are tuned).
crosses = [["user", "genres"], ["user", "year"], ["item", "gender"], ["item", "age"]]

[models.movielens.optimizer]
name = "ftrl"
learning_rate = 0.25
beta = 1.0
l1 = 0.0
l2 = 1.0
"""


# What each column is (`common.declaration` kinds): ids are integers, not amounts.
FIELD_KINDS = {"user": "id", "item": "id", "age": "num", "gender": "cat", "occupation": "cat",
               "zip3": "cat", "genres": "cat", "year": "num"}


class MovieLensSource(ChunkedSource):
    """MovieLens 100k ratings joined with user and movie attributes, in timestamp order.

    label = rating >= 4. Columns: user, item (int64 ids), age (numeric), gender, occupation,
    zip3 (first 3 characters of the zip code), genres (one entry per genre flag set), year
    (release year, numeric; missing if the date does not parse). Why timestamp order: it is
    the order the ratings happened in, so progressive validation measures what an online
    learner would have predicted. The files are small, so they are read and joined whole,
    with numpy indexing by id.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        for required in ("u.data", "u.user", "u.item", "u.genre"):
            if not (self.directory / required).is_file():
                raise ValueError(f"{self.directory} is not a MovieLens 100k directory: "
                                 f"no {required}")
        super().__init__(str(self.directory / "u.data"))
        self._all = self._load()

    def _chunks(self) -> Iterator[Batch]:
        # _load runs after ChunkedSource.__init__ built this generator; it starts on first read.
        yield self._all

    def _load(self) -> Batch:
        user, item, rating, ts = self._ratings()
        order = np.argsort(ts, kind="stable")
        user, item, rating = user[order], item[order], rating[order]
        users = _table(self.directory / "u.user", "|", 5)
        items = _table(self.directory / "u.item", "|", 24, encoding="latin-1")
        genre_names = _genre_names(self.directory / "u.genre")
        n = user.size
        columns = {"user": Column(CATEGORICAL, np.arange(n, dtype=np.int64), user),
                   "item": Column(CATEGORICAL, np.arange(n, dtype=np.int64), item)}
        columns.update(_join_users(users, user))
        columns.update(_join_items(items, item, genre_names))
        return Batch(n, columns, (rating >= 4).astype(np.float32))

    def field_kinds(self) -> dict[str, str]:
        """The columns' kinds (`common.declaration`): user and item are integer ids."""
        return dict(FIELD_KINDS)

    def recommended(self) -> Declaration:
        """The model MovieLens learns well with (`MOVIELENS_SPEC_TOML`), declared for an open
        model by its first trainer."""
        return Declaration.of_model(load_spec(text=MOVIELENS_SPEC_TOML), "movielens",
                                    "movielens-100k", FIELD_KINDS)

    def _ratings(self) -> tuple[np.ndarray, ...]:
        """user, item, rating, timestamp columns of u.data (tab-separated integers). A clean
        file (plain integers, four to a line: the published one) is read by the compiled
        TSV scan in one pass, without loading pyarrow; any other is parsed by pyarrow and
        converted whole, and a line of another width or with a field that is not an integer
        is reported with its line number and skipped."""
        clean = _plain_integers(self.directory / "u.data", 4)
        if clean is not None:
            return clean
        pa, pc, _ = _arrow()
        columns, lines = _read_table(self.directory / "u.data", "\t", 4, "utf-8", self)
        columns = [pc.utf8_trim_whitespace(c) for c in columns]
        ok = np.ones(lines.size, bool)
        for j, col in enumerate(columns):
            good = pc.match_substring_regex(col, r"^[-+]?[0-9]{1,18}$").to_numpy(
                zero_copy_only=False)
            for i in np.flatnonzero(~good & ok):
                self.stats.malformed_line(self.name, int(lines[i]),
                                          f"field {j + 1} is not an integer: "
                                          f"{col[int(i)].as_py()!r}")
            ok &= good
        keep = pa.array(ok)
        return tuple(pc.cast(pc.filter(c, keep), pa.int64()).to_numpy() for c in columns)


def _plain_integers(path: Path, ncols: int) -> tuple[np.ndarray, ...] | None:
    """The int64 columns of a tab-separated file of plain integers, `ncols` to a line, from
    the compiled scan (`BlockScanner`); None unless every line is exactly that (a blank line,
    a sign, a space, a fraction or an exponent included), which the scan or the byte check
    here tells, so the caller's full parser judges every other file."""
    from worker.sources.delimited_scan import BlockScanner
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    if any(c in data for c in (b".", b"e", b"E", b"+", b" ")):
        return None
    lines = data.count(b"\n")
    scanned = BlockScanner(["num"] * ncols, "\t").scan(data, lines)
    if scanned is None or lines == 0:
        return None
    if scanned.words.size != lines * ncols:  # an empty field
        return None
    numbers = scanned.words.view(np.float64).reshape(lines, ncols)  # line by line
    return tuple(numbers[:, j].astype(np.int64) for j in range(ncols))


def _arrow():
    """pyarrow and its compute and csv modules, imported when MovieLens is read (every input
    imports this module, and most never need pyarrow)."""
    import pyarrow
    import pyarrow.compute
    import pyarrow.csv
    return pyarrow, pyarrow.compute, pyarrow.csv


def _read_table(path: Path, delimiter: str, ncols: int, encoding: str,
                source: ChunkedSource | None = None) -> tuple[list[pa.Array], np.ndarray]:
    """String columns of a small delimited file read by pyarrow, and each row's line number.
    Blank lines are skipped; lines of another width are skipped too, and reported (with their
    line numbers) to `source`'s stats when it is given."""
    pa, pc, pacsv = _arrow()
    wrong: list[int] = []

    def invalid_row(row) -> str:
        wrong.append(row.number)
        if source is not None:
            source.stats.malformed_line(source.name, row.number,
                                        f"expected {ncols} fields, got {row.actual_columns}")
        return "skip"
    names = [f"c{j}" for j in range(ncols)]
    table = pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(column_names=names, use_threads=False,
                                             encoding=encoding),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False,
                                         ignore_empty_lines=False, invalid_row_handler=invalid_row),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    lines = np.setdiff1d(np.arange(1, table.num_rows + len(wrong) + 1), np.array(wrong, np.int64))
    columns = [table.column(n).combine_chunks() for n in names]
    blank = np.ones(table.num_rows, bool)
    for c in columns:
        blank &= pc.equal(pc.utf8_length(c), 0).to_numpy(zero_copy_only=False)
    if blank.any():
        keep = pa.array(~blank)
        columns, lines = [pc.filter(c, keep) for c in columns], lines[~blank]
    return columns, lines


def _table(path: Path, delimiter: str, ncols: int, encoding: str = "utf-8") -> list[np.ndarray]:
    """Columns (as numpy string arrays) of a small delimited side table (users, movies: a
    few thousand lines, split as they are read); lines of other widths dropped. Lines end at
    LF (CRLF too), not at every character `str.splitlines` takes for a break."""
    rows = [line.removesuffix("\r").split(delimiter)
            for line in path.read_text(encoding=encoding).split("\n")]
    rows = [row for row in rows if len(row) == ncols]
    return [np.array(column, dtype=str) for column in zip(*rows)] if rows else \
        [np.zeros(0, dtype=str) for _ in range(ncols)]


def _genre_names(path: Path) -> np.ndarray:
    """Genre names ordered by their flag index in u.item."""
    pairs = [line.split("|") for line in path.read_text(encoding="latin-1").splitlines()]
    pairs = sorted((int(idx), name) for name, idx in (p for p in pairs if len(p) == 2))
    return np.array([name for _, name in pairs], dtype=str)


def _lookup(ids: np.ndarray, table_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each id, its index in table_ids and whether it is there (ids are small ints)."""
    index = np.full(max(int(table_ids.max(initial=0)), int(ids.max(initial=0))) + 1, -1, np.int64)
    index[table_ids] = np.arange(table_ids.size)
    pos = index[ids]
    return pos, pos >= 0


def _join_users(users: list[np.ndarray], user: np.ndarray) -> dict[str, Column]:
    uid, age, gender, occupation, zipcode = users
    pos, known = _lookup(user, uid.astype(np.int64))
    rows = np.flatnonzero(known)
    pos = pos[known]
    # each table's strings hashed once (as the featurizer would hash them, `hash_strings`),
    # then gathered per rating: not 100k strings per column gathered, then hashed per batch
    return {"age": Column(NUMERIC, rows, age.astype(np.float64)[pos]),
            "gender": Column(CATEGORICAL, rows, hash_strings(gender)[pos]),
            "occupation": Column(CATEGORICAL, rows, hash_strings(occupation)[pos]),
            "zip3": Column(CATEGORICAL, rows, hash_strings(zipcode.astype("U3"))[pos])}


def _release_years(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Year of dates like "01-Jan-1995" and a mask of those that parse."""
    tail = np.array([date[-4:] for date in dates.tolist()], dtype=str)  # one per movie
    ok = np.char.isdigit(tail) & (np.char.str_len(dates) >= 4)
    years = np.zeros(dates.size, np.float64)
    years[ok] = tail[ok].astype(np.float64)
    return years, ok


def _join_items(items: list[np.ndarray], item: np.ndarray, genre_names: np.ndarray
                ) -> dict[str, Column]:
    iid, dates = items[0].astype(np.int64), items[2]
    flags = np.stack([f == "1" for f in items[5:5 + genre_names.size]], axis=1)
    years, has_year = _release_years(dates)
    pos, known = _lookup(item, iid)
    rows = np.flatnonzero(known)
    pos = pos[known]
    with_year = has_year[pos]
    genre_rows, genre_idx = np.nonzero(flags[pos])  # row-major: rows come out non-decreasing
    return {"genres": Column(CATEGORICAL, rows[genre_rows], hash_strings(genre_names)[genre_idx]),
            "year": Column(NUMERIC, rows[with_year], years[pos][with_year])}
