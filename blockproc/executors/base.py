"""What an executor is: slots that run block attempts and report events back.

The master (``blockproc.master``) owns the scheduler and the commit; an executor only
runs :class:`~blockproc.worker.BlockTask` s somewhere and reports what happened.

A failure travels as :class:`Failed`: a summary line, the traceback text, and the
exception itself pickled when it can be (``concurrent.futures`` does the same), so
the job's :class:`~blockproc.BlockFailedError` has the user's exception as its cause.

What crosses to another process (the mapper, an exception) is pickled by :func:`dumps`:
plain pickle when it names only importable functions and classes, cloudpickle (imported
only then) for lambdas, closures and what ``__main__`` or a notebook defines.
"""

from __future__ import annotations

import errno
import io
import pickle
import signal
import sys
import traceback
import types
from typing import Any, Protocol

from blockproc._frozen import FrozenSlots
from blockproc.errors import InputError, with_remote_traceback
from blockproc.model import BlockResult
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.worker import BlockTask, Mapper


class Progress(FrozenSlots):
    """A running attempt's heartbeat: bytes and records done so far, and who runs it."""

    _fields = ("key", "bytes_done", "records_done", "worker")
    __slots__ = _fields
    key: AttemptKey
    bytes_done: int
    records_done: int
    worker: str

    def __init__(self, key: AttemptKey, bytes_done: int, records_done: int,
                 worker: str = "") -> None:
        _set = object.__setattr__
        _set(self, "key", key)
        _set(self, "bytes_done", bytes_done)
        _set(self, "records_done", records_done)
        _set(self, "worker", worker)


class Finished(FrozenSlots):
    """An attempt succeeded; its part-file waits at the task's staging path."""

    _fields = ("key", "result")
    __slots__ = _fields
    key: AttemptKey
    result: BlockResult

    def __init__(self, key: AttemptKey, result: BlockResult) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "result", result)


MAX_PICKLED_ERROR = 1 << 20
"""An exception whose pickle is larger than this comes back as text only."""


class Failed(FrozenSlots):
    """An attempt failed: the user code raised (``lost=False``) or its worker died.

    ``exception`` is the exception pickled by :func:`dumps` (empty when it could not be);
    :meth:`cause` turns it back into the exception with its traceback text attached.
    """

    _fields = ("key", "error", "traceback", "worker", "lost", "retryable", "exception")
    __slots__ = _fields
    key: AttemptKey
    error: str
    traceback: str
    worker: str
    lost: bool
    retryable: bool
    exception: bytes

    def __init__(self, key: AttemptKey, error: str, traceback: str = "", worker: str = "",
                 lost: bool = False, retryable: bool = True, exception: bytes = b"") -> None:
        _set = object.__setattr__
        _set(self, "key", key)
        _set(self, "error", error)
        _set(self, "traceback", traceback)
        _set(self, "worker", worker)
        _set(self, "lost", lost)
        _set(self, "retryable", retryable)
        _set(self, "exception", exception)

    def cause(self) -> BaseException | None:
        """The worker's exception with a :class:`~blockproc.errors.RemoteTraceback` of
        its traceback as ``__cause__``; the RemoteTraceback alone when the exception
        cannot be unpickled here; None when there is neither.

        Examples
        --------
        >>> failed = failure_from((0, 1), ValueError("bad line"), "host:1")
        >>> cause = failed.cause()
        >>> cause, type(cause.__cause__).__name__
        (ValueError('bad line'), 'RemoteTraceback')
        >>> Failed((0, 1), "lost", lost=True).cause() is None
        True
        """
        original = None
        if self.exception:
            try:
                original = pickle.loads(self.exception)
            except Exception:  # its class is not importable here, or it cannot rebuild
                original = None
        if not isinstance(original, BaseException):
            original = None
        return with_remote_traceback(original, self.traceback)


Event = Progress | Finished | Failed


def failure_from(key: AttemptKey, exc: BaseException, worker: str) -> Failed:
    """Describe an exception raised by an attempt: summary, traceback text, and the
    exception pickled if it survives a round trip (see :func:`pickle_exception`)."""
    text = "".join(traceback.format_exception(exc))
    summary = "".join(traceback.format_exception_only(exc)).strip()
    return Failed(key, summary, text, worker, retryable=is_retryable(exc),
                  exception=pickle_exception(exc))


_BY_VALUE_ONLY = frozenset({"__main__", "__mp_main__"})
"""Modules whose functions and classes another process cannot import by name: a worker
forked from the template process, or spawned, has another main module."""


