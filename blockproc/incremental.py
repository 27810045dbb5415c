"""Incremental runs over growing inputs: plan only what is new since an output's earlier
runs (``if_exists="append"``).

From the earlier runs' manifest (each input's size, and the CRC-32 of the last 4 KiB the
block that read the file's end saw: :class:`~blockproc.model.FileTail`) and the inputs'
listing now, each file is one of:

- **new** (or empty before): planned whole, as a first run would;
- **unchanged** (same size; same ETag/mtime, or else the same tail): nothing to do;
- **grown**, its processed prefix intact (the tail matches): only what follows. If the
  old end was a record end, the new block starts there exactly (its nominal start is
  the delimiter before it, which the boundary rule skips: checked by the format's own
  boundary function, with the supersede path whenever that check does not hold). If the
  old end was inside a record (a line still being written, which the earlier run wrote
  as a final record), the block that owned that record is run again, from its nominal
  start to the new end, and its part-file is superseded;
- **changed** (shrank, tail differs, or a compressed or Parquet file whose size or
  ETag/mtime changed) or **gone**: refused, naming the file and the fix.

So the live part-files of all runs hold, file by file in part order, the records one
run over the current inputs would give.

Examples
--------
>>> cuts_from(10, 35, 10), cuts_from(7, 25, 10)
([(10, 20), (20, 30), (30, 35)], [(7, 10), (10, 20), (20, 25)])
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from blockproc._types import IfExists
from blockproc.block_reading import file_tail
from blockproc.errors import ConfigError, InputChangedError
from blockproc.formats import RecordFormat
from blockproc.formats import from_dict as format_from_dict
from blockproc.formats.base import DEFAULT_MAX_RECORD_SIZE, ReadFn, has_border
from blockproc.model import Block, FileTail, InputFile, Plan
from blockproc.output import OutputDir
from blockproc.output.appending import AppendingOutputDir, AppendRun, part_index, read_previous
from blockproc.planning import is_packable, pack_blocks
from blockproc.storage import AbstractFileSystem, RangeSource

WHOLE_FORMATS = ("parquet",)
"""Formats whose files an append run treats whole: a new one is processed, a changed one
refused (as compressed files)."""

FIX = ("rerun with if_exists='overwrite' (CLI: --if-exists overwrite) to process the "
       "inputs as they are now from the start")


@dataclasses.dataclass(frozen=True, slots=True)
class Delta:
    """What an append run does: the blocks of new bytes (a :class:`~blockproc.Plan`, ids
    from 0), the earlier parts they supersede, and the files it reads."""

    plan: Plan
    superseded: tuple[str, ...]
    base: int
    """The number of the first new part-file: after every part of the earlier runs."""
    touched: tuple[Mapping[str, Any], ...]


def cuts_from(start: int, size: int, block_size: int) -> list[tuple[int, int]]:
    """Cut ``[start, size)`` at the multiples of ``block_size`` (as a first run cuts).

    >>> cuts_from(0, 4, 4), cuts_from(3, 3, 4)
    ([(0, 4)], [])
    """
    cuts = []
    pos = start
    while pos < size:
        stop = min(size, (pos // block_size + 1) * block_size)
        cuts.append((pos, stop))
        pos = stop
    return cuts


def start_append(out: OutputDir, current: Plan, input_fs: AbstractFileSystem, *,
                 extension: str) -> tuple[Plan, int, OutputDir, IfExists]:
    """Return what an ``if_exists="append"`` job into ``out`` runs: the plan of what is
    new, the first new part's number, the output to commit into, and the ``if_exists``
    to prepare it with (``"error"`` for an output with no earlier run: a first run)."""
    previous, _ = read_previous(out.fs, out.path)
    if previous is None:
        return current, 0, out, "error"
    parts = [str(b["part"]) for b in previous["blocks"]]
    if parts and posixpath.splitext(parts[0])[1] != extension:
        raise ConfigError(
            f"the earlier runs into {out.url!r} wrote {posixpath.splitext(parts[0])[1]} "
            f"part-files and this job writes {extension}; pass the same output_format, or "
            f"{FIX}")
    delta = plan_delta(previous, current, input_fs)
    run = AppendRun(previous=previous, full_plan=current, superseded=delta.superseded,
                    base=delta.base, touched=delta.touched)
    return delta.plan, delta.base, AppendingOutputDir(out.fs, out.path, out.job_id, run), \
        "append"


def plan_delta(previous: Mapping[str, Any], current: Plan,
               fs: AbstractFileSystem) -> Delta:
    """Return the :class:`Delta` from the manifest ``previous`` to the inputs of ``current``
    (the plan of the inputs as they are now, options included).

    Examples
    --------
    >>> import blockproc as bp
    >>> from blockproc.output import read_manifest
    >>> from blockproc.storage import filesystem
    >>> bp.testing.write_files("memory://doc/delta/in", {"a.log": b"a\\nb\\n"})
    ['memory://doc/delta/in/a.log']
    >>> _ = bp.map_lines(str.upper, "memory://doc/delta/in", output="memory://doc/delta/out",
    ...                  executor="inline")
    >>> fs = filesystem("memory")
    >>> with fs.open("/doc/delta/in/a.log", "ab") as f:
    ...     _ = f.write(b"c\\nd")              # a line, and one still being written
    >>> previous = read_manifest(fs, "/doc/delta/out")
    >>> delta = plan_delta(previous, bp.plan("memory://doc/delta/in"), fs)
    >>> [(b.start, b.end) for b in delta.plan.blocks], delta.base, delta.superseded
    ([(3, 7)], 1, ())
    """
    _check_same_options(previous, current)
    fmt = format_from_dict(current.format)
    files = {f.path: f for f in current.files}
    before = {str(f["path"]): InputFile.from_dict(f) for f in previous["inputs"]}
    gone = sorted(set(before) - set(files))
    if gone:
        raise InputChangedError(
            f"{gone[0]!r} was processed by an earlier run into this output and is gone now"
            f"{f' (and {len(gone) - 1} more)' if len(gone) > 1 else ''}; the output of "
            f"appended runs must equal one run over the current inputs, so {FIX}")
    owners = _owners(previous["blocks"])
    tails = _tails(previous["blocks"])
    state = _State(fmt, current, fs, owners)
    for f in current.files:
        old = before.get(f.path)
        if old is None or old.size == 0:
            state.whole.add(f.path)  # new, or empty when processed: read it whole
        elif not _unchanged(f, old, fmt, fs, tails, files):
            state.grown(f, old, *_checked_tail(f, old, fs, tails, files))
    return state.delta(before, base=1 + max((part_index(str(b["part"]))
                                             for b in previous["blocks"]), default=-1))


def _check_same_options(previous: Mapping[str, Any], current: Plan) -> None:
    if int(previous["block_size"]) != current.block_size:
        raise ConfigError(
            f"the earlier runs into this output used block_size={previous['block_size']}, "
            f"and an append run must cut the same blocks; pass block_size="
            f"{previous['block_size']} (CLI: --block-size {previous['block_size']}), or {FIX}")
    if dict(previous["format"]) != dict(current.format):
        raise ConfigError(
            f"the earlier runs into this output read the inputs as {dict(previous['format'])}"
            f", and this job as {dict(current.format)}; an append run must read them the "
            f"same way: pass the same format options, or {FIX}")


def _owners(blocks: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, Mapping[str, Any]]]]:
    """The live blocks that read each file, as ``(start in the file, entry)`` by start (a
    packed block reads its files whole, from 0)."""
    owners: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for entry in blocks:
        if entry.get("files"):
            for f in entry["files"]:
                owners.setdefault(str(f["path"]), []).append((0, entry))
        else:
            owners.setdefault(str(entry["path"]), []).append((int(entry["start"]), entry))
    for found in owners.values():
        found.sort(key=lambda o: o[0])
    return owners


def _tails(blocks: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], FileTail]:
    """The recorded tails of the files, by ``(path, size)``."""
    return {(t.path, t.size): t for t in (FileTail.from_dict(d) for b in blocks
                                          for d in b.get("tails", ()))}


def _whole_file(f: InputFile, fmt: RecordFormat) -> str | None:
    """Why ``f`` is read whole (compressed, Parquet), or None."""
    if f.compression:
        return f"{f.compression}-compressed"
    if getattr(fmt, "name", "") in WHOLE_FORMATS:
        return f"a {getattr(fmt, 'name', '')} file"
    return None


def _unchanged(f: InputFile, old: InputFile, fmt: RecordFormat, fs: AbstractFileSystem,
               tails: Mapping[tuple[str, int], FileTail], files: Mapping[str, InputFile]) -> bool:
    """True if ``f`` is as processed; raises if it changed in a way no append can follow."""
    same_token = not f.token or not old.token or f.token == old.token
    why = _whole_file(f, fmt)
    if why is not None:
        if f.size == old.size and same_token:
            return True
        raise InputChangedError(
            f"{f.path!r} ({why}, read whole) changed since an earlier run processed it "
            f"({_change(f, old)}); an append run cannot take only its new part, so {FIX}")
    if f.size < old.size:
        raise InputChangedError(
            f"{f.path!r} has {f.size} bytes, fewer than the {old.size} an earlier run "
            f"processed: it was truncated, rewritten or rotated{_rotation(f, files)}; {FIX}")
    if f.size > old.size:
        return False
    if same_token:
        return True
    _checked_tail(f, old, fs, tails, files)  # same size, new mtime: a rewrite?
    return True


def _change(f: InputFile, old: InputFile) -> str:
    if f.size != old.size:
        return f"size {old.size} -> {f.size} bytes"
    return f"{old.token} -> {f.token}"


def _rotation(f: InputFile, files: Mapping[str, InputFile]) -> str:
    """A hint naming the rotated copy of ``f`` (``a.log.1`` for ``a.log``), if there is one."""
    rotated = sorted(p for p in files if p.startswith(f.path + "."))
    if not rotated:
        return ""
    name = posixpath.basename(f.path)
    return (f" (if {name} was rotated, renamed to {posixpath.basename(rotated[0])} and "
            f"started again, then {posixpath.basename(rotated[0])} is a new file to blockproc "
            f"and {name} a changed one, whose processed records are no longer in it)")


def _checked_tail(f: InputFile, old: InputFile, fs: AbstractFileSystem,
                  tails: Mapping[tuple[str, int], FileTail],
                  files: Mapping[str, InputFile]) -> tuple[int, bytes]:
    """Check that the processed prefix of ``f`` still ends as recorded; return where a
    window of ``f`` around the old end starts, and its bytes (from the recorded tail's
    start to 4 KiB past the old end): one read."""
    tail = tails.get((f.path, old.size))
    if tail is None:
        raise InputChangedError(
            f"the earlier runs recorded no checksum of the end of {f.path!r} (the output was "
            f"written by an older blockproc), so its growth cannot be checked; {FIX}")
    lo = old.size - tail.length
    with RangeSource(fs, f.path, expected=f) as source:
        window = source.read(lo, min(f.size, old.size + 4096))
    if file_tail(f.path, old.size, window[:tail.length]).crc32 != tail.crc32:
        raise InputChangedError(
            f"{f.path!r} changed in the {old.size} bytes an earlier run processed (the CRC-32 "
            f"of its last {tail.length} bytes differs): it was rewritten or rotated"
            f"{_rotation(f, files)}; {FIX}")
    return lo, window


class _State:
    """The delta being planned: files read whole, resumed ranges, superseded blocks."""

    def __init__(self, fmt: RecordFormat, current: Plan, fs: AbstractFileSystem,
                 owners: Mapping[str, list[tuple[int, Mapping[str, Any]]]]) -> None:
        self.fmt, self.current, self.fs, self.owners = fmt, current, fs, owners
        self.whole: set[str] = set()
        self.start_at: dict[str, int] = {}  # grown files: read from here to the end
        self.superseded: set[str] = set()

    def grown(self, f: InputFile, old: InputFile, lo: int, window: bytes) -> None:
        """Plan the new bytes of ``f``, which grew from ``old.size``; ``window`` holds
        its bytes from ``lo``."""
        if f.path in self.whole:
            return  # read whole already: packed with a file whose block is superseded
        opened: list[RangeSource] = []  # opened only for a read outside the window

        def read(start: int, end: int) -> bytes:
            if lo <= start and end <= lo + len(window):
                return window[start - lo:end - lo]
            if not opened:
                opened.append(RangeSource(self.fs, f.path, expected=f))
            data: bytes = opened[0].read(start, end)
            return data

        try:
            start = self._clean_start(read, old.size, f.size)
            if start is not None:
                self.start_at[f.path] = start
                return
            self._supersede_last(f, old, read)
        finally:
            for source in opened:
                source.close()

    def _clean_start(self, read: ReadFn, old_end: int, size: int) -> int | None:
        """Return the start of a block owning exactly the records after ``old_end`` if
        ``old_end`` is a record end (so the earlier run's last record was complete), else
        None."""
        from blockproc.formats.csv_format import CSV  # append runs only, as below
        from blockproc.formats.fixed import Fixed

        fmt = self.fmt
        if isinstance(fmt, Fixed):
            return old_end  # the plan refuses partial records: every size is a record end
        delimiter = fmt.delimiter
        if has_border(delimiter) or old_end <= len(delimiter):
            return None  # self-overlapping delimiters: the supersede path, always right
        probe = dataclasses.replace(fmt, aligned=False) if isinstance(fmt, CSV) else fmt
        found = probe.boundary(read, old_end - len(delimiter), size,
                               max_record_size=DEFAULT_MAX_RECORD_SIZE).offset
        if found != old_end:
            return None
        return old_end if isinstance(fmt, CSV) and fmt.aligned else old_end - len(delimiter)

    def _supersede_last(self, f: InputFile, old: InputFile, read: ReadFn) -> None:
        """Run again the earlier block that owned the unfinished last record of ``f``,
        from its nominal start; its part-file (and those of the blocks after it, which
        own nothing) is superseded."""
        def read_old(start: int, end: int) -> bytes:
            return read(start, min(end, old.size))

        owners = self.owners.get(f.path, [])
        for index in range(len(owners) - 1, -1, -1):
            start, entry = owners[index]
            owns = start == 0 or self.fmt.boundary(
                read_old, start, old.size, max_record_size=DEFAULT_MAX_RECORD_SIZE
            ).offset < old.size
            if not owns:
                continue
            if entry.get("files") or start == 0:
                self.reset(f.path)  # a packed block, or the file's first: read it whole
                return
            self.start_at[f.path] = start
            self.superseded.update(str(e["part"]) for _, e in owners[index:])
            return
        self.reset(f.path)

    def reset(self, path: str) -> None:
        """Process ``path`` whole: supersede every block that read it, and with a packed
        one, the other files it packed too."""
        todo = [path]  # a worklist: each packed block's files are visited once
        while todo:
            current = todo.pop()
            if current in self.whole:
                continue
            self.whole.add(current)
            self.start_at.pop(current, None)
            for _, entry in self.owners.get(current, []):
                part = str(entry["part"])
                if part in self.superseded:
                    continue
                self.superseded.add(part)
                todo.extend(str(packed["path"]) for packed in entry.get("files") or ())

    def delta(self, before: Mapping[str, InputFile], *, base: int) -> Delta:
        """Return the planned :class:`Delta` (block ids dense from 0, in file order)."""
        current, fmt = self.current, self.fmt
        for path in list(self.whole):  # a file read whole supersedes what it had
            self.whole.discard(path)
            self.reset(path)
        files = [f for f in current.files if f.path in self.whole or f.path in self.start_at]
        by_path: dict[str, list[Block]] = {}
        for b in current.blocks:
            by_path.setdefault(b.path, []).append(b)
        triples: list[tuple[str, int, int, tuple[InputFile, ...]]] = []
        whole = [f for f in files if f.path in self.whole]
        if is_packable(fmt):
            triples += [(b.path, b.start, b.end, b.files)
                        for b in pack_blocks(whole, current.block_size)]
        elif any(b.files for b in current.blocks):
            raise ConfigError("a packed plan of a format that is not packable")  # never
        else:
            triples += [(b.path, b.start, b.end, ()) for f in whole
                        for b in by_path.get(f.path, ())]
        for f in files:
            if f.path in self.start_at and f.path not in self.whole:
                triples += [(f.path, s, e, ()) for s, e in self._ranges(
                    f, self.start_at[f.path], by_path.get(f.path, []))]
        order = {f.path: i for i, f in enumerate(current.files)}
        triples.sort(key=lambda t: (order[t[0]], t[1]))
        blocks = tuple(Block(i, p, s, e, fs_) for i, (p, s, e, fs_) in enumerate(triples))
        plan = dataclasses.replace(current, files=tuple(files), blocks=blocks)
        touched = tuple({"path": f.path, "from": 0 if f.path in self.whole else
                         before[f.path].size, "to": f.size} for f in files)
        return Delta(plan, tuple(sorted(self.superseded)), base, touched)

    def _ranges(self, f: InputFile, start: int, planned: Sequence[Block]) -> list[tuple[int, int]]:
        """The ranges of ``f`` from ``start``: a first run's cuts (CSV: its aligned row
        starts, the first one being ``start`` itself)."""
        from blockproc.formats.csv_format import CSV  # not loaded by jobs that never append

        fmt = self.fmt
        if isinstance(fmt, CSV) and fmt.aligned:
            starts = [start, *(b.start for b in planned if b.start > start)]
            return list(zip(starts, [*starts[1:], f.size], strict=True))
        return cuts_from(start, f.size, self.current.block_size)
