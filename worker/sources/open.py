"""`open_source`: the event source a command line names, told apart by its form.

Why one entry point: the CLI, the README's API example and the benchmarks name a source as a
string (``synthetic:N``, a MovieLens directory, a file, ``-``), and the rules for telling the
format and defaulting the schema should live in one place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from worker.sources.base import ChunkedSource
from worker.sources.delimited import DelimitedSource
from worker.sources.jsonl import JsonLinesSource
from worker.sources.lines import DEFAULT_CHUNK_LINES
from worker.sources.movielens import MovieLensSource
from worker.sources.schema import CRITEO_SCHEMA
from worker.sources.sparse_text import SparseTextSource
from worker.sources.nonlinear import NonlinearStream
from worker.sources.synthetic import SyntheticStream

FORMATS = ("jsonl", "tsv", "csv", "vw", "libsvm")
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv", ".vw": "vw",
               ".svm": "libsvm", ".libsvm": "libsvm", ".svmlight": "libsvm"}


def open_source(spec: str, *, schema: str | Sequence[tuple[str, str]] | None = None,
                fmt: str | None = None, header: bool | None = None,
                chunk_lines: int = DEFAULT_CHUNK_LINES, until_empty: bool = False,
                follow: bool = False, **opts) -> ChunkedSource:
    """Open the event source a command line names.

    - ``synthetic:N`` or ``synthetic:N:SEED``: a planted-model stream (SyntheticStream);
      ``nonlinear:N[:SEED]`` the planted pairwise stream (NonlinearStream);
    - a directory holding u.data: MovieLens 100k;
    - ``*.jsonl`` / ``*.json``: JSON lines; ``*.tsv`` / ``*.csv``: delimited with `schema`
      (a .tsv defaults to CRITEO_SCHEMA; a .csv without a schema must start with a header
      naming its columns, one of them "label"); ``*.vw``: Vowpal Wabbit text; ``*.svm`` /
      ``*.libsvm`` / ``*.svmlight``: libsvm. Any of them may be gzipped (``.gz``);
    - ``-``: stdin, as `fmt` ("jsonl" by default, or any of FORMATS);
    - ``redis://HOST:PORT/STREAM?group=GROUP[&consumer=NAME]``: a Redis stream read with a
      consumer group, each entry acknowledged once learned (`redis_stream`); `until_empty`
      ends it when the group has nothing more to deliver;
    - ``zmq://HOST:PORT[?state=DIR]``: an ingest socket producers send to (`ingest`);
    - with `follow`, a JSON lines file learned as it grows, surviving rotation (`follow`).
    `fmt` also overrides what a file's extension says. Extra `opts` go to SyntheticStream.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
    if spec.startswith("zmq://"):
        from worker.sources.ingest import IngestSource
        return IngestSource(spec)
    if spec.startswith("redis://"):
        from worker.sources.redis_stream import RedisStreamSource
        return RedisStreamSource(spec, until_empty=until_empty)
    if follow:
        if spec == "-" or "://" in spec or spec.startswith(("synthetic:", "nonlinear:")):
            raise ValueError(f"--follow takes a file path, not {spec!r}")
        if fmt not in (None, "jsonl") or schema is not None:
            raise ValueError("--follow reads JSON lines (no --format or --schema)")
        from worker.sources.follow import FollowSource
        return FollowSource(spec, until_empty=until_empty)
    if spec.startswith(("synthetic:", "nonlinear:")):
        return _open_synthetic(spec, **opts)
    if opts:
        raise ValueError(f"options {sorted(opts)} only apply to synthetic sources")
    if spec == "-":
        return _open_text("-", fmt or "jsonl", schema, header, chunk_lines)
    path = Path(spec)
    if path.is_dir():
        if (path / "u.data").is_file():
            return MovieLensSource(path)
        raise ValueError(f"{spec} is a directory without u.data (MovieLens 100k expected)")
    if not path.exists():
        raise ValueError(f"no such file: {spec}")
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    ext = _EXTENSIONS.get(suffixes[0] if suffixes else "")
    if fmt is None and ext is None:
        raise ValueError(f"cannot tell the format of {spec}: expected synthetic:N[:SEED], a "
                         "MovieLens directory, or a file named "
                         f"{'/'.join(sorted(_EXTENSIONS))}[.gz] (or pass fmt=)")
    return _open_text(path, fmt or ext, schema, header, chunk_lines)


def _open_synthetic(spec: str, **opts) -> ChunkedSource:
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise ValueError(f"bad synthetic source {spec!r}: use {parts[0]}:EVENTS or "
                         f"{parts[0]}:EVENTS:SEED") from None
    return (NonlinearStream if parts[0] == "nonlinear" else SyntheticStream)(*numbers, **opts)


def _open_text(path, fmt: str, schema, header: bool | None, chunk_lines: int) -> ChunkedSource:
    if fmt == "jsonl":
        return JsonLinesSource(path, chunk_lines=chunk_lines)
    if fmt in ("vw", "libsvm"):
        if schema is not None:
            raise ValueError(f"a schema only applies to TSV/CSV sources, not {fmt}")
        return SparseTextSource(path, libsvm=fmt == "libsvm", chunk_lines=chunk_lines)
    delimiter = "\t" if fmt == "tsv" else ","
    if header is None:
        header = schema is None and fmt == "csv"
    if schema is None and not header:
        schema = CRITEO_SCHEMA
    return DelimitedSource(path, schema, delimiter=delimiter, header=header,
                           chunk_lines=chunk_lines)
