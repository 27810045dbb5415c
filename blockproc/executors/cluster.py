"""The ``cluster`` executor: a master that hands blocks to workers over TCP.

The job's master (``blockproc run --executor cluster``, or ``executor="cluster"`` in the
API) listens on ``listen`` (127.0.0.1 and a free port unless told otherwise). Workers
join at any time with ``blockproc worker --connect HOST:PORT``; each one authenticates
with the shared authkey (HMAC challenge both ways, before anything is unpickled), gets
the job's function, and then gets blocks as soon as it has free slots. Workers send
heartbeats with the progress of each attempt; a worker that disconnects or falls silent
is lost, and its attempts are reported ``Failed(lost=True)``, so the master's scheduler
runs those blocks again. Data never passes through the master: workers read and write
the shared storage themselves.

Connections that have not authenticated yet are held to a deadline and to a few per
source address, the oldest dropped first (:class:`~blockproc.executors._wire.Gate`), so
idle, garbage or unauthenticated connections, however many, cannot lock workers out; a
worker whose handshake was dropped tries again with backoff.

``workers=N`` also starts N local worker processes on this machine (one slot each).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import cloudpickle

from blockproc.errors import ConfigError, JobError
from blockproc.executors._cluster_worker import load_authkey, run_worker
from blockproc.executors._status import worker_line
from blockproc.executors._wire import (
    AUTHKEY_ENV,
    HANDSHAKE_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    PING_INTERVAL,
    PROTOCOL,
    Gate,
    Link,
    check_authkey,
    env_authkey,
    format_address,
    generate_authkey,
    parse_address,
    python_version,
    read_authkey_file,
)
from blockproc.executors.base import Event, Failed, Finished, Progress, describe_exit
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.worker import BlockTask, Mapper

__all__ = ["ClusterExecutor", "load_authkey", "run_worker"]

DEFAULT_LISTEN = "127.0.0.1:0"
OPTIONS = ("listen", "authkey", "authkey_file")
"""Keys of ``executor_options`` for ``executor="cluster"``."""
STATUS_INTERVAL = 30.0

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"blockproc master: {line}", file=sys.stderr, flush=True)


@dataclass
class _Remote:
    """One connected worker, as the master sees it."""

    link: Link
    name: str
    last_heard: float
    slots: int = 0
    state: str = "joining"  # joining (authenticated) -> loading (got the job) -> ready
    unusable: str = ""
    keys: set[AttemptKey] = field(default_factory=set)
    ended: bool = False
    pid: int = 0
    blocks_done: int = 0
    bytes_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def free(self) -> int:
        return self.slots - len(self.keys) if self.state == "ready" and not self.unusable else 0


class ClusterExecutor:
    """Run attempts on workers that connect over TCP with a shared authkey.

    Parameters
    ----------
    listen : str, default "127.0.0.1:0"
        ``HOST:PORT`` to listen on; port 0 picks a free one. Use ``0.0.0.0:7077`` to
        accept workers from other machines.
    authkey : str or bytes, optional
        The shared key (at least 16 characters). Default: ``$BLOCKPROC_AUTHKEY``, else a
        new random key, printed in the join command.
    authkey_file : str, optional
        Read the key from this file instead (the join command then says
        ``--authkey-file`` with the same path).
    local_workers : int, default 0
        Worker processes to start on this machine, one slot each.
    log : callable, optional
        Where status lines go; default stderr.
    """

    name = "cluster"

    def __init__(self, *, listen: str = DEFAULT_LISTEN, authkey: str | bytes | None = None,
                 authkey_file: str | os.PathLike[str] | None = None, local_workers: int = 0,
                 log: Log | None = None, heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                 status_interval: float = STATUS_INTERVAL,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self._host, self._port = parse_address(listen, option="listen")
        if authkey is not None and authkey_file is not None:
            raise ConfigError("give the cluster authkey or authkey_file, not both")
        if authkey is not None:
            self._key = check_authkey(authkey, source="the authkey option")
            self._key_hint = f"{AUTHKEY_ENV}=<the master's key> {{command}}"
        elif authkey_file is not None:
            self._key = read_authkey_file(authkey_file)
            self._key_hint = f"{{command}} --authkey-file {os.fspath(authkey_file)}"
        elif (from_env := env_authkey()) is not None:
            self._key = from_env
            self._key_hint = f"{AUTHKEY_ENV}=<the same key as the master> {{command}}"
        else:
            self._key = generate_authkey()
            self._key_hint = f"{AUTHKEY_ENV}={self._key.decode()} {{command}}"
        if isinstance(local_workers, bool) or not isinstance(local_workers, int) \
                or local_workers < 0:
            raise ConfigError(f"local_workers must be an int >= 0, got {local_workers!r}")
        self._num_local = local_workers
        self._log = log or _stderr
        self._heartbeat_timeout = heartbeat_timeout
        self._status_interval = status_interval
        self._handshake_timeout = handshake_timeout
        self._job_id = f"cluster-{uuid.uuid4().hex[:8]}"
        self._payload = b""
        self._server: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._gate: Gate | None = None
        self._closing = threading.Event()
        self._joined: queue.SimpleQueue[Link] = queue.SimpleQueue()
        self._wake_recv: socket.socket | None = None
        self._wake_send: socket.socket | None = None
        self._workers: list[_Remote] = []
        self._waiting: deque[BlockTask] = deque()
        self._buffer: list[Event] = []
        self._attempts: Scheduler | None = None  # the job's attempt state, from start()
        self._local: list[subprocess.Popen[bytes]] = []
        self._peak_slots = 0
        self.num_slots = 0
        self._joined_pids: set[int] = set()
        self._pinger: threading.Thread | None = None
        self._last_status = time.monotonic()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], workers: int | None) -> ClusterExecutor:
        """Build from ``executor_options`` (keys ``listen``, ``authkey``, ``authkey_file``)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown executor_options {unknown} for executor='cluster'; "
                              f"valid keys: {', '.join(OPTIONS)}")
        return cls(listen=options.get("listen", DEFAULT_LISTEN),
                   authkey=options.get("authkey"), authkey_file=options.get("authkey_file"),
                   local_workers=workers or 0)

    # -- the Executor protocol ------------------------------------------------------

    def _count_slots(self) -> None:
        """Update ``num_slots``: the slots of the workers ready to run this job (after
        close, the most there were, for the manifest)."""
        ready = sum(w.slots for w in self._workers if w.state == "ready" and not w.unusable)
        self._peak_slots = max(self._peak_slots, ready)
        self.num_slots = self._peak_slots if self._closing.is_set() else ready

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the master listens on (the real port once started)."""
        return self._host, self._port

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Listen, print how a worker joins, and start the local workers if any;
        ``attempts`` is where :meth:`describe` reads the attempts' progress."""
        self._payload = cloudpickle.dumps(mapper)
        self._attempts = attempts
        try:
            server = socket.create_server((self._host, self._port),
                                          family=socket.AF_INET6 if ":" in self._host
                                          else socket.AF_INET)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {format_address(self._host, self._port)}: {exc}; choose "
                f"another port, or port 0 for a free one"
            ) from None
        self._server = server
        self._wake_recv, self._wake_send = socket.socketpair()
        self._port = server.getsockname()[1]
        self._gate = Gate(server, self._key, admit=self._joining, log=self._log,
                          timeout=self._handshake_timeout)
        self._accepter = threading.Thread(target=self._gate.serve, daemon=True,
                                          name="blockproc-accept")
        self._accepter.start()
        self._pinger = threading.Thread(target=self._ping_loop, daemon=True,
                                        name="blockproc-ping")
        self._pinger.start()
        where = format_address(self._host, self._port)
        self._log(f"job {self._job_id} listening on {where} (authenticated, not encrypted)")
        if self._host not in ("127.0.0.1", "::1", "localhost"):
            self._log("traffic to workers is not encrypted: keep it on a trusted network or "
                      "tunnel it (ssh -L); see README 'Running on many machines'")
        if self._host in ("127.0.0.1", "::1", "localhost"):
            scope = ("on this machine (the master listens on loopback only; listen on "
                     "0.0.0.0:PORT to accept other machines)")
        else:
            scope = "on each machine"
        command = f"blockproc worker --connect {self._join_address()}"
        self._log(f"start workers {scope} with:\n    "
                  f"{self._key_hint.format(command=command)}")
        for _ in range(self._num_local):
            self._local.append(self._start_local())

    def run(self, task: BlockTask) -> None:
        """Send ``task`` to the worker with the most free slots (or hold it until one is)."""
        self._waiting.append(task)
        self._dispatch()

    def events(self, timeout: float) -> list[Event]:
        """Return heartbeats, results and losses, waiting up to ``timeout`` for the first."""
        if self._server is None or self._wake_recv is None:
            raise RuntimeError("start() the executor first")
        self._admit()
        if not self._buffer:
            handles: list[Any] = [w.link.conn for w in self._workers] + [self._wake_recv]
            ready = set(wait(handles, timeout))
            if self._wake_recv in ready:
                with contextlib.suppress(OSError):
                    self._wake_recv.recv(4096)
            self._admit()
            for worker in list(self._workers):
                if worker.link.conn in ready:
                    self._read(worker)
        now = time.monotonic()
        self._keep_alive(now)
        self._dispatch()
        self._check_viable()
        if self._status_interval and now - self._last_status >= self._status_interval:
            self._last_status = now
            if any(w.keys for w in self._workers):
                self._log("status:\n  " + self.describe().replace("\n", "\n  "))
        self._count_slots()
        events, self._buffer = self._buffer, []
        return events

    def cancel(self, key: AttemptKey) -> None:
        """Stop attempt ``key``: the worker kills the slot running it; no event follows."""
        self._waiting = deque(t for t in self._waiting if t.key != key)
        for worker in self._workers:
            if key in worker.keys:
                worker.keys.discard(key)
                self._send(worker, ("cancel", key))

    def close(self) -> None:
        """End the job on every worker, wait (a few seconds) until they stopped their
        attempts, and stop listening and the local workers."""
        self._count_slots()
        self._closing.set()
        if self._pinger is not None:
            self._pinger.join(timeout=2)
        busy = []  # every worker: one may still run an attempt that was cancelled
        for worker in list(self._workers):
            if self._send(worker, ("end",)) and worker.state != "joining":
                busy.append(worker)
        deadline = time.monotonic() + 5
        while busy and time.monotonic() < deadline:
            for worker in list(busy):
                try:
                    while worker.link.conn.poll():
                        if worker.link.conn.recv()[0] == "ended":
                            worker.ended = True
                except Exception:  # gone: it stops nothing more
                    worker.ended = True
                if worker.ended or worker not in self._workers:
                    busy.remove(worker)
            if busy:
                wait([w.link.conn for w in busy], 0.1)
        for worker in self._workers:
            worker.link.close()
        self._workers.clear()
        self._count_slots()
        if self._gate is not None:
            self._gate.stop()
        if self._accepter is not None:
            self._accepter.join(timeout=2)
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        while True:
            try:
                self._joined.get_nowait().close()
            except queue.Empty:
                break
        for process in self._local:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._local.clear()
        for sock in (self._wake_recv, self._wake_send):
            if sock is not None:
                sock.close()

    def describe(self) -> str:
        """Which worker runs which block, at what rate, and who lags: one line each."""
        lines = [] if self._attempts is None else [
            worker_line(w.name, w.slots, w.keys, self._attempts, done=w.blocks_done,
                        bytes_done=w.bytes_done)
            for w in sorted(self._workers, key=lambda w: w.name)]
        for worker in self._workers:
            if worker.unusable:
                lines.append(f"{worker.name}: cannot run this job: {worker.unusable}")
            elif worker.state != "ready":
                lines.append(f"{worker.name}: {worker.state}")
        return "\n".join(lines) or "no worker connected"

    def __repr__(self) -> str:
        where = format_address(self._host, self._port)
        return f"<ClusterExecutor {where}: {len(self._workers)} workers, {self.num_slots} slots>"

    # -- accepting ------------------------------------------------------------------

    def _join_address(self) -> str:
        host = self._host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return format_address(host, self._port)

    def _joining(self, link: Link) -> None:
        """Called by the gate's thread with each authenticated connection."""
        if self._closing.is_set():
            link.close()
            return
        self._joined.put(link)
        with contextlib.suppress(OSError, AttributeError):
            self._wake_send.send(b"\0")  # type: ignore[union-attr]

    def _admit(self) -> None:
        while True:
            try:
                link = self._joined.get_nowait()
            except queue.Empty:
                return
            self._workers.append(_Remote(link, name=link.peer, last_heard=time.monotonic()))

    def _start_local(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[AUTHKEY_ENV] = self._key.decode()
        # like multiprocessing's spawn: the workers import what this process can import
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else \
            "::1" if self._host == "::" else self._host
        command = [sys.executable, "-m", "blockproc", "worker", "--connect",
                   format_address(host, self._port), "--slots", "1", "--once", "--quiet",
                   "--exit-with", str(os.getpid())]
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    # -- talking to workers ---------------------------------------------------------

    def _send(self, worker: _Remote, message: tuple[Any, ...]) -> bool:
        try:
            with worker.lock:
                worker.link.conn.send(message)
        except OSError as exc:
            self._lose(worker, f"sending failed: {exc}")
            return False
        return True

    def _read(self, worker: _Remote) -> None:
        try:
            while worker.link.conn.poll():
                message = worker.link.conn.recv()
                worker.last_heard = time.monotonic()
                self._handle(worker, message)
                if worker not in self._workers:
                    return
        except (EOFError, OSError) as exc:
            self._lose(worker, "its connection closed" if isinstance(exc, EOFError)
                       else f"its connection failed: {exc}")
        except Exception as exc:  # a message this master cannot unpickle
            self._lose(worker, f"it sent a message this master cannot read: {exc!r}")

    def _handle(self, worker: _Remote, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "hello":
            self._hello(worker, message[1])
        elif kind == "ready":
            worker.state = "ready"
            self._count_slots()
            n = len(self._workers)
            self._log(f"worker {worker.name} ready with {_plural(worker.slots, 'slot')} "
                      f"({_plural(n, 'worker')}, {_plural(self.num_slots, 'slot')} in all)")
        elif kind == "unusable":
            self._unusable(worker, message[1])
            self._fail_all(worker, f"worker {worker.name} cannot run this job: {message[1]}")
        elif kind == "progress":
            key = message[1]
            if key in worker.keys:
                name = message[4] if len(message) > 4 else worker.name
                self._buffer.append(Progress(key, message[2], message[3], name))
        elif kind == "done":
            key = message[1]
            if key in worker.keys:
                worker.keys.discard(key)
                worker.blocks_done += 1
                worker.bytes_done += message[2].bytes_read
                self._buffer.append(Finished(key, message[2]))
        elif kind == "failed":
            key = message[1]
            if key in worker.keys:
                worker.keys.discard(key)
                self._buffer.append(Failed(key, *message[2:8]))
        elif kind == "cannot":
            key = message[1]
            self._unusable(worker, message[2])
            if key in worker.keys:
                worker.keys.discard(key)
                self._buffer.append(Failed(
                    key, f"worker {worker.name} cannot run this job: {message[2]}",
                    worker=self._slot(key) or worker.name, lost=True))
        elif kind == "ended":
            worker.ended = True

    def _hello(self, worker: _Remote, info: Mapping[str, Any]) -> None:
        name = f"{info.get('name', '?')} ({worker.link.peer})"
        problem = ""
        if info.get("protocol") != PROTOCOL:
            problem = (f"it speaks protocol {info.get('protocol')!r}, this master "
                       f"{PROTOCOL}; install the same blockproc version on both")
        elif info.get("python") != python_version():
            problem = (f"it runs Python {info.get('python')}, this master "
                       f"{python_version()}; functions travel with cloudpickle, which needs "
                       f"the same Python version on both sides")
        slots = info.get("slots")
        if not isinstance(slots, int) or slots < 1:
            problem = problem or f"it offers {slots!r} slots"
            slots = 0
        if problem:
            self._log(f"refused worker {name}: {problem}")
            worker.name, worker.unusable = name, problem
            self._send(worker, ("refused", problem))  # it hangs up when it reads this
            return
        worker.name, worker.slots, worker.state = name, slots, "loading"
        worker.pid = info.get("pid", 0)
        self._joined_pids.add(worker.pid)
        self._log(f"worker {name} joined with {_plural(slots, 'slot')}; loading the job")
        self._send(worker, ("job", self._job_id, self._payload))

    def _unusable(self, worker: _Remote, why: str) -> None:
        if not worker.unusable:
            worker.unusable = why
            self._log(f"worker {worker.name} cannot run this job and gets no more blocks: "
                      f"{why}")

    def _fail_all(self, worker: _Remote, why: str) -> None:
        for key in sorted(worker.keys):
            self._buffer.append(Failed(key, why, worker=self._slot(key) or worker.name,
                                       lost=True))
        worker.keys.clear()

    def _slot(self, key: AttemptKey) -> str:
        """The slot that heartbeats for ``key`` (as the scheduler knows it), or ""."""
        attempt = self._attempts.running.get(key) if self._attempts is not None else None
        return attempt.worker if attempt is not None else ""

    def _drop(self, worker: _Remote) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        worker.link.close()

    def _lose(self, worker: _Remote, why: str) -> None:
        if worker not in self._workers:
            return
        if worker.keys:
            self._log(f"lost worker {worker.name}: {why}; its "
                      f"{_plural(len(worker.keys), 'running attempt')} will run again")
        elif worker.state != "joining" and not self._closing.is_set():
            self._log(f"worker {worker.name} left: {why}")
        self._fail_all(worker, f"worker {worker.name} was lost: {why}")
        self._drop(worker)

    def _keep_alive(self, now: float) -> None:
        for worker in list(self._workers):
            if now - worker.last_heard > self._heartbeat_timeout:
                self._lose(worker, f"no heartbeat for {self._heartbeat_timeout:g}s")

    def _ping_loop(self) -> None:
        """Tell every worker the master is alive, even while the job's thread is busy
        (committing a large part-file, say); failures are left to the job's thread."""
        while not self._closing.wait(PING_INTERVAL):
            for worker in list(self._workers):
                if worker.state != "joining":
                    with contextlib.suppress(OSError, ValueError), worker.lock:
                        worker.link.conn.send(("ping",))

    def _dispatch(self) -> None:
        while self._waiting:
            candidates = [w for w in self._workers if w.free > 0]
            if not candidates:
                return
            worker = max(candidates, key=lambda w: (w.free, -len(w.keys)))
            task = self._waiting.popleft()
            worker.keys.add(task.key)
            self._send(worker, ("task", task.key,
                               pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)))

    def _check_viable(self) -> None:
        """Fail the job when no connected worker can run it and none is on its way."""
        if any(not w.unusable for w in self._workers):
            return
        joined = {w.pid for w in self._workers} | self._joined_pids
        if any(p.poll() is None and p.pid not in joined for p in self._local):
            return  # a local worker is still starting
        unusable = [w for w in self._workers if w.unusable]
        if unusable:
            reasons = "; ".join(f"{w.name}: {w.unusable}" for w in unusable)
            raise JobError(f"no connected worker can run this job: {reasons}")
        if self._local:
            codes = ", ".join(describe_exit(p.returncode) for p in self._local)
            raise JobError(
                f"the {len(self._local)} local workers exited ({codes}) and no other worker "
                f"is connected; their error is printed above"
            )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
