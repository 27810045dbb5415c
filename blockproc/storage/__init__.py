"""The only package that talks to fsspec, one module per concern.

:mod:`~blockproc.storage.urls` (URLs, filesystems, local or object store, credentials
messages), :mod:`~blockproc.storage.local` (the local disk without importing fsspec:
what a local path resolves to), :mod:`~blockproc.storage.retry` (transient errors and
the one retry policy every storage call goes through), :mod:`~blockproc.storage.listing`
(inputs and their change tokens), :mod:`~blockproc.storage.reading` (ranged reads,
decompression), :mod:`~blockproc.storage.writing` (part-files, atomic writes, publish,
exclusive create) and :mod:`~blockproc.storage.aws_models` (one parse of botocore's
models per process, for every s3fs filesystem). The names other modules use are
re-exported here, so ``from blockproc.storage import resolve`` is the way to import them.

Transient storage errors (throttling, 5xx, connection resets) are retried with
exponential backoff (:func:`retry_call`); an input that changed since it was planned
raises :class:`InputChangedError`, which is never retried.

Examples
--------
>>> fs, path = resolve("memory://doc/storage/a.txt")
>>> write_bytes_atomic(fs, path, b"hello")
>>> fs.cat_file(path)
b'hello'
"""

from __future__ import annotations

from blockproc.errors import InputChangedError
from blockproc.storage.aws_models import share_models
from blockproc.storage.listing import InputListing, list_inputs, scan_inputs, verify_unchanged
from blockproc.storage.reading import (
    RangeSource,
    is_corrupt_stream,
    iter_whole_files,
    open_decompressed,
    read_whole,
    zstd_frames,
)
from blockproc.storage.retry import (
    RetryPolicy,
    default_retry,
    is_retryable,
    retry_call,
    retry_policy,
    set_retry_policy,
)
from blockproc.storage.urls import (
    AbstractFileSystem,
    access_refused_as_error,
    compression_of,
    credentials_message,
    filesystem,
    is_credentials_error,
    is_local,
    protocol_of,
    resolve,
    to_url,
)
from blockproc.storage.writing import (
    create_exclusive,
    open_output,
    publish,
    read_json,
    remove_tree,
    write_bytes_atomic,
    write_json_atomic,
)

__all__ = [
    "AbstractFileSystem", "InputChangedError", "InputListing", "RangeSource", "RetryPolicy",
    "access_refused_as_error",
    "compression_of", "create_exclusive", "credentials_message", "default_retry",
    "filesystem", "is_corrupt_stream", "is_credentials_error", "is_local", "is_retryable",
    "iter_whole_files",
    "list_inputs", "open_decompressed", "open_output", "protocol_of", "publish", "read_json",
    "read_whole", "remove_tree", "resolve", "retry_call", "retry_policy", "scan_inputs",
    "set_retry_policy", "share_models", "to_url", "verify_unchanged", "write_bytes_atomic",
    "write_json_atomic", "zstd_frames",
]
