"""The one module that talks to fsspec: resolve URLs, list inputs, ranged reads, part-file
writes and the small files of the commit protocol.

Object stores (S3, GCS, Azure) have no rename and no directories: publishing a file is
a server-side copy of one object (:func:`publish`), and a single PUT is already atomic
(:func:`write_bytes_atomic`). Transient storage errors (throttling, 5xx, connection
resets) are retried with exponential backoff (:func:`retry_call`); an input that changed
since it was planned raises :class:`InputChangedError`, which is never retried.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import io
import itertools
import json
import os
import posixpath
import random
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import fsspec
from fsspec.core import split_protocol, url_to_fs

from blockproc.errors import (
    AccessError,
    ConfigError,
    InputChangedError,
    InputError,
    NoInputFilesError,
)
from blockproc.model import InputFile

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
else:
    AbstractFileSystem = Any

__all__ = [
    "AbstractFileSystem", "InputChangedError", "is_local", "RangeSource", "RetryPolicy",
    "InputListing", "compression_of", "create_exclusive", "credentials_message", "filesystem",
    "is_credentials_error", "is_retryable", "iter_whole_files", "list_inputs", "scan_inputs",
    "open_decompressed", "open_output", "protocol_of", "publish",
    "read_json", "read_whole", "remove_tree", "resolve", "retry_call", "to_url", "zstd_frames",
    "verify_unchanged",
    "write_bytes_atomic", "write_json_atomic",
]

T = TypeVar("T")

_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".lzma": "lzma",
                 ".zst": "zstd", ".zstd": "zstd"}
_COMPRESSION_PACKAGES = {"zstd": "zstandard"}
_GLOB_CHARS = "*?["

#: The package each protocol needs, for the error that tells users what to install.
PROTOCOL_PACKAGES = {
    "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
    "abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs", "hdfs": "pyarrow",
    "http": "aiohttp", "https": "aiohttp", "sftp": "paramiko", "ssh": "paramiko",
    "oci": "ocifs", "oss": "ossfs", "webhdfs": "requests", "smb": "smbprotocol",
}

#: Object stores whose single PUT is atomic (readers see all of an object or nothing)
#: and which have no rename: a "move" there is a server-side copy plus a delete.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oci", "oss"})

_LOCAL_PROTOCOLS = frozenset({"file", "local", "memory"})

REMOTE_READ_SIZE = 8 * 2**20
"""Bytes per request when a worker reads its block from a remote filesystem: large
enough that per-request latency and overhead do not dominate (8 MiB ranged GETs run
about 2-3x faster than 1 MiB ones against a loopback S3), small enough to stay in memory."""


def resolve(url: str, storage_options: Mapping[str, Any] | None = None
            ) -> tuple[AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path.

    Raises ConfigError naming the package to install when the protocol's fsspec
    implementation is missing (``pip install gcsfs`` for ``gs://``...).

    Examples
    --------
    >>> fs, path = resolve("memory://bucket/data.log")
    >>> fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol, path
    ('memory', '/bucket/data.log')
    """
    try:
        return url_to_fs(str(url), **dict(storage_options or {}))  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ConfigError(_missing_package_message(str(url), exc)) from None
    except ValueError as exc:
        raise ConfigError(f"cannot open {url!r}: {exc}") from None
    except OSError as exc:  # e.g. pyarrow's HDFS client without a JVM or libhdfs
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        hint = ""
        if split_protocol(str(url))[0] in ("hdfs", "arrow_hdfs"):
            hint = ("; hdfs:// needs pyarrow, a Java runtime and Hadoop's libhdfs: set "
                    "JAVA_HOME, HADOOP_HOME and CLASSPATH=$(hadoop classpath --glob) "
                    "(see README, 'Storage')")
        raise ConfigError(f"cannot open {url!r}: {first_line}{hint}") from None


def _missing_package_message(url: str, exc: ImportError) -> str:
    protocol = split_protocol(url)[0] or "file"
    package = PROTOCOL_PACKAGES.get(protocol)
    if package is None:
        return (f"cannot open {url!r}: {exc}. Install the fsspec implementation of "
                f"{protocol}:// (see https://filesystem-spec.readthedocs.io)")
    return (f"cannot open {url!r}: the {protocol}:// protocol needs the {package} package, "
            f"which is not installed; run `pip install {package}` ({exc})")


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None
               ) -> AbstractFileSystem:
    """Return the (cached) filesystem instance for a protocol and its options."""
    try:
        return fsspec.filesystem(protocol, **dict(storage_options or {}))
    except ImportError as exc:
        raise ConfigError(_missing_package_message(f"{protocol}://", exc)) from None


