"""The ``processes`` executor (the default): persistent local worker processes.

Each worker process gets the cloudpickled mapper once, at start, then runs one attempt
at a time, sending heartbeats with its progress. A worker that dies (segfault, kill -9,
``os._exit``) is noticed at once through its process sentinel: its attempt is reported
lost, so the master runs the block again, and a fresh worker takes its place.

A worker process dies with its master: when the master is killed (kill -9 included), each
worker stops within a fraction of a second, even in the middle of a long call of the
user's function (see :func:`~blockproc.executors._lifeline.die_with_parent`); the
master's successor runs its block again.

Start-up. Workers are fresh processes for every job, so no job can see another's function
or module state, and they start warm: on Linux, from a master with no other thread
running (a script calling ``map_lines``), they are forked from it with everything already
imported (as ``multiprocessing.Pool`` does); otherwise (a notebook kernel, ``submit``'s
background thread) they are forked from a template process started on the first job,
which has imported the engine and never runs user code (``multiprocessing``'s
``forkserver``: kept alive for later jobs, stopped when the interpreter exits). Where
neither exists they are spawned.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from blockproc.errors import JobError
from blockproc.executors._mainguard import main_module_hidden
from blockproc.executors.base import (
    Event,
    Failed,
    Finished,
    Progress,
    describe_exit,
    failure_from,
)
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.worker import BlockTask, Mapper, run_block, worker_name

REPORT_INTERVAL = 0.2
_PRELOAD = ["blockproc.executors.processes"]
"""What the template process imports once, before it forks any worker."""


_FORK_SAFE_THREADS = frozenset({"fsspecIO"})
"""Threads a fork may leave behind: fsspec's event-loop thread (s3fs, gcsfs...), whose
loop, lock and cached filesystems fsspec itself renews in a forked child."""


def _fork_safe(thread: threading.Thread) -> bool:
    """True for fsspec's event-loop thread and for the threads of that loop's default
    executor (aiobotocore builds each client's SSL context there, ``asyncio.to_thread``,
    so every s3fs job has one): the master calls fsspec synchronously, so they are idle
    when it forks, and fsspec starts a new loop in the child."""
    if thread.name in _FORK_SAFE_THREADS:
        return True
    asyn = sys.modules.get("fsspec.asyn")
    loop = asyn.loop[0] if asyn is not None else None
    return thread in getattr(getattr(loop, "_default_executor", None), "_threads", ())


def start_method() -> str:
    """Return how the next worker process starts: ``"fork"`` from this process when it
    runs no other thread (forking beside a running thread can copy a held lock; fsspec's
    event-loop thread excepted: fsspec renews its state in a forked child),
    else ``"forkserver"`` (fork from a clean template process), else ``"spawn"``.

    Examples
    --------
    >>> start_method() in ("fork", "forkserver", "spawn")
    True
    """
    methods = multiprocessing.get_all_start_methods()
    me = threading.current_thread()
    alone = all(t is me or _fork_safe(t) for t in threading.enumerate())
    if sys.platform == "linux" and "fork" in methods and alone:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _context() -> Any:
    method = start_method()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(_PRELOAD)
    return context


@dataclass
class _Worker:
    process: Any
    conn: Connection
    key: AttemptKey | None = None
    ready: bool = False


class ProcessExecutor:
    """Run attempts in ``num_slots`` spawned worker processes."""

    name = "processes"

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._payload = b""
        self._workers: list[_Worker] = []

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Start the worker processes, each with its copy of ``mapper``."""
        self._payload = cloudpickle.dumps(mapper)
        for _ in range(self.num_slots):
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        context = _context()
        parent, child = context.Pipe()
        # A worker forked by the template process watches that one, which ends with us.
        watch = 0 if context.get_start_method() == "forkserver" else os.getpid()
        process = context.Process(target=_worker_main, args=(child, self._payload, watch),
                                  name="blockproc-worker", daemon=True)
        with main_module_hidden():
            process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, task: BlockTask) -> None:
        """Send ``task`` to an idle worker."""
        worker = next(w for w in self._workers if w.key is None)
        worker.key = task.key
        worker.conn.send(task)

    def events(self, timeout: float) -> list[Event]:
        """Collect messages and deaths, waiting up to ``timeout`` for the first."""
        handles: list[Any] = [w.conn for w in self._workers]
        handles += [w.process.sentinel for w in self._workers]
        ready = set(wait(handles, timeout))
        events: list[Event] = []
        for worker in list(self._workers):
            alive = True
            if worker.conn in ready:
                alive = self._drain(worker, events)
            if not alive or worker.process.sentinel in ready:
                self._replace(worker, events)
        return events

    def _drain(self, worker: _Worker, events: list[Event]) -> bool:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                kind = message[0]
                if kind == "progress":
                    if message[1] == worker.key:
                        events.append(Progress(message[1], message[2], message[3],
                                               _name_of(worker)))
                elif kind == "done":
                    if worker.key is not None:
                        events.append(Finished(worker.key, message[1]))
                    worker.key = None
                elif kind == "failed":
                    if worker.key is not None:
                        events.append(message[1])  # a Failed event
                    worker.key = None
                elif kind == "ready":
                    worker.ready = True
                elif kind == "fatal":
                    raise JobError(f"a worker process could not start: {message[1]}")
        except (EOFError, OSError):
            return False
        return True

    def _replace(self, worker: _Worker, events: list[Event]) -> None:
        worker.process.join(timeout=1)
        code = worker.process.exitcode
        if worker.key is not None:
            events.append(Failed(
                worker.key, f"worker process {worker.process.pid} died ({describe_exit(code)})",
                worker=_name_of(worker), lost=True))
        elif not worker.ready:
            raise JobError(
                f"a worker process exited ({describe_exit(code)}) before it was ready; "
                f"try executor='threads' or 'inline' to see the error in this process"
            )
        worker.conn.close()
        self._workers[self._workers.index(worker)] = self._spawn()

    def cancel(self, key: AttemptKey) -> None:
        """Kill the worker running ``key`` and wait until it is gone (so it writes nothing
        more); a fresh worker replaces it."""
        for index, worker in enumerate(self._workers):
            if worker.key == key:
                worker.process.kill()
                worker.process.join(timeout=5)
                worker.conn.close()
                self._workers[index] = self._spawn()

    def close(self) -> None:
        """Ask idle workers to exit, kill busy ones, and wait for all."""
        for worker in self._workers:
            try:
                if worker.key is None:
                    worker.conn.send(None)
                else:
                    worker.process.kill()
            except OSError:
                worker.process.kill()
        deadline = time.monotonic() + 5
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=1)
            worker.conn.close()
        self._workers.clear()


