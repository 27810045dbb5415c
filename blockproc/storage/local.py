"""The local disk without importing fsspec: :class:`LocalFileSystem` answers the calls a
job makes on plain paths (stat, list, walk, open, rename, remove) exactly as fsspec's
``LocalFileSystem`` does, and hands every other call (``glob``, text or compressed
opens, transactions...) to fsspec's, imported then.

Importing fsspec costs tens of milliseconds (asyncio, entry points, codecs), about a
third of a small local job's whole run, so :func:`~blockproc.storage.resolve` returns
this filesystem for a local path or ``file://`` URL given without storage options.

Examples
--------
>>> fs = local_filesystem()
>>> fs is local_filesystem(), fs.protocol, strip_protocol("file:///tmp/x/")
(True, ('file', 'local'), '/tmp/x')
>>> local_path("s3://bucket/a"), local_path("memory://a"), local_path("/data/a.log")
(None, None, '/data/a.log')
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from typing import Any

_PREFIXES = ("file://", "file:", "local://", "local:")


def split_protocol(url: str) -> tuple[str | None, str]:
    """Return ``(protocol, rest)`` of a URL, ``protocol`` None for a plain path (fsspec's
    ``split_protocol``, without importing fsspec).

    Examples
    --------
    >>> split_protocol("s3://b/k"), split_protocol("/a/b"), split_protocol("c://x")
    (('s3', 'b/k'), (None, '/a/b'), (None, 'c://x'))
    """
    if "://" in url:
        protocol, path = url.split("://", 1)
        if len(protocol) > 1:  # a one-letter "protocol" is a Windows drive
            return protocol, path
    if url.startswith("data:"):
        protocol, path = url.split(":", 1)
        return protocol, path
    return None, url


def strip_protocol(path: str) -> str:
    """Return the absolute POSIX path fsspec's ``LocalFileSystem`` makes of ``path``.

    Examples
    --------
    >>> strip_protocol("local:///a/b//"), strip_protocol("/"), strip_protocol("~") != "~"
    ('/a/b', '/', True)
    """
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    if not path.startswith("/"):
        if path.startswith("~"):
            path = os.path.expanduser(path)
        else:
            if path.startswith("./"):
                path = path[2:]
            elif path == ".":
                path = ""
            path = f"{os.getcwd()}/{path}"
    return path.rstrip("/") or "/"


def local_path(url: str) -> str | None:
    """Return the path of ``url`` if it names the local disk (a plain path, ``file://``
    or ``local://``, no ``::`` chain), else None: the URLs :class:`LocalFileSystem`
    serves. On Windows always None (fsspec's drive handling applies).

    Examples
    --------
    >>> local_path("file:///data/in/"), local_path("gs://b/k"), local_path("a::file:///x")
    ('/data/in', None, None)
    """
    if os.sep != "/" or "::" in url:
        return None
    protocol = split_protocol(url)[0]
    if protocol is not None and protocol not in ("file", "local"):
        return None
    return strip_protocol(url)


def _fsspec_local() -> Any:
    import fsspec

    return fsspec.filesystem("file")


def _in_transaction() -> bool:
    """True inside ``with fs.transaction:`` (fsspec's, so fsspec is loaded by then)."""
    return "fsspec" in sys.modules and bool(_fsspec_local()._intrans)


class LocalFileSystem:
    """fsspec's ``LocalFileSystem`` for the calls a job makes, without fsspec.

    Every method here returns what fsspec's returns (the same ``info`` dicts, the same
    exceptions); any other attribute is fsspec's filesystem's, which is imported on
    that first use. One instance per process (:func:`local_filesystem`), so
    ``resolve(a)[0] is resolve(b)[0]`` for two local paths, as with fsspec's instance
    cache; it pickles to that instance.

    Examples
    --------
    >>> import pickle, tempfile
    >>> fs = local_filesystem()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     fs.pipe_file(f"{tmp}/a.log", b"hello\\n")
    ...     info = fs.info(f"{tmp}/a.log")
    ...     listed = fs.ls(tmp) == [f"{tmp}/a.log"]
    ...     (info["type"], info["size"], fs.cat_file(f"{tmp}/a.log"), listed)
    ('file', 6, b'hello\\n', True)
    >>> pickle.loads(pickle.dumps(fs)) is fs
    True
    """

    protocol = ("file", "local")
    root_marker = "/"
    local_file = True
    fsid = "local"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_fsspec_local(), name)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return local_filesystem, ()

    def __repr__(self) -> str:
        return "LocalFileSystem()"

    @staticmethod
    def _strip_protocol(path: Any) -> str:
        return strip_protocol(os.fspath(path))

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        """Return fsspec's info dict of a path (or an ``os.DirEntry``)."""
        if isinstance(path, os.DirEntry):
            out = path.stat(follow_symlinks=False)
            link = path.is_symlink()
            kind = ("directory" if path.is_dir(follow_symlinks=False) else
                    "file" if path.is_file(follow_symlinks=False) else "other")
            size = out.st_size
            if link:
                try:
                    size = path.stat(follow_symlinks=True).st_size
                except OSError:
                    size = 0
            name = strip_protocol(path.path)
        else:
            name = strip_protocol(os.fspath(path))
            out = os.stat(name, follow_symlinks=False)
            link = stat.S_ISLNK(out.st_mode)
            if link:
                out = os.stat(name, follow_symlinks=True)
            size = out.st_size
            kind = ("directory" if stat.S_ISDIR(out.st_mode) else
                    "file" if stat.S_ISREG(out.st_mode) else "other")
        result: dict[str, Any] = {
            "name": name, "size": size, "type": kind,
            "created": getattr(out, "st_birthtime", out.st_ctime), "islink": link,
            "mode": out.st_mode, "uid": out.st_uid, "gid": out.st_gid,
            "mtime": out.st_mtime, "ino": out.st_ino, "nlink": out.st_nlink,
        }
        if link:
            result["destination"] = os.readlink(name)
        return result

    def exists(self, path: Any, **kwargs: Any) -> bool:
        try:
            self.info(path)
        except Exception:  # as fsspec: any error reads as "not there"
            return False
        return True

    def isdir(self, path: Any) -> bool:
        return os.path.isdir(self._strip_protocol(path))

    def isfile(self, path: Any) -> bool:
        return os.path.isfile(self._strip_protocol(path))

    def size(self, path: Any) -> int | None:
        return self.info(path).get("size")

    def ls(self, path: Any, detail: bool = False, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        path_info = self.info(path)
        if path_info["type"] != "directory":
            return [path_info] if detail else [path_info["name"]]
        infos: list[Any] = []
        with os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # removed while listed
                    infos.append(self.info(entry) if detail else strip_protocol(entry.path))
        return infos

    def find(self, path: Any, maxdepth: int | None = None, withdirs: bool = False,
             detail: bool = False, **kwargs: Any) -> Any:
        """Every file below ``path``, sorted (fsspec's ``find``: what listing a directory
        input asks); with ``maxdepth``, ``withdirs`` or other options, fsspec's."""
        if maxdepth is not None or withdirs or kwargs:
            return _fsspec_local().find(path, maxdepth=maxdepth, withdirs=withdirs,
                                        detail=detail, **kwargs)
        root = self._strip_protocol(path)
        found: dict[str, Any] = {}
        self._walk(root, found)
        if not found and self.isfile(root):
            found[root] = {}
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    def _walk(self, path: str, found: dict[str, Any]) -> None:
        """fsspec's ``walk`` as ``find`` uses it: a directory that cannot be listed is
        left out, a symlink is not followed (its type is ``other``)."""
        try:
            listing = self.ls(path, detail=True)
        except OSError:
            return
        below = []
        for info in listing:
            name = info["name"].rstrip("/")
            if info["type"] == "directory" and name != path:
                below.append(name)
            else:
                found[info["name"]] = info
        for directory in below:
            self._walk(directory, found)

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        os.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def open(self, path: Any, mode: str = "rb", block_size: int | None = None,
             cache_options: Any = None, compression: str | None = None,
             **kwargs: Any) -> Any:
        """Open a file: binary modes are Python's own file (what fsspec's opener wraps);
        text modes, compression and transactions go to fsspec."""
        if "b" not in mode or compression is not None or "autocommit" in kwargs or \
                _in_transaction():
            return _fsspec_local().open(path, mode, block_size=block_size,
                                        cache_options=cache_options,
                                        compression=compression, **kwargs)
        return open(self._strip_protocol(path), mode)

    def cat_file(self, path: Any, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        if start is not None or end is not None or kwargs:
            return _fsspec_local().cat_file(path, start, end, **kwargs)  # type: ignore[no-any-return]
        with open(self._strip_protocol(path), "rb") as f:
            return f.read()

    def pipe_file(self, path: Any, value: bytes, mode: str = "overwrite",
                  **kwargs: Any) -> None:
        if kwargs:
            _fsspec_local().pipe_file(path, value, mode, **kwargs)
            return
        if mode == "create" and self.exists(path):
            raise FileExistsError
        with open(self._strip_protocol(path), "wb") as f:
            f.write(value)

    def rm_file(self, path: Any) -> None:
        os.remove(self._strip_protocol(path))

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        for item in path if isinstance(path, list) else [path]:
            p = self._strip_protocol(item)
            if os.path.isdir(p) and not os.path.islink(p):
                if not recursive:
                    raise ValueError("Cannot delete directory, set recursive=True")
                if os.path.abspath(p) == os.getcwd():
                    raise ValueError("Cannot delete current working directory")
                shutil.rmtree(p)
            else:
                os.remove(p)

    def mv(self, path1: Any, path2: Any, recursive: bool = True, **kwargs: Any) -> None:
        shutil.move(self._strip_protocol(path1), self._strip_protocol(path2))

    def cp_file(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        source, target = self._strip_protocol(path1), self._strip_protocol(path2)
        if os.path.isfile(source):
            shutil.copyfile(source, target)
        elif os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            raise FileNotFoundError(source)

    def invalidate_cache(self, path: Any = None) -> None:
        """Nothing to forget: the local disk is never cached."""

    def unstrip_protocol(self, name: Any) -> str:
        return f"file://{self._strip_protocol(name)}"


_INSTANCE = LocalFileSystem()


def local_filesystem() -> LocalFileSystem:
    """Return the process's one :class:`LocalFileSystem`.

    Examples
    --------
    >>> local_filesystem() is local_filesystem()
    True
    """
    return _INSTANCE
