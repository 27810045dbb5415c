"""The worker side of the ``cluster`` executor: ``blockproc worker --connect HOST:PORT``.

A worker is one supervisor process holding one authenticated connection to the master,
and ``slots`` child processes that run attempts (so CPU-bound Python runs in parallel).
The supervisor relays tasks down and heartbeats, results and failures up; it stays
responsive while the slots compute, so it can answer pings, kill a cancelled attempt, and
notice a lost master. Slots die with their supervisor (``PR_SET_PDEATHSIG`` on Linux,
and a watchdog thread everywhere), so a killed worker leaves nothing writing behind it.

Slot processes outlive a job: the next master's job is loaded into the same processes
(no new interpreter, no imports again), and modules that a job's function imported are
dropped from the slot before the next job's function loads, so no job sees another's
module state. A slot busy when its job ends (cancelled, lost master) is killed and
replaced, as it may still be writing.

Messages (tuples, pickled, only after the handshake)::

    worker -> master   ("hello", info) ("ready",) ("unusable", why)
                       ("progress", key, bytes, records, slot_name)
                       ("done", key, BlockResult) ("cannot", key, why)
                       ("failed", key, error, traceback, worker, lost, retryable,
                        exception)      exception: cloudpickled, or b"" (text only)
                       ("ended",) ("ping",)
    master -> worker   ("job", job_id, mapper_payload) ("task", key, task_pickle)
                       ("cancel", key) ("end",) ("refused", why) ("ping",)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import posixpath
import random
import signal
import socket
import sys
import sysconfig
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from blockproc.errors import ConfigError
from blockproc.executors._lifeline import die_with_parent
from blockproc.executors._mainguard import main_module_hidden
from blockproc.executors._wire import (
    HEARTBEAT_TIMEOUT,
    PING_INTERVAL,
    PROTOCOL,
    HandshakeDropped,
    Link,
    connect,
    format_address,
    parse_address,
    python_version,
)
from blockproc.executors.base import describe_exit, failure_from
from blockproc.scheduler import AttemptKey
from blockproc.worker import BlockTask, run_block, worker_name

REPORT_INTERVAL = 0.5
"""Seconds between a running attempt's heartbeats (they cross the network)."""
RETRY_INTERVAL = 0.1
"""Seconds between tries to join a master that is not listening yet (between two jobs a
worker waits for the next one: a refused connect costs next to nothing, and a new job
should not wait for its warm workers)."""
HANDSHAKE_PATIENCE = 120.0
"""Seconds a worker keeps trying a master that accepts connections but closes them before
the handshake ends (a master under a flood drops its oldest unauthenticated ones)."""
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
_CONTEXT = multiprocessing.get_context("spawn")

Log = Callable[[str], None]


def blockproc_version() -> str:
    """Return the installed blockproc version, or ``"unknown"``."""
    try:
        return metadata.version("blockproc")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_worker(address: str, *, authkey: bytes, slots: int, once: bool = False,
               log: Log = print, exit_with: int | None = None,
               handshake_patience: float = HANDSHAKE_PATIENCE) -> int:
    """Serve masters at ``address`` until interrupted; return the exit code.

    Connection refused (no master yet, or between two jobs) is retried every half second.
    A connection closed before the handshake ended (a busy or flooded master) is retried
    with exponential backoff for ``handshake_patience`` seconds, then this returns 1 with
    a message saying why. A wrong authkey is not retried: it raises ConfigError. With
    ``once``, return after the first master ends its job or goes away. With
    ``exit_with``, give up once that process (the master that started this worker) is
    gone.
    """
    host, port = parse_address(address, option="--connect")
    slots_kept: list[_Slot] = []  # idle slot processes, kept from one job to the next
    try:
        return _serve(host, port, authkey, slots, once, log, exit_with, handshake_patience,
                      slots_kept)
    finally:
        for slot in slots_kept:
            _kill(slot)


