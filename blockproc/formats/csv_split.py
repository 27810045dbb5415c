"""Where CSV rows start: the quote-aware planning step behind ``format="csv"``.

A newline ends a row only outside quotes, and whether a byte is inside quotes depends
on every quote before it. No rule on one byte's neighbours can tell (a quoted field's
tail can look like valid rows), but the grammar forgets its past quickly: walked from
*every* state it can be in, a few hundred bytes of real CSV bring all the walks to the
same state, which is then the state there whatever came before. Planning uses that:

1. **Resolve, locally.** For each nominal block start (and the end of the file) the
   window of ``RESOLVE_WINDOW`` bytes before it is walked from every grammar state
   (:func:`resolve_state`; the exact form of the two-state speculative scanning of
   parallel CSV parsers: no guess is kept unless every start agrees). Walks that still
   disagree retry on a window 4x wider, up to ``RESOLVE_LIMIT``; a window that reaches
   the previous resolved position (or the file start) walks from its exact state. The
   planner reads a few KiB per block instead of the whole file.
2. **Fall back, rarely.** A file where some window stays ambiguous (long stretches
   without a quote, so "inside" and "outside" never meet) gets the full pass: the file
   is cut at every block start (and every ``SCAN_SIZE`` bytes); threads count each
   piece's quotes (numpy) and check, for both possible parities at its start, that
   every quote the parity model calls "opening" stands at a field start (after the
   separator, a line end, or a quote that closes a doubled ``""``). The master chains
   the pieces' parities in order; a piece whose check failed (a stray quote inside an
   unquoted field, like ``5" screen``), or that holds an escape character, is walked
   with the exact grammar instead.
3. **Align.** From the exact state at each nominal block start, a short walk finds the
   first newline that ends a row; the block starts right after it (the rule of
   DESIGN.md: a row belongs to the block holding the first byte of the newline before
   it). Blocks that own no row are dropped.

The grammar is pyarrow's CSV parser (``cpp/src/arrow/csv/parser.cc``): a quote opens a
quoted field only at the start of a field; inside, ``""`` is a literal quote (with
``double_quote``) and the escape character makes the next byte literal; after the
closing quote the field continues unquoted, where quotes are literal. CR, LF and CRLF
end a row; blocks are cut only after an LF (a file with bare-CR line ends is not split).

Cost: a few KiB read per block at plan time on typical data (the 1 GiB reviews CSV of
``python -m blockproc.datasets csv``: 0.01 s, against about 1 s for the full pass);
one extra read of the file, in parallel threads, when the fallback runs. Pass
``newlines_in_values=False`` to skip planning when no field holds a newline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

from blockproc._deps import numpy
from blockproc.errors import ConfigError
from blockproc.formats.base import WINDOW_SIZE, ReadFn
from blockproc.formats.hooks import Source

SCAN_SIZE = 16 * 2**20
"""Most bytes one thread scans as one piece in the parallel pass."""

PIECE_SIZE = 4 * 2**20
"""Bytes read and scanned at a time inside a piece."""

RESOLVE_WINDOW = 4096
"""Bytes before a position first walked from every grammar state (then 4x per step)."""

RESOLVE_LIMIT = 4 * 2**20
"""The widest window tried before a file falls back to the full pass."""

ROW_WINDOW_SIZE = 512
"""Bytes first read to find a block's first row end (then 4x per step): rows are short,
and these reads come on top of the one full pass."""

S, F, FE, Q, QE, QQ = range(6)
"""Grammar states before a byte: field start, unquoted field, unquoted field with the
next byte escaped, quoted field, quoted with the next byte escaped, and "just read a
quote inside a quoted field" (the next byte tells a doubled quote from the closing one)."""

TRACK, ROWS, LINES = range(3)
"""Walk modes: follow the state only; stop after an LF that ends a row; stop after any
line end (CR, LF or CRLF), as the header row is read."""