def _name_of(worker: _Worker) -> str:
    """The name :func:`blockproc.worker.worker_name` gives inside that process."""
    return f"{socket.gethostname()}:{worker.process.pid}"


def _receive(conn: Connection) -> Any:
    """Return the next task, or None when the master says stop or has gone away."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


class _Reporter:
    """Send an attempt's progress to the master, at most every ``REPORT_INTERVAL`` seconds."""

    def __init__(self, conn: Connection, key: AttemptKey, parent: int) -> None:
        self._conn = conn
        self._key = key
        self._parent = parent
        self._last = time.monotonic()  # an attempt over within the interval sends none

    def __call__(self, bytes_done: int, records_done: int) -> None:
        if os.getppid() != self._parent:
            os._exit(1)  # the master died: stop, its successor will run this block again
        now = time.monotonic()
        if now - self._last >= REPORT_INTERVAL:
            self._last = now
            self._conn.send(("progress", self._key, bytes_done, records_done))


def _worker_main(conn: Connection, payload: bytes, parent: int) -> None:
    """Body of a worker process: load the mapper once, then run attempts until told to
    stop; exit at once if ``parent`` dies (0: this process's parent, the template
    process, which ends with the master)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides what Ctrl-C means
    from blockproc.executors._lifeline import die_with_parent  # the worker's only

    parent = parent or os.getppid()
    die_with_parent(parent)
    _keep_freed_memory()
    try:
        mapper = cloudpickle.loads(payload)
    except BaseException as exc:
        conn.send(("fatal", f"cannot load the function in a worker: "
                            f"{''.join(traceback.format_exception_only(exc)).strip()}"))
        os._exit(1)
    conn.send(("ready",))
    name = worker_name()
    while (task := _receive(conn)) is not None:
        try:
            result = run_block(task, mapper, _Reporter(conn, task.key, parent))
        except Exception as exc:
            message: tuple[Any, ...] = ("failed", failure_from(task.key, exc, name))
        else:
            message = ("done", result)
        try:
            conn.send(message)
        except OSError:
            break  # the master has gone away
    _exit_quickly()


def _keep_freed_memory() -> None:
    """Let glibc serve big buffers (a block's bytes) from the heap and keep them when freed.

    By default every allocation over 32 MiB is a fresh ``mmap``, so each block's read
    page-faults and zeroes all its pages again (about half the cost of reading a cached
    64 MiB range); from the heap, the next block reuses the pages of the last one. Peak
    memory is unchanged: a worker holds one block at a time either way. A no-op where
    glibc's ``mallopt`` is not available.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        limit = ctypes.c_int(_HEAP_LIMIT)
        libc.mallopt(_M_MMAP_THRESHOLD, limit)
        libc.mallopt(_M_TRIM_THRESHOLD, limit)
    except (OSError, AttributeError):
        pass


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HEAP_LIMIT = 1 << 30


def _exit_quickly() -> None:
    """End the worker process without tearing down the interpreter (module cleanup and a
    final garbage collection take ~50 ms, which the master would wait for in ``close``).
    Every attempt's part-file is closed by now; only stdio buffers need flushing."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(0)
