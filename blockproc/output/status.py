"""What an output directory holds, read as a library: :func:`status` and :func:`verify`.

``blockproc status OUT [--verify]`` prints what these return; they print nothing and
raise only blockproc errors (each with its ``exit_code``).

Examples
--------
>>> import blockproc as bp
>>> from blockproc.testing import write_files
>>> _ = write_files("memory://doc/status/in", {"a.txt": b"x\\ny\\n"})
>>> _ = bp.map_lines(str.upper, "memory://doc/status/in", output="memory://doc/status/out",
...                  executor="inline")
>>> st = status("memory://doc/status/out")
>>> st.is_finished, st.num_blocks, st.committed, st.records_out, st.lock_holder
(True, 1, (0,), 2, None)
>>> verify("memory://doc/status/out")
[]
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockproc import report
from blockproc.errors import ConfigError, UnfinishedOutputError
from blockproc.model import AttemptRecord, sum_counters
from blockproc.output.layout import PLAN, STATE_DIR, SUCCESS
from blockproc.output.ledger import earlier_attempts, read_ledger
from blockproc.output.lock import OutputLock
from blockproc.output.manifest import read_manifest, verify_output
from blockproc.storage import AbstractFileSystem, read_json, resolve, retry_call


@dataclass(frozen=True, slots=True)
class OutputStatus:
    """What an output directory holds: a finished job (``_SUCCESS``) or an unfinished one.

    Counts of an unfinished job are those of its committed blocks so far.
    """

    url: str
    is_finished: bool
    job_id: str | None
    """The job that wrote ``_SUCCESS``, or that last prepared the unfinished output."""
    num_blocks: int
    """Blocks in the plan."""
    committed: tuple[int, ...]
    """Ids of the committed blocks, sorted."""
    records_in: int
    records_out: int
    bad_records: int
    """Records skipped (``max_bad_records``), logged in ``_errors/``."""
    blocks_with_stderr: int
    """Blocks whose ``--cmd`` wrote to stderr, kept in ``_logs/``."""
    committed_attempts: int
    """The attempt numbers of the committed blocks, summed: the attempts they took in
    the run that committed each."""
    attempts: tuple[AttemptRecord, ...] = ()
    """Every attempt of the run that finished (none for an unfinished job or an older
    manifest)."""
    earlier_blocks: int = 0
    """Blocks that earlier runs committed, for a resumed job."""
    earlier_attempts: int = 0
    """Attempts the earlier runs made (those that ended: a run whose master was killed
    records none)."""
    lock_holder: Mapping[str, Any] | None = None
    """What the live job holding the output's lock says of itself (``job_id``, ``host``,
    ``pid``, ``heartbeat``), or None."""
    manifest: Mapping[str, Any] | None = field(default=None, repr=False)
    """The ``_SUCCESS`` manifest of a finished job."""
    counters: Mapping[str, int] = field(default_factory=dict)
    """What the function counted (``bp.counter``), summed over the committed blocks."""

    @property
    def num_committed(self) -> int:
        """Blocks committed so far."""
        return len(self.committed)

    @property
    def num_attempts(self) -> int:
        """Attempts in every run that recorded them."""
        return len(self.attempts) + self.earlier_attempts


def status(url: str, storage_options: Mapping[str, Any] | None = None) -> OutputStatus:
    """Return what the output directory ``url`` holds.

    Raises
    ------
    ConfigError
        ``url`` holds no blockproc output (no ``_SUCCESS`` and no ``_blockproc/plan.json``),
        or a ``_SUCCESS`` that is not a blockproc manifest (Hadoop and Spark write an empty
        one).

    See Also
    --------
    verify : check the part-files against the manifest.
    """
    fs, path = resolve(url, storage_options)
    holder = OutputLock(fs, posixpath.join(path, STATE_DIR), "status", url).holder()
    if not _exists(fs, posixpath.join(path, SUCCESS)):
        return _unfinished(fs, path, url, holder)
    return _finished(url, _manifest(fs, path, url), holder)


def verify(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Return the part-files of the finished output ``url`` that are missing or differ from
    its manifest (size, CRC-32); empty when all match.

    Raises
    ------
    UnfinishedOutputError
        ``url`` holds an unfinished job: there is no manifest to check against yet.
    ConfigError
        ``url`` holds no blockproc output.
    """
    fs, path = resolve(url, storage_options)
    if not _exists(fs, posixpath.join(path, SUCCESS)):
        _plan_of(fs, path, url)  # no blockproc output at all: say so first
        raise UnfinishedOutputError(
            f"{url!r} holds an unfinished blockproc job (no {SUCCESS}), so there is no "
            f"manifest to verify against; finish it with --resume first")
    return verify_output(fs, path, _manifest(fs, path, url))


