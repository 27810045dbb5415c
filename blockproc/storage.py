"""The one module that talks to fsspec: resolve URLs, list inputs, ranged reads, part-file
writes and the small files of the commit protocol.

Object stores (S3, GCS, Azure) have no rename and no directories: publishing a file is
a server-side copy of one object (:func:`publish`), and a single PUT is already atomic
(:func:`write_bytes_atomic`). Transient storage errors (throttling, 5xx, connection
resets) are retried with exponential backoff (:func:`retry_call`); an input that changed
since it was planned raises :class:`InputChangedError`, which is never retried.
"""

from __future__ import annotations

import datetime as _dt
import errno
import io
import json
import os
import posixpath
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import fsspec
from fsspec.core import split_protocol, url_to_fs

from blockproc.errors import ConfigError, InputError, NoInputFilesError
from blockproc.model import InputFile

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
else:
    AbstractFileSystem = Any

__all__ = [
    "AbstractFileSystem", "InputChangedError", "RangeSource", "RetryPolicy",
    "check_readable", "compression_of", "filesystem", "is_retryable", "list_inputs",
    "open_decompressed", "open_output", "protocol_of", "publish", "read_json",
    "remove_tree", "resolve", "retry_call", "to_url", "verify_unchanged",
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
    return fsspec.filesystem(protocol, **dict(storage_options or {}))


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


def _token(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, _dt.datetime):
            value = value.timestamp()
        return f"{key}={value}"
    return ""


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def list_inputs(
    urlpaths: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, list[InputFile]]:
    """Expand paths, globs and directories (recursively) into sorted input files.

    Names starting with ``_`` or ``.`` below a directory or glob are skipped, so one
    job's output can be the next job's input. Listing is one bulk call per argument.
    """
    if not urlpaths:
        raise NoInputFilesError("no input given; pass at least one path, glob or directory")
    fs: AbstractFileSystem | None = None
    found: dict[str, InputFile] = {}
    for url in urlpaths:
        this_fs, path = resolve(url, storage_options)
        if fs is None:
            fs = this_fs
        elif this_fs is not fs:
            raise ConfigError(
                f"all inputs must be on one filesystem; {url!r} is on "
                f"{protocol_of(this_fs)!r}, the first input on {protocol_of(fs)!r}"
            )
        for name, info in _expand(this_fs, url, path).items():
            found[name] = InputFile(name, int(info["size"]), _token(info), compression_of(name))
    assert fs is not None
    for item in found.values():
        if item.compression and item.compression not in fsspec.available_compressions():
            package = _COMPRESSION_PACKAGES.get(item.compression, item.compression)
            raise ConfigError(
                f"input {item.path!r} is {item.compression}-compressed and the codec is not "
                f"installed; run `pip install {package}`"
            )
    return fs, [found[name] for name in sorted(found)]


def _expand(fs: AbstractFileSystem, url: str, path: str) -> dict[str, Mapping[str, Any]]:
    if any(c in path for c in _GLOB_CHARS):
        matches = fs.glob(path, detail=True)
        first_glob = min(path.index(c) for c in _GLOB_CHARS if c in path)
        root = posixpath.dirname(path[:first_glob])
        files = {n: i for n, i in matches.items() if i.get("type") == "file"
                 and not _is_hidden(n[len(root):])}
        if not files:
            raise NoInputFilesError(
                f"the glob {url!r} matched no files; check the pattern and the directory"
            )
        return files
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise NoInputFilesError(
            f"input {url!r} does not exist; check the path (globs like 'data/*.log' and "
            f"directories are accepted too)"
        ) from None
    if info.get("type") != "directory":
        return {info["name"]: info}
    root = info["name"].rstrip("/")
    files = {
        n: i for n, i in fs.find(path, detail=True).items()
        if i.get("type") == "file" and not _is_hidden(n[len(root):])
    }
    if not files:
        raise NoInputFilesError(
            f"the directory {url!r} holds no input files (names starting with '_' or '.' "
            f"are skipped); check the path"
        )
    return files


class RangeSource:
    """Ranged reads from one file that count the bytes they fetch.

    ``read(start, end)`` returns exactly ``end - start`` bytes, fewer only at end of file:
    short reads from the storage layer are retried until the range is complete.
    """

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self.path = path
        self.bytes_read = 0
        self._file = fs.open(path, "rb", block_size=0, cache_type="none")

    def read(self, start: int, end: int) -> bytes:
        """Return the bytes ``[start, end)``."""
        if end <= start:
            return b""
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
        self.bytes_read += len(data)
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
    return fs.open(path, "rb", compression=compression)  # type: ignore[no-any-return]


def open_output(fs: AbstractFileSystem, path: str) -> Any:
    """Open ``path`` for writing, creating its directory."""
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, "wb")


def write_bytes_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing."""
    directory, name = posixpath.split(path)
    fs.makedirs(directory, exist_ok=True)
    staging = posixpath.join(directory, f".{name}.tmp")
    with fs.open(staging, "wb") as f:
        f.write(data)
    fs.mv(staging, path)


def write_json_atomic(fs: AbstractFileSystem, path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON with :func:`write_bytes_atomic`."""
    write_bytes_atomic(fs, path, json.dumps(obj, indent=1, sort_keys=False).encode())


def read_json(fs: AbstractFileSystem, path: str) -> Any:
    """Return the JSON document at ``path``."""
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def check_readable(fs: AbstractFileSystem, path: str) -> None:
    """Raise InputError if ``path`` cannot be opened for reading."""
    try:
        with fs.open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc}") from None
