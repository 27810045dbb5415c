"""Transient storage errors and the one retry policy every storage call goes through.

A :class:`RetryPolicy` says how often and how patiently a call is retried;
:func:`retry_policy` returns the policy of this process (the one set with
:func:`set_retry_policy`, else the ``BLOCKPROC_IO_*`` tuning environment), and
:func:`retry_call` runs a call under it. :func:`is_retryable` tells a transient error
(throttling, 5xx, timeouts, connection resets) from one that would repeat.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

from blockproc._frozen import FrozenSlots
from blockproc.errors import (
    ConfigError,
    InputError,
)

T = TypeVar("T")


# -- transient errors ----------------------------------------------------------------------

class RetryPolicy(FrozenSlots):
    """How often and how patiently a storage call is retried on a transient error.

    ``tries`` counts the first call; the wait before try ``n + 1`` is a random value in
    ``[delay / 2, delay]`` with ``delay = min(max_delay, base_delay * 2 ** (n - 1))``
    ("equal jitter", so workers that failed together do not retry together).

    Examples
    --------
    >>> policy = RetryPolicy(tries=4, base_delay=0.1, max_delay=0.3)
    >>> [policy.delay(n, jitter=1.0) for n in (1, 2, 3)]
    [0.1, 0.2, 0.3]
    """

    _fields = ("tries", "base_delay", "max_delay")
    __slots__ = _fields
    tries: int
    base_delay: float
    max_delay: float

    def __init__(self, tries: int = 4, base_delay: float = 0.1, max_delay: float = 5.0) -> None:
        object.__setattr__(self, "tries", tries)
        object.__setattr__(self, "base_delay", base_delay)
        object.__setattr__(self, "max_delay", max_delay)

    def delay(self, failed_tries: int, jitter: float | None = None) -> float:
        """Seconds to wait after ``failed_tries`` failures (``jitter`` in [0.5, 1])."""
        full = min(self.max_delay, self.base_delay * 2 ** (failed_tries - 1))
        return float(full * (random.uniform(0.5, 1.0) if jitter is None else jitter))

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Call ``fn()``; on a retryable error wait and call it again, up to ``tries``.

        The error of the last try is raised with a note saying how often ``what`` (``"to
        read 'x'"``) was tried.

        Examples
        --------
        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise ConnectionResetError("reset by peer")
        ...     return "ok"
        >>> RetryPolicy(tries=4, base_delay=0).call(flaky, "a read"), len(calls)
        ('ok', 3)
        """
        try:
            return fn()
        except Exception as exc:
            first = exc  # retried outside this handler: a later error is not chained to it
        return self.retry_after(first, fn, what)

    def retry_after(self, exc: Exception, fn: Callable[[], T], what: str) -> T:
        """Go on after the first try of ``fn()`` raised ``exc``: raise it if it is not
        retryable (or ``tries`` is 1), else wait and try again, as :meth:`call` does."""
        failed = 1
        while True:
            if not is_retryable(exc):
                raise exc
            if failed >= self.tries:
                exc.add_note(f"blockproc tried {what} {failed} times; the storage kept "
                             f"failing with transient errors")
                raise exc
            time.sleep(self.delay(failed))
            try:
                return fn()
            except Exception as again:
                exc = again
                failed += 1


def default_retry() -> RetryPolicy:
    """Return the retry policy of this process: 4 tries from 0.1 s, unless the
    ``BLOCKPROC_IO_TRIES`` / ``BLOCKPROC_IO_BACKOFF`` environment variables (tuning
    only: they change how long a transient error is waited out, never a result) say
    otherwise. Worker processes inherit them."""
    try:
        tries = int(os.environ.get("BLOCKPROC_IO_TRIES", "4"))
        base = float(os.environ.get("BLOCKPROC_IO_BACKOFF", "0.1"))
    except ValueError as exc:
        raise ConfigError(f"BLOCKPROC_IO_TRIES / BLOCKPROC_IO_BACKOFF: {exc}") from None
    return RetryPolicy(tries=max(1, tries), base_delay=max(0.0, base))


_process_policy: RetryPolicy | None = None


def set_retry_policy(policy: RetryPolicy | None) -> RetryPolicy | None:
    """Make ``policy`` the retry policy of this process (None: the environment's again,
    see :func:`default_retry`); return the one it replaces.

    Examples
    --------
    >>> previous = set_retry_policy(RetryPolicy(tries=2, base_delay=0.0))
    >>> retry_policy().tries
    2
    >>> set_retry_policy(previous).tries
    2
    """
    global _process_policy
    previous, _process_policy = _process_policy, policy
    return previous


def retry_policy() -> RetryPolicy:
    """Return the retry policy of this process: the one set with :func:`set_retry_policy`,
    else :func:`default_retry` (read from the environment at each call, so worker
    processes follow what their master's environment says).

    Examples
    --------
    >>> retry_policy() == default_retry()
    True
    """
    return _process_policy or default_retry()


#: OSError numbers that mean the request itself is wrong or refused: retrying cannot help.
_PERMANENT_ERRNOS = frozenset({
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.EISDIR, errno.ENOTDIR,
    errno.EINVAL, errno.ENAMETOOLONG, errno.ENOSPC, errno.EROFS, errno.ENOTEMPTY,
    errno.EFBIG, errno.ENOSYS, errno.EMSGSIZE, errno.EREMCHG,
})

#: Transient client errors of the HTTP stacks under fsspec (botocore, aiohttp, urllib3,
#: requests) that do not derive from OSError; matched by class name so that this module
#: imports none of them.
_TRANSIENT_NAMES = frozenset({
    "HTTPClientError", "ConnectionClosedError", "EndpointConnectionError",
    "ReadTimeoutError", "ConnectTimeoutError", "IncompleteRead", "IncompleteReadError",
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError",
    "ClientOSError", "ResponseParserError", "ProtocolError", "ChunkedEncodingError",
    "FSTimeoutError",
})


def is_retryable(exc: BaseException) -> bool:
    """Return True for storage errors worth another try: throttling (503 SlowDown), server
    errors (5xx), timeouts, connection resets, and any other OSError except the permanent
    ones (not found, permission, is-a-directory, bad request...).

    Examples
    --------
    >>> is_retryable(ConnectionResetError()), is_retryable(OSError(16, "SlowDown"))
    (True, True)
    >>> is_retryable(FileNotFoundError("x")), is_retryable(OSError(22, "bad request"))
    (False, False)
    """
    if getattr(exc, "retryable", True) is False or isinstance(exc, InputError):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "FileExpired" in names:  # s3fs: the object changed under an open file
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                        NotADirectoryError, FileExistsError)):
        return False
    if isinstance(exc, OSError):
        return exc.errno not in _PERMANENT_ERRNOS
    return bool(names & _TRANSIENT_NAMES)


def retry_call(fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Call ``fn()`` under ``policy``, by default the process's :func:`retry_policy`.

    The first try needs no policy: the policy (and with it the environment) is looked up
    when it fails, so the call that succeeds at once, as nearly every one does (the
    master's rename of each committed block), costs no lookup.

    Examples
    --------
    >>> retry_call(lambda: "ok", "a read")
    'ok'
    """
    try:
        return fn()
    except Exception as exc:
        first = exc  # retried outside this handler: a later error is not chained to it
    return (policy or retry_policy()).retry_after(first, fn, what)