def _exists(fs: AbstractFileSystem, path: str) -> bool:
    return bool(retry_call(lambda: fs.exists(path), f"to look for {path!r}"))


def _plan_of(fs: AbstractFileSystem, path: str, url: str) -> dict[str, Any]:
    state = posixpath.join(path, STATE_DIR, PLAN)
    if not _exists(fs, state):
        raise ConfigError(f"{url!r} holds no blockproc output (no {SUCCESS} and no "
                          f"{STATE_DIR}/{PLAN}); check the path")
    return dict(read_json(fs, state))


def _manifest(fs: AbstractFileSystem, path: str, url: str) -> dict[str, Any]:
    try:
        manifest = read_manifest(fs, path)
    except (ValueError, TypeError):  # not JSON, or not an object
        manifest = {}
    if not {"totals", "blocks"} <= manifest.keys():
        raise ConfigError(f"{url!r} holds a {SUCCESS} that is not a blockproc manifest "
                          f"(Hadoop and Spark write an empty one); check the path")
    return manifest


def _unfinished(fs: AbstractFileSystem, path: str, url: str,
                holder: Mapping[str, Any] | None) -> OutputStatus:
    state = _plan_of(fs, path, url)
    ledger = read_ledger(fs, path)
    entries = list(ledger.values())
    return OutputStatus(
        url=url, is_finished=False, job_id=state.get("job_id"),
        num_blocks=len(state["plan"]["blocks"]), committed=tuple(sorted(ledger)),
        records_in=sum(int(e.get("records_in", 0)) for e in entries),
        records_out=sum(int(e.get("records_out", 0)) for e in entries),
        bad_records=sum(int(e.get("bad_records", 0)) for e in entries),
        blocks_with_stderr=sum(1 for e in entries if e.get("stderr_bytes")),
        committed_attempts=sum(int(e.get("attempt", 1)) for e in entries),
        earlier_attempts=len(earlier_attempts(fs, path)), lock_holder=holder,
        counters=sum_counters(e.get("counters", {}) for e in entries))


def _finished(url: str, manifest: Mapping[str, Any],
              holder: Mapping[str, Any] | None) -> OutputStatus:
    totals = manifest["totals"]
    blocks = manifest["blocks"]
    earlier_blocks, earlier = report.earlier_runs(manifest)
    return OutputStatus(
        url=url, is_finished=True, job_id=manifest.get("job_id"),
        num_blocks=int(totals.get("num_blocks", len(blocks))),
        committed=tuple(sorted(int(b["id"]) for b in blocks)),
        records_in=int(totals.get("records_in", 0)),
        records_out=int(totals.get("records_out", 0)),
        bad_records=int(totals.get("bad_records", 0)),
        blocks_with_stderr=int(totals.get("blocks_with_stderr", 0)),
        committed_attempts=sum(int(b.get("attempt", 1)) for b in blocks),
        attempts=report.attempts_from_manifest(manifest),
        earlier_blocks=earlier_blocks, earlier_attempts=earlier,
        lock_holder=holder, manifest=manifest, counters=dict(totals.get("counters", {})))

