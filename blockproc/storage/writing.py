"""Writing outputs: part-files, atomic small files, publishing a finished file under its
final name, and the exclusive create that the output lock rests on.

Object stores (S3, GCS, Azure) have no rename and no directories: publishing a file is
a server-side copy of one object (:func:`publish`), and a single PUT is already atomic
(:func:`write_bytes_atomic`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import threading
import weakref
from typing import TYPE_CHECKING, Any

from blockproc.storage.retry import retry_call
from blockproc.storage.urls import is_local, is_object_store, protocol_of

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
else:
    AbstractFileSystem = Any



_inherited: list[Any] = []
"""In a forked child: the parent's s3fs filesystems, kept alive and never closed here."""


def _forget_inherited_sessions() -> None:
    """In a forked child (a worker forked from the master): leave the parent's s3fs
    sessions alone. s3fs closes a client's session when its filesystem is collected
    (``weakref.finalize``), and aiohttp closes a connector's sockets when it is collected;
    in the child, the copies of the parent's filesystems would be collected once fsspec
    drops its instance cache, and closing them there either sends the parent's session to
    the child's new event loop ("attached to a different loop", a traceback on stderr) or
    unregisters the parent's sockets from the event-loop selector the two processes
    share. So the child keeps them, unused, until it exits."""
    registry = getattr(weakref.finalize, "_registry", None) or {}
    for finalizer, info in list(registry.items()):
        func = getattr(info, "func", None)
        if getattr(func, "__qualname__", "") == "S3FileSystem.close_session":
            found = finalizer.peek()
            if found is not None:
                _inherited.append(found[0])
            finalizer.detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_sessions)


# -- outputs -----------------------------------------------------------------------------

def open_output(fs: AbstractFileSystem, path: str) -> Any:
    """Open ``path`` for writing, creating its directory.

    The open is retried on transient errors; the writes stream to the store (s3fs
    uploads parts with its own retries), and a failed write fails the attempt, which
    the master runs again. An object store has no directories to make: no request is
    sent before the upload (s3fs's ``makedirs`` asks whether the bucket exists, once per
    part-file; the job's lock was written to the same bucket before any block ran).
    """
    folders = not is_object_store(fs)

    def do_open() -> Any:
        if folders:
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return fs.open(path, "wb")

    return retry_call(do_open, f"to open {path!r} for writing")


SIMPLE_COPY_LIMIT = 4 * 2**30
"""Objects up to this size are copied with one CopyObject (S3 allows up to 5 GiB)."""


def publish(fs: AbstractFileSystem, source: str, destination: str, *,
            size: int | None = None, keep_source: bool = False) -> bool:
    """Give the complete file ``source`` the name ``destination``, atomically for readers;
    return True if ``source`` is still there for the caller to delete.

    On a filesystem this is a rename. On an object store, which has no rename, it is a
    server-side copy of one object (readers see the old object or the whole new one,
    never a part) followed by deleting ``source`` (unless ``keep_source``: the caller
    deletes many at once, in bulk); nothing is listed, and no directory is copied. With
    ``size`` (the bytes of ``source``) s3fs is spared the HEAD it sends to choose between
    a simple and a multipart copy. Retried on transient errors: copying again is harmless.

    Examples
    --------
    >>> from blockproc.storage import filesystem
    >>> fs = filesystem("memory")
    >>> fs.pipe_file("/doc/pub/a.tmp", b"done")
    >>> publish(fs, "/doc/pub/a.tmp", "/doc/pub/a"), fs.cat_file("/doc/pub/a")
    (False, b'done')
    """
    if is_local(fs):  # the master publishes every block: skip fsspec's checks
        retry_call(lambda: os.replace(source, destination), f"to rename {source!r}")
        return False
    if not is_object_store(fs):
        retry_call(lambda: fs.mv(source, destination), f"to rename {source!r}")
        return False
    copy = _one_copy(fs) if size is not None and size <= SIMPLE_COPY_LIMIT else None
    retry_call(lambda: (copy or fs.cp_file)(source, destination), f"to copy {source!r}")
    if keep_source:
        return True

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(source)

    retry_call(remove, f"to delete {source!r}")
    return False


def _one_copy(fs: AbstractFileSystem) -> Any:
    """s3fs's single CopyObject, without the HEAD of ``cp_file`` (None elsewhere)."""
    basic = getattr(fs, "_copy_basic", None)
    if protocol_of(fs) not in ("s3", "s3a") or basic is None:
        return None
    from fsspec.asyn import sync

    return lambda source, destination: sync(fs.loop, basic, source, destination)


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
    if is_object_store(fs):
        retry_call(lambda: fs.pipe_file(path, data), f"to write {path!r}")
        return

    def write() -> None:
        # a name of its own per writer: two writers of one path never share a staging file
        staging = posixpath.join(directory, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
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
    >>> from blockproc.storage import filesystem
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
    staging = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(16).hex()}.tmp")
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
    """Return the JSON document at ``path``.

    Read with ``cat_file``, not ``open``: fsspec's memory filesystem hands every reader of
    a path the same file object, so two threads reading one document at once shared its
    position and one of them read nothing (two jobs racing for one output, in tests).
    """
    data: bytes = retry_call(lambda: fs.cat_file(path), f"to read {path!r}")
    return json.loads(data)