def protocol_of(fs: AbstractFileSystem) -> str:
    """Return the main protocol name of ``fs`` (``"file"``, ``"memory"``, ``"s3"``...)."""
    protocol = fs.protocol
    return str(protocol[0] if isinstance(protocol, (tuple, list)) else protocol)


def to_url(fs: AbstractFileSystem, path: str) -> str:
    """Return the URL a user would type for ``path``: a plain path for local files."""
    protocol = protocol_of(fs)
    if protocol in ("file", "local"):
        return path
    if protocol == "memory":
        return f"memory://{path.lstrip('/')}"
    return str(fs.unstrip_protocol(path))


def compression_of(path: str) -> str | None:
    """Return the compression implied by a file name, or None.

    Examples
    --------
    >>> compression_of("logs/a.log.gz"), compression_of("a.zst"), compression_of("a.log")
    ('gzip', 'zstd', None)
    """
    return _COMPRESSIONS.get(posixpath.splitext(path)[1].lower())


# -- transient errors ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RetryPolicy:
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

    tries: int = 4
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, failed_tries: int, jitter: float | None = None) -> float:
        """Seconds to wait after ``failed_tries`` failures (``jitter`` in [0.5, 1])."""
        full = min(self.max_delay, self.base_delay * 2 ** (failed_tries - 1))
        return float(full * (random.uniform(0.5, 1.0) if jitter is None else jitter))


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
    """Call ``fn()``; on a retryable error wait and call it again, up to ``policy.tries``.

    The error of the last try is raised with a note saying how often ``what`` was tried.

    Examples
    --------
    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ConnectionResetError("reset by peer")
    ...     return "ok"
    >>> retry_call(flaky, "a read", RetryPolicy(tries=4, base_delay=0)), len(calls)
    ('ok', 3)
    """
    policy = policy or default_retry()
    failed = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            failed += 1
            if not is_retryable(exc):
                raise
            if failed >= policy.tries:
                exc.add_note(f"blockproc tried {what} {failed} times; the storage kept "
                             f"failing with transient errors")
                raise
            time.sleep(policy.delay(failed))


# -- inputs ------------------------------------------------------------------------------

def _token(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, _dt.datetime):
            value = value.timestamp()
        return f"{key}={value}"
    return ""


def verify_unchanged(fs: AbstractFileSystem, expected: InputFile,
                     info: Mapping[str, Any] | None = None) -> None:
    """Raise InputChangedError if ``expected.path`` no longer has the planned size and
    change token (ETag, else mtime). ``info`` is fresh file info if the caller has it
    (an open file's); otherwise this asks the filesystem once, bypassing its listing
    cache.
    """
    if info is None:
        info = _fresh_info(fs, expected.path)
    changes = []
    size = info.get("size")
    if size is not None and int(size) != expected.size:
        changes.append(f"size {expected.size} -> {int(size)} bytes")
    token = _token(info)
    planned_key, now_key = expected.token.partition("=")[0], token.partition("=")[0]
    if expected.token and token and planned_key == now_key and token != expected.token:
        changes.append(f"{planned_key} {expected.token.partition('=')[2]} -> "
                       f"{token.partition('=')[2]}")
    if changes:
        raise InputChangedError(_changed_message(expected.path, ", ".join(changes)))


def _changed_message(path: str, what: str) -> str:
    return (f"input {path!r} changed after the job was planned ({what}); blockproc reads "
            f"every input as it was when planned, so it stops instead of mixing old and new "
            f"data. Rerun the job on the new data (if_exists='overwrite')")


def _fresh_info(fs: AbstractFileSystem, path: str) -> Mapping[str, Any]:
    fs.invalidate_cache(path)  # a listing cache (s3fs, gcsfs) may hold the planned info
    try:
        return retry_call(lambda: fs.info(path), f"to stat {path!r}")
    except FileNotFoundError:
        raise InputChangedError(_changed_message(path, "it was deleted")) from None


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


