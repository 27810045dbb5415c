"""The output directory and its commit protocol (Hadoop-compatible).

::

    out/part-00042.txt     one part-file per block, named by block id
    out/_SUCCESS           written last: the JSON manifest; trust the directory only then
    out/_blockproc/        job state: plan.json and committed/part-NNNNN.json, for resume
    out/_temporary/        attempts in flight; removed before _SUCCESS is written

Each attempt writes under ``_temporary/<job>/<attempt>/``; the master moves the first
successful attempt of a block to its final name and records it in the ledger, so every
block is committed exactly once and nothing half-written ever has a final name.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from blockproc._types import IfExists
from blockproc.errors import (
    AccessError,
    BlockprocError,
    ConfigError,
    OutputExistsError,
    OutputLockedError,
    StorageError,
    UnfinishedOutputError,
)
from blockproc.lock import OutputLock
from blockproc.model import BlockResult, Plan, blocks_summary
from blockproc.storage import (
    AbstractFileSystem,
    is_local,
    publish,
    read_json,
    remove_tree,
    to_url,
    write_bytes_atomic,
    write_json_atomic,
)

MANIFEST_VERSION = 1
SUCCESS = "_SUCCESS"
STATE_DIR = "_blockproc"
TEMPORARY = "_temporary"
ERRORS_DIR = "_errors"
LOGS_DIR = "_logs"
LEDGER = "committed"
ATTEMPTS = "attempts"
"""``_blockproc/attempts/<job>.json``: the attempts of each run that ended, for the
manifest of a resumed job (a run whose master was killed leaves none)."""
BLOCKPROC_ENTRY = re.compile(r"^(part-\d{5,}(\..*)?|_SUCCESS|_blockproc|_temporary|_errors|_logs"
                             r"|\.part-\d{5,}.*\.tmp|\._SUCCESS\..*\.tmp)$")
"""Names blockproc writes at the top of an output directory; ``overwrite`` removes only
these, and refuses a directory holding anything else."""


def part_name(block_id: int, extension: str = ".txt") -> str:
    """Return the part-file name of a block.

    Examples
    --------
    >>> part_name(42)
    'part-00042.txt'
    """
    return f"part-{block_id:05d}{extension}"


class OutputDir:
    """One job's view of its output directory."""

    def __init__(self, fs: AbstractFileSystem, path: str, job_id: str) -> None:
        self.fs = fs
        self.path = path.rstrip("/") or "/"
        self.job_id = job_id
        self.url = to_url(fs, self.path)
        self.lock = OutputLock(fs, self._join(STATE_DIR), job_id, self.url)
        self._ledger: BinaryIO | None = None
        self._renew_failing_since: float | None = None

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def staging_path(self, block_id: int, attempt: int, part: str) -> str:
        """Where attempt ``attempt`` of ``block_id`` writes its part-file: one flat file per
        attempt (no directory to make and remove per block)."""
        return self._join(TEMPORARY, self.job_id, f"{part}.attempt-{attempt}")

    def prepare(
        self, plan: Plan, if_exists: IfExists, inputs: Sequence[str]
    ) -> dict[int, BlockResult]:
        """Make the directory ready for ``plan``, take its lock, and return the blocks
        already committed.

        ``if_exists``: ``"error"`` refuses a non-empty directory, ``"overwrite"`` empties
        an earlier blockproc output, ``"resume"`` keeps the blocks committed by a run with
        the same plan. A directory that a live job is writing is always refused, and so
        is one holding files blockproc did not write: nothing of the user's is deleted.
        """
        if if_exists not in ("error", "overwrite", "resume"):
            raise ConfigError(
                f"if_exists must be 'error', 'overwrite' or 'resume', got {if_exists!r}")
        self._check_not_input(inputs)
        with self._storage("to open the output", setup=True):
            entries = self._entries()
            if entries:
                self._refuse_foreign(entries, if_exists)
                if if_exists == "error":
                    self.lock.check_free()  # a live job is named before "already exists"
                    raise self._exists_error(entries)
                if if_exists == "resume":
                    self._check_same_plan(plan)  # refused before the lock: nothing written
            self.lock.acquire()  # from here on no other job writes this output
        with self._storage("to prepare the output"):
            committed: dict[int, BlockResult] = {}
            if entries and if_exists == "overwrite":
                self._empty_but_state()
            elif entries and if_exists == "resume":
                committed = self._load_committed(plan)
            self.lock.guard()
            self.fs.makedirs(self._join(STATE_DIR, LEDGER), exist_ok=True)
            write_json_atomic(self.fs, self._join(STATE_DIR, "plan.json"),
                              {"job_id": self.job_id, "plan": plan.to_dict()}, indent=None)
        return committed

    def _entries(self) -> list[str]:
        if not self.fs.exists(self.path):
            return []
        if not self.fs.isdir(self.path):
            raise OutputExistsError(
                f"output {self.url!r} is a file, not a directory; choose another output path")
        self.fs.invalidate_cache(self.path)  # another process may have written it
        entries = [e for e in self.fs.ls(self.path, detail=True)
                   if e["name"].rstrip("/") != self.path]
        # some object stores (SeaweedFS) keep listing the folders of deleted objects
        return [e["name"] for e in entries
                if e.get("type") != "directory" or _holds_files(self.fs, e["name"])]

    def _refuse_foreign(self, entries: Sequence[str], if_exists: IfExists) -> None:
        """Refuse a directory holding entries blockproc did not write, naming a few."""
        foreign = sorted(n for n in _names(entries) if not BLOCKPROC_ENTRY.match(n))
        if not foreign:
            return
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                          if len(foreign) > 5 else "")
        what = ("blockproc never deletes files it did not write"
                if if_exists == "overwrite" else "blockproc writes only into its own outputs")
        raise OutputExistsError(
            f"output {self.url!r} holds files blockproc did not write ({shown}); {what}, "
            f"so choose a new or empty output directory (or move those files away)")

    def _exists_error(self, entries: Sequence[str]) -> OutputExistsError:
        names = set(_names(entries))
        if STATE_DIR in names and SUCCESS not in names and \
                not self.fs.exists(self._join(STATE_DIR, "plan.json")):
            return OutputLockedError(
                f"output {self.url!r} is being set up by another job right now (or by one "
                f"that crashed while starting); try again in a moment, or pass "
                f"if_exists='overwrite' (CLI: --if-exists overwrite) to start over")
        if STATE_DIR in names and SUCCESS not in names:
            done = len(read_ledger(self.fs, self.path))
            return UnfinishedOutputError(
                f"output {self.url!r} already exists and holds an unfinished blockproc job "
                f"({done} blocks committed); pass if_exists='resume' (CLI: --resume) to "
                f"finish it, or if_exists='overwrite' (CLI: --if-exists overwrite) to "
                f"start over")
        what = "holds a finished blockproc job" if SUCCESS in names else \
            "holds blockproc part-files"
        return OutputExistsError(
            f"output {self.url!r} already exists and {what}; pass if_exists='overwrite' "
            f"(CLI: --if-exists overwrite) to replace it, or choose another output")

    @contextlib.contextmanager
    def _storage(self, what: str, *, setup: bool = False) -> Iterator[None]:
        """Turn a storage failure outside a block into a one-line blockproc error: an
        :class:`~blockproc.AccessError` before any work (``setup``), else a resumable
        :class:`~blockproc.StorageError`."""
        try:
            yield
        except BlockprocError:
            raise
        except Exception as exc:
            raise self._storage_error(what, exc, setup=setup) from exc

    def _storage_error(self, what: str, exc: BaseException, *,
                       setup: bool = False) -> BlockprocError:
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if setup:
            return AccessError(
                f"cannot write the output {self.url!r} ({what}): {reason}; check that the "
                f"path is writable, the store reachable and its credentials set")
        return StorageError(
            f"the storage of output {self.url!r} failed {what}: {reason}; the committed "
            f"blocks are kept")

    # -- one job per output ----------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew this job's lock on the output (the master calls it every few seconds).

        A renewal that fails (the store is unreachable) is tried again at the next call;
        once renewals have failed for two thirds of the lease, another job may soon take
        the output over, so the job stops with a :class:`~blockproc.StorageError`.
        """
        try:
            self.lock.renew()
            self._renew_failing_since = None
        except BlockprocError:
            raise
        except Exception as exc:
            now = time.monotonic()
            self._renew_failing_since = self._renew_failing_since or now
            if now - self._renew_failing_since > self.lock.lease * 2 / 3:
                raise self._storage_error(
                    f"to renew the job's lock for {now - self._renew_failing_since:.0f}s",
                    exc) from exc

    def release(self) -> None:
        """Drop the lock if this job still holds it; never raises (an unreachable store
        leaves a lock that goes stale after the lease)."""
        with contextlib.suppress(Exception):
            self.lock.release()

    def _empty_but_state(self) -> None:
        """Remove an earlier job's files (all of them blockproc's), keeping the lock."""
        state = self._join(STATE_DIR)
        for entry in self._entries():
            if entry.rstrip("/") != state:
                self.fs.rm(entry, recursive=True)
        for entry in self.fs.ls(state, detail=False):
            if posixpath.basename(entry.rstrip("/")) != "lock":
                self.fs.rm(entry, recursive=True)

    def _check_not_input(self, inputs: Sequence[str]) -> None:
        root = self.path.rstrip("/") + "/"
        for path in inputs:
            if path == self.path or path.startswith(root):
                raise ConfigError(
                    f"output {self.url!r} contains the input {path!r}; blockproc never writes "
                    f"over its inputs, so choose an output directory outside them"
                )

    def _load_committed(self, plan: Plan) -> dict[int, BlockResult]:
        self._check_same_plan(plan)  # again under the lock: the answer that counts
        committed: dict[int, BlockResult] = {}
        for entry in read_ledger(self.fs, self.path).values():
            result = BlockResult.from_dict(entry)
            part = self._join(result.part)
            if self.fs.exists(part) and self.fs.size(part) == result.bytes_written:
                committed[result.block.id] = result
        self.lock.guard()
        for leftover in (self._join(TEMPORARY), self._join(SUCCESS)):
            if self.fs.exists(leftover):
                self.fs.rm(leftover, recursive=True)
        return committed

    def _check_same_plan(self, plan: Plan) -> None:
        state = self._join(STATE_DIR, "plan.json")
        if not self.fs.exists(state):
            raise OutputExistsError(
                f"cannot resume into {self.url!r}: it holds no blockproc job state "
                f"({STATE_DIR}/plan.json); choose an empty output or if_exists='overwrite'"
            )
        previous = read_json(self.fs, state)["plan"]
        if previous.get("fingerprint") != plan.fingerprint:
            raise OutputExistsError(
                f"cannot resume into {self.url!r}: it was written by a job with a different "
                f"plan (inputs, sizes, block size or format changed: fingerprint "
                f"{previous.get('fingerprint')} != {plan.fingerprint}); rerun with "
                f"if_exists='overwrite' (CLI: --if-exists overwrite) to start over"
            )

    def commit(self, result: BlockResult, staging_path: str) -> None:
        """Publish an attempt's part-file under its final name and record it in the ledger.

        On an object store the publish is a server-side copy of the one object (no rename,
        no listing); readers see no part-file before it is complete. The ledger entry,
        written after it, is what resume trusts. Raises
        :class:`~blockproc.LockLostError` instead if another job took the output over.
        """
        with self._storage(f"to commit {result.part}"):
            self.lock.guard()
            publish(self.fs, staging_path, self._join(result.part))
            if result.bad_records:
                stem = posixpath.splitext(result.part)[0]
                self.fs.makedirs(self._join(ERRORS_DIR), exist_ok=True)
                publish(self.fs, errors_path(staging_path),
                        self._join(ERRORS_DIR, f"{stem}.jsonl"))
            if result.stderr_bytes:  # what a --cmd wrote to stderr, kept with its part
                stem = posixpath.splitext(result.part)[0]
                self.fs.makedirs(self._join(LOGS_DIR), exist_ok=True)
                publish(self.fs, stderr_path(staging_path),
                        self._join(LOGS_DIR, f"{stem}.stderr"))
            self._record(result)

    def _record(self, result: BlockResult) -> None:
        """Add a committed block to the ledger that resume trusts.

        On a local disk: one line appended (and flushed) to this job's
        ``committed/<job>.jsonl``, which costs no file creation or rename per block; a
        line cut short by a crash is ignored on resume. Elsewhere (object stores have no
        append): one small JSON object per block.
        """
        if not is_local(self.fs):
            write_json_atomic(self.fs, self._join(STATE_DIR, LEDGER, result.part + ".json"),
                              result.to_dict(), indent=None)
            return
        if self._ledger is None:
            # held open for the whole job (closed by cleanup): one open per job, not per block
            self._ledger = open(  # noqa: SIM115
                self._join(STATE_DIR, LEDGER, f"{self.job_id}.jsonl"), "ab")
        self._ledger.write(json.dumps(result.to_dict()).encode() + b"\n")
        self._ledger.flush()

    def save_attempts(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Keep this run's attempts for the runs that resume it (best effort: they are
        counts for the report, never what a result depends on)."""
        with contextlib.suppress(Exception):
            self.lock.guard()
            write_json_atomic(self.fs, self._join(STATE_DIR, ATTEMPTS, f"{self.job_id}.json"),
                              list(records), indent=None)

    def earlier_attempts(self) -> list[dict[str, Any]]:
        """The attempts of the earlier runs of this output's job, each with its ``job_id``
        (empty for a new or overwritten output)."""
        folder = self._join(STATE_DIR, ATTEMPTS)
        records: list[dict[str, Any]] = []
        with contextlib.suppress(FileNotFoundError):
            for name in sorted(self.fs.ls(folder, detail=False)):
                job_id = posixpath.splitext(posixpath.basename(name))[0]
                if not name.endswith(".json") or job_id == self.job_id:
                    continue
                with contextlib.suppress(FileNotFoundError, ValueError):
                    records += [{**r, "job_id": job_id} for r in read_json(self.fs, name)]
        return records

    def discard(self, staging_path: str) -> None:
        """Remove what a losing or failed attempt staged (best effort: it is garbage)."""
        for path in (staging_path, errors_path(staging_path), stderr_path(staging_path)):
            with contextlib.suppress(Exception):
                self.fs.rm(path)

    def cleanup(self, *, lost_lock: bool = False) -> None:
        """Close the ledger and remove this job's staging directory (whatever the job's
        outcome; best effort). A job that lost its lock removes nothing: the output is
        another job's now."""
        if self._ledger is not None:
            with contextlib.suppress(OSError):
                self._ledger.close()
            self._ledger = None
        if lost_lock:
            return
        with contextlib.suppress(Exception):
            self.fs.rm(self._join(TEMPORARY, self.job_id), recursive=True)
        temporary = self._join(TEMPORARY)
        with contextlib.suppress(Exception):
            if self.fs.exists(temporary) and not self.fs.ls(temporary, detail=False):
                self.fs.rm(temporary, recursive=True)

    def finish(self, plan: Plan, results: Sequence[BlockResult], job: Mapping[str, Any]) -> None:
        """Write the ``_SUCCESS`` manifest, after removing ``_temporary/``, while this job
        still holds the lock.

        The manifest lists ``results``, the committed blocks, never what a listing shows;
        removing ``_temporary/`` is garbage collection (on an object store it lists, and
        a stale listing may leave objects there, which readers ignore).
        """
        manifest = {
            "version": MANIFEST_VERSION,
            "job_id": self.job_id,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **job,
            "fingerprint": plan.fingerprint,
            "block_size": plan.block_size,
            "format": dict(plan.format),
            "inputs": [f.to_dict() for f in plan.files],
            "totals": blocks_summary(results),
            "blocks": [r.to_dict() for r in results],
        }
        with self._storage("to write _SUCCESS"):
            self.lock.renew()  # a fresh check right before the one write readers trust
            remove_tree(self.fs, self._join(TEMPORARY))
            write_bytes_atomic(self.fs, self._join(SUCCESS), dumps_rows(manifest))


