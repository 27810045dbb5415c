"""The ``dask`` executor: each block attempt is a task on a ``dask.distributed`` cluster.

Dask places and runs the tasks; blockproc keeps planning, retries, speculation and the
exactly-once commit. So every attempt is one dask task with its own key
(``blockproc-<block>-<attempt>-<uuid>``), ``pure=False`` and ``retries=0``: dask never
retries on its own behalf, blockproc does, under a new attempt number and staging path.

- Progress: a running task sends heartbeats with ``Worker.log_event`` on the job's own
  topic; the client receives them through ``Client.subscribe_topic``.
- Failures of the user code are caught in the task and returned as data, with the same
  text as on the other executors; a task that dask reports as failed (``KilledWorker``,
  a closed comm, a ``client.restart()``) is a lost attempt: ``Failed(lost=True)``.
- Cancel: ``client.cancel(future)``; a running task sees that its key was cancelled at
  its next heartbeat and stops.
- Without a client or an address, a ``LocalCluster`` of worker processes (one thread
  each) is started for the job and closed after it, with ``allowed-failures`` 0 so a
  worker death fails its task at once instead of dask re-running it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import cloudpickle

from blockproc.errors import ConfigError
from blockproc.executors._mainguard import main_module_hidden
from blockproc.executors._status import worker_line
from blockproc.executors.base import (
    AttemptCancelled,
    Event,
    Failed,
    Finished,
    Progress,
    failure_from,
)
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.worker import BlockTask, Mapper, run_block, worker_name

OPTIONS = ("client", "address")
"""Keys of ``executor_options`` for ``executor="dask"``."""
REPORT_INTERVAL = 0.5
SLOTS_REFRESH = 2.0
STOP_WAIT = 10.0
"""Seconds close() waits for cancelled tasks of a shared cluster to stop writing."""
INSTALL_HINT = "pip install 'blockproc[dask]' (or dask[distributed])"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"executor='dask' needs dask.distributed ({exc}); {INSTALL_HINT}") \
            from None
    return distributed


class DaskExecutor:
    """Run attempts as tasks on a dask.distributed cluster.

    Parameters
    ----------
    client : distributed.Client, optional
        An existing client; it is left open.
    address : str, optional
        A scheduler address such as ``tcp://host:8786``; a client is made and closed.
    workers : int, optional
        Without ``client`` or ``address``: worker processes of the LocalCluster started
        for the job (default one per CPU). With them: at most this many attempts at once
        (default: the cluster's thread count, followed as workers come and go).
    """

    name = "dask"

    def __init__(self, *, client: Any = None, address: str | None = None,
                 workers: int | None = None) -> None:
        if client is not None and address is not None:
            raise ConfigError("give executor_options 'client' or 'address', not both")
        if client is not None:
            distributed = _distributed()
            if not isinstance(client, distributed.Client):
                raise TypeError(f"executor_options['client'] must be a distributed.Client, "
                                f"got {client!r}")
            if client.asynchronous:
                raise ConfigError("an asynchronous distributed.Client cannot drive a "
                                  "blockproc job; pass a synchronous one")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigError(f"the dask scheduler address must look like "
                              f"'tcp://host:8786', got {address!r}")
        self._client: Any = client
        self._address = address
        self._workers = workers
        self._owned: list[Any] = []  # what start() made and close() closes
        self._hidden: contextlib.ExitStack | None = None
        self._token = f"blockproc-{uuid.uuid4().hex[:12]}"  # also the events' topic
        self._local_cluster = False
        self._payload = b""
        self._payload_ref: Any = None  # the payload scattered to every worker, once
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._futures: dict[AttemptKey, Any] = {}
        self._executing: dict[AttemptKey, str] = {}  # the dask worker of each running task
        self._attempts: Scheduler | None = None  # the job's attempt state, from start()
        self._done: Counter[str] = Counter()  # blocks and bytes done per dask worker
        self._bytes_done: Counter[str] = Counter()
        self.num_slots = 1
        """Threads of the cluster's workers (capped by ``workers``), refreshed every 2 s."""
        self._slots_checked = 0.0
        self._closed = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any], workers: int | None) -> DaskExecutor:
        """Build from ``executor_options`` (keys ``client`` and ``address``)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown executor_options {unknown} for executor='dask'; "
                              f"valid keys: {', '.join(OPTIONS)}")
        return cls(client=options.get("client"), address=options.get("address"),
                   workers=workers)

    @property
    def client(self) -> Any:
        """The distributed.Client in use (None before start)."""
        return self._client

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Connect to (or start) the cluster and listen to the tasks' heartbeats;
        ``attempts`` is where :meth:`describe` reads the attempts' progress."""
        distributed = _distributed()
        self._attempts = attempts
        self._payload = cloudpickle.dumps(mapper)
        if self._client is None:
            if self._address is not None:
                try:
                    self._client = distributed.Client(self._address, set_as_default=False)
                except OSError as exc:
                    raise ConfigError(f"cannot reach the dask scheduler at "
                                      f"{self._address!r}: {exc}") from None
            else:
                self._client = self._local_client(distributed)
            self._owned.insert(0, self._client)
        self._client.subscribe_topic(self._token, self._on_topic)
        self._refresh_slots(force=True)
        self._scatter_payload()

    def _scatter_payload(self) -> None:
        """Send the function to every worker once, not with every task: tasks name it by
        key, and a worker that joins later copies it from a peer. A ``client.restart()``
        drops it with everything else; the next task sends it again. While workers are
        restarting the scatter can fail: tasks then carry the bytes until it succeeds."""
        try:
            self._payload_ref = self._client.scatter(self._payload, broadcast=True,
                                                     hash=False)
        except Exception:  # e.g. "Can not use replicate to delete data" mid-restart
            self._payload_ref = None

    def _local_client(self, distributed: Any) -> Any:
        import dask

        from blockproc.executors import default_workers

        # A LocalCluster's nannies spawn (and re-spawn) worker processes for as long as it
        # runs, so __main__ stays hidden from them until close().
        self._hidden = contextlib.ExitStack()
        self._hidden.enter_context(main_module_hidden())
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = distributed.LocalCluster(
                n_workers=self._workers or default_workers(), threads_per_worker=1,
                processes=True, dashboard_address=":0", silence_logs=logging.ERROR)
        self._owned.append(cluster)
        self._local_cluster = True
        return distributed.Client(cluster, set_as_default=False)

    def _refresh_slots(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._slots_checked < SLOTS_REFRESH:
            return
        self._slots_checked = now
        with contextlib.suppress(Exception):  # keep the last count if the scheduler is busy
            threads = sum(self._client.nthreads().values())
            cap = self._workers or threads
            self.num_slots = max(1, min(threads, cap))

    def run(self, task: BlockTask) -> None:
        """Submit ``task`` as one dask task with a unique key."""
        key = task.key
        dask_key = f"blockproc-{key[0]}-{key[1]}-{uuid.uuid4().hex[:12]}"
        if self._payload_ref is None or self._payload_ref.status != "finished":
            self._scatter_payload()
        payload = self._payload if self._payload_ref is None else self._payload_ref
        future = self._client.submit(_run_attempt, task, payload, self._token,
                                     dask_key, key=dask_key, pure=False, retries=0)
        self._futures[key] = future
        future.add_done_callback(lambda f, key=key: self._on_done(key, f))

    # -- callbacks, on dask's threads: they only queue -------------------------------

    def _on_topic(self, event: tuple[float, Any]) -> None:
        message = event[1]
        if isinstance(message, dict) and message.get("token") == self._token:
            self._events.put((message["kind"], tuple(message["key"]), message))

    def _on_done(self, key: AttemptKey, future: Any) -> None:
        status = future.status
        if status == "finished":
            try:
                self._events.put(("result", key, future.result()))
            except BaseException as exc:  # the result could not be fetched
                self._events.put(("lost", key, f"{type(exc).__name__}: {exc}", ""))
        elif status == "cancelled":
            self._events.put(("lost", key, "dask cancelled the task (a client.restart() or "
                                           "the scheduler going away)", ""))
        else:
            try:
                error = future.exception()
                tb = future.traceback()
                text = "".join(traceback.format_exception(type(error), error, tb))
                summary = "".join(traceback.format_exception_only(error)).strip()
            except BaseException as err:
                text, summary = "", f"{type(err).__name__}: {err}"
            self._events.put(("lost", key, f"dask could not run the task: {summary}", text))

    # -- the master's side ----------------------------------------------------------

    def events(self, timeout: float) -> list[Event]:
        """Turn what the callbacks queued into events, waiting up to ``timeout``."""
        items = []
        try:
            items.append(self._events.get(timeout=timeout))
            while True:
                items.append(self._events.get_nowait())
        except queue.Empty:
            pass
        out: list[Event] = []
        for kind, key, payload, *rest in items:
            self._translate(kind, key, payload, rest, out)
        self._refresh_slots()
        return out

    def _translate(self, kind: str, key: AttemptKey, payload: Any, rest: list[Any],
                   out: list[Event]) -> None:
        if kind == "started":
            self._executing[key] = payload["worker"]
            if key in self._futures:  # tell the scheduler which slot runs it
                out.append(Progress(key, 0, 0, payload["name"]))
            return
        if kind == "stopped":
            self._executing.pop(key, None)
            return
        if key not in self._futures:
            return  # cancelled by the master: no event follows
        if kind == "progress":
            out.append(Progress(key, payload["bytes"], payload["records"]))
            return
        self._futures.pop(key)
        worker = self._executing.get(key, "")  # its address; the scheduler knows the slot
        if kind == "result":
            outcome, value = payload
            if outcome == "done":
                self._done[worker] += 1
                self._bytes_done[worker] += value.bytes_read
                out.append(Finished(key, value))
            elif outcome == "failed":
                out.append(value)  # the Failed event the task made
            elif outcome == "lost":  # dask re-ran an attempt whose worker died
                out.append(Failed(key, value, lost=True))
            else:
                out.append(Failed(key, "dask cancelled the running task", lost=True))
        else:
            self._executing.pop(key, None)  # its worker is gone: no "stopped" will come
            where = f" on {worker}" if worker else ""
            out.append(Failed(key, f"{payload}{where}", rest[0] if rest else "", lost=True))

    def cancel(self, key: AttemptKey) -> None:
        """Cancel the task of ``key``; if it runs, it stops at its next heartbeat."""
        future = self._futures.pop(key, None)
        if future is not None:
            self._client.cancel([future])

    def close(self) -> None:
        """Cancel what still runs, wait until it stopped writing, and close what start()
        opened (the LocalCluster and its client, or the client made for ``address``)."""
        if self._closed or self._client is None:
            return
        self._closed = True
        futures = list(self._futures.values())
        self._futures.clear()
        with contextlib.suppress(Exception):
            if futures:
                self._client.cancel(futures)
            if not self._local_cluster:  # a cluster we do not own runs on: wait for it
                deadline = time.monotonic() + STOP_WAIT
                while self._executing and time.monotonic() < deadline:
                    with contextlib.suppress(queue.Empty):
                        kind, key, *_ = self._events.get(timeout=0.1)
                        if kind == "stopped":
                            self._executing.pop(key, None)
        with contextlib.suppress(Exception):
            if self._payload_ref is not None:
                self._payload_ref.release()
            self._payload_ref = None
        with contextlib.suppress(Exception):
            self._client.unsubscribe_topic(self._token)
            if not self._local_cluster:  # the scheduler keeps each topic's last events
                self._client.run_on_scheduler(_forget_topic, self._token)
        for thing in self._owned:
            with contextlib.suppress(Exception):
                thing.close()
        self._owned.clear()
        if self._hidden is not None:
            self._hidden.close()

    def describe(self) -> str:
        """Which dask worker runs which block, at what rate, and who lags."""
        slots: dict[str, int] = {}
        with contextlib.suppress(Exception):
            slots = dict(self._client.nthreads())
        if self._attempts is None:
            return "no dask worker"
        running = {k: w for k, w in self._executing.items() if k in self._futures}
        lines = [worker_line(w, slots.get(w, 0), [k for k, v in running.items() if v == w],
                             self._attempts, done=self._done[w], bytes_done=self._bytes_done[w])
                 for w in sorted(set(slots) | set(running.values()))]
        return "\n".join(lines) or "no dask worker"

    def __repr__(self) -> str:
        return f"<DaskExecutor {len(self._futures)} tasks, {self.num_slots} slots>"


def _forget_topic(topic: str, dask_scheduler: Any = None) -> None:
    """Drop a finished job's events from the scheduler (runs on the scheduler)."""
    if dask_scheduler is None:
        return
    broker = getattr(dask_scheduler, "_broker", None)
    if broker is not None:  # distributed >= 2024.9 keeps events in a broker
        broker.truncate(topic)
        broker._topics.pop(topic, None)
    else:
        dask_scheduler.events.pop(topic, None)
        dask_scheduler.event_counts.pop(topic, None)


# -- inside a dask worker --------------------------------------------------------------

_MAPPERS: dict[str, Mapper] = {}


def _mapper(token: str, payload: bytes) -> Mapper:
    """Load the job's function once per worker process."""
    mapper = _MAPPERS.get(token)
    if mapper is None:
        mapper = cloudpickle.loads(payload)
        if len(_MAPPERS) >= 4:
            _MAPPERS.clear()
        _MAPPERS[token] = mapper
    return mapper


class _Heartbeat:
    """Send progress on the ``blockproc`` topic; stop the attempt once it is cancelled."""

    def __init__(self, worker: Any, token: str, key: AttemptKey, dask_key: str) -> None:
        self._worker = worker
        self._base = {"token": token, "key": list(key)}
        self._dask_key = dask_key
        self._last = 0.0

    def emit(self, kind: str, **fields: Any) -> None:
        with contextlib.suppress(Exception):
            self._worker.log_event(self._base["token"], {**self._base, "kind": kind,
                                                          **fields})

    def cancelled(self) -> bool:
        try:
            state = self._worker.state.tasks.get(self._dask_key)
        except Exception:
            return False
        return state is not None and state.state == "cancelled"

    def __call__(self, bytes_done: int, records_done: int) -> None:
        now = time.monotonic()
        if now - self._last >= REPORT_INTERVAL:
            self._last = now
            if self.cancelled():
                raise AttemptCancelled
            self.emit("progress", bytes=bytes_done, records=records_done)


@contextlib.contextmanager
def _announced(beat: _Heartbeat, worker: Any) -> Iterator[None]:
    beat.emit("started", worker=worker.address, name=worker_name())
    try:
        yield
    finally:
        beat.emit("stopped")


def _run_attempt(task: BlockTask, payload: bytes, token: str,
                 dask_key: str) -> tuple[str, Any]:
    """The dask task: run one attempt and return ``(outcome, value)``.

    ``("done", BlockResult)``, ``("failed", Failed)`` for an error of
    the user code (returned, not raised, so dask logs nothing and the text is the same
    as on every executor), ``("cancelled", None)`` or ``("lost", why)``.
    """
    import distributed

    worker = distributed.get_worker()
    beat = _Heartbeat(worker, token, task.key, dask_key)
    with _announced(beat, worker):
        # Dask re-runs a task whose worker died if its cluster allows it; the first run
        # may have written here, so this run must not reuse the attempt's staging path.
        # (A job without output stages nothing: a re-run is one more report of the same
        # attempt, and the master takes at most one per attempt.)
        if task.output_fs is not None and task.output_fs.exists(task.staging_path):
            return "lost", (f"dask ran attempt {task.attempt} of block {task.block.id} again "
                            f"after its first worker was lost; blockproc retries it as a new "
                            f"attempt")
        try:
            mapper = _mapper(token, payload)
            return "done", run_block(task, mapper, beat)
        except AttemptCancelled:
            return "cancelled", None
        except Exception as exc:
            return "failed", failure_from(task.key, exc, worker_name())