def _serve(host: str, port: int, authkey: bytes, slots: int, once: bool, log: Log,
           exit_with: int | None, handshake_patience: float, kept: list[_Slot]) -> int:
    where = format_address(host, port)
    waiting = False
    dropped = _Backoff(handshake_patience)
    while True:
        try:
            link = connect(host, port, authkey)
        except HandshakeDropped as exc:
            if exit_with is not None and not _alive(exit_with):
                return 1
            delay = dropped.next_delay()
            if delay is None:
                log(f"error: gave up joining the master at {where}: it accepted "
                    f"{dropped.tries} connections in {dropped.elapsed():.0f}s and dropped each "
                    f"during the authkey handshake (the last one {exc}). It may be flooded "
                    f"with connections from this machine's address, or not be a blockproc "
                    f"master; its log names what it dropped")
                return 1
            if dropped.tries == 1 or dropped.tries % 10 == 0:
                log(f"the master at {where} dropped the connection during the authkey "
                    f"handshake ({exc}); trying again with backoff for up to "
                    f"{handshake_patience:g}s (attempt {dropped.tries})")
            time.sleep(delay)
            continue
        except OSError as exc:
            dropped.reset()
            if exit_with is not None and not _alive(exit_with):
                return 1
            if not waiting:
                log(f"waiting for the master at {where} ({exc.strerror or exc}); retrying "
                    f"every {RETRY_INTERVAL:g}s, Ctrl-C to stop")
                waiting = True
            time.sleep(RETRY_INTERVAL)
            continue
        waiting = False
        if dropped.tries:
            log(f"joined the master at {where} after {dropped.tries} dropped "
                f"connection{'s' if dropped.tries != 1 else ''}")
        dropped.reset()
        log(f"connected to the master at {where} as {worker_name()} with {slots} "
            f"slot{'s' if slots != 1 else ''}")
        outcome = _Session(link, slots, log, kept).run()
        if outcome == "refused":
            return 1
        if once:
            return 0
        log(f"waiting for the next job from {where}")
        time.sleep(RETRY_INTERVAL)


class _Backoff:
    """Delays between tries: exponential with jitter, until ``patience`` seconds pass."""

    def __init__(self, patience: float) -> None:
        self._patience = patience
        self._first = 0.0
        self._delay = BACKOFF_FIRST
        self.tries = 0

    def reset(self) -> None:
        self.tries = 0
        self._delay = BACKOFF_FIRST

    def elapsed(self) -> float:
        return time.monotonic() - self._first

    def next_delay(self) -> float | None:
        """Count a failed try; return how long to sleep, or None to give up."""
        if self.tries == 0:
            self._first = time.monotonic()
        self.tries += 1
        remaining = self._patience - self.elapsed()
        if remaining <= 0:
            return None
        delay = min(self._delay * random.uniform(0.5, 1.0), remaining)
        self._delay = min(self._delay * 2, BACKOFF_MAX)
        return delay


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Slot:
    process: Any
    conn: Connection
    key: AttemptKey | None = None
    ready: bool = False


