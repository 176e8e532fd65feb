"""Lines of a text input in numbered chunks, from a file, a gzip file, stdin or a file object.

Why one reader for all of them: the parsers (delimited, JSON lines) then see a single shape of
input, chunks of lines with the number of the first, whatever the input is. A live input (a
pipe, terminal or socket) hands over the complete lines that have arrived rather than waiting
for a full chunk, so a live stream is trained on as its events come.
"""
from __future__ import annotations

import gzip
import io
import itertools
import os
import select
import stat
import sys
import zlib
from pathlib import Path
from typing import IO, Iterator

from worker.sources import compiled
from worker.sources.base import ChunkedSource, SourceStats

DEFAULT_CHUNK_LINES = 65536
# bytes per read of a file: 4 MiB less a page, so that the bytes object a read makes is within
# the 4 MiB that nodes take from the heap (`deploy.runtime.allocator`), the freed memory of the
# last read, and not a fresh mapping whose every page faults as the read fills it
DEFAULT_BLOCK_BYTES = (1 << 22) - (1 << 12)
_GZIP_MAGIC = b"\x1f\x8b"
_TEXT_CHECK_BYTES = 1 << 16


def _is_gzip(path: Path) -> bool:
    """Whether a file starts with the gzip magic bytes, whatever its name says."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


class LineReader:
    """Lines of an input (path, "-" for stdin, or file object), in numbered chunks.

    `binary` inputs yield bytes lines (text streams are encoded as UTF-8 per chunk), for the
    byte parser; text inputs yield str lines (bytes streams are decoded, invalid UTF-8
    replaced), for JSON. Line numbers are kept so malformed lines can be reported where a user
    can find them.
    """

    def __init__(self, path_or_file: str | Path | IO, binary: bool):
        self.binary, self._owned, self._encode = binary, False, False
        if isinstance(path_or_file, (str, Path)) and str(path_or_file) != "-":
            path = Path(path_or_file)
            opener = gzip.open if path.suffix == ".gz" or _is_gzip(path) else open
            self.file = (opener(path, "rb") if binary
                         else opener(path, "rt", encoding="utf-8", errors="replace"))
            self.name, self._owned = str(path), True
        else:
            stdin = isinstance(path_or_file, (str, Path))
            f = sys.stdin if stdin else path_or_file
            if binary and stdin:
                f = getattr(f, "buffer", f)
            is_bytes = isinstance(f.read(0), bytes)
            if not binary and is_bytes:
                f = io.TextIOWrapper(f, encoding="utf-8", errors="replace")
            self.file, self._encode = f, binary and not is_bytes
            name = "<stdin>" if stdin else getattr(path_or_file, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"
        self.next_line = 1  # 1-based number of the next line to be read
        self._checked = False  # whether the first block was checked to be text

    def readline(self) -> str:
        """One line as text (for a header)."""
        line = self.file.readline()
        if line:
            self.next_line += 1
        return line.decode("utf-8", "replace") if isinstance(line, bytes) else line

    @property
    def live(self) -> bool:
        """A pipe, terminal or socket: lines arrive over time, not all at once."""
        try:
            return not stat.S_ISREG(os.fstat(self.file.fileno()).st_mode)
        except (OSError, AttributeError, io.UnsupportedOperation):
            return False

    @property
    def bytes_read(self) -> int | None:
        """Bytes taken from the file so far (compressed bytes for .gz; the OS file offset, so
        up to a buffer ahead of the lines handed out); None where it cannot be told."""
        try:
            return os.lseek(self.file.fileno(), 0, os.SEEK_CUR)
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            return None

    @property
    def bytes_total(self) -> int | None:
        """Size of a regular file (so progress has an end to measure against); else None."""
        try:
            st = os.fstat(self.file.fileno())
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def chunks(self, size: int) -> Iterator[tuple[int, list]]:
        """Yield (number of the first line, lines) for up to `size` lines at a time.

        On a live input a chunk holds the complete lines that have arrived (at least one), so
        events are trained on as they come rather than once `size` lines have piled up.
        """
        if self.live:
            yield from self._live_chunks(size)
            return
        while True:
            with self._reading():
                lines = list(itertools.islice(self.file, size))
            if not lines:
                return
            if self._encode:
                lines = [line.encode("utf-8") for line in lines]
            first, self.next_line = self.next_line, self.next_line + len(lines)
            self._check_text("".join(lines) if isinstance(lines[0], str) else b"".join(lines),
                             first)
            yield first, lines

    def blocks(self, max_lines: int, block_bytes: int = DEFAULT_BLOCK_BYTES
               ) -> Iterator[tuple[int, bytes]]:
        """Yield (number of the first line, bytes of whole lines) of `max_lines` lines each
        (the last block may hold fewer): `line_blocks` without the counts."""
        for first, _lines, block in self.line_blocks(max_lines, block_bytes):
            yield first, block

    def line_blocks(self, max_lines: int, block_bytes: int = DEFAULT_BLOCK_BYTES
                    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield (number of the first line, number of lines, bytes of those whole lines),
        `max_lines` lines a block but the last.

        Why blocks of bytes: a columnar parser takes a buffer, and reading one with a single
        `read` costs nothing per line; lines are only counted so malformed ones can still be
        reported by number. Each read's newlines are found once (one compiled pass,
        `scan_kernel.line_cuts`), which gives both the count and where to cut. Why exactly `max_lines`: a reader's chunks then
        line up with the trainer's batches, so no batch is glued together from two chunks.
        A live input gives what has arrived.
        """
        if not self.binary:
            raise ValueError("blocks() needs a LineReader opened with binary=True")
        if self.live:
            for first, lines in self._live_chunks(max_lines):
                yield first, len(lines), b"".join(lines)
            return
        parts: list[bytes] = []  # read, not yet handed out: `lines` whole lines, maybe a part
        lines = 0
        while True:
            with self._reading():
                data = self.file.read(block_bytes)
            if isinstance(data, str):
                data = data.encode("utf-8")
            if not data:
                rest = b"".join(parts)
                if rest:
                    if not rest.endswith(b"\n"):
                        rest, lines = rest + b"\n", lines + 1
                    yield self._numbered(lines), lines, rest
                return
            self._check_text(data, self.next_line + lines)  # before any more is read
            cuts, found = compiled.line_cuts(data, lines, max_lines)
            if not cuts:
                parts.append(data)
                lines += found
                continue
            start = 0
            for cut in cuts:
                block = b"".join([*parts, data[:cut]]) if start == 0 and parts else data[start:cut]
                yield self._numbered(max_lines), max_lines, block
                start = cut
            parts = [data[start:]] if start < len(data) else []
            lines += found - len(cuts) * max_lines

    def _numbered(self, lines: int) -> int:
        """The number of the first of the next `lines` lines handed out."""
        first, self.next_line = self.next_line, self.next_line + lines
        return first

    def _check_text(self, block, first_line: int) -> None:
        """Refuse binary input: a NUL byte anywhere, or (in the first block) bytes that are
        not UTF-8, means this is not a text file, and parsing it would make garbage events."""
        if isinstance(block, str):
            if "\x00" in block:
                raise ValueError(f"{self.name}: NUL character near line {first_line}: this looks "
                                 "like a binary file, not text")
            return
        nul = block.find(b"\x00")
        if nul >= 0:
            line = first_line + block.count(b"\n", 0, nul)
            raise ValueError(f"{self.name}: line {line} holds a NUL byte: this looks like a "
                             "binary file (or a compressed one without a .gz name), not text")
        if not self._checked:
            self._checked = True
            head = block[:_TEXT_CHECK_BYTES]
            cut = head.rfind(b"\n") + 1 if len(block) > _TEXT_CHECK_BYTES else len(head)
            try:
                head[:cut or len(head)].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{self.name}: not UTF-8 text near line {first_line} "
                                 f"(byte {exc.start}: {exc.reason}); is this a binary file?"
                                 ) from None

    def _reading(self):
        """Context turning a truncated or corrupt gzip stream into an error naming the input
        and how far it was read (the events before it have been read and counted)."""
        return _GzipErrors(self)

    def _live_chunks(self, size: int) -> Iterator[tuple[int, list]]:
        fd = self.file.fileno()
        pending = b""
        while True:
            select.select([fd], [], [])  # block until something arrives
            data = os.read(fd, 1 << 20)
            while data and select.select([fd], [], [], 0)[0] and len(data) < (8 << 20):
                more = os.read(fd, 1 << 20)  # take whatever else is already there
                if not more:
                    break
                data += more
            if not data:  # end of input
                if pending:
                    yield from self._emit([pending], size)
                return
            lines = (pending + data).splitlines(keepends=True)
            pending = lines.pop() if not lines[-1].endswith(b"\n") else b""
            if lines:
                yield from self._emit(lines, size)

    def _emit(self, lines: list[bytes], size: int) -> Iterator[tuple[int, list]]:
        for start in range(0, len(lines), size):
            part = lines[start:start + size]
            if not self.binary:
                part = [line.decode("utf-8", "replace") for line in part]
            first, self.next_line = self.next_line, self.next_line + len(part)
            yield first, part

    def close(self) -> None:
        if self._owned:
            self.file.close()


