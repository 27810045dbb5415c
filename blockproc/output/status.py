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
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blockproc import report
from blockproc.errors import ConfigError, UnfinishedOutputError
from blockproc.model import AttemptRecord, sum_counters
from blockproc.output.layout import PLAN, STATE_DIR, SUCCESS
from blockproc.output.ledger import earlier_attempts, read_ledger
from blockproc.output.lock import OutputLock
from blockproc.output.manifest import (
    Manifest,
    read_manifest,
    read_manifest_lazily,
    verify_output,
)
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
    attempts: Sequence[AttemptRecord] = ()
    """Every attempt of the run that finished (none for an unfinished job or an older
    manifest); read from the manifest when first used (:class:`ManifestAttempts`)."""
    earlier_blocks: int = 0
    """Blocks that earlier runs committed, for a resumed job."""
    earlier_attempts: int = 0
    """Attempts the earlier runs made (those that ended: a run whose master was killed
    records none)."""
    lock_holder: Mapping[str, Any] | None = None
    """What the live job holding the output's lock says of itself (``job_id``, ``host``,
    ``pid``, ``heartbeat``), or None."""
    manifest: Mapping[str, Any] | None = field(default=None, repr=False)
    """The ``_SUCCESS`` manifest of a finished job (a
    :class:`~blockproc.output.manifest.Manifest`: its lists of rows are parsed when first
    used)."""
    attempts_by_status: Mapping[str, int] = field(default_factory=dict)
    """How many attempts of the run that finished ended in each status, and how many
    were ``speculative`` (from the manifest's header: nothing else is read)."""
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
    manifest = _manifest(fs, path, url, lazily=True)
    assert isinstance(manifest, Manifest)
    return _finished(url, manifest, holder)


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


def _manifest(fs: AbstractFileSystem, path: str, url: str, *,
              lazily: bool = False) -> Mapping[str, Any]:
    manifest: Mapping[str, Any]
    try:
        manifest = read_manifest_lazily(fs, path) if lazily else read_manifest(fs, path)
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


def _finished(url: str, manifest: Manifest, holder: Mapping[str, Any] | None) -> OutputStatus:
    totals = manifest["totals"]
    counts = manifest.get("attempt_totals")
    committed = _block_ids(manifest, totals.get("num_blocks"))
    if isinstance(counts, Mapping) and "attempts" in manifest:  # no row needs reading
        attempts = ManifestAttempts(manifest, int(counts["attempts"]))
        committed_attempts = int(counts["committed_attempts"])
        by_status = {k: int(v) for k, v in counts.items()
                     if k not in ("attempts", "committed_attempts")}
        if counts["attempts"]:
            earlier_blocks = len(committed) - by_status.get("committed", 0)
            earlier = manifest.num_rows("earlier_attempts") or (
                0 if "earlier_attempts" in manifest else _attempt_sum(manifest, earlier_blocks))
        else:
            earlier_blocks, earlier = 0, 0
    else:  # an older manifest
        attempts = ManifestAttempts(manifest)
        committed_attempts = sum(int(b.get("attempt", 1)) for b in manifest["blocks"])
        by_status = _count_statuses(attempts)
        earlier_blocks, earlier = report.earlier_runs(manifest)
    return OutputStatus(
        url=url, is_finished=True, job_id=manifest.get("job_id"),
        num_blocks=int(totals.get("num_blocks", len(committed))), committed=committed,
        records_in=int(totals.get("records_in", 0)),
        records_out=int(totals.get("records_out", 0)),
        bad_records=int(totals.get("bad_records", 0)),
        blocks_with_stderr=int(totals.get("blocks_with_stderr", 0)),
        committed_attempts=committed_attempts, attempts=attempts,
        earlier_blocks=earlier_blocks, earlier_attempts=earlier,
        lock_holder=holder, manifest=manifest, attempts_by_status=by_status,
        counters=dict(totals.get("counters", {})))


def _attempt_sum(manifest: Manifest, earlier_blocks: int) -> int:
    """The attempt numbers of the blocks that earlier runs committed, summed (when the
    manifest lists no ``earlier_attempts``)."""
    if not earlier_blocks:
        return 0
    this_run = {a.block_id for a in ManifestAttempts(manifest) if a.status == "committed"}
    return sum(int(b.get("attempt", 1)) for b in manifest["blocks"]
               if b["id"] not in this_run)


def _count_statuses(attempts: Sequence[AttemptRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in attempts:
        counts[a.status] = counts.get(a.status, 0) + 1
    counts["speculative"] = sum(map(report.is_speculative, attempts))
    return counts


_BLOCK_ID = re.compile(rb'\n  \{"id": (\d+)[,}]')


def _block_ids(manifest: Manifest, expected: Any = None) -> tuple[int, ...]:
    """The ids of the manifest's blocks, sorted: read straight from the rows' text when
    they are in the manifest's layout (each row starts with its id) and as many as the
    header's ``expected`` (else as many as rows counted), else parsed."""
    if not manifest.is_parsed("blocks"):
        found = manifest.findall(_BLOCK_ID, "blocks")
        rows = expected if isinstance(expected, int) else manifest.num_rows("blocks")
        if len(found) == rows:
            return tuple(sorted(map(int, found)))
    return tuple(sorted(int(b["id"]) for b in manifest["blocks"]))


class ManifestAttempts(Sequence[AttemptRecord]):
    """The attempts a manifest lists, read from it when first used (its length is known
    at once: ``length`` from the manifest's header, else its rows counted).

    Examples
    --------
    >>> from blockproc.output.manifest import dumps_rows
    >>> m = Manifest(dumps_rows({"attempts": [{"block_id": 0, "attempt": 1, "worker": "w",
    ...     "started": 0.0, "finished": 1.0, "status": "committed", "error": "",
    ...     "speculative": False}]}))
    >>> attempts = ManifestAttempts(m)
    >>> len(attempts), m.is_parsed("attempts")
    (1, False)
    >>> attempts[0].status, attempts == (attempts[0],)
    ('committed', True)
    """

    def __init__(self, manifest: Manifest, length: int | None = None) -> None:
        self._manifest = manifest
        self._len = manifest.num_rows("attempts") if length is None else length
        self._records: tuple[AttemptRecord, ...] | None = None

    def _load(self) -> tuple[AttemptRecord, ...]:
        if self._records is None:
            self._records = _attempt_records(self._manifest.get("attempts") or ())
        return self._records

    def __len__(self) -> int:
        return self._len if self._records is None else len(self._records)

    def __getitem__(self, index: Any) -> Any:
        return self._load()[index]

    def __iter__(self) -> Iterator[AttemptRecord]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._load() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} attempts>"


_ATTEMPT_FIELDS = ("block_id", "attempt", "worker", "started", "finished", "status", "error",
                   "speculative")


def _attempt_records(rows: Sequence[Mapping[str, Any]]) -> tuple[AttemptRecord, ...]:
    """The records of the manifest's attempt rows (rows of another shape through
    :func:`~blockproc.report.attempts_from_manifest`)."""
    if all(tuple(r) == _ATTEMPT_FIELDS for r in rows):
        return tuple([AttemptRecord(*r.values()) for r in rows])
    return report.attempts_from_manifest({"attempts": rows})