def _holds_files(fs: AbstractFileSystem, path: str) -> bool:
    """True if a file exists anywhere below the directory ``path`` (stops at the first).

    A folder marker (``lock/``, an empty object named like a folder, as SeaweedFS lists
    one) is no file."""
    entries = [e for e in fs.ls(path, detail=True)
               if e["name"].rstrip("/") != path.rstrip("/")]
    if any(e.get("type") != "directory" and not e["name"].endswith("/") for e in entries):
        return True
    return any(_holds_files(fs, e["name"]) for e in entries if e.get("type") == "directory")


def _names(entries: Sequence[str]) -> list[str]:
    return [posixpath.basename(e.rstrip("/")) for e in entries]


def dumps_rows(doc: Mapping[str, Any]) -> bytes:
    """Return ``doc`` as JSON with one line per key and per row of its lists of objects.

    Readable, and fast for 10,000 blocks (each row goes through json's C encoder, which
    ``indent=`` would disable).

    Examples
    --------
    >>> print(dumps_rows({"job_id": "j", "blocks": [{"id": 0}, {"id": 1}]}).decode())
    {
     "job_id": "j",
     "blocks": [
      {"id": 0},
      {"id": 1}
     ]
    }
    <BLANKLINE>
    """
    fields = []
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = ",\n  ".join(json.dumps(v) for v in value)
            fields.append(f" {json.dumps(key)}: [\n  {rows}\n ]")
        else:
            fields.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return ("{\n" + ",\n".join(fields) + "\n}\n").encode()