class _GzipErrors:
    def __init__(self, reader: LineReader):
        self.reader = reader

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None and issubclass(kind, (EOFError, gzip.BadGzipFile, zlib.error)):
            raise ValueError(f"{self.reader.name}: compressed data is truncated or corrupt "
                             f"after line {self.reader.next_line - 1} ({exc or kind.__name__}); "
                             "the events before it were read") from exc
        return False


class LineSource(ChunkedSource):
    """A source reading lines from a path, stdin ("-") or a file object.

    Why: the text formats differ only in how a chunk of lines becomes a Batch; naming the
    source after its input, marking it live on a pipe and closing the input are the same.
    """

    def __init__(self, lines: LineReader):
        self._lines = lines
        super().__init__(lines.name)
        self.live = lines.live

    @property
    def bytes_read(self) -> int | None:
        return self._lines.bytes_read

    @property
    def bytes_total(self) -> int | None:
        return self._lines.bytes_total

    @property
    def lines_read(self) -> int:
        """Lines taken from the input so far (parsed, or waiting in a chunk to be)."""
        return self._lines.next_line - 1

    def close(self) -> None:
        self._lines.close()


class MalformedLines:
    """Reasons for bad lines of one chunk, keyed by index in the chunk; first reason wins.

    Why collect before reporting: a chunk is checked column by column, so a line's problems
    are found out of order and perhaps more than once; reporting once per line, in line order,
    after the chunk is parsed keeps the log readable and the counts right.
    """

    def __init__(self):
        self.reasons: dict[int, str] = {}

    def add(self, index, reason: str) -> None:
        self.reasons.setdefault(int(index), reason)

    def report(self, stats: SourceStats, name: str, first_line: int) -> None:
        for i in sorted(self.reasons):
            stats.malformed_line(name, first_line + i, self.reasons[i])