_CR, _LF = 13, 10


@dataclass(frozen=True, slots=True)
class Dialect:
    """The bytes that matter to the grammar (-1 when unused).

    Examples
    --------
    >>> Dialect.of(",", '"', None, True)
    Dialect(sep=44, quote=34, escape=-1, double_quote=True)
    """

    sep: int
    quote: int
    escape: int
    double_quote: bool

    @classmethod
    def of(cls, sep: str, quote: str | None, escape: str | None, double_quote: bool) -> Dialect:
        """Build a dialect from one-character strings (checked: one byte each, distinct,
        not CR or LF)."""
        chars = {"sep": sep, "quote_char": quote, "escape_char": escape}
        codes: dict[str, int] = {}
        for name, char in chars.items():
            if char is None:
                continue
            if not isinstance(char, str) or len(char.encode("utf-8")) != 1:
                raise ConfigError(f"{name} must be one ASCII character, got {char!r}")
            if char in "\r\n":
                raise ConfigError(f"{name} cannot be a line break, got {char!r}")
            codes[name] = ord(char)
        if len(set(codes.values())) != len(codes):
            raise ConfigError(f"sep, quote_char and escape_char must differ, got "
                              f"{ {k: v for k, v in chars.items() if v is not None} }")
        return cls(codes["sep"], codes.get("quote_char", -1), codes.get("escape_char", -1),
                   double_quote)