def read_ledger(fs: AbstractFileSystem, path: str) -> dict[int, dict[str, Any]]:
    """Return the ledger entries of the output directory ``path``, by block id.

    Reads the per-job ``.jsonl`` files of local disks and the per-block ``.json`` objects
    of object stores; a later job's entry for a block replaces an earlier one, and an
    entry cut short by a crash, or listed but gone, is skipped (its block runs again).
    """
    ledger = posixpath.join(path, STATE_DIR, LEDGER)
    entries: dict[int, dict[str, Any]] = {}
    if not fs.exists(ledger):
        return entries
    for name in sorted(fs.ls(ledger, detail=False)):
        try:
            if name.endswith(".jsonl"):
                rows = fs.cat_file(name).splitlines()
            elif name.endswith(".json"):
                rows = [fs.cat_file(name)]
            else:
                continue
        except FileNotFoundError:
            continue
        for row in rows:
            try:
                entry = json.loads(row)
            except ValueError:
                continue
            entries[int(entry["id"])] = entry
    return entries


def stderr_path(staging_path: str) -> str:
    """Where an attempt stages what its command wrote to stderr: next to its part-file.

    Examples
    --------
    >>> stderr_path("out/_temporary/j/part-00042.txt.attempt-1")
    'out/_temporary/j/part-00042.txt.attempt-1.stderr'
    """
    return f"{staging_path}.stderr"


def errors_path(staging_path: str) -> str:
    """Where an attempt logs the records it skipped (``max_bad_records``)."""
    return f"{staging_path}.errors.jsonl"


def verify_output(fs: AbstractFileSystem, path: str, manifest: Mapping[str, Any]) -> list[str]:
    """Return the part-files that are missing or differ from the manifest (size, CRC-32)."""
    bad = []
    for entry in manifest["blocks"]:
        part = posixpath.join(path, entry["part"])
        data = fs.cat_file(part) if fs.exists(part) else None
        if data is None or len(data) != entry["bytes_written"] or \
                f"crc32:{zlib.crc32(data):08x}" != entry["checksum"]:
            bad.append(entry["part"])
    return bad


def read_manifest(fs: AbstractFileSystem, path: str) -> dict[str, Any]:
    """Return the ``_SUCCESS`` manifest of an output directory."""
    return dict(read_json(fs, posixpath.join(path.rstrip("/"), SUCCESS)))
