"""URLs and filesystems: resolve a URL to ``(filesystem, path)``, name a protocol, tell
local disks and object stores apart, and turn a client's missing-credentials error into
a message that names the fix.

Examples
--------
>>> fs, path = resolve("memory://bucket/a.log.gz")
>>> protocol_of(fs), to_url(fs, path), compression_of(path), is_local(fs)
('memory', 'memory://bucket/a.log.gz', 'gzip', False)
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from blockproc.errors import AccessError, ConfigError
from blockproc.storage.aws_models import share_models
from blockproc.storage.local import local_filesystem, local_path, split_protocol

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem as AbstractFileSystem
else:
    AbstractFileSystem = Any



_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".lzma": "lzma",
                 ".zst": "zstd", ".zstd": "zstd"}
COMPRESSION_PACKAGES = {"zstd": "zstandard"}
GLOB_CHARS = "*?["

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

LOCAL_PROTOCOLS = frozenset({"file", "local", "memory"})


def resolve(url: str, storage_options: Mapping[str, Any] | None = None
            ) -> tuple[AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path.

    A local path (or ``file://`` URL) without storage options gets the local filesystem
    that answers without importing fsspec (:mod:`blockproc.storage.local`); every
    other URL gets its fsspec filesystem. Raises ConfigError naming the package to
    install when the protocol's fsspec implementation is missing (``pip install
    gcsfs`` for ``gs://``...).

    Examples
    --------
    >>> fs, path = resolve("memory://bucket/data.log")
    >>> fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol, path
    ('memory', '/bucket/data.log')
    """
    if not storage_options:
        path = local_path(str(url))
        if path is not None:
            return local_filesystem(), path
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(str(url), **dict(storage_options or {}))
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
    share_models(fs)
    return fs, path


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
    """Return the (cached) filesystem instance for a protocol and its options (the
    local one without fsspec for ``file`` and ``local`` without options).

    Examples
    --------
    >>> filesystem("file") is resolve("/tmp")[0]
    True
    """
    if protocol in ("file", "local") and not storage_options:
        return local_filesystem()
    import fsspec

    try:
        fs = fsspec.filesystem(protocol, **dict(storage_options or {}))
    except ImportError as exc:
        raise ConfigError(_missing_package_message(f"{protocol}://", exc)) from None
    share_models(fs)
    return fs


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


def check_protocol(url: str) -> None:
    """Refuse a URL whose protocol fsspec does not know, naming the ones it does."""
    protocol = split_protocol(url)[0]
    if protocol is None or protocol in ("file", "local"):
        return
    import fsspec

    if (protocol in fsspec.available_protocols()
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


@contextlib.contextmanager
def access_refused_as_error(url: str, what: str, hint: str) -> Iterator[None]:
    """Turn "permission denied" and "no credentials" from any store into a one-line
    :class:`~blockproc.AccessError` about ``what`` (exit 2, before any work).

    Examples
    --------
    >>> with access_refused_as_error("s3://b/in", "list the input", "check its policy"):
    ...     raise PermissionError("Access Denied")
    Traceback (most recent call last):
    ...
    blockproc.AccessError: cannot list the input 's3://b/in': permission denied ...
    """
    try:
        yield
    except PermissionError as exc:
        raise AccessError(f"cannot {what} {url!r}: permission denied ({exc}); {hint}") from None
    except Exception as exc:
        if is_credentials_error(exc):
            raise AccessError(credentials_message(url, exc)) from None
        raise


def is_object_store(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in OBJECT_STORES for p in protocols)


def is_local(fs: AbstractFileSystem) -> bool:
    """True for the local filesystem (plain files: renames and appends are cheap)."""
    return protocol_of(fs) in ("file", "local")
