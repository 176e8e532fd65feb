"""Event sources: files, stdin, MovieLens and synthetic streams, read as columnar `Batch`es.

Every source has ``read(max_events) -> Batch | None``: the trainer may ask for a different
number of events on every call (None means the stream is over), and ``batches(batch_size)``
is the fixed-size convenience. Text sources read a chunk of lines at a time, build whole
columns with numpy, and cut chunks into batches with `ChunkCutter`.

A malformed line (wrong field count, label not 0/1, bad number, invalid JSON, a value of the
wrong type) never stops training: it is skipped, counted in ``source.stats``, and the first
`MAX_REPORTED` are logged on ``deltaps.sources`` with their 1-based line number.

One module per job: `base` (the shared reading and chunk cutting), `lines` (line input, live
or not), `schema`, `fields` (decoding columns of a byte buffer), `delimited` (TSV/CSV through
pyarrow) and `arrow_columns` (Arrow columns to numpy), `jsonl`, `sparse_text` (VW text and
libsvm; its compiled scan in `sparse_scan` and `sparse_kernel`), `movielens`, `planted`
(the synthetic stream's model), `synthetic`, `synthetic_files` and `open` (`open_source`).
This package re-exports what callers use.
"""
from worker.sources.base import MAX_REPORTED, ChunkCutter, ChunkedSource, SourceStats
from worker.sources.delimited import DelimitedSource
from worker.sources.jsonl import JsonLinesSource
from worker.sources.lines import DEFAULT_CHUNK_LINES
from worker.sources.movielens import MOVIELENS_SPEC_TOML, MovieLensSource
from worker.sources.open import FORMATS, open_source
from worker.sources.schema import CRITEO_SCHEMA, SCHEMA_KINDS, parse_schema, schema_from_header
from worker.sources.sparse_text import DEFAULT_NAMESPACE, SparseTextSource
from worker.sources.synthetic import SyntheticStream, synthetic_spec_toml
from worker.sources.synthetic_files import write_synthetic

__all__ = ["open_source", "FORMATS", "ChunkedSource", "ChunkCutter", "SourceStats",
           "MAX_REPORTED", "DEFAULT_CHUNK_LINES", "CRITEO_SCHEMA", "SCHEMA_KINDS",
           "parse_schema", "schema_from_header", "DelimitedSource", "JsonLinesSource",
           "MovieLensSource", "MOVIELENS_SPEC_TOML", "SparseTextSource", "DEFAULT_NAMESPACE", "SyntheticStream", "synthetic_spec_toml",
           "write_synthetic"]