OUTPUT_MARKERS = ("_SUCCESS", "_blockproc")
"""Names that make a directory a blockproc output: its manifest or its job state."""


@dataclass(frozen=True)
class InputListing:
    """What :func:`scan_inputs` found: the files, the directories given as inputs (read
    recursively) and the blockproc outputs skipped below them."""

    fs: AbstractFileSystem
    files: list[InputFile]
    directories: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def list_inputs(
    urlpaths: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, list[InputFile]]:
    """Expand paths, globs and directories (recursively) into sorted input files.

    The files of :func:`scan_inputs`, which says what else the listing found.
    """
    listing = scan_inputs(urlpaths, storage_options)
    return listing.fs, listing.files


def scan_inputs(
    urlpaths: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> InputListing:
    """Expand paths, globs and directories into sorted input files.

    Directories are read recursively. Below a directory or a glob's fixed part, names
    starting with ``_`` or ``.`` are skipped, so one job's output can be the next job's
    input; so is every subdirectory that is itself a blockproc output (it holds
    ``_SUCCESS`` or ``_blockproc/``), so an output kept inside an input directory is not
    read back (``skipped`` names them). FIFOs, devices and sockets are refused
    (:class:`InputError`): only regular files have byte ranges. Listing is one bulk
    call per argument (``glob``/``find`` with details, paged by the store), never one
    call per file.

    Examples
    --------
    >>> from blockproc.testing import write_files
    >>> _ = write_files("memory://doc/scan", {"a.log": b"a\\n", "old/part-00000.txt": b"x\\n",
    ...                                       "old/_SUCCESS": b"{}", "sub/b.log": b"b\\n"})
    >>> listing = scan_inputs(["memory://doc/scan"])
    >>> [f.path for f in listing.files], listing.skipped
    (['/doc/scan/a.log', '/doc/scan/sub/b.log'], ('/doc/scan/old',))
    """
    if not urlpaths:
        raise NoInputFilesError("no input given; pass at least one path, glob or directory")
    fs: AbstractFileSystem | None = None
    found: dict[str, InputFile] = {}
    directories: list[str] = []
    skipped: list[str] = []
    for url in urlpaths:
        _check_protocol(url)
        this_fs, path = resolve(url, storage_options)
        if fs is None:
            fs = this_fs
        elif this_fs is not fs:
            raise ConfigError(
                f"all inputs must be on one filesystem; {url!r} is on "
                f"{protocol_of(this_fs)!r}, the first input on {protocol_of(fs)!r}"
            )
        try:
            expanded = retry_call(functools.partial(_expand, this_fs, url, path),
                                  f"to list {url!r}")
        except PermissionError as exc:
            raise AccessError(f"cannot list the input {url!r}: permission denied ({exc}); "
                              f"check its permissions or the credentials") from None
        except Exception as exc:
            if is_credentials_error(exc):
                raise AccessError(credentials_message(url, exc)) from None
            raise
        for name, info in expanded.files.items():
            found[name] = InputFile(name, int(info["size"]), _token(info), compression_of(name))
        if expanded.directory is not None:
            directories.append(expanded.directory)
        skipped.extend(expanded.skipped)
    assert fs is not None
    for item in found.values():
        if item.compression and item.compression not in fsspec.available_compressions():
            package = _COMPRESSION_PACKAGES.get(item.compression, item.compression)
            raise ConfigError(
                f"input {item.path!r} is {item.compression}-compressed and the codec is not "
                f"installed; run `pip install {package}`"
            )
    return InputListing(fs, [found[name] for name in sorted(found)],
                        tuple(dict.fromkeys(directories)), tuple(sorted(set(skipped))))


def _check_protocol(url: str) -> None:
    """Refuse a URL whose protocol fsspec does not know, naming the ones it does."""
    protocol = split_protocol(url)[0]
    if (protocol is None or protocol in fsspec.available_protocols()
            or protocol in fsspec.registry):  # registered at run time
        return
    common = "file, s3, gs, az, hdfs, http, https, sftp, memory"
    raise ConfigError(f"cannot open {url!r}: unknown protocol {protocol!r}; check the URL "
                      f"(fsspec knows {common} and more: fsspec.available_protocols())")


_CREDENTIALS_ERRORS = frozenset({
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
    "NoAuthTokenError", "UnauthorizedSSOTokenError", "SSOTokenLoadError",
    "DefaultCredentialsError", "RefreshError", "ClientAuthenticationError",
})


def is_credentials_error(exc: BaseException) -> bool:
    """Return True for a client's "no or bad credentials" error (botocore, google-auth,
    azure), told by class name so that no cloud package is imported.

    Examples
    --------
    >>> class NoCredentialsError(Exception): ...
    >>> is_credentials_error(NoCredentialsError()), is_credentials_error(ValueError())
    (True, False)
    """
    return any(cls.__name__ in _CREDENTIALS_ERRORS for cls in type(exc).__mro__)


def credentials_message(url: str, exc: BaseException) -> str:
    """Return the one-line message for a store that has no credentials for ``url``."""
    hint = "pass credentials in --storage-option / storage_options"
    if split_protocol(url)[0] in ("s3", "s3a"):
        hint = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or pass "
                "--storage-option anon=true (storage_options={'anon': True}) for a public "
                "bucket")
    return f"no credentials to reach {url!r} ({type(exc).__name__}: {exc}); {hint}"


