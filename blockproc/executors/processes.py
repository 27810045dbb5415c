"""The ``processes`` executor (the default): persistent local worker processes.

Each worker process gets the pickled mapper (:func:`~blockproc.executors.base.dumps`)
once, at start, then runs one attempt at a time, sending heartbeats with its progress. A
worker that dies (segfault, kill -9, ``os._exit``) is noticed at once through its process
sentinel: its attempt is reported lost, so the master runs the block again, and a fresh
worker takes its place.

Tiny blocks are packed: a worker may hold several attempts (:func:`held_limit`: about
1 MiB or 50 ms of work, at most 32), sent in one message and run one after the other,
each reported on its own as it ends, so it never waits for the master between two. Only
the first it holds can have started: when it dies, that one is lost and the others go
to other workers as they are (same attempt); a waiting attempt that is cancelled is
skipped; a running one is cancelled by killing its worker, as before.

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
import math
import multiprocessing
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import Any

from blockproc._frozen import field_names
from blockproc.errors import JobError
from blockproc.executors._lifeline import die_with_parent, libc
from blockproc.executors._mainguard import main_module_hidden
from blockproc.executors.base import (
    Event,
    Failed,
    Finished,
    Progress,
    describe_exit,
    dumps,
    failure_from,
)
from blockproc.model import BlockResult
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


class _Worker:
    """One worker process as the master sees it (a plain class: a dataclass's generated
    methods are compiled at import, which every job's start-up would pay)."""

    __slots__ = ("conn", "held", "inbox", "last_ended", "process", "ready", "since")

    def __init__(self, process: Any, conn: Connection, inbox: _Poller) -> None:
        self.process = process
        self.conn = conn
        self.inbox = inbox
        self.held: deque[BlockTask] = deque()
        """The attempts sent to this worker and not finished, in the order it runs them:
        the first is running (or about to), the others have not started."""
        self.ready = False
        self.last_ended: AttemptKey | None = None
        """The attempt of the last done or failed message read from this worker."""
        self.since = 0.0
        """When it last ended an attempt, or was given one while it held none."""


class ProcessExecutor:
    """Run attempts in ``num_slots`` worker processes, several queued per worker when
    blocks are tiny (see :func:`held_limit`)."""

    name = "processes"

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._payload = b""
        self._workers: list[_Worker] = []
        self._unsent: deque[BlockTask] = deque()  # accepted, not sent to a worker yet
        self._stash: list[Event] = []  # events read outside events(), for the next call
        self._host = socket.gethostname()
        self._sizes = _Mean()  # the blocks' sizes (bytes)
        self._seconds = _Mean(weight=0.2)  # the attempts' durations, recent ones first
        self._refreshed = time.monotonic()
        self._poller: _Poller | None = None  # the workers' pipes and sentinels

    @property
    def capacity(self) -> int:
        """How many attempts the master may hand over at once: :func:`held_limit` per
        worker (``num_slots`` when blocks are big or attempts slow)."""
        return self.num_slots * self.held_limit

    @property
    def idle_slots(self) -> int:
        """Workers that hold no attempt, less the attempts waiting to be sent: where a
        speculative copy would start now (attempts queued behind a straggler count as
        running for the master, yet no worker is busy with them)."""
        return max(0, sum(not w.held for w in self._workers) - len(self._unsent))

    @property
    def held_limit(self) -> int:
        """How many attempts one worker may hold now (see :func:`held_limit`)."""
        if self._sizes.count == 0:
            return 1
        return held_limit(self._sizes.value,
                          self._seconds.value if self._seconds.count else None)

    @property
    def holding(self) -> list[int]:
        """How many attempts each worker holds now (sent to it, not ended)."""
        return [len(w.held) for w in self._workers]

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Start the worker processes, each with its copy of ``mapper``."""
        self._payload = dumps(mapper)
        libc()  # loaded here once, so that no forked worker loads it again
        if attempts is not None and attempts.block_sizes:
            sizes = attempts.block_sizes
            self._sizes.add(sum(sizes) / len(sizes))
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
        self._poller = None
        return _Worker(process, parent, _Poller([parent]))

    def run(self, task: BlockTask) -> None:
        """Accept ``task``; it goes to a worker with room, with the others accepted
        since, in the next :meth:`events` call."""
        self._sizes.add(task.block.end - task.block.start)
        self._unsent.append(task)

    def events(self, timeout: float) -> list[Event]:
        """Send the accepted attempts, then collect messages and deaths, waiting up to
        ``timeout`` for the first."""
        self._dispatch()
        events, self._stash = self._stash, []
        if self._poller is None:  # a worker was replaced
            self._poller = _Poller([w.conn for w in self._workers] +
                                   [w.process.sentinel for w in self._workers])
        ready = self._poller.ready(0 if events else timeout)
        for worker in list(self._workers):
            alive = True
            if worker.conn in ready:
                alive = self._drain(worker, events)
            if not alive or worker.process.sentinel in ready:
                self._replace(worker, events)
        self._refresh(events)
        self._dispatch()  # top the workers up before the master commits what ended
        return events

    def _dispatch(self) -> None:
        """Share the accepted attempts among the workers that are down to half their
        limit, each time to the one holding fewest, and send each its share in one
        message. A worker whose attempt runs much longer than attempts take gets no
        more until it ends: nothing waits behind a straggler (which the master can then
        speculate on, once the others are done)."""
        unsent = self._unsent
        if not unsent:
            return
        limit, now = self.held_limit, time.monotonic()
        patience = max(PACK_SECONDS, 4 * self._seconds.value)
        shares = {id(w): (w, list[BlockTask]()) for w in self._workers
                  if len(w.held) <= limit // 2 and (not w.held or now - w.since < patience)}
        while unsent and shares:
            worker, share = min(shares.values(), key=lambda s: len(s[0].held) + len(s[1]))
            if len(worker.held) + len(share) >= limit:
                break
            share.append(unsent.popleft())
        for worker, share in shares.values():
            if share:
                if not worker.held:
                    worker.since = now
                worker.held.extend(share)
                with contextlib.suppress(OSError):  # it died: events() requeues these
                    worker.conn.send(share)

    def _drain(self, worker: _Worker, events: list[Event]) -> bool:
        """Read what ``worker`` sent; False once it has gone (its pipe closed)."""
        try:
            while worker.inbox.ready(0):
                self._handle(worker, worker.conn.recv(), events)
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, worker: _Worker, message: tuple[Any, ...], events: list[Event]) -> None:
        kind = message[0]
        held = worker.held
        if kind == "progress":
            if held and message[1] == held[0].key:
                events.append(Progress(message[1], message[2], message[3],
                                       self._name_of(worker)))
        elif kind in ("done", "failed"):
            key = worker.last_ended = message[1]
            worker.since = time.monotonic()
            task = _take(held, key)
            if task is None:
                return  # an attempt cancelled meanwhile: no event follows for it
            if kind == "done":
                result = BlockResult(task.block, *message[2])
                self._seconds.add(result.seconds)
                events.append(Finished(key, result))
            else:
                events.append(message[2])  # a Failed event
        elif kind == "ready":
            worker.ready = True
        elif kind == "fatal":
            raise JobError(f"a worker process could not start: {message[1]}")

    def _refresh(self, events: list[Event]) -> None:
        """Renew the leases of the attempts waiting behind a running one (at most every
        ``REPORT_INTERVAL``): they have not started, and their worker is alive."""
        now = time.monotonic()
        if now - self._refreshed < REPORT_INTERVAL:
            return
        self._refreshed = now
        events.extend(Progress(t.key, 0, 0) for t in self._unsent)
        for worker in self._workers:
            name = self._name_of(worker)
            events.extend(Progress(t.key, 0, 0, name) for t in islice(worker.held, 1, None))

    def _replace(self, worker: _Worker, events: list[Event], why: str = "") -> None:
        """A worker died: its running attempt is lost, the ones behind it go to others."""
        worker.process.join(timeout=1)
        self._drain(worker, events)  # all it sent before it died (its pipe may have been
        code = worker.process.exitcode  # seen closed after its sentinel, or not at all)
        if worker.held:
            running = worker.held.popleft()
            events.append(Failed(
                running.key, why or
                f"worker process {worker.process.pid} died ({describe_exit(code)})",
                worker=self._name_of(worker), lost=True))
        elif not worker.ready:
            raise JobError(
                f"a worker process exited ({describe_exit(code)}) before it was ready; "
                f"try executor='threads' or 'inline' to see the error in this process"
            )
        self._unsent.extendleft(reversed(worker.held))  # never started: run them elsewhere
        worker.conn.close()
        self._workers[self._workers.index(worker)] = self._spawn()

    def cancel(self, key: AttemptKey) -> None:
        """Stop attempt ``key``; no event follows for it. One not sent yet is dropped; one
        waiting in a worker is skipped there; a running one is stopped by killing its
        worker, which is gone when this returns (so it writes nothing more), and a fresh
        worker replaces it."""
        if _take(self._unsent, key) is not None:
            return
        worker = next((w for w in self._workers if any(t.key == key for t in w.held)), None)
        if worker is None:
            self._stash = [e for e in self._stash if e.key != key]
            return
        self._drain(worker, self._stash)  # it may have ended meanwhile
        self._stash = [e for e in self._stash if e.key != key]
        held = worker.held
        if not held or all(t.key != key for t in held):
            return
        if held[0].key != key:  # waiting: the worker skips it (if it has not started it)
            _take(held, key)
            with contextlib.suppress(OSError):
                worker.conn.send(("skip", key))
            return
        held.popleft()
        worker.process.kill()
        worker.process.join(timeout=5)
        self._drain(worker, self._stash)  # what it finished before it died
        if worker.last_ended == key and held:  # it had ended key and started the next
            self._replace(worker, self._stash, f"worker process {worker.process.pid} was "
                          f"stopped to cancel attempt {key} and this one had started")
            return
        self._unsent.extendleft(reversed(held))  # none of them started
        held.clear()
        worker.conn.close()
        self._workers[self._workers.index(worker)] = self._spawn()

    def close(self) -> None:
        """Ask idle workers to exit, kill busy ones, and wait for all."""
        self._unsent.clear()
        for worker in self._workers:
            try:
                if not worker.held:
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

    def _name_of(self, worker: _Worker) -> str:
        """The name :func:`blockproc.worker.worker_name` gives inside that process."""
        return f"{self._host}:{worker.process.pid}"


PACK_BYTES = 1 << 20
"""A worker holds attempts of about this many bytes of input in all (at least one)."""

PACK_SECONDS = 0.05
"""...and of about this many seconds of work, as the last attempts took."""

MAX_HELD = 32
"""...and never more than this many."""


def held_limit(block_bytes: float, attempt_seconds: float | None) -> int:
    """How many attempts a worker may hold at once: one for blocks of
    :data:`PACK_BYTES` or more, or of attempts that take over :data:`PACK_SECONDS` (each
    attempt is sent when a worker is free, as a ``multiprocessing.Pool`` sends tasks);
    for tiny blocks, up to :data:`MAX_HELD`, sent in one message and run one after the
    other, so that the worker does not wait for the master between two of them.
    ``attempt_seconds`` None (no attempt has ended yet) allows one: an attempt that
    waits long behind a slow one looks like a straggler to the master, which would run
    it a second time elsewhere.

    Examples
    --------
    >>> held_limit(64 * 2**20, 1.5), held_limit(4096, None), held_limit(4096, 0.0003)
    (1, 1, 32)
    >>> held_limit(256 * 1024, 0.001), held_limit(4096, 0.02)
    (4, 2)
    """
    by_size = int(PACK_BYTES // max(block_bytes, 1.0))
    by_time = 1 if attempt_seconds is None else int(PACK_SECONDS / max(attempt_seconds,
                                                                     1e-6))
    return max(1, min(MAX_HELD, by_size, by_time))


class _Mean:
    """A running mean, or an exponentially weighted one when ``weight`` is given."""

    def __init__(self, weight: float | None = None) -> None:
        self.weight = weight
        self.value = 0.0
        self.count = 0

    def add(self, x: float) -> None:
        self.count += 1
        w = self.weight if self.weight is not None and self.count > 1 else 1 / self.count
        self.value += (x - self.value) * w


_RESULT_FIELDS = field_names(BlockResult)[1:]
"""What a worker sends of a :class:`~blockproc.model.BlockResult`: all but its block."""


class _Poller:
    """Which of some handles (connections, process sentinels) are readable, through one
    ``select.poll`` kept between calls: ``multiprocessing.connection.wait`` and
    ``Connection.poll`` build a selector at every call (tens of microseconds, paid per
    message and per step of the master's loop). ``wait`` where there is no ``poll``."""

    def __init__(self, handles: list[Any]) -> None:
        self._handles = {_fd(h): h for h in handles}
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            for fd in self._handles:
                self._poll.register(fd, select.POLLIN)

    def ready(self, timeout: float) -> set[Any]:
        """The handles readable (or closed) within ``timeout`` seconds."""
        if self._poll is None:
            return set(wait(list(self._handles.values()), timeout))
        found = self._poll.poll(max(0, math.ceil(timeout * 1000)))
        return {self._handles[fd] for fd, _ in found if fd in self._handles}


def _fd(handle: Any) -> int:
    return handle if isinstance(handle, int) else int(handle.fileno())


def _take(tasks: deque[BlockTask], key: AttemptKey) -> BlockTask | None:
    """Remove and return the task of attempt ``key`` (the first one, mostly), or None."""
    if tasks and tasks[0].key == key:
        return tasks.popleft()
    for task in tasks:
        if task.key == key:
            tasks.remove(task)
            return task
    return None


def _receive(conn: Connection) -> Any:
    """Return the next message, or None when the master says stop or has gone away."""
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
    parent = parent or os.getppid()
    die_with_parent(parent)
    _keep_freed_memory()
    try:
        mapper = pickle.loads(payload)
    except BaseException as exc:
        conn.send(("fatal", f"cannot load the function in a worker: "
                            f"{''.join(traceback.format_exception_only(exc)).strip()}"))
        os._exit(1)
    conn.send(("ready",))
    _serve(conn, mapper, parent)
    _exit_quickly()


def _serve(conn: Connection, mapper: Mapper, parent: int) -> None:
    """Run the attempts the master sends, in order, until it says stop or goes away.

    A message is a list of tasks (run them after those already here), ``("skip", key)``
    (drop that attempt if it has not started) or None (stop). Each attempt's end is
    reported at once, in its own message.
    """
    name = worker_name()
    queue: deque[BlockTask] = deque()
    skip: set[AttemptKey] = set()
    inbox = _Poller([conn])
    while True:
        while not queue or inbox.ready(0):
            message = _receive(conn)
            if message is None:
                return
            if isinstance(message, list):
                queue.extend(message)
            else:
                skip.add(message[1])
        task = queue.popleft()
        if task.key in skip:
            skip.discard(task.key)
            continue
        try:
            result = run_block(task, mapper, _Reporter(conn, task.key, parent))
        except Exception as exc:
            ended: tuple[Any, ...] = ("failed", task.key, failure_from(task.key, exc, name))
        else:  # the fields' values: quicker to pickle than the dataclass (its fields
            # looked up for every object); the master has the block
            ended = ("done", task.key, [getattr(result, name) for name in _RESULT_FIELDS])
        try:
            conn.send(ended)
        except OSError:
            return  # the master has gone away


def _keep_freed_memory() -> None:
    """Let glibc serve big buffers (a block's bytes) from the heap and keep them when freed.

    By default every allocation over 32 MiB is a fresh ``mmap``, so each block's read
    page-faults and zeroes all its pages again (about half the cost of reading a cached
    64 MiB range); from the heap, the next block reuses the pages of the last one. Peak
    memory is unchanged: a worker holds one block at a time either way. A no-op where
    glibc's ``mallopt`` is not available.
    """
    with contextlib.suppress(AttributeError):  # no C library, or no mallopt in it
        libc().mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT)
        libc().mallopt(_M_TRIM_THRESHOLD, _HEAP_LIMIT)


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