class _ByReference(pickle.Pickler):
    """Plain pickle that refuses a function or class another process could not import
    under the same name (one of ``__main__``, or of a module not in ``sys.modules``), so
    that :func:`dumps` hands it to cloudpickle, which ships it by value."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)):
            module = getattr(obj, "__module__", None)
            if module in _BY_VALUE_ONLY or module not in sys.modules:
                raise pickle.PicklingError(f"{obj!r} goes by value")
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for another process: with plain pickle when every function and
    class in it is importable by name there (sent by reference, as cloudpickle would
    send them too), else with cloudpickle, imported only then (lambdas, closures, what
    ``__main__`` or a notebook defines, modules registered with
    ``cloudpickle.register_pickle_by_value``). ``pickle.loads`` reads either.

    Examples
    --------
    >>> import operator
    >>> pickle.loads(dumps(operator.add))(1, 2)
    3
    >>> pickle.loads(dumps(lambda x: x + 1))(1)
    2
    """
    cloud = sys.modules.get("cloudpickle.cloudpickle")
    if cloud is None or not getattr(cloud, "_PICKLE_BY_VALUE_MODULES", None):
        buffer = io.BytesIO()
        try:
            _ByReference(buffer, pickle.HIGHEST_PROTOCOL).dump(obj)
        except Exception:  # a lambda, a closure, __main__'s: by value
            pass
        else:
            return buffer.getvalue()
    import cloudpickle  # only for what plain pickle cannot send (start-up of other jobs)

    data: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def pickle_exception(exc: BaseException) -> bytes:
    """Return ``exc`` pickled by :func:`dumps`, or ``b""`` when it cannot make the trip back.

    Its traceback, cause and context stay behind (their text travels separately). An
    exception that cannot be pickled, or not rebuilt from its pickle (an ``__init__``
    with other arguments than ``args``), or whose pickle is over
    :data:`MAX_PICKLED_ERROR` bytes comes back as text only.

    Examples
    --------
    >>> pickle.loads(pickle_exception(KeyError("k")))
    KeyError('k')
    >>> class Odd(Exception):
    ...     def __init__(self, a, b):
    ...         super().__init__(a)
    >>> pickle_exception(Odd(1, 2))
    b''
    """
    try:
        blob = dumps(exc)
        if len(blob) > MAX_PICKLED_ERROR:
            return b""
        pickle.loads(blob)
    except Exception:
        return b""
    return blob


def is_retryable(exc: BaseException) -> bool:
    """Return False for errors that would fail the same way on every attempt.

    An exception class says so with ``retryable = False`` (record too large, too many bad
    records, input changed, a value the output format refuses, a command not found).
    Input errors (undecodable bytes, a corrupt Parquet file or a truncated ``.gz``),
    permission errors and a full disk (ENOSPC, EDQUOT) are not retried either. Anything
    else, a user exception included, is retried (as Hadoop does); worker loss and lease
    timeouts never reach here and are always retried.

    Examples
    --------
    >>> from blockproc.errors import InputError
    >>> is_retryable(ValueError("user code")), is_retryable(ConnectionResetError())
    (True, True)
    >>> is_retryable(InputError("bad bytes")), is_retryable(OSError(28, "No space left"))
    (False, False)
    """
    if isinstance(exc, (PermissionError, InputError)):
        return False
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return False
    return bool(getattr(exc, "retryable", True))


class Executor(Protocol):
    """Runs attempts in ``num_slots`` parallel slots."""

    name: str
    num_slots: int

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Start the workers; ``mapper`` is shipped to each worker once.

        ``attempts`` is the job's scheduler: executors that show a status (``cluster``,
        ``dask``) read each attempt's progress there rather than keeping their own.
        """

    def run(self, task: BlockTask) -> None:
        """Start ``task`` on a free slot (the master never asks for more than num_slots)."""

    def events(self, timeout: float) -> list[Event]:
        """Return what happened since the last call, waiting up to ``timeout`` seconds."""
        ...

    def cancel(self, key: AttemptKey) -> None:
        """Stop a running attempt; no event follows for it."""

    def close(self) -> None:
        """Stop all workers and release their resources."""


def describe_exit(code: int | None) -> str:
    """Say how a process ended: ``exit code 3`` or ``killed by SIGKILL``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class AttemptCancelled(BaseException):
    """Raised inside an attempt that the master cancelled (not an error of the user code)."""