def _special_kind(info: Mapping[str, Any]) -> str:
    mode = info.get("mode")
    if isinstance(mode, int):
        if stat.S_ISFIFO(mode):
            return "a FIFO (named pipe)"
        if stat.S_ISCHR(mode):
            return "a character device"
        if stat.S_ISBLK(mode):
            return "a block device"
        if stat.S_ISSOCK(mode):
            return "a socket"
    return "not a regular file"


def _refuse_special(url: str, info: Mapping[str, Any]) -> None:
    if info.get("type") in ("file", "directory"):
        return
    name = info.get("name", url)
    raise InputError(
        f"input {name!r} is {_special_kind(info)}, not a regular file; blockproc reads byte "
        f"ranges of regular files only: write the data to a file and pass that"
    )


@dataclass(frozen=True)
class _Expanded:
    files: dict[str, Mapping[str, Any]]
    directory: str | None = None
    skipped: tuple[str, ...] = ()


def _outputs_below(root: str, entries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Return the directories strictly below ``root`` that are blockproc outputs."""
    outputs: set[str] = set()
    for name in entries:
        parts = name[len(root):].strip("/").split("/")
        for depth in range(1, len(parts)):
            if parts[depth] in OUTPUT_MARKERS:
                outputs.add(root + "/" + "/".join(parts[:depth]))
                break
    # an output inside a skipped output is skipped with it
    return sorted(o for o in outputs
                  if not any(o.startswith(other + "/") for other in outputs))


def _expand(fs: AbstractFileSystem, url: str, path: str) -> _Expanded:
    if any(c in path for c in _GLOB_CHARS):
        matches = fs.glob(path, detail=True)
        first_glob = min(path.index(c) for c in _GLOB_CHARS if c in path)
        root = posixpath.dirname(path[:first_glob])
        visible = {n: i for n, i in matches.items() if not _is_hidden(n[len(root):])}
        for info in visible.values():
            _refuse_special(url, info)
        matched = {n: i for n, i in visible.items() if i.get("type") == "file"}
        if not matched:
            raise NoInputFilesError(
                f"the glob {url!r} matched no files; check the pattern and the directory"
            )
        return _Expanded(matched)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise NoInputFilesError(
            f"input {url!r} does not exist; check the path (globs like 'data/*.log' and "
            f"directories are accepted too)"
        ) from None
    _refuse_special(url, info)
    if info.get("type") != "directory":
        return _Expanded({info["name"]: info})
    root = info["name"].rstrip("/")
    entries = fs.find(path, detail=True)
    outputs = _outputs_below(root, entries)
    files: dict[str, Mapping[str, Any]] = {}
    for name, entry in entries.items():
        if _is_hidden(name[len(root):]) or any(name.startswith(o + "/") for o in outputs):
            continue
        _refuse_special(url, entry)
        if entry.get("type") == "file":
            files[name] = entry
    if not files:
        skipped = (f"; skipped {len(outputs)} blockproc output(s) inside it: "
                   f"{', '.join(repr(o) for o in outputs[:3])}" if outputs else "")
        raise NoInputFilesError(
            f"the directory {url!r} holds no input files (names starting with '_' or '.' "
            f"are skipped){skipped}; check the path"
        )
    return _Expanded(files, root, tuple(outputs))


class RangeSource:
    """Ranged reads from one file that count the bytes they fetch.

    ``read(start, end)`` returns exactly ``end - start`` bytes, fewer only at end of file:
    short reads from the storage layer are retried until the range is complete. The file
    is opened without read-ahead (``block_size=0``, ``cache_type="none"``), so on an
    object store every ``read`` is one ranged GET of exactly that range.

    ``limit`` allows fewer, larger requests without fetching more bytes: a read that
    ends at or before ``limit`` may fetch up to ``read_size`` bytes (default 8 MiB on
    remote filesystems, none on local ones), never past ``limit``, and later reads are
    served from them. A worker passes its block's nominal end, which it reads anyway.

    With ``expected`` (the :class:`~blockproc.model.InputFile` the plan saw), opening
    checks once that the file still has the planned size and ETag/mtime, and raises
    :class:`InputChangedError` if not. Transient errors are retried (``retry``).
    """

    def __init__(self, fs: AbstractFileSystem, path: str, *,
                 expected: InputFile | None = None, retry: RetryPolicy | None = None,
                 limit: int | None = None, read_size: int | None = None) -> None:
        self.path = path
        self.bytes_read = 0
        self.num_requests = 0
        self._fs = fs
        self._retry = retry or default_retry()
        self._limit = limit
        if read_size is None:
            read_size = 0 if protocol_of(fs) in _LOCAL_PROTOCOLS else REMOTE_READ_SIZE
        self._read_size = read_size
        self._buffer = b""
        self._buffer_start = 0
        if expected is not None:
            fs.invalidate_cache(path)  # the open must see the object as it is now
        try:
            self._file = retry_call(
                lambda: fs.open(path, "rb", block_size=0, cache_type="none"),
                f"to open {path!r}", self._retry)
        except FileNotFoundError:
            if expected is None:
                raise
            raise InputChangedError(_changed_message(path, "it was deleted")) from None
        if expected is not None:
            details = getattr(self._file, "details", None)  # s3fs, gcsfs: the open's HEAD
            fresh = details if isinstance(details, Mapping) and "size" in details else None
            try:
                verify_unchanged(fs, expected, fresh)
            except BaseException:
                self._file.close()
                raise

    def read(self, start: int, end: int) -> bytes:
        """Return the bytes ``[start, end)``."""
        if end <= start:
            return b""
        buffer_end = self._buffer_start + len(self._buffer)
        if self._buffer and self._buffer_start <= start < buffer_end:
            head = self._buffer[start - self._buffer_start:end - self._buffer_start]
            if end <= buffer_end:
                return head
            return head + self.read(buffer_end, end)
        fetch_end = end
        if self._limit is not None and end <= self._limit and end - start < self._read_size:
            fetch_end = min(self._limit, start + self._read_size)
        data = self._fetch(start, fetch_end)
        if fetch_end > end:
            self._buffer, self._buffer_start = data, start
            return data[:end - start]
        return data

    def _fetch(self, start: int, end: int) -> bytes:
        self.num_requests += 1
        try:
            data = retry_call(lambda: self._read(start, end),
                              f"to read {self.path!r} [{start}, {end})", self._retry)
        except OSError as exc:
            if "FileExpired" in {cls.__name__ for cls in type(exc).__mro__}:
                raise InputChangedError(_changed_message(
                    self.path, "its ETag no longer matches the one it was opened with"
                )) from exc
            raise
        self.bytes_read += len(data)
        return data

    def _read(self, start: int, end: int) -> bytes:
        self._file.seek(start)
        data = self._file.read(end - start)
        if len(data) < end - start and data:
            pieces = [data]
            got = len(data)
            while got < end - start:
                more = self._file.read(end - start - got)
                if not more:
                    break
                pieces.append(more)
                got += len(more)
            data = b"".join(pieces)
        return bytes(data)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> RangeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_decompressed(fs: AbstractFileSystem, path: str, compression: str) -> io.RawIOBase:
    """Open a compressed file for sequential reading of its decompressed bytes."""
    return retry_call(  # type: ignore[no-any-return]
        lambda: fs.open(path, "rb", compression=compression), f"to open {path!r}")


def zstd_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress the zstd stream in ``chunks`` frame after frame.

    zstandard's stream reader (what fsspec opens) stops after the first frame, so a file
    of several frames (``zstd`` of concatenated files, ``pzstd``) would lose the others,
    and it returns nothing for a truncated frame. Here a last frame that is not complete
    raises ``EOFError``, and corrupt data ``zstandard.ZstdError``.

    Examples
    --------
    >>> import zstandard
    >>> two = zstandard.compress(b"first ") + zstandard.compress(b"second")
    >>> b"".join(zstd_frames([two[:5], two[5:]]))
    b'first second'
    >>> b"".join(zstd_frames([two[:-3]]))
    Traceback (most recent call last):
    ...
    EOFError: the last zstd frame ends before it is complete
    """
    import zstandard

    frame = zstandard.ZstdDecompressor().decompressobj()
    fed = False
    for chunk in chunks:
        pending = chunk
        while pending:
            data = frame.decompress(pending)
            fed = True
            if data:
                yield data
            pending = b""
            if frame.eof:  # the next frame starts in what is left
                pending = frame.unused_data
                frame = zstandard.ZstdDecompressor().decompressobj()
                fed = False
    if fed and not frame.eof:
        raise EOFError("the last zstd frame ends before it is complete")


def read_whole(fs: AbstractFileSystem, file: InputFile) -> bytes:
    """Return all of ``file`` (decompressed if it is compressed), after checking that it
    is still the file the plan saw; one ranged read for an uncompressed file."""
    if file.compression == "zstd":
        with RangeSource(fs, file.path, expected=file) as source:
            return b"".join(zstd_frames([source.read(0, file.size)]))
    if file.compression:
        verify_unchanged(fs, file)
        with open_decompressed(fs, file.path, file.compression) as f:
            return f.read()
    with RangeSource(fs, file.path, expected=file) as source:
        data = source.read(0, file.size)
    if len(data) != file.size:
        raise InputChangedError(_changed_message(
            file.path, f"{len(data)} bytes were read, not the planned {file.size}"))
    return data


def iter_whole_files(fs: AbstractFileSystem, files: Sequence[InputFile], *,
                     concurrency: int = 8) -> Generator[tuple[InputFile, bytes]]:
    """Yield ``(file, read_whole(fs, file))`` for each of ``files``, in order.

    Up to ``concurrency`` files are fetched at once, so many small objects cost about
    one round trip per ``concurrency`` files instead of one each; at most that many
    files are held ahead of the consumer.
    """
    if concurrency <= 1 or len(files) <= 1:
        for file in files:
            yield file, read_whole(fs, file)
        return
    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(files)),
                              thread_name_prefix="blockproc-read")
    pending: deque[tuple[InputFile, Future[bytes]]] = deque()
    upcoming = iter(files)
    try:
        for file in itertools.islice(upcoming, concurrency):
            pending.append((file, pool.submit(read_whole, fs, file)))
        while pending:
            file, future = pending.popleft()
            data = future.result()
            for more in itertools.islice(upcoming, 1):
                pending.append((more, pool.submit(read_whole, fs, more)))
            yield file, data
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        for _, future in pending:  # consume what already ran (errors included)
            if not future.cancelled():
                future.exception()