class Grammar:
    """pyarrow's CSV grammar as a state machine that jumps between the bytes that matter
    (regular expressions do the skipping, so long unquoted stretches cost C speed)."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect
        alts: list[bytes] = []
        if dialect.quote >= 0:  # a quote right after a separator or line break opens a field
            alts.append(b"[" + re.escape(bytes([dialect.sep, _CR, _LF])) + b"]"
                        + re.escape(bytes([dialect.quote])))
        if dialect.escape >= 0:
            alts.append(re.escape(bytes([dialect.escape])))
        self._f = {
            TRACK: re.compile(b"|".join(alts)) if alts else None,
            ROWS: re.compile(b"|".join([*alts, b"\n"])),
            LINES: re.compile(b"|".join([*alts, b"[\r\n]"])),
        }
        inside = bytes(c for c in (dialect.quote, dialect.escape) if c >= 0)
        self._q = re.compile(b"[" + re.escape(inside) + b"]") if inside else None

    def walk(self, data: bytes, pos: int, end: int, state: int, mode: int = TRACK,
             final: bool = True) -> tuple[int, int, bool]:
        """Run over ``data[pos:end]`` from ``state``.

        Returns ``(position, state, found)``. In ``ROWS``/``LINES`` mode ``found`` means
        a row ended and ``position`` is right after its line break; otherwise
        ``position == end`` and ``state`` is the state there. In ``LINES`` mode a CR at
        the end of non-``final`` data is left undecided (an LF may follow).
        """
        d = self.d
        sep, quote, esc, dq = d.sep, d.quote, d.escape, d.double_quote
        pattern = self._f[mode]
        while pos < end:
            if state == S:
                b = data[pos]
                if b == quote:
                    state, pos = Q, pos + 1
                    continue
                if b == _LF or (b == _CR and mode == LINES):
                    if mode != TRACK:
                        return self._line_end(data, pos, end, mode, final)
                    pos += 1
                    continue
                if b in (sep, _CR):
                    pos += 1
                    continue
                if b == esc:
                    state, pos = FE, pos + 1
                    continue
                state = F
            if state == F:
                m = pattern.search(data, pos, end) if pattern is not None else None
                if m is None:
                    if data[end - 1] in (sep, _CR, _LF):
                        state = S
                    return end, state, False
                p = m.start()
                b = data[p]
                if b == esc:
                    state, pos = FE, p + 1
                elif mode != TRACK and (b == _LF or (b == _CR and mode == LINES)):
                    return self._line_end(data, p, end, mode, final)
                else:  # a separator or line break followed by a quote
                    state, pos = S, p + 1
                continue
            if state in (FE, QE):
                state, pos = (F if state == FE else Q), pos + 1
                continue
            if state == Q:
                m = self._q.search(data, pos, end) if self._q is not None else None
                if m is None:
                    return end, Q, False
                p = m.start()
                state = QE if data[p] == esc else (QQ if dq else F)
                pos = p + 1
                continue
            # QQ: a doubled quote stays inside, anything else closes the quoted part
            if data[pos] == quote:
                state, pos = Q, pos + 1
            else:
                state = F
        return pos, state, False

    @staticmethod
    def _line_end(data: bytes, p: int, end: int, mode: int,
                  final: bool) -> tuple[int, int, bool]:
        if data[p] == _LF or mode == ROWS:
            return p + 1, S, True
        if p + 1 < end:  # CR: a following LF belongs to the same line end
            return (p + 2 if data[p + 1] == _LF else p + 1), S, True
        if final:
            return p + 1, S, True
        return p, S, False  # undecided: the caller reads more and walks again from p

    def first_line(self, data: bytes, start: int, *, final: bool) -> tuple[int, int] | None:
        """Return ``(line start, line end)`` of the first non-empty line at or after
        ``start`` (a row start), or None when ``data`` ends before it does and is not
        ``final``. At the end of ``final`` data the last line ends at ``len(data)``.

        Examples
        --------
        >>> g = Grammar(Dialect.of(",", '"', None, True))
        >>> g.first_line(b'\\r\\n"a\\nb",c\\r\\nx', 0, final=True)
        (2, 11)
        >>> g.first_line(b'"a\\nb",c', 0, final=False) is None
        True
        """
        pos = start
        while True:
            while pos < len(data) and data[pos] in (_CR, _LF):  # empty lines
                pos += 1
            if pos >= len(data):
                return None  # only empty lines (so far)
            end, _, found = self.walk(data, pos, len(data), S, LINES, final)
            if found:
                return pos, end
            if not final:
                return None
            return pos, len(data)


# -- step 1: resolve each position locally -----------------------------------------------


def start_states(d: Dialect) -> tuple[int, ...]:
    """Return every state the grammar can be in before some byte, under ``d``.

    Examples
    --------
    >>> start_states(Dialect.of(",", '"', None, True)) == (S, F, Q, QQ)
    True
    >>> start_states(Dialect.of(",", None, None, True)) == (S, F)
    True
    """
    states = [S, F]
    if d.quote >= 0:
        states += [Q, QQ] if d.double_quote else [Q]
    if d.escape >= 0:
        states += [FE, QE] if d.quote >= 0 else [FE]
    return tuple(states)


def resolve_state(read: ReadFn, pos: int, anchor: int, anchor_state: int, grammar: Grammar,
                  *, window: int | None = None, limit: int | None = None) -> int | None:
    """Return the exact state at ``pos`` knowing only the state at ``anchor <= pos``, or
    None when the windows up to ``limit`` bytes leave it open.

    The window before ``pos`` is walked from every state of :func:`start_states`; when
    all walks end in one state, that is the state at ``pos`` whatever came before. If
    they disagree the window grows 4x; once it reaches ``anchor`` the walk starts there,
    from ``anchor_state``. ``window`` and ``limit`` default to ``RESOLVE_WINDOW`` and
    ``RESOLVE_LIMIT``.

    Examples
    --------
    >>> g = Grammar(Dialect.of(",", '"', None, True))
    >>> data = b'id,text\\n1,"a\\n2,b"\\n3,"c"\\n'
    >>> read = lambda s, e: data[s:e]
    >>> resolve_state(read, 13, 0, S, g, window=4) == Q  # inside "a...b"
    True
    >>> resolve_state(read, 13, 0, S, g, window=2, limit=2) is None  # 2 bytes cannot tell
    True
    """
    states = start_states(grammar.d)
    window = RESOLVE_WINDOW if window is None else window
    limit = RESOLVE_LIMIT if limit is None else limit
    while True:
        start = pos - window
        if start <= anchor:
            return walk_range(read, anchor, pos, anchor_state, grammar)
        data = read(start, pos)
        ends = {grammar.walk(data, 0, len(data), state)[1] for state in states}
        if len(ends) == 1:
            return ends.pop()
        if window >= limit:
            return None
        window *= 4


def resolve_states(read: ReadFn, points: Sequence[int], data_start: int,
                   grammar: Grammar) -> dict[int, int] | None:
    """Return the exact state at each of ``points`` with :func:`resolve_state` (each
    resolved point anchors the next), or None if one stays open (then run the full
    pass). Points at or before ``data_start`` (after a BOM) are at a row start.

    Examples
    --------
    >>> g = Grammar(Dialect.of(",", '"', None, True))
    >>> data = b'a\\n"x\\ny"\\nb\\n'
    >>> resolve_states(lambda s, e: data[s:e], [0, 4, len(data)], 0, g) == {
    ...     0: S, 4: Q, len(data): S}
    True
    """
    anchor, state = data_start, S
    states: dict[int, int] = {}
    for pos in sorted(set(points)):
        if pos <= data_start:
            states[pos] = S
            continue
        found = resolve_state(read, pos, anchor, state, grammar)
        if found is None:
            return None
        states[pos] = anchor_state = found
        anchor, state = pos, anchor_state
    return states


# -- step 2: the full pass (the fallback) ------------------------------------------------



@dataclass(frozen=True, slots=True)
class PieceScan:
    """What the parallel pass learns about one piece ``[start, end)`` of a file.

    ``bad[e]`` is the offset of the first quote the parity model gets wrong when the
    piece starts with ``e`` quotes' parity, or None; ``prev``/``last`` are the bytes at
    ``start - 1`` and ``end - 1`` (-1 when there is none).
    """

    start: int
    end: int
    quotes: int
    bad: tuple[int | None, int | None]
    prev: int
    last: int
    has_escape: bool


def scan_piece(read: ReadFn, start: int, end: int, data_start: int,
               dialect: Dialect) -> PieceScan:
    """Scan ``[start, end)`` of a file (step 1; pure, any thread)."""
    np = numpy("csv")
    quote = dialect.quote
    prev = read(start - 1, start)[0] if start > 0 else -1
    first_prev = prev
    count = 0
    bad: list[int | None] = [None, None]
    last = -1
    pos = start
    while pos < end:
        piece = read(pos, min(end, pos + PIECE_SIZE))
        if not piece:
            break
        if dialect.escape >= 0 and piece.find(bytes([dialect.escape])) >= 0:
            return PieceScan(start, end, 0, (None, None), first_prev, -1, True)
        if quote >= 0 and piece.find(bytes([quote])) >= 0:
            arr = np.frombuffer(piece, dtype=np.uint8)
            qpos = np.flatnonzero(arr == quote)
            before = np.empty(len(qpos), dtype=np.int16)
            inner = qpos > 0
            before[inner] = arr[qpos[inner] - 1]
            before[~inner] = prev
            ok = (before == dialect.sep) | (before == _CR) | (before == _LF)
            if dialect.double_quote:
                ok |= before == quote
            ok |= (qpos + pos) == data_start
            index = np.arange(count, count + len(qpos))
            for parity in (0, 1):
                if bad[parity] is None:
                    wrong = (((index + parity) & 1) == 0) & ~ok
                    if wrong.any():
                        bad[parity] = pos + int(qpos[int(np.argmax(wrong))])
            count += len(qpos)
        prev = last = piece[-1]
        pos += len(piece)
    return PieceScan(start, end, count, (bad[0], bad[1]), first_prev, last, False)


def model_state(parity: int, prev: int, at_data_start: bool, d: Dialect) -> int:
    """Return the grammar state the parity model gives a position: inside quotes for
    odd parity, else from the byte before it.

    Examples
    --------
    >>> d = Dialect.of(",", '"', None, True)
    >>> [model_state(1, 0, False, d), model_state(0, ord(","), False, d),
    ...  model_state(0, ord('"'), False, d), model_state(0, ord("x"), False, d)] == [Q, S, QQ, F]
    True
    """
    if parity:
        return Q
    if at_data_start or prev in (d.sep, _CR, _LF):
        return S
    if prev == d.quote and prev >= 0:
        return QQ if d.double_quote else F
    return F


def last_row_end(data: bytes, grammar: Grammar) -> int:
    """Return the offset right after the last row-ending LF of ``data``, which starts at
    a row start (0 if it holds none). Uses the parity model when it holds, else walks.

    Examples
    --------
    >>> g = Grammar(Dialect.of(",", '"', None, True))
    >>> last_row_end(b'a,"b\\n"\\nc,"d\\n', g), last_row_end(b'5" x\\n"y', g)
    (7, 5)
    """
    d = grammar.d
    if d.quote < 0 and d.escape < 0:
        return data.rfind(b"\n") + 1
    if d.escape < 0 or data.find(bytes([d.escape])) < 0:
        scan = scan_piece(lambda s, e: data[max(0, s):e], 0, len(data), 0, d)
        if scan.bad[0] is None:
            np = numpy("csv")
            arr = np.frombuffer(data, dtype=np.uint8)
            quotes = np.flatnonzero(arr == d.quote) if d.quote >= 0 else arr[:0]
            lfs = np.flatnonzero(arr == _LF)
            outside = lfs[(np.searchsorted(quotes, lfs) & 1) == 0]
            return int(outside[-1]) + 1 if len(outside) else 0
    pos, state, last = 0, S, 0
    while pos < len(data):
        pos, state, found = grammar.walk(data, pos, len(data), state, ROWS)
        if found:
            last = pos
    return last


# -- step 2 (continued) and 3: chain and align ------------------------------------------


def cut_points(size: int, starts: Sequence[int]) -> list[int]:
    """Return the sorted piece starts: every block start and every ``SCAN_SIZE`` bytes.

    Examples
    --------
    >>> cut_points(10, [0, 4, 8])
    [0, 4, 8]
    """
    return sorted({*(s for s in starts if 0 <= s < size), *range(0, size, SCAN_SIZE)})


Opener = Callable[[], AbstractContextManager[Source]]
"""Opens one file for ranged reads (a fresh handle per call, so threads do not share)."""


def scan_all(tasks: Sequence[tuple[Opener, int, int, int]],
             dialect: Dialect) -> list[PieceScan]:
    """Run :func:`scan_piece` over ``(open, start, end, data_start)`` tasks in threads."""

    def run(task: tuple[Opener, int, int, int]) -> PieceScan:
        opener, start, end, data_start = task
        with opener() as source:
            return scan_piece(source.read, start, end, data_start, dialect)

    if len(tasks) <= 1 or sum(end - start for _, start, end, _ in tasks) < PIECE_SIZE:
        return [run(t) for t in tasks]  # small inputs: threads would cost more than they save
    workers = min(len(tasks), max(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blockproc-csv") as pool:
        futures = [pool.submit(run, t) for t in tasks]
        return [f.result() for f in futures]


def chain_states(scans: Sequence[PieceScan], read: ReadFn, data_start: int,
                 grammar: Grammar) -> dict[int, int]:
    """Return the exact grammar state at the start of each piece, and at the end of
    the last one (step 2).

    ``scans`` are one file's pieces, in order, without gaps; ``read`` re-reads a piece
    whose parity check failed.
    """
    d = grammar.d
    state = S
    states: dict[int, int] = {}
    for scan in scans:
        states[scan.start] = state
        if scan.end <= data_start:
            continue
        start = max(scan.start, data_start)
        if not scan.has_escape and state in (S, F, Q, QQ):
            parity = 1 if state == Q else 0
            prev = scan.prev if start == scan.start else -1
            if (state == model_state(parity, prev, start == data_start, d)
                    and scan.bad[parity] is None):
                state = model_state(parity ^ (scan.quotes & 1), scan.last,
                                    scan.end == data_start, d)
                continue
        state = walk_range(read, start, scan.end, state, grammar)
    if scans:
        states[scans[-1].end] = state
    return states


def is_open_quote(state: int) -> bool:
    """True for the states inside a quoted field that no quote has closed yet."""
    return state in (Q, QE)


def opening_quote(read: ReadFn, start: int, end: int, state: int, d: Dialect) -> int | None:
    """Return the offset of the quote that opened the quoted field still open at ``end``,
    walking ``[start, end)`` from the exact ``state`` at ``start`` (None if no field is
    open at ``end``, or if it was already open at ``start``).

    Byte by byte over the bytes that matter (separators, quotes, escapes, line breaks):
    only for the error message of an unclosed quote.

    Examples
    --------
    >>> data = b'a,b\\n1,"x\\n2,"3"\\n4,"y'
    >>> d = Dialect.of(",", '"', None, True)
    >>> opening_quote(lambda a, e: data[a:e], 0, len(data), S, d)
    17
    >>> opening_quote(lambda a, e: data[a:e], 0, 10, S, d)
    6
    >>> opening_quote(lambda a, e: data[a:e], 0, 16, S, d) is None
    True
    """
    sep, quote, esc, dq = d.sep, d.quote, d.escape, d.double_quote
    special = bytes(c for c in (sep, quote, esc, _CR, _LF) if c >= 0)
    pattern = re.compile(b"[" + re.escape(special) + b"]")
    opened: int | None = None
    pos = start
    while pos < end:
        data = read(pos, min(end, pos + PIECE_SIZE))
        if not data:
            break
        last = 0
        for m in pattern.finditer(data):
            p = m.start()
            if p > last:  # ordinary bytes in between
                state = Q if state in (Q, QE) else F
            b = data[p]
            if state == QQ:
                if b == quote:
                    state = Q
                    last = p + 1
                    continue
                state = F
            if state == S and b == quote:
                state, opened = Q, pos + p
            elif state in (S, F):
                state = FE if b == esc else (S if b in (sep, _CR, _LF) else F)
            elif state in (FE, QE):
                state = F if state == FE else Q
            elif b == esc:  # Q
                state = QE
            elif b == quote:
                state = QQ if dq else F
            last = p + 1
        if len(data) > last:
            state = Q if state in (Q, QE) else F
        pos += len(data)
    return opened if is_open_quote(state) else None


def walk_range(read: ReadFn, start: int, end: int, state: int, grammar: Grammar) -> int:
    """Return the exact state at ``end`` given the state at ``start`` (the slow path)."""
    pos = start
    while pos < end:
        data = read(pos, min(end, pos + PIECE_SIZE))
        if not data:
            break
        _, state, _ = grammar.walk(data, 0, len(data), state)
        pos += len(data)
    return state


def row_start(read: ReadFn, pos: int, limit: int, state: int,
              grammar: Grammar) -> int | None:
    """Return the offset right after the first row-ending LF in ``[pos, limit)`` given
    the exact ``state`` at ``pos``, or None if the range holds none (step 3)."""
    step = ROW_WINDOW_SIZE
    while pos < limit:
        data = read(pos, min(limit, pos + step))
        if not data:
            return None
        end, state, found = grammar.walk(data, 0, len(data), state, ROWS)
        if found:
            return pos + end
        pos += len(data)
        step = min(step * 4, WINDOW_SIZE * 4)
    return None
