"""One job's view of its output directory: prepare, commit, discard, clean up, finish.

The commit protocol (Hadoop-compatible): each attempt writes under
``_temporary/<job>/``; the master moves the first successful attempt of a block to its
final name and records it in the ledger, so every block is committed exactly once and
nothing half-written ever has a final name. The names are in
:mod:`~blockproc.output.layout`, the lock in :mod:`~blockproc.output.lock`, the ledger
in :mod:`~blockproc.output.ledger` and the manifest in :mod:`~blockproc.output.manifest`;
this module puts them in order.

Examples
--------
>>> from blockproc.storage import filesystem
>>> out = OutputDir(filesystem("memory"), "/doc/dir/out/", "job-1")
>>> out.url, out.staging_path(42, 1, "part-00042.txt")
('memory://doc/dir/out', '/doc/dir/out/_temporary/job-1/part-00042.txt.attempt-1')
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from blockproc._types import IfExists
from blockproc.errors import (
    AccessError,
    BlockprocError,
    ConfigError,
    LockLostError,
    OutputExistsError,
    StorageError,
)
from blockproc.model import BlockResult, Plan
from blockproc.output import layout
from blockproc.output.checks import check_not_input, exists_error, refuse_foreign
from blockproc.output.layout import (
    ATTEMPTS,
    ERRORS_DIR,
    LEDGER,
    LOGS_DIR,
    PLAN,
    STATE_DIR,
    SUCCESS,
)
from blockproc.output.ledger import Ledger, earlier_attempts, read_ledger, save_attempts
from blockproc.output.lock import OutputLock
from blockproc.output.manifest import (
    WrittenRows,
    block_json,
    build_manifest,
    write_manifest,
)
from blockproc.storage import (
    AbstractFileSystem,
    is_local,
    publish,
    read_json,
    remove_tree,
    retry_call,
    to_url,
    write_json_atomic,
)


class OutputDir:
    """One job's view of its output directory."""

    def __init__(self, fs: AbstractFileSystem, path: str, job_id: str, *,
                 extension: str | None = None) -> None:
        self.fs = fs
        self.extension = extension
        """The part-files' extension (``".txt"``); a resume is refused over parts of
        another (None: not checked)."""
        self.path = path.rstrip("/") or "/"
        self.job_id = job_id
        self.url = to_url(fs, self.path)
        self.lock = OutputLock(fs, self._join(STATE_DIR), job_id, self.url)
        self._ledger = Ledger(fs, self.path, job_id)
        self._local = is_local(fs)  # asked once: commit() runs once per block
        self._renew_failing_since: float | None = None
        # layout.staging_path's folder, joined once: the master asks for every attempt
        self._staging_dir = posixpath.dirname(layout.staging_path(self.path, job_id, "p", 1))
        self._prefix = posixpath.join(self.path, "")  # a part's final name is this + part
        self._rows: list[str | None] = []
        """The ledger row (``block_json``) of each block this job committed, by block id,
        written again as it is into ``_SUCCESS`` (formatted once)."""
        self._row_results: list[BlockResult | None] = []  # the result each row is of
        self._saved_attempts: tuple[Sequence[Any], str] | None = None
        """The attempts this job saved to a local file, and the file."""
        self._published: list[str] = []
        """Staged objects already copied to their final names (object stores), deleted
        in bulk by :meth:`cleanup`: one request per 1,000 parts instead of one each, and
        none between a block's commit and the next."""

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def _call(self, fn: Any, what: str) -> Any:
        """Call ``fn()`` under storage's retry policy (transient errors are retried)."""
        return retry_call(fn, f"{what} in {self.url!r}")

    def staging_path(self, block_id: int, attempt: int, part: str) -> str:
        """Where attempt ``attempt`` of ``block_id`` writes its part-file (see
        :func:`~blockproc.output.layout.staging_path`)."""
        return f"{self._staging_dir}/{part}.attempt-{attempt}"

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
        check_not_input(self.path, self.url, inputs)
        with self._storage("to open the output", setup=True):
            entries = self._entries()
            if entries:
                refuse_foreign(self.url, entries, if_exists)
                if if_exists == "error":
                    self.lock.check_free()  # a live job is named before "already exists"
                    raise exists_error(self.fs, self.path, self.url, entries)
                if if_exists == "resume":  # refused before the lock: nothing written
                    self._check_same_plan(plan)
                    self._check_same_parts(entries)
            self.lock.acquire()  # from here on no other job writes this output
        with self._storage("to prepare the output"):
            committed: dict[int, BlockResult] = {}
            if entries and if_exists == "overwrite":
                self._empty_but_state()
            elif entries and if_exists == "resume":
                committed = self._load_committed(plan)
            self.lock.guard()
            self.write_state(plan)
        return committed

    def write_state(self, plan: Plan) -> None:
        """Make the ledger's folder and record ``plan`` and this job as the output's state
        (``_blockproc/plan.json``), which a resume checks."""
        self._call(lambda: self.fs.makedirs(self._join(STATE_DIR, LEDGER), exist_ok=True),
                   "to make the ledger")
        write_json_atomic(self.fs, self._join(STATE_DIR, PLAN),
                          {"job_id": self.job_id, "plan": plan.to_dict()}, indent=None)

    def _entries(self) -> list[str]:
        """The entries at the top of the directory that hold something (none if it does
        not exist); raises :class:`~blockproc.OutputExistsError` if it is a file."""
        if not self._call(lambda: self.fs.exists(self.path), "to look"):
            return []
        if not self._call(lambda: self.fs.isdir(self.path), "to look"):
            raise OutputExistsError(
                f"output {self.url!r} is a file, not a directory; choose another output path")
        self.fs.invalidate_cache(self.path)  # another process may have written it
        listed = self._call(lambda: self.fs.ls(self.path, detail=True), "to list")
        entries = [e for e in listed if e["name"].rstrip("/") != self.path]
        # some object stores (SeaweedFS) keep listing the folders of deleted objects
        return [e["name"] for e in entries
                if e.get("type") != "directory" or self._holds_files(e["name"])]

    def _holds_files(self, path: str) -> bool:
        """True if a file exists anywhere below the directory ``path`` (stops at the first).

        A folder marker (``lock/``, an empty object named like a folder, as SeaweedFS lists
        one) is no file."""
        listed = self._call(lambda: self.fs.ls(path, detail=True), "to list")
        entries = [e for e in listed if e["name"].rstrip("/") != path.rstrip("/")]
        if any(e.get("type") != "directory" and not e["name"].endswith("/") for e in entries):
            return True
        return any(self._holds_files(e["name"]) for e in entries
                   if e.get("type") == "directory")

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
            raise self._storage_failure(what, exc, setup=setup) from exc

    def _storage_failure(self, what: str, exc: Exception, *,
                         setup: bool = False) -> BlockprocError:
        """The error for a storage failure (see :meth:`_storage`); raises
        :class:`~blockproc.LockLostError` if the output was taken over."""
        if not setup and self.lock.generation:
            # a write that failed because the output was taken over (the new owner
            # removed its staging) is a lost lock, not a storage failure
            try:
                self.lock.renew()
            except LockLostError:
                raise
            except Exception:
                pass
        return self._storage_error(what, exc, setup=setup)

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

    # -- before the first block ------------------------------------------------------------

    def _empty_but_state(self) -> None:
        """Remove an earlier job's files (all of them blockproc's), keeping the lock."""
        state = self._join(STATE_DIR)
        for entry in self._entries():
            if entry.rstrip("/") != state:
                self._remove(entry)
        for entry in self._call(lambda: self.fs.ls(state, detail=False), "to list"):
            if posixpath.basename(entry.rstrip("/")) != "lock":
                self._remove(entry)

    def _remove(self, path: str) -> None:
        self._call(lambda: self.fs.rm(path, recursive=True), f"to remove {path!r}")

    def _load_committed(self, plan: Plan) -> dict[int, BlockResult]:
        self._check_same_plan(plan)  # again under the lock: the answer that counts
        committed: dict[int, BlockResult] = {}
        for entry in read_ledger(self.fs, self.path).values():
            result = BlockResult.from_dict(entry)
            if self._size_or_none(self._join(result.part)) == result.bytes_written:
                committed[result.block.id] = result
        self.lock.guard()
        for leftover in (self._join(layout.TEMPORARY), self._join(SUCCESS)):
            if self._call(lambda p=leftover: self.fs.exists(p), "to look"):
                self._remove(leftover)
        return committed

    def _size_or_none(self, path: str) -> int | None:
        try:
            return int(self._call(lambda: self.fs.size(path), f"to stat {path!r}"))
        except FileNotFoundError:
            return None

    def _check_same_parts(self, entries: Sequence[str]) -> None:
        """Refuse to resume into part-files of another output format (a text job over
        the ``.pickle`` values of a ``reduce_blocks``): the output would mix the two."""
        names = (posixpath.basename(e.rstrip("/")) for e in entries)
        other = next((n for n in names if n.startswith("part-") and self.extension
                      and not n.endswith(self.extension)), None)
        if other is not None:
            raise ConfigError(
                f"cannot resume into {self.url!r}: it holds part-files such as {other}, and "
                f"this job writes {self.extension} files; resume with the same output_format "
                f"and function, or start over with if_exists='overwrite'")

    def _check_same_plan(self, plan: Plan) -> None:
        state = self._join(STATE_DIR, PLAN)
        if not self._call(lambda: self.fs.exists(state), "to look"):
            raise OutputExistsError(
                f"cannot resume into {self.url!r}: it holds no blockproc job state "
                f"({STATE_DIR}/{PLAN}); choose an empty output or if_exists='overwrite'"
            )
        previous = read_json(self.fs, state)["plan"]
        if previous.get("fingerprint") != plan.fingerprint:
            raise OutputExistsError(
                f"cannot resume into {self.url!r}: it was written by a job with a different "
                f"plan (inputs, sizes, block size or format changed: fingerprint "
                f"{previous.get('fingerprint')} != {plan.fingerprint}); rerun with "
                f"if_exists='overwrite' (CLI: --if-exists overwrite) to start over"
            )

    # -- each block ------------------------------------------------------------------------

    def commit(self, result: BlockResult, staging_path: str) -> None:
        """Publish an attempt's part-file under its final name and record it in the ledger.

        On an object store the publish is a server-side copy of the one object (no rename,
        no listing; the staged object is deleted with the others by :meth:`cleanup`);
        readers see no part-file before it is complete. The ledger entry,
        written after it, is what resume trusts. Raises
        :class:`~blockproc.LockLostError` instead if another job took the output over.
        """
        try:  # no context manager: this runs once per block
            # checked before each write, not once: a job stopped between two of them (an
            # object store's copy takes a while) finds out before the next one
            self.lock.guard()
            final = f"{self._prefix}{result.part}"
            if self._local:
                _rename(self.fs, staging_path, final)
            elif publish(self.fs, staging_path, final, size=result.bytes_written,
                         keep_source=True):
                self._published.append(staging_path)
            if result.bad_records:
                self.lock.guard()
                self._keep(layout.errors_path(staging_path), ERRORS_DIR, result.part, ".jsonl")
            if result.stderr_bytes:  # what a --cmd wrote to stderr, kept with its part
                self.lock.guard()
                self._keep(layout.stderr_path(staging_path), LOGS_DIR, result.part, ".stderr")
            row = block_json(result)
            if not self._local:  # written now; a local line waits for flush(), which checks
                self.lock.guard()
            self._ledger.record(result, row)
            self._keep_row(result, row)
        except BlockprocError:
            raise
        except Exception as exc:
            raise self._storage_failure(f"to commit {result.part}", exc) from exc

    def _keep_row(self, result: BlockResult, row: str) -> None:
        block, rows = result.block.id, self._rows
        if block >= len(rows):
            more = [None] * (block + 1 - len(rows))
            rows += more
            self._row_results += more
        rows[block] = row
        self._row_results[block] = result

    def flush(self) -> None:
        """Write the ledger lines of the blocks committed since the last flush, in one
        write (the master calls it at most every ``LEDGER_DELAY`` seconds as its loop
        runs, :meth:`cleanup` and :meth:`finish` before ``_SUCCESS``).

        Safe to defer: a line is recorded after its part-file has its final name, so a
        crash before the flush leaves part-files the ledger does not name, as a crash
        between a rename and its line always could; resume trusts the ledger only, runs
        those blocks again and replaces their part-files, and readers trust nothing
        before ``_SUCCESS``. The ledger never names a part-file that is not in place,
        and a job that lost its lock writes no line (the lock is checked first).
        """
        if not self._ledger.pending:
            return
        try:
            self.lock.guard()  # the write happens now: a job that lost its lock stops here
            self._ledger.flush()
        except BlockprocError:
            raise
        except Exception as exc:
            raise self._storage_failure("to write the ledger", exc) from exc

    def _keep(self, staged: str, folder: str, part: str, suffix: str) -> None:
        self._call(lambda: self.fs.makedirs(self._join(folder), exist_ok=True),
                   f"to make {folder}")
        publish(self.fs, staged, layout.kept_path(self.path, folder, part, suffix))

    def discard(self, staging_path: str) -> None:
        """Remove what a losing or failed attempt staged (best effort: it is garbage)."""
        for path in (staging_path, layout.errors_path(staging_path),
                     layout.stderr_path(staging_path)):
            with contextlib.suppress(Exception):
                self.fs.rm(path)

    # -- the attempts of each run ----------------------------------------------------------

    def save_attempts(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Keep this run's attempts for the runs that resume it (best effort: they are
        counts for the report, never what a result depends on)."""
        with contextlib.suppress(Exception):
            self.lock.guard()
            save_attempts(self.fs, self.path, self.job_id, records)
            if self._local:  # _SUCCESS copies the rows from there
                self._saved_attempts = (records, self._join(STATE_DIR, ATTEMPTS,
                                                            f"{self.job_id}.json"))

    def earlier_attempts(self) -> list[dict[str, Any]]:
        """The attempts of the earlier runs of this output's job, each with its ``job_id``
        (empty for a new or overwritten output)."""
        return earlier_attempts(self.fs, self.path, self.job_id)

    # -- the end ---------------------------------------------------------------------------

    def cleanup(self, *, lost_lock: bool = False) -> None:
        """Close the ledger and remove this job's staging directory (whatever the job's
        outcome; best effort). A job that lost its lock removes nothing: the output is
        another job's now."""
        if not lost_lock:  # the blocks of the last pass: resume keeps them
            with contextlib.suppress(Exception):
                self.flush()
        self._ledger.close()
        if lost_lock:
            return
        with contextlib.suppress(Exception):  # known by name: no listing needed
            if self._published:
                self.fs.rm(self._published)
        with contextlib.suppress(Exception):
            self.fs.rm(self._join(layout.TEMPORARY, self.job_id), recursive=True)
        temporary = self._join(layout.TEMPORARY)
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
        self.flush()
        rows, of = self._rows, self._row_results
        texts = [rows[r.block.id] if r.block.id < len(of) and of[r.block.id] is r else None
                 for r in results]  # the ledger's rows of this job's blocks, as they are
        manifest = build_manifest(self.job_id, plan, results, job, texts)
        saved = self._saved_attempts
        if saved is not None and manifest.get("attempts") is saved[0]:
            manifest["attempts"] = WrittenRows(saved[0], saved[1])  # formatted once
        with self._storage("to write _SUCCESS"):
            self.lock.renew()  # a fresh check right before the one write readers trust
            remove_tree(self.fs, self._join(layout.TEMPORARY))
            write_manifest(self.fs, self._join(SUCCESS), manifest)


def _rename(fs: AbstractFileSystem, source: str, destination: str) -> None:
    """:func:`~blockproc.storage.publish` on a local disk, without its look-ups and
    message per call (the master renames every committed block): the first try is the
    rename itself; one that fails goes through ``publish``, retried under the policy."""
    try:
        os.replace(source, destination)
    except OSError:
        publish(fs, source, destination)