# -- outputs -----------------------------------------------------------------------------

def open_output(fs: AbstractFileSystem, path: str) -> Any:
    """Open ``path`` for writing, creating its directory.

    The open is retried on transient errors; the writes stream to the store (s3fs
    uploads parts with its own retries), and a failed write fails the attempt, which
    the master runs again.
    """
    def do_open() -> Any:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return fs.open(path, "wb")

    return retry_call(do_open, f"to open {path!r} for writing")


def _is_object_store(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in OBJECT_STORES for p in protocols)


def is_local(fs: AbstractFileSystem) -> bool:
    """True for the local filesystem (plain files: renames and appends are cheap)."""
    return protocol_of(fs) in ("file", "local")


def publish(fs: AbstractFileSystem, source: str, destination: str) -> None:
    """Give the complete file ``source`` the name ``destination``, atomically for readers.

    On a filesystem this is a rename. On an object store, which has no rename, it is a
    server-side copy of one object (readers see the old object or the whole new one,
    never a part) followed by deleting ``source``; nothing is listed, and no directory
    is copied. Retried on transient errors: copying again is harmless.
    """
    if is_local(fs):  # the master publishes every block: skip fsspec's checks
        retry_call(lambda: os.replace(source, destination), f"to rename {source!r}")
        return
    if not _is_object_store(fs):
        retry_call(lambda: fs.mv(source, destination), f"to rename {source!r}")
        return
    retry_call(lambda: fs.cp_file(source, destination), f"to copy {source!r}")

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(source)

    retry_call(remove, f"to delete {source!r}")