class _Session:
    """One connection to one master: at most one job."""

    def __init__(self, link: Link, num_slots: int, log: Log,
                 kept: list[_Slot] | None = None) -> None:
        self._link = link
        self._num_slots = num_slots
        self._log = log
        self._name = worker_name()
        self._kept = [] if kept is None else kept  # idle slots of earlier jobs, and ours
        self._slots: list[_Slot] = []
        self._queue: deque[tuple[AttemptKey, bytes]] = deque()
        self._payload = b""
        self._job = ""
        self._announced = False
        self._unusable = False
        self._why = ""
        self._last_sent = 0.0
        self._last_heard = time.monotonic()
        self._num_done = 0

    def _send(self, message: tuple[Any, ...]) -> None:
        self._link.conn.send(message)
        self._last_sent = time.monotonic()

    def run(self) -> str:
        """Serve the master until it ends the job, refuses us or goes away."""
        try:
            self._send(("hello", {"protocol": PROTOCOL, "python": python_version(),
                                  "blockproc": blockproc_version(), "name": self._name,
                                  "pid": os.getpid(), "slots": self._num_slots}))
            while True:
                outcome = self._step()
                if outcome:
                    return outcome
        except (EOFError, OSError) as exc:
            self._log(f"lost the connection to the master ({type(exc).__name__}: {exc}); "
                      f"stopped {self._busy()} running attempts")
            return "lost"
        finally:
            self._keep_idle_slots()
            self._link.close()

    def _busy(self) -> int:
        return sum(1 for s in self._slots if s.key is not None)

    def _step(self) -> str:
        handles: list[Any] = [self._link.conn]
        handles += [s.conn for s in self._slots] + [s.process.sentinel for s in self._slots]
        ready = set(wait(handles, PING_INTERVAL))
        now = time.monotonic()
        if self._link.conn in ready:
            self._last_heard = now
            while self._link.conn.poll():
                outcome = self._from_master(self._link.conn.recv())
                if outcome:
                    return outcome
        for slot in list(self._slots):
            alive = True
            if slot.conn in ready:
                alive = self._from_slot(slot)
            if not alive or slot.process.sentinel in ready:
                self._slot_died(slot)
        self._dispatch()
        if now - self._last_heard > HEARTBEAT_TIMEOUT:
            self._log(f"no word from the master for {HEARTBEAT_TIMEOUT:g}s; dropping the "
                      f"connection and stopping {self._busy()} running attempts")
            return "lost"
        if time.monotonic() - self._last_sent >= PING_INTERVAL:
            self._send(("ping",))
        return ""

    # -- master ---------------------------------------------------------------------

    def _from_master(self, message: tuple[Any, ...]) -> str:
        kind = message[0]
        if kind == "job":
            self._job, self._payload = message[1], message[2]
            reused = self._load_kept()
            started = self._num_slots - reused
            self._log(f"job {self._job}: {reused} slot process{'es' if reused != 1 else ''} "
                      f"kept from the last job, {started} started")
            for _ in range(started):
                self._slots.append(self._spawn())
        elif kind == "task":
            if self._unusable:
                self._send(("cannot", message[1], self._why))
            else:
                self._queue.append((message[1], message[2]))
        elif kind == "cancel":
            self._cancel(message[1])
        elif kind == "end":
            self._keep_idle_slots()
            self._send(("ended",))
            self._log(f"job {self._job or '-'} ended; this worker ran {self._num_done} "
                      f"block{'s' if self._num_done != 1 else ''}")
            return "ended"
        elif kind == "refused":
            self._log(f"error: the master refused this worker: {message[1]}")
            return "refused"
        return ""

    def _cancel(self, key: AttemptKey) -> None:
        self._queue = deque(item for item in self._queue if item[0] != key)
        for index, slot in enumerate(self._slots):
            if slot.key == key:
                _kill(slot)
                self._slots[index] = self._spawn()

    # -- slots ----------------------------------------------------------------------

    def _load_kept(self) -> int:
        """Hand this job's function to the slots kept from the last job; return how many."""
        while self._kept and len(self._slots) < self._num_slots:
            slot = self._kept.pop()
            try:
                slot.conn.send(("job", self._payload))
            except OSError:
                _kill(slot)
                continue
            slot.ready, slot.key = False, None
            self._slots.append(slot)
        for slot in self._kept:  # more than this worker's slots now: not needed
            _kill(slot)
        self._kept.clear()
        return len(self._slots)

    def _keep_idle_slots(self) -> None:
        """End the job: kill the slots still running an attempt (they may be writing),
        keep the idle ones for the next job."""
        for slot in self._slots:
            if slot.key is None and slot.ready and slot.process.is_alive() \
                    and not self._unusable:
                self._kept.append(slot)
            else:
                _kill(slot)
        self._slots.clear()

    def _spawn(self) -> _Slot:
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=slot_main, args=(child, self._payload, os.getpid()),
                                   name="blockproc-slot", daemon=True)
        with main_module_hidden():
            process.start()
        child.close()
        return _Slot(process, parent)

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.ready and slot.key is None:
                key, blob = self._queue.popleft()
                try:
                    slot.conn.send(("task", key, blob))
                except OSError:  # the slot just died; its sentinel says so next round
                    self._queue.appendleft((key, blob))
                else:
                    slot.key = key

    def _from_slot(self, slot: _Slot) -> bool:
        try:
            while slot.conn.poll():
                message = slot.conn.recv()
                kind = message[0]
                if kind == "ready":
                    slot.ready = True
                    if not self._announced and all(s.ready for s in self._slots):
                        self._announced = True
                        self._send(("ready",))
                        self._log(f"job {self._job}: ready, the function loaded in every slot")
                elif kind == "fatal":
                    self._become_unusable(message[1])
                elif kind == "progress":
                    if message[1] == slot.key:
                        self._send(message)
                elif kind in ("done", "failed", "cannot"):
                    if message[1] == slot.key:
                        slot.key = None
                        if kind == "done":
                            self._num_done += 1
                        self._send(message)
                    if kind == "cannot" and not self._unusable:
                        self._log(f"error: cannot run this job here: {message[2]}")
                        self._unusable, self._why = True, message[2]
                        self._refuse_queued()
        except (EOFError, OSError):
            return False
        return True

    def _become_unusable(self, why: str) -> None:
        if self._unusable:
            return
        self._unusable, self._why = True, why
        self._log(f"error: {why}")
        self._send(("unusable", why))
        self._refuse_queued()
        self._stop_slots()

    def _refuse_queued(self) -> None:
        while self._queue:
            self._send(("cannot", self._queue.popleft()[0], self._why))

    def _slot_died(self, slot: _Slot) -> None:
        if slot not in self._slots:
            return
        slot.process.join(timeout=1)
        code = slot.process.exitcode
        index = self._slots.index(slot)
        slot.conn.close()
        if slot.key is not None:
            self._send(("failed", slot.key,
                        f"slot process {slot.process.pid} of worker {self._name} died "
                        f"({describe_exit(code)})", "",
                        f"{socket.gethostname()}:{slot.process.pid}", True, True))
        elif not slot.ready:
            self._become_unusable(f"a slot process of worker {self._name} exited "
                                  f"({describe_exit(code)}) before it could load the job")
            return
        self._slots[index] = self._spawn()

    def _stop_slots(self) -> None:
        for slot in self._slots:
            _kill(slot)
        self._slots.clear()


