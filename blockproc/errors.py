"""Exceptions raised by blockproc.

Every error inherits the builtin that callers already catch::

    BlockprocError(Exception)
    ├── ConfigError(BlockprocError, ValueError)             bad option value, unknown name
    ├── InputError(BlockprocError)
    │   ├── NoInputFilesError(InputError, FileNotFoundError)
    │   ├── InputChangedError(InputError)                   an input changed since planning
    │   ├── RecordTooLargeError(InputError)                 no boundary within max_record_size
    │   └── TextDecodeError(UnicodeDecodeError, InputError) bytes the encoding cannot decode
    ├── AccessError(BlockprocError, PermissionError)       input/output cannot be reached
    ├── OutputExistsError(BlockprocError, FileExistsError)  output exists, if_exists="error"
    │   ├── OutputLockedError(OutputExistsError)            another live job writes it
    │   └── UnfinishedOutputError(OutputExistsError)        holds an unfinished job: resume it
    ├── ReturnTypeError(BlockprocError, TypeError)          a value the output cannot write
    ├── TooManyBadRecordsError(BlockprocError, RuntimeError)  more than max_bad_records
    ├── ValueTooLargeError(BlockprocError, ValueError)      a value for the master too big
    ├── CommandError(BlockprocError, RuntimeError)          a --cmd mapper exited non-zero
    │   └── CommandNotFoundError(CommandError)              a --cmd mapper cannot start
    └── JobError(BlockprocError)                            exit_code = 1
        ├── BlockFailedError(JobError)                      a block used up its attempts;
        │                                                   __cause__: the worker's error
        ├── StorageError(JobError, OSError)                 storage failed outside a block
        ├── LockLostError(JobError)                         another job took the output over
        └── JobCancelledError(JobError)                     job.cancel(), Ctrl-C or SIGTERM

The input errors, ``ReturnTypeError``, ``TooManyBadRecordsError``, a block's
``ValueTooLargeError`` and the command errors are raised inside an attempt, in a
worker: the job fails with a :class:`BlockFailedError` that names the block and
carries the worker's error. Those
whose ``retryable`` is False fail the block at once, since every attempt would fail
the same way.

Each class carries ``exit_code``, which the CLI returns. :class:`RemoteTraceback` is no
error of its own: it carries a worker's traceback text as the cause of the worker's
exception.
"""

from __future__ import annotations

from typing import Any


class BlockprocError(Exception):
    """Base class of every error blockproc raises."""

    exit_code = 1


class ConfigError(BlockprocError, ValueError):
    """An option has a bad value or names something unknown.

    Examples
    --------
    >>> raise ConfigError("block_size must be >= 1 byte, got 0")
    Traceback (most recent call last):
    ...
    blockproc.ConfigError: block_size must be >= 1 byte, got 0
    """

    exit_code = 2


class InputError(BlockprocError):
    """The input cannot be read as asked."""

    exit_code = 2


class NoInputFilesError(InputError, FileNotFoundError):
    """A path, glob or directory matched no input file."""


class InputChangedError(InputError):
    """An input file is not what the plan saw (size or ETag/mtime differ): reading it
    would mix old and new data. Retrying cannot help, so ``retryable`` is False."""

    retryable = False


class RecordTooLargeError(InputError):
    """No record boundary was found within ``max_record_size`` bytes."""

    retryable = False


class TextDecodeError(UnicodeDecodeError, InputError):
    """Bytes that cannot be decoded with ``errors="strict"``; the message names their
    byte offset. A :class:`UnicodeDecodeError` (and an InputError): ``reason`` holds the
    whole message, so the error pickles like any UnicodeDecodeError.

    Examples
    --------
    >>> err = TextDecodeError("utf-8", b"\\xff", 0, 1, "cannot decode the input at byte 3")
    >>> str(err), isinstance(err, UnicodeDecodeError), err.exit_code
    ('cannot decode the input at byte 3', True, 2)
    """

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.encoding, self.object, self.start, self.end, self.reason))


class AccessError(BlockprocError, PermissionError):
    """An input or the output cannot be reached before any work starts: permission
    denied, missing credentials, an unreachable store."""

    exit_code = 2


class OutputExistsError(BlockprocError, FileExistsError):
    """The output directory exists and ``if_exists="error"``."""

    exit_code = 2


class OutputLockedError(OutputExistsError):
    """Another live job holds the output's lock; only one job writes an output."""


class UnfinishedOutputError(OutputExistsError):
    """The output holds an unfinished blockproc job; ``if_exists="resume"`` finishes it."""


class ReturnTypeError(BlockprocError, TypeError):
    """A function returned a value its output format cannot write.

    The same records would return the same type on every attempt, so the block is not
    retried (``retryable`` is False); the worker adds the record, its byte offset and
    the block to the message.

    Examples
    --------
    >>> raise ReturnTypeError("the function returned dict {'a': 1}; output_format='text' "
    ...                       "accepts str or bytes")
    Traceback (most recent call last):
    ...
    blockproc.ReturnTypeError: the function returned dict {'a': 1}; ...
    """

    retryable = False