def remove_tree(fs: AbstractFileSystem, path: str) -> bool:
    """Remove ``path`` and everything under it; return False if that failed.

    For garbage (``_temporary/``) only: on an object store this lists the prefix, so a
    stale listing may leave objects behind, and no result may depend on it.
    """
    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path, recursive=True)

    try:
        retry_call(remove, f"to remove {path!r}")
    except OSError:
        return False
    return True


def write_bytes_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing.

    On an object store one PUT is atomic, so the object is written in place; elsewhere
    the data goes to a hidden staging file that is then renamed.
    """
    directory, name = posixpath.split(path)
    if _is_object_store(fs):
        retry_call(lambda: fs.pipe_file(path, data), f"to write {path!r}")
        return

    def write() -> None:
        # a name of its own per writer: two writers of one path never share a staging file
        staging = posixpath.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            if is_local(fs):  # a ledger entry per block: plain files, no fsspec round trips
                os.makedirs(directory, exist_ok=True)
                with open(staging, "wb") as f:
                    f.write(data)
                os.replace(staging, path)
                return
            fs.makedirs(directory, exist_ok=True)
            with fs.open(staging, "wb") as f:
                f.write(data)
            fs.mv(staging, path)
        except BaseException:
            with contextlib.suppress(Exception):  # nothing half-written stays behind
                fs.rm_file(staging)
            raise

    retry_call(write, f"to write {path!r}")


_memory_create = threading.Lock()


def create_exclusive(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` holding all of ``data`` if nothing exists there; return False if
    something does. Readers never see the file partly written.

    Local disks: the data goes to a staging file that is hard-linked to ``path`` (a link
    fails if the name exists, atomically, also on NFS). Object stores: one PUT with
    ``If-None-Match: *`` (s3fs's ``"xb"`` mode). Stores and clients report a refused
    create differently (AWS and moto as ``FileExistsError``, SeaweedFS as a plain
    ``OSError``), so a failed create is decided by reading ``path`` back: it holds our
    data (an answer lost on the way: we won), other data (refused), or nothing (a real
    error, raised). The memory filesystem lives in one process: a lock makes it exact.

    Examples
    --------
    >>> fs = filesystem("memory")
    >>> create_exclusive(fs, "/doc/excl/a", b"first"), create_exclusive(fs, "/doc/excl/a", b"x")
    (True, False)
    >>> fs.cat_file("/doc/excl/a")
    b'first'
    """
    if is_local(fs):
        return _create_local(path, data)
    if protocol_of(fs) == "memory":
        with _memory_create:
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True
    return retry_call(lambda: _put_if_absent(fs, path, data), f"to create {path!r}")


def _put_if_absent(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    try:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "xb") as f:
            f.write(data)
        return True
    except Exception as exc:
        try:
            existing = fs.cat_file(path)
        except FileNotFoundError:
            raise exc from None  # nothing there: the create failed for another reason
        return bool(existing == data)


def _create_local(path: str, data: bytes) -> bool:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    staging = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    with open(staging, "wb") as f:
        f.write(data)
    try:
        os.link(staging, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(staging)


def write_json_atomic(fs: AbstractFileSystem, path: str, obj: Any, *,
                      indent: int | None = 1) -> None:
    """Write ``obj`` as JSON with :func:`write_bytes_atomic` (``indent=None``: compact,
    and several times faster, for the many small ledger entries)."""
    write_bytes_atomic(fs, path, json.dumps(obj, indent=indent, sort_keys=False).encode())


def read_json(fs: AbstractFileSystem, path: str) -> Any:
    """Return the JSON document at ``path``."""
    def read() -> bytes:
        with fs.open(path, "rb") as f:
            return f.read()  # type: ignore[no-any-return]

    return json.loads(retry_call(read, f"to read {path!r}"))
