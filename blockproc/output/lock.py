"""One job per output: a lock with generations, leases and fencing.

The lock of an output is a series of files under ``_blockproc/lock/``::

    _blockproc/lock/0000000001.json        generation 1: who took it (created once, never changed)
    _blockproc/lock/0000000001.heartbeat   its owner's last renewal (or that it released it)
    _blockproc/lock/0000000002.json        generation 2: a later job, or a takeover

The owner of the highest generation holds the lock. To take it, a job creates the next
generation's file with :func:`~blockproc.storage.create_exclusive` (a hard link on local
disks, ``If-None-Match: *`` on object stores), which exactly one contender wins, and only
when the current owner has released the lock or let it go stale (no renewal for
:data:`LOCK_LEASE` seconds, or a dead process on this host). Nothing is ever deleted, so
a takeover cannot be undone by a late writer, and the generation number is the fencing
token: before it writes, an owner checks that no next generation exists (and it renews
its lease on the way); if one does, it raises :class:`~blockproc.LockLostError` and
writes nothing more.

Between renewals an owner trusts its lease: nobody may take over before ``LOCK_LEASE``
seconds without a renewal, so writes within a third of the lease after the last renewal
need no round trip to the store. Clocks of the hosts sharing an output must agree within
a few seconds. One window remains, as with any lease on storage that cannot check a
token itself: a write already under way when its owner was stopped (checked, not yet
sent: microseconds on a disk, milliseconds for an object store's request) can still land
when it thaws, at most one, before the next check stops it.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import time
from collections.abc import Mapping
from typing import Any

from blockproc.errors import ConfigError, LockLostError, OutputLockedError
from blockproc.storage import (
    AbstractFileSystem,
    create_exclusive,
    read_json,
    retry_call,
    write_json_atomic,
)

LOCK_DIR = "lock"
LOCK_LEASE = 30.0
"""Seconds without a renewal after which another job may take over an output's lock
(``BLOCKPROC_LOCK_LEASE`` changes it: every job sharing an output must use the same)."""


def lock_lease() -> float:
    """The lease of this process: :data:`LOCK_LEASE` unless ``BLOCKPROC_LOCK_LEASE`` says
    otherwise.

    >>> lock_lease()
    30.0
    """
    try:
        lease = float(os.environ.get("BLOCKPROC_LOCK_LEASE", LOCK_LEASE))
    except ValueError:
        raise ConfigError(f"BLOCKPROC_LOCK_LEASE must be a number of seconds, got "
                          f"{os.environ['BLOCKPROC_LOCK_LEASE']!r}") from None
    if lease <= 0:
        raise ConfigError(f"BLOCKPROC_LOCK_LEASE must be > 0 seconds, got {lease:g}")
    return lease


class OutputLock:
    """The lock of one output directory, as seen by one job.

    Examples
    --------
    >>> from blockproc.storage import filesystem
    >>> fs = filesystem("memory")
    >>> first = OutputLock(fs, "/doc/lock/_blockproc", "job-1", url="memory://doc/lock")
    >>> first.acquire()
    1
    >>> OutputLock(fs, "/doc/lock/_blockproc", "job-2").acquire()
    Traceback (most recent call last):
    ...
    blockproc.OutputLockedError: output ... is being written by job job-1 ...
    >>> OutputLock(fs, "/doc/lock/_blockproc", "anyone").holder()["job_id"]
    'job-1'
    >>> first.release()
    >>> second = OutputLock(fs, "/doc/lock/_blockproc", "job-2")
    >>> second.acquire()
    2
    >>> first.generation = 1  # a job that stalled and comes back finds it was taken over
    >>> first.renew()
    Traceback (most recent call last):
    ...
    blockproc.LockLostError: job job-1 lost its lock on output ... to job job-2 ...
    """

    def __init__(self, fs: AbstractFileSystem, state_dir: str, job_id: str,
                 url: str = "") -> None:
        self.fs = fs
        self.dir = posixpath.join(state_dir, LOCK_DIR)
        self.job_id = job_id
        self.url = url
        self.lease = lock_lease()
        self.renew_every = self.lease / 6
        """Seconds between renewals (5 s for the default lease)."""
        self.generation = 0
        self._renewed = 0.0  # time.monotonic() of the last check that we still hold it

    def _path(self, generation: int, suffix: str = ".json") -> str:
        return posixpath.join(self.dir, f"{generation:010d}{suffix}")

    def _exists(self, path: str) -> bool:
        return bool(retry_call(lambda: self.fs.exists(path), f"to check {path!r}"))

    # -- taking it ---------------------------------------------------------------------

    def acquire(self) -> int:
        """Take the lock, or raise :class:`~blockproc.OutputLockedError` naming the job
        that holds it; return the generation (the fencing token)."""
        for _ in range(8):
            latest = self._latest()
            if latest:
                self._refuse_if_held(latest)
            doc = {"job_id": self.job_id, "generation": latest + 1, "host": socket.gethostname(),
                   "pid": os.getpid(), "created": time.time(), "nonce": os.urandom(16).hex()}
            checked = time.monotonic()
            if create_exclusive(self.fs, self._path(latest + 1), json.dumps(doc).encode()):
                self.generation, self._renewed = latest + 1, checked
                return self.generation
            # another job created that generation first: look again (it is live, so
            # the next round refuses with its name)
        raise OutputLockedError(f"output {self.url!r}: other jobs keep taking its lock; try "
                                f"again when they have finished")

    def check_free(self) -> None:
        """Raise :class:`~blockproc.OutputLockedError` if a live job holds the lock (take
        nothing)."""
        latest = self._latest()
        if latest:
            self._refuse_if_held(latest)

    def holder(self) -> dict[str, Any] | None:
        """Return what the live holder of the lock says of itself (``job_id``, ``host``,
        ``pid``, ``heartbeat``: its last renewal, in seconds since the epoch), or None if
        no live job holds it (take nothing)."""
        latest = self._latest()
        if not latest:
            return None
        holder = self._holder(latest)
        if holder.get("released") or _is_stale(holder, self.lease):
            return None
        return holder

    def _latest(self) -> int:
        """The highest generation that exists (0: none). The listing is a hint; the
        generations above it are probed one by one, which needs no consistent listing."""
        try:
            names = retry_call(lambda: self.fs.ls(self.dir, detail=False),
                               f"to list {self.dir!r}")
        except FileNotFoundError:
            names = []
        generation = max((_generation_of(n) for n in names), default=0)
        while self._exists(self._path(generation + 1)):
            generation += 1
        return generation

    def _refuse_if_held(self, generation: int) -> None:
        holder = self._holder(generation)
        if holder.get("released") or _is_stale(holder, self.lease):
            return
        age = time.time() - float(holder.get("heartbeat", 0))
        raise OutputLockedError(
            f"output {self.url!r} is being written by job {holder.get('job_id')} (pid "
            f"{holder.get('pid')} on {holder.get('host')}, last heartbeat {age:.0f}s ago); "
            f"wait for it to finish or stop it, or choose another output. A lock with no "
            f"heartbeat for {self.lease:g}s is taken over automatically")

    def _holder(self, generation: int) -> dict[str, Any]:
        """What generation ``generation`` says of its owner, with ``heartbeat`` its last
        renewal. A file that cannot be read counts as held from its modification time."""
        holder: dict[str, Any] = {}
        try:
            holder = dict(read_json(self.fs, self._path(generation)))
            holder["heartbeat"] = float(holder.get("created", 0))
        except (FileNotFoundError, ValueError, TypeError):
            holder["heartbeat"] = self._modified(self._path(generation))
        try:
            beat = dict(read_json(self.fs, self._path(generation, ".heartbeat")))
        except (FileNotFoundError, ValueError, TypeError):
            return holder
        if beat.get("job_id") == holder.get("job_id"):
            holder["heartbeat"] = max(holder["heartbeat"], float(beat.get("heartbeat", 0)))
            holder["released"] = bool(beat.get("released"))
        return holder

    def _modified(self, path: str) -> float:
        try:
            info = retry_call(lambda: self.fs.info(path), f"to stat {path!r}")
        except FileNotFoundError:
            return 0.0
        modified = info.get("mtime", info.get("LastModified", info.get("created")))
        if hasattr(modified, "timestamp"):
            return float(modified.timestamp())
        return float(modified) if modified is not None else time.time()

    # -- holding it ----------------------------------------------------------------------

    def renew(self) -> None:
        """Check that this job still holds the lock and renew its lease (the master calls
        it every few seconds); raise :class:`~blockproc.LockLostError` if another job took
        it over."""
        checked = time.monotonic()
        self._check_not_taken_over()
        self._write_heartbeat(released=False)
        self._renewed = checked

    def guard(self) -> None:
        """Call before every write to the output: renews first unless the last renewal is
        recent enough that nobody can have taken the lock over since."""
        if time.monotonic() - self._renewed > self.lease / 3:
            self.renew()

    def release(self) -> None:
        """Let the next job take the lock at once (if this job still holds it)."""
        if self.generation and not self._exists(self._path(self.generation + 1)):
            self._write_heartbeat(released=True)
        self.generation = 0

    def _check_not_taken_over(self) -> None:
        if not self.generation:
            raise LockLostError(f"job {self.job_id} does not hold the lock of output "
                                f"{self.url!r}")
        successor = self._path(self.generation + 1)
        if not self._exists(successor):
            return
        try:
            taker = dict(read_json(self.fs, successor))
        except (FileNotFoundError, ValueError, TypeError):
            taker = {}
        held = time.monotonic() - self._renewed
        raise LockLostError(
            f"job {self.job_id} lost its lock on output {self.url!r} to job "
            f"{taker.get('job_id', '?')} after {held:.0f}s without renewing it (more than "
            f"the {self.lease:g}s lease: was it stopped or cut off?); it wrote nothing more. "
            f"The output belongs to job {taker.get('job_id', '?')} now")

    def _write_heartbeat(self, *, released: bool) -> None:
        write_json_atomic(self.fs, self._path(self.generation, ".heartbeat"),
                          {"job_id": self.job_id, "heartbeat": time.time(),
                           "released": released}, indent=None)


def _generation_of(name: str) -> int:
    """The generation a lock file's name says, or 0.

    >>> _generation_of("out/_blockproc/lock/0000000012.json"), _generation_of("x.tmp")
    (12, 0)
    """
    stem, ext = posixpath.splitext(posixpath.basename(name.rstrip("/")))
    return int(stem) if ext == ".json" and stem.isdigit() else 0


def _is_stale(holder: Mapping[str, Any], lease: float) -> bool:
    """A lock is stale when its last renewal is older than the lease, or when its job ran
    on this host in a process that no longer exists (so a crashed job resumes at once)."""
    if time.time() - float(holder.get("heartbeat", 0)) > lease:
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
    return False
