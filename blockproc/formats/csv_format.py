"""``format="csv"``: CSV parsed by pyarrow, split on true row starts even when quoted
fields hold newlines.

- **Splitting.** With ``newlines_in_values=True`` (the default) the planner finds the
  true row start of every block from a few KiB before it
  (:mod:`blockproc.formats.csv_split`; the full quote-parity pass only where those
  bytes cannot tell) and stores exact ranges in the plan; workers read exactly those.
  With ``False`` blocks are cut on newlines in the worker, like ``lines`` (no planning
  step; right only when no field holds a newline).
- **Header.** Read once per file at plan time (its first non-empty row); the names of
  the first file go into the plan and apply to every block, so a data row that equals
  the header text stays a row. All files must have the same header.
- **Types.** Every column is a string (the field's text, never null) unless
  ``column_types`` names a pyarrow type for it, so a block parses the same whatever its
  neighbours hold (type inference per block would make results depend on block size).
- **Records.** ``map_lines`` functions get each row as a ``dict`` (column name to
  value); ``map_blocks`` functions get a ``pyarrow.Table``; a command gets the bytes.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from blockproc._deps import pyarrow, require
from blockproc.errors import ConfigError, InputError
from blockproc.formats import csv_split as cs
from blockproc.formats.base import Boundary, ReadFn, find_boundary
from blockproc.formats.hooks import FileAccess, renumber
from blockproc.model import Block, InputFile

_BOM = codecs.BOM_UTF8
_NOT_NEWLINE = re.compile(rb"[^\r\n]")
STREAM_PIECE_SIZE = 1 << 20
"""Bytes of rows parsed at a time for a per-record function."""

READ_BLOCK_SIZE = 1 << 20
"""Bytes pyarrow parses at a time (1 MiB measured faster than larger pieces: ~250 MiB/s
against ~150 MiB/s for 64 MiB, single-threaded)."""


@functools.lru_cache(maxsize=32)
def _grammar(dialect: cs.Dialect) -> cs.Grammar:
    return cs.Grammar(dialect)


@dataclass(frozen=True, slots=True)
class CSV:
    """Comma-separated (or ``sep``-separated) values, parsed with ``pyarrow.csv``.

    Parameters
    ----------
    sep : str, default ","
        The field separator, one ASCII character.
    quote_char : str or None, default '"'
        Quotes around fields that hold separators or newlines; None disables quoting.
    escape_char : str or None, default None
        Makes the next character literal (such as ``"\\\\"``); None: no escaping.
    double_quote : bool, default True
        ``""`` inside a quoted field is one literal quote.
    header : bool, default True
        The first row of every file holds the column names.
    column_names : sequence of str, optional
        Names to use; with ``header=True`` they replace the file's header row. Default:
        the header (or ``f0, f1, ...`` without one).
    column_types : mapping of str to str, optional
        pyarrow type names (``"int64"``, ``"float64"``, ``"bool"``, ``"timestamp[s]"``,
        ...) for some columns; the others are strings.
    columns : sequence of str, optional
        Keep only these columns, in this order.
    newlines_in_values : bool, default True
        Quoted fields may hold newlines: planning finds each block's true row start
        (reading a few KiB per block on typical data; each file once when some stretch
        without quotes leaves it open). False cuts on every newline without planning.
    encoding : str, default "utf-8"
        An ASCII-compatible encoding; a UTF-8 BOM is dropped.
    allow_unclosed_quote : bool, default False
        A quote still open at the end of a file makes planning fail with the byte offset
        of that quote (the rest of the file would be one field). True accepts it, as
        pyarrow does: the field runs to the end of the file. Checked by the planning
        pass, so only with ``newlines_in_values`` and uncompressed files.

    Examples
    --------
    >>> fmt = CSV(column_types={"n": "int64"})
    >>> fmt = replace(fmt, column_names=("name", "n"))  # what planning fills in
    >>> table = fmt.decode_block(b'name,n\\n"a\\nb",1\\nc,2\\n', at_file_start=True)
    >>> table.to_pylist()
    [{'name': 'a\\nb', 'n': 1}, {'name': 'c', 'n': 2}]
    """

    sep: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    double_quote: bool = True
    header: bool = True
    column_names: Sequence[str] | None = None
    column_types: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    columns: Sequence[str] | None = None
    newlines_in_values: bool = True
    encoding: str = "utf-8"
    allow_unclosed_quote: bool = False
    aligned: bool = False
    name: str = "csv"
    prefers_threads: ClassVar[bool] = True
    """``map_blocks`` functions over CSV run best on ``executor="threads"``: the work is
    pyarrow's parse and compute, which release the GIL, and threads share one copy of
    the libraries and pass tables without pickling (measured on the 1 GiB reviews CSV
    by ``benchmarks/bench_csv.py``: faster than processes in C1/C2, about half the peak
    memory). Per-record functions run Python per row and keep ``processes``."""

    def __post_init__(self) -> None:
        cs.Dialect.of(self.sep, self.quote_char, self.escape_char, self.double_quote)
        for key in ("column_names", "columns"):
            value = getattr(self, key)
            if value is not None:
                if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                    raise TypeError(f"{key} must be a sequence of str, got {value!r}")
                object.__setattr__(self, key, tuple(value))
        types = dict(self.column_types)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in types.items()):
            raise TypeError(f"column_types must map column names to pyarrow type names "
                            f"such as 'int64', got {self.column_types!r}")
        object.__setattr__(self, "column_types", tuple(sorted(types.items())))
        try:
            newline = "\n".encode(self.encoding)
        except LookupError:
            raise ConfigError(f"unknown encoding {self.encoding!r}; pass a codec name "
                              f"Python knows, such as 'utf-8' or 'latin-1'") from None
        if newline != b"\n":
            raise ConfigError(f"format='csv' needs an ASCII-compatible encoding, got "
                              f"{self.encoding!r}; re-encode the file as UTF-8")

    # -- the record format protocol ------------------------------------------------------

    @property
    def delimiter(self) -> bytes:
        """Rows end with ``b"\\n"`` (outside quotes)."""
        return b"\n"

    @property
    def dialect(self) -> cs.Dialect:
        """The bytes the grammar cares about."""
        return cs.Dialect.of(self.sep, self.quote_char, self.escape_char, self.double_quote)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {
            "name": self.name, "sep": self.sep, "quote_char": self.quote_char,
            "escape_char": self.escape_char, "double_quote": self.double_quote,
            "header": self.header,
            "column_names": None if self.column_names is None else list(self.column_names),
            "column_types": dict(self.column_types),
            "columns": None if self.columns is None else list(self.columns),
            "newlines_in_values": self.newlines_in_values, "encoding": self.encoding,
            "allow_unclosed_quote": self.allow_unclosed_quote, "aligned": self.aligned,
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> CSV:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**dict(spec))

    def boundary(self, read: ReadFn, pos: int, size: int, *, max_record_size: int) -> Boundary:
        """Return the first row start after the first row-ending newline at or after
        ``pos``.

        Plans made by :func:`blockproc.plan` are already aligned (``aligned=True``), so
        this returns ``pos``. Otherwise, with quoted newlines possible, it resolves the
        state at ``pos`` from the bytes before it (a few KiB on typical data; the whole
        of ``[0, pos)`` when they cannot tell): exact either way.
        """
        if pos <= 0:
            return Boundary(0, b"", 0)
        if pos >= size:
            return Boundary(size, b"", size)
        if self.aligned:
            return Boundary(pos, b"", pos)
        if not self.newlines_in_values:
            return find_boundary(read, pos, size, b"\n", max_record_size=max_record_size)
        grammar = _grammar(self.dialect)
        data_start = _data_start(read(0, 3), self.encoding)
        resolved = cs.resolve_states(read, [pos], data_start, grammar)
        if resolved is None:  # the full pass over [0, pos)
            pieces = [cs.scan_piece(read, a, min(pos, a + cs.SCAN_SIZE), data_start, grammar.d)
                      for a in range(0, pos, cs.SCAN_SIZE)]
            resolved = cs.chain_states(pieces, read, data_start, grammar)
        state = resolved[pos]
        if pos < data_start:
            pos, state = data_start, cs.S
        found = cs.row_start(read, pos, size, state, grammar)
        return Boundary(size if found is None else found, b"", pos)

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield the rows as dicts, a list per ~1 MiB of input.

        The chunks are cut at the last row end (quote-aware) and each piece is parsed in
        this thread: pyarrow's streaming reader would pull the chunks, and report
        progress, from one of its own threads.
        """
        it = iter(chunks)
        carry = b""
        if at_file_start:
            carry, it = self._skip_header(it)
        grammar = _grammar(self.dialect)
        for chunk in it:
            carry = carry + chunk if carry else chunk
            if len(carry) < STREAM_PIECE_SIZE:
                continue
            cut = cs.last_row_end(carry, grammar)
            if cut:
                piece, carry = carry[:cut], carry[cut:]
                yield from self._rows(piece)
        if carry:
            yield from self._rows(carry)

    def _rows(self, body: bytes) -> Iterator[list[Any]]:
        for batch in self.decode_block(body, at_file_start=False).to_batches():
            if batch.num_rows:
                yield batch.to_pylist()

    def decode_block(self, data: bytes, *, at_file_start: bool) -> Any:
        """Return the rows of an aligned range as a ``pyarrow.Table``.

        pyarrow reads ``data`` in place (a zero-copy buffer over it, not a copy), and
        only the ``columns`` asked for are converted (``include_columns``): the other
        fields are split but never decoded or typed.
        """
        pa = pyarrow("format='csv'")
        pa_csv = require("pyarrow.csv", "format='csv'")
        body = memoryview(data)
        if at_file_start:
            body = body[self._body_start(data):]
        if not self._names() or not _NOT_NEWLINE.search(body):
            return self._schema().empty_table()
        read_opts, parse_opts, convert_opts = self._options(READ_BLOCK_SIZE)
        try:
            return pa_csv.read_csv(pa.BufferReader(pa.py_buffer(body)), read_options=read_opts,
                                   parse_options=parse_opts, convert_options=convert_opts)
        except pa.ArrowInvalid as exc:  # a malformed row, bad UTF-8, a value not of its type
            raise InputError(f"cannot parse the rows as CSV: {exc}; fix the input, or check "
                             f"the format options (sep, quote_char, column_types)") from None

    def row_starts(self, data: bytes, *, at_file_start: bool) -> Iterator[int]:
        """Yield where each row of an aligned range starts in it, as pyarrow reads the
        rows: after the BOM and the header in block 0, empty lines skipped, a quoted
        newline inside its row (for the byte offset of a record in error messages).

        Examples
        --------
        >>> fmt = replace(CSV(), column_names=("a", "b"))
        >>> list(fmt.row_starts(b'a,b\\n1,"x\\ny"\\n\\n2,z\\n', at_file_start=True))
        [4, 13]
        """
        grammar = _grammar(self.dialect)
        pos = self._body_start(data) if at_file_start else 0
        while True:
            while pos < len(data) and data[pos] in b"\r\n":
                pos += 1
            if pos >= len(data):
                return
            yield pos
            pos, _, found = grammar.walk(data, pos, len(data), cs.S, cs.LINES, True)
            if not found:
                return

    def count_records(self, data: bytes, *, at_file_start: bool) -> int:
        """Return how many rows an aligned range holds (parses it)."""
        return int(self.decode_block(data, at_file_start=at_file_start).num_rows)

    # -- planning --------------------------------------------------------------------------

    def plan_blocks(self, files: Sequence[InputFile], blocks: Sequence[Block],
                    access: FileAccess) -> tuple[CSV, list[Block]]:
        """Read each file's header (the names go into the plan) and, with
        ``newlines_in_values``, cut every plain file's blocks on true row starts."""
        fmt = self
        names = self._header_names(files, access)
        if self.column_names is None:
            fmt = replace(fmt, column_names=names)
        fmt._schema()  # check column_types and columns now, before any block runs
        if not self.newlines_in_values:
            return fmt, list(blocks)
        out = align_blocks(fmt, files, blocks, access)
        return replace(fmt, aligned=True), out

    def _header_names(self, files: Sequence[InputFile], access: FileAccess) -> tuple[str, ...]:
        first: tuple[str, tuple[str, ...]] | None = None
        for f in files:
            line = self._first_line(f, access)
            if line is None:
                continue
            names = self._parse_names(line)
            if first is None:
                first = (f.path, names)
                if not self.header or self.column_names is not None:
                    break
            elif names != first[1]:
                raise ConfigError(
                    f"the CSV inputs have different headers: {first[0]!r} has "
                    f"{list(first[1])}, {f.path!r} has {list(names)}; process them in "
                    f"separate jobs, or pass column_names=... to name the columns yourself"
                )
        return () if first is None else first[1]

    def _first_line(self, f: InputFile, access: FileAccess) -> bytes | None:
        """Return the bytes of the first non-empty line of ``f`` (None if it has none)."""
        grammar = _grammar(self.dialect)
        want = 4096
        while True:
            head = access.head(f, want)
            final = len(head) < want
            start = _data_start(head, self.encoding)
            found = grammar.first_line(head, start, final=final)
            if found is not None:
                return head[found[0]:found[1]]
            if final:
                return None
            want *= 4

    def _parse_names(self, line: bytes) -> tuple[str, ...]:
        pa_csv = require("pyarrow.csv", "format='csv'")
        _, parse_opts, _ = self._options(READ_BLOCK_SIZE, names=False)
        read_opts = pa_csv.ReadOptions(use_threads=False, encoding=self.encoding,
                                       autogenerate_column_names=not self.header)
        pa = pyarrow("format='csv'")
        if not line.endswith((b"\n", b"\r")):
            line += b"\n"  # pyarrow reads a header without a line break as no columns
        try:
            table = pa_csv.read_csv(pa.BufferReader(line), read_options=read_opts,
                                    parse_options=parse_opts)
        except pa.ArrowInvalid as exc:
            raise InputError(f"cannot read the CSV header row {line[:200]!r}: {exc}") from None
        return tuple(str(n) for n in table.column_names)

    # -- helpers ---------------------------------------------------------------------------

    def _names(self) -> tuple[str, ...]:
        return tuple(self.column_names or ())

    def _schema(self) -> Any:
        pa = pyarrow("format='csv'")
        types = dict(self.column_types)
        fields = []
        for n in self._names():
            try:
                fields.append(pa.field(n, pa.type_for_alias(types.get(n, "string"))))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"column_types[{n!r}] = {types[n]!r} is not a pyarrow type name; use "
                    f"names like 'int64', 'float64', 'bool', 'string', 'date32', "
                    f"'timestamp[s]'"
                ) from None
        schema = pa.schema(fields)
        if self.columns is not None:
            missing = [c for c in self.columns if c not in schema.names]
            if missing:
                raise ConfigError(f"columns {missing} are not in the CSV columns "
                                  f"{schema.names}; check the names")
            schema = pa.schema([schema.field(c) for c in self.columns])
        return schema

    def _options(self, block_size: int, names: bool = True) -> tuple[Any, Any, Any]:
        pa = pyarrow("format='csv'")
        pa_csv = require("pyarrow.csv", "format='csv'")
        read_opts = pa_csv.ReadOptions(
            column_names=list(self._names()) if names else None, use_threads=False,
            block_size=block_size, encoding=self.encoding)
        parse_opts = pa_csv.ParseOptions(
            delimiter=self.sep, quote_char=self.quote_char or False,
            double_quote=self.double_quote, escape_char=self.escape_char or False,
            newlines_in_values=True, ignore_empty_lines=True)
        types = dict(self.column_types)
        convert = {"column_types": {n: pa.type_for_alias(types.get(n, "string"))
                                    for n in self._names()},
                   "strings_can_be_null": False}
        if self.columns is not None:
            convert["include_columns"] = list(self.columns)
        return read_opts, parse_opts, pa_csv.ConvertOptions(**convert)

    def _body_start(self, data: bytes) -> int:
        """Return where the rows of block 0 start: after the BOM and the header row."""
        start = _data_start(data[:3], self.encoding)
        if not self.header:
            return start
        found = _grammar(self.dialect).first_line(data, start, final=True)
        return len(data) if found is None else found[1]

    def _skip_header(self, it: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
        """Consume chunks until the header row ends; return the rest of the data read."""
        grammar = _grammar(self.dialect)
        head = b""
        for chunk in it:
            head += chunk
            if len(head) < 3 and _BOM.startswith(head):
                continue
            start = _data_start(head[:3], self.encoding)
            if not self.header:
                return head[start:], it
            found = grammar.first_line(head, start, final=False)
            if found is not None:
                return head[found[1]:], it
        return head[self._body_start(head):], it


def _unclosed_quote(f: InputFile, states: Mapping[int, int], data_start: int, read: ReadFn,
                    grammar: cs.Grammar) -> InputError:
    """Return the error for a file that ends inside a quoted field, naming the quote."""
    start, state = data_start, cs.S
    for pos in sorted(states):  # the opening quote is after the last known state outside quotes
        if data_start < pos < f.size and not cs.is_open_quote(states[pos]):
            start, state = pos, states[pos]
    offset = cs.opening_quote(read, start, f.size, state, grammar.d)
    where = "a quote" if offset is None else f"the quote at byte offset {offset}"
    rest = "" if offset is None else f" ({f.size - offset} bytes)"
    return InputError(
        f"{f.path!r}: {where} is never closed, so the rest of the file{rest} would be "
        f"read as one field; fix the file, or pass CSV(allow_unclosed_quote=True) (CLI: "
        f"--format-option allow_unclosed_quote=true) to accept it, as pyarrow does")


def _data_start(head: bytes, encoding: str) -> int:
    return 3 if head.startswith(_BOM) and codecs.lookup(encoding).name == "utf-8" else 0


def align_blocks(fmt: CSV, files: Sequence[InputFile], blocks: Sequence[Block],
                 access: FileAccess) -> list[Block]:
    """Return the blocks cut on true row starts (see :mod:`blockproc.formats.csv_split`).

    Compressed files keep their single block; blocks that own no row are dropped.
    """
    grammar = _grammar(fmt.dialect)
    by_path: dict[str, list[Block]] = {}
    for b in blocks:
        by_path.setdefault(b.path, []).append(b)
    nominal = {path: [b.start for b in bs] for path, bs in by_path.items()}
    plain = [f for f in files if not f.compression and f.size and f.path in by_path]
    plain_paths = {f.path for f in plain}
    data_starts: dict[str, int] = {}
    states: dict[str, dict[int, int]] = {}
    for f in plain:  # step 1: each nominal start (and the end) from a window before it
        with access.open(f.path) as src:
            data_starts[f.path] = _data_start(src.read(0, 3), fmt.encoding)
            found = cs.resolve_states(src.read, [*nominal[f.path], f.size],
                                      data_starts[f.path], grammar)
        if found is not None:
            states[f.path] = found
    slow = [f for f in plain if f.path not in states]
    states.update(_scanned_states(slow, nominal, data_starts, access, grammar))
    triples: list[tuple[str, int, int]] = []
    for f in files:
        if f.path not in plain_paths:
            triples.extend((b.path, b.start, b.end) for b in by_path.get(f.path, ()))
            continue
        with access.open(f.path) as src:
            starts = _row_starts(fmt, f, nominal[f.path], states[f.path],
                                 data_starts[f.path], src.read, grammar)
        ends = [*starts[1:], f.size]
        triples.extend((f.path, s, e) for s, e in zip(starts, ends, strict=True) if s < e)
    return renumber(triples)


def _scanned_states(files: Sequence[InputFile], nominal: Mapping[str, Sequence[int]],
                    data_starts: Mapping[str, int], access: FileAccess,
                    grammar: cs.Grammar) -> dict[str, dict[int, int]]:
    """Return the exact states at the pieces of each file from the full pass (step 2)."""
    tasks: list[tuple[cs.Opener, int, int, int]] = []
    cuts: dict[str, list[int]] = {}
    for f in files:
        cuts[f.path] = cs.cut_points(f.size, nominal[f.path])
        tasks.extend((functools.partial(access.open, f.path), a, e, data_starts[f.path])
                     for a, e in itertools.pairwise([*cuts[f.path], f.size]))
    scans = iter(cs.scan_all(tasks, grammar.d))
    out: dict[str, dict[int, int]] = {}
    for f in files:
        file_scans = [next(scans) for _ in cuts[f.path]]
        with access.open(f.path) as src:
            out[f.path] = cs.chain_states(file_scans, src.read, data_starts[f.path], grammar)
    return out


def _row_starts(fmt: CSV, f: InputFile, nominal: Sequence[int], states: Mapping[int, int],
                data_start: int, read: ReadFn, grammar: cs.Grammar) -> list[int]:
    """Return where each nominal block of ``f`` really starts (step 3): after the first
    row-ending LF at or after its nominal start, given the exact state there."""
    if cs.is_open_quote(states[f.size]) and not fmt.allow_unclosed_quote:
        raise _unclosed_quote(f, states, data_start, read, grammar)
    starts = [0] * len(nominal)
    following = f.size
    for i in range(len(nominal) - 1, 0, -1):
        pos, state = nominal[i], states[nominal[i]]
        if pos < data_start:
            pos, state = data_start, cs.S
        found = cs.row_start(read, pos, nominal[i + 1] if i + 1 < len(nominal) else f.size,
                             state, grammar)
        starts[i] = following if found is None else found
        following = starts[i]
    return starts