def _kill(slot: _Slot) -> None:
    """Kill a slot process and wait until it is gone, so it writes nothing more."""
    with contextlib.suppress(OSError, ValueError):
        slot.process.kill()
        slot.process.join(timeout=5)
    with contextlib.suppress(OSError):
        slot.conn.close()


# -- inside a slot process ------------------------------------------------------------


class _Reporter:
    """Send an attempt's progress up, at most every ``REPORT_INTERVAL`` seconds."""

    def __init__(self, conn: Connection, key: AttemptKey, name: str) -> None:
        self._conn = conn
        self._key = key
        self._name = name
        self._last = 0.0

    def __call__(self, bytes_done: int, records_done: int) -> None:
        now = time.monotonic()
        if now - self._last >= REPORT_INTERVAL:
            self._last = now
            self._conn.send(("progress", self._key, bytes_done, records_done, self._name))


class StorageUnreachable(OSError):
    """This worker cannot see the job's input or output."""


def check_storage(task: BlockTask, seen: set[str]) -> None:
    """Raise StorageUnreachable unless this machine sees the input file and the output
    directory, if the job has one (each path is checked once per slot)."""
    host = socket.gethostname()
    path = task.file.path
    if path not in seen:
        if not task.input_fs.exists(path):
            raise StorageUnreachable(
                f"the input {path!r} does not exist on worker host {host!r}; every worker "
                f"must see the same storage: a shared disk mounted at the same path, or a "
                f"URL such as s3://..."
            )
        seen.add(path)
    if task.output_fs is None:  # the job has no output: its values go to the master
        return
    marker = "/_temporary/"
    root = task.staging_path.split(marker, 1)[0] if marker in task.staging_path else \
        posixpath.dirname(task.staging_path)
    if root not in seen:
        if not task.output_fs.isdir(root):
            raise StorageUnreachable(
                f"the output directory {root!r} does not exist on worker host {host!r}; "
                f"every worker must see the same storage as the master"
            )
        seen.add(root)


def _summary(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


def slot_main(conn: Connection, payload: bytes, parent_pid: int) -> None:
    """Body of a slot process: load the job's function, run attempts as they come, and
    load the next job's function when it comes (``("job", payload)``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides what Ctrl-C means
    die_with_parent(parent_pid)
    baseline = set(sys.modules)  # what the slot imported itself; jobs add to it
    mapper = _load(conn, payload)
    name = worker_name()
    seen: set[str] = set()
    try:
        while (message := conn.recv()) is not None:
            if message[0] == "job":
                del mapper
                _forget_job_modules(baseline)
                mapper = _load(conn, message[1])
                seen.clear()
                continue
            _, key, blob = message
            try:
                task = pickle.loads(blob)
                check_storage(task, seen)
            except Exception as exc:
                conn.send(("cannot", key, _summary(exc)))
                continue
            try:
                result = run_block(task, mapper, _Reporter(conn, key, name))
            except Exception as exc:
                failed = failure_from(key, exc, name)
                conn.send(("failed", key, failed.error, failed.traceback, failed.worker, False,
                           failed.retryable, failed.exception))
            else:
                conn.send(("done", key, result))
    except (EOFError, OSError):
        os._exit(1)  # the supervisor is gone


def _load(conn: Connection, payload: bytes) -> Any:
    """Load a job's function and say ready, or say why not and exit."""
    try:
        mapper = cloudpickle.loads(payload)
    except BaseException as exc:
        conn.send(("fatal", f"worker {worker_name()} cannot load the job's function: "
                            f"{_summary(exc)}; install the module it comes from on this "
                            f"machine (or define the function in the script or notebook, "
                            f"so it travels by value)"))
        os._exit(1)
    conn.send(("ready",))
    return mapper


def _forget_job_modules(baseline: set[str]) -> None:
    """Drop the user's modules imported since ``baseline`` (where the last job's function
    came from), so the next job imports them afresh, with fresh module state.

    Only plain ``.py`` modules outside the Python installation are dropped: the standard
    library, installed packages and C extensions stay loaded (some cannot be loaded twice).
    """
    installed = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")})
    for name in set(sys.modules) - baseline:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) or ""
        if name == "blockproc" or name.startswith("blockproc.") or \
                not path.endswith(".py") or path.startswith(installed):
            continue
        sys.modules.pop(name, None)


def load_authkey(authkey_file: str | None) -> bytes:
    """Return the worker's key from ``authkey_file`` or ``$BLOCKPROC_AUTHKEY``."""
    from blockproc.executors._wire import AUTHKEY_ENV, env_authkey, read_authkey_file

    if authkey_file is not None:
        return read_authkey_file(authkey_file)
    key = env_authkey()
    if key is None:
        raise ConfigError(
            f"no authkey: set {AUTHKEY_ENV} or pass --authkey-file FILE with the key of the "
            f"master (the master prints how a worker joins when it starts)"
        )
    return key