class TooManyBadRecordsError(BlockprocError, RuntimeError):
    """An attempt met more bad records than ``max_bad_records``; retrying cannot help."""

    retryable = False


class ValueTooLargeError(BlockprocError, ValueError):
    """A block's value (what the function returned to the master, pickled) or the job's
    values together are over their size limit; retrying cannot help.

    The limits are ``BLOCKPROC_MAX_BLOCK_VALUE`` (64 MiB per block) and
    ``BLOCKPROC_MAX_JOB_VALUES`` (1 GiB per job): write the results to files with
    ``output=``, or fold them as they arrive with :func:`~blockproc.reduce_blocks`.
    """

    retryable = False


class CommandError(BlockprocError, RuntimeError):
    """A ``--cmd`` mapper (:func:`~blockproc.map_command`) exited with a non-zero code;
    the message ends with its stderr."""


class CommandNotFoundError(CommandError):
    """A ``--cmd`` mapper could not be started (``sh`` exit code 127 or 126); retrying
    cannot help."""

    retryable = False


class JobError(BlockprocError):
    """The job ran but did not finish.

    ``resumable`` says whether ``if_exists="resume"`` can finish it once the cause is
    fixed (False when the input changed, or another job owns the output now).
    """

    resumable = True


class BlockFailedError(JobError):
    """A block failed on every attempt; the job stopped.

    ``str()`` names the block, its file and byte range, and the last error. As with
    ``concurrent.futures``, the worker's exception itself is the ``__cause__`` (when it
    could be pickled back; else its text), and the worker's traceback is the cause of
    that, a :class:`RemoteTraceback`, kept once; ``remote_traceback`` reads its text.
    ``except ValueError`` does not catch this error, but ``err.__cause__`` is the
    user's ValueError.

    Examples
    --------
    >>> err = BlockFailedError("block 3 of 8 (data.log [96, 128)) failed: ValueError: bad",
    ...                        block_id=3, attempt=4)
    >>> err.block_id, err.attempt
    (3, 4)
    >>> from blockproc.errors import with_remote_traceback
    >>> err.__cause__ = with_remote_traceback(ValueError("bad"), "Traceback ...\\nValueError")
    >>> type(err.__cause__).__name__, err.remote_traceback
    ('ValueError', 'Traceback ...\\nValueError')
    """

    def __init__(
        self,
        message: str,
        *,
        block_id: int,
        attempt: int,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.block_id = block_id
        self.attempt = attempt
        if remote_traceback:
            self.__cause__ = RemoteTraceback(remote_traceback)

    @property
    def remote_traceback(self) -> str:
        """The worker's traceback text ("" if there is none), from the cause chain."""
        cause = self.__cause__
        while cause is not None:
            if isinstance(cause, RemoteTraceback):
                return cause.text
            cause = cause.__cause__
        return ""

    def __reduce__(self) -> tuple[Any, ...]:
        original = self.__cause__
        if isinstance(original, RemoteTraceback) or not _picklable(original):
            original = None
        return (_rebuild_block_failed, (str(self), self.block_id, self.attempt,
                                        self.remote_traceback, original))


def _picklable(obj: object) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def _rebuild_block_failed(
    message: str, block_id: int, attempt: int, remote_traceback: str,
    original: BaseException | None = None,
) -> BlockFailedError:
    error = BlockFailedError(message, block_id=block_id, attempt=attempt)
    error.__cause__ = with_remote_traceback(original, remote_traceback)
    return error


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker, as text: the ``__cause__`` of that
    error when it comes back (as in ``concurrent.futures``), so printing the job's error
    shows where the worker failed.

    Examples
    --------
    >>> print(RemoteTraceback("Traceback (most recent call last): ..."))
    <BLANKLINE>
    Traceback (most recent call last): ...
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def with_remote_traceback(original: BaseException | None, text: str) -> BaseException | None:
    """Return ``original`` with ``RemoteTraceback(text)`` as its cause, or the
    RemoteTraceback alone when there is no original (None when there is neither).

    Examples
    --------
    >>> error = with_remote_traceback(KeyError("k"), "Traceback ...")
    >>> type(error.__cause__).__name__
    'RemoteTraceback'
    >>> with_remote_traceback(None, "Traceback ...")
    RemoteTraceback('Traceback ...')
    """
    remote = RemoteTraceback(text) if text else None
    if original is None:
        return remote
    original.__cause__ = remote
    return original


class StorageError(JobError, OSError):
    """Storage failed while the job ran, outside any block (the lock, a commit, the
    ledger, the manifest). Committed blocks are kept and the job can be resumed."""


class LockLostError(JobError):
    """Another job took the output's lock over (this job stalled past the lease); this
    job stopped without writing to the output again."""

    resumable = False


class JobCancelledError(JobError):
    """The job was cancelled before it finished; its output can be resumed."""

    exit_code = 130
