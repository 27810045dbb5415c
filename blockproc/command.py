"""A shell command as the mapper: a block's bytes on its stdin, its stdout the part-file.

Used by :func:`blockproc.worker.run_block` for ``--cmd`` / :func:`blockproc.map_command`.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any, Protocol

from blockproc.counters import counter
from blockproc.errors import CommandError, CommandNotFoundError

CHUNK_SIZE = 1 << 20
"""Bytes per read of the command's stdout."""


class PartSink(Protocol):
    """Where the command's stdout goes: the attempt's part-file writer."""

    def write(self, data: bytes, records: int) -> None: ...


def run_command(command: str, chunks: Iterable[bytes], sink: PartSink, *, delimiter: bytes,
                open_stderr: Callable[[], IO[bytes]]) -> tuple[int, int]:
    """Pipe ``chunks`` through ``sh -c command`` into ``sink``; return the records fed to
    it and the bytes it wrote to stderr (to the file ``open_stderr()`` opens, if any).

    Exit status 0 succeeds, and so does 1 with nothing on stderr: that is how ``grep``
    says "no line matched", which is a normal outcome for one block of a big file. Any
    other status, or 1 with an error message, fails the attempt; 127 and 126 (not found,
    not executable) raise :class:`~blockproc.CommandNotFoundError`, which is not retried.

    A stderr line ``reporter:counter:GROUP,NAME,AMOUNT`` (Hadoop Streaming's protocol)
    adds AMOUNT to the counter ``GROUP.NAME`` of the attempt (see
    :mod:`blockproc.counters`) instead of going to the log.

    Examples
    --------
    >>> import io
    >>> class Sink:
    ...     def __init__(self): self.data = b""
    ...     def write(self, data, records): self.data += data
    >>> sink = Sink()
    >>> run_command("tr a-z A-Z", [b"a\\nb\\n"], sink, delimiter=b"\\n",
    ...             open_stderr=io.BytesIO)
    (2, 0)
    >>> sink.data
    b'A\\nB\\n'
    >>> from blockproc.counters import collecting
    >>> with collecting() as counts:
    ...     _ = run_command("echo reporter:counter:app,lines,2 >&2", [b"a\\n"], Sink(),
    ...                     delimiter=b"\\n", open_stderr=io.BytesIO)
    >>> counts
    {'app.lines': 2}
    """
    with subprocess.Popen(command, shell=True, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = _Feeder(proc, chunks, delimiter)
        drain = _StderrDrain(proc.stderr, open_stderr)
        threads = [threading.Thread(target=feeder.run, daemon=True),
                   threading.Thread(target=drain.run, daemon=True)]
        for t in threads:
            t.start()
        while piece := proc.stdout.read(CHUNK_SIZE):
            sink.write(piece, piece.count(b"\n"))
        code = proc.wait()
        for t in threads:
            t.join()
    if feeder.error is not None:
        raise feeder.error
    for name, amount in drain.counts.items():
        counter(name).add(amount)
    _check_exit(command, code, drain.tail)
    return feeder.records, drain.num_bytes


class _Feeder:
    """Writes the block to the command's stdin (in a thread), counting records."""

    def __init__(self, proc: subprocess.Popen[bytes], chunks: Iterable[bytes],
                 delimiter: bytes) -> None:
        self.proc, self.chunks, self.delimiter = proc, chunks, delimiter
        self.records = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        stdin: Any = self.proc.stdin
        last = b""
        try:
            for chunk in self.chunks:
                self.records += chunk.count(self.delimiter)
                last = chunk
                stdin.write(chunk)
            if last and not last.endswith(self.delimiter):
                self.records += 1
        except BrokenPipeError:
            pass  # the command stopped reading (like `head`); its exit code decides
        except BaseException as exc:  # stop the command, report from the main thread
            self.error = exc
            self.proc.kill()
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()


class _StderrDrain:
    """Copies the command's stderr to its log file (opened on the first byte), keeping the
    last 4 KiB for the error message; counter lines are counted instead."""

    def __init__(self, stderr: IO[bytes], open_log: Callable[[], IO[bytes]]) -> None:
        self.stderr, self.open_log = stderr, open_log
        self.tail = b""
        self.num_bytes = 0
        self.counts: dict[str, int] = {}

    def run(self) -> None:
        log = None
        try:
            while piece := self.stderr.readline(65536):
                if _count(piece, self.counts):
                    continue
                self.tail = (self.tail + piece)[-4096:]
                if log is None:
                    log = self.open_log()
                log.write(piece)
                self.num_bytes += len(piece)
        finally:
            if log is not None:
                log.close()


COUNTER_LINE = re.compile(rb"reporter:counter:([^,\n]*),([^,\n]+),(-?\d+)\r?\n?")
"""Hadoop Streaming's counter line on stderr: ``reporter:counter:GROUP,NAME,AMOUNT``."""


def _count(line: bytes, counts: dict[str, int]) -> bool:
    """Add a counter line's amount to ``counts``; False for any other line.

    >>> counts = {}
    >>> _count(b"reporter:counter:app,bad,3\\n", counts), _count(b"oops\\n", counts)
    (True, False)
    >>> counts
    {'app.bad': 3}
    """
    match = COUNTER_LINE.fullmatch(line)
    if match is None:
        return False
    group, name, amount = (part.decode(errors="replace") for part in match.groups())
    key = f"{group}.{name}" if group else name
    counts[key] = counts.get(key, 0) + int(amount)
    return True


def _check_exit(command: str, code: int, stderr_tail: bytes) -> None:
    if code == 0 or (code == 1 and not stderr_tail):
        return
    tail = stderr_tail.decode(errors="replace").strip()
    if code in (126, 127):
        what = "was not found" if code == 127 else "cannot be run (not executable)"
        raise CommandNotFoundError(
            f"command {command!r} {what}: sh exited with code {code}; its stderr ends "
            f"with:\n{tail or '(nothing)'}\nCheck the name and that it is on the PATH of "
            f"every worker; every attempt would fail the same way")
    raise CommandError(f"command {command!r} exited with code {code}; its stderr ends "
                       f"with:\n{tail or '(nothing)'}")
