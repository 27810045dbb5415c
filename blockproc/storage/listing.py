"""Listing inputs: expand paths, globs and directories into input files, and check that
an input is still what the plan saw.
"""

from __future__ import annotations

import functools
import posixpath
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blockproc._frozen import FrozenSlots
from blockproc.errors import (
    ConfigError,
    InputChangedError,
    InputError,
    NoInputFilesError,
)
from blockproc.model import InputFile
from blockproc.storage.retry import retry_call
from blockproc.storage.urls import (
    COMPRESSION_PACKAGES,
    GLOB_CHARS,
    access_refused_as_error,
    check_protocol,
    compression_of,
    protocol_of,
    resolve,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
else:
    AbstractFileSystem = Any



# -- inputs ------------------------------------------------------------------------------

def _token(info: Mapping[str, Any]) -> str:
    """Return a file's change token: its ETag, else its modification time.

    Examples
    --------
    >>> import datetime
    >>> when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    >>> _token({"LastModified": when, "size": 1}), _token({"mtime": 12.5}), _token({})
    ('LastModified=1767225600.0', 'mtime=12.5', '')
    """
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        timestamp = getattr(value, "timestamp", None)  # a datetime (S3's LastModified)
        if callable(timestamp):
            value = timestamp()
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
        raise InputChangedError(changed_message(expected.path, ", ".join(changes)))


def changed_message(path: str, what: str) -> str:
    return (f"input {path!r} changed after the job was planned ({what}); blockproc reads "
            f"every input as it was when planned, so it stops instead of mixing old and new "
            f"data. Rerun the job on the new data (if_exists='overwrite')")


def _fresh_info(fs: AbstractFileSystem, path: str) -> Mapping[str, Any]:
    fs.invalidate_cache(path)  # a listing cache (s3fs, gcsfs) may hold the planned info
    try:
        return retry_call(lambda: fs.info(path), f"to stat {path!r}")
    except FileNotFoundError:
        raise InputChangedError(changed_message(path, "it was deleted")) from None


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


OUTPUT_MARKERS = ("_SUCCESS", "_blockproc")
"""Names that make a directory a blockproc output: its manifest or its job state."""


class InputListing(FrozenSlots):
    """What :func:`scan_inputs` found: the files, the directories given as inputs (read
    recursively) and the blockproc outputs skipped below them."""

    _fields = ("fs", "files", "directories", "skipped")
    __slots__ = _fields
    fs: AbstractFileSystem
    files: list[InputFile]
    directories: tuple[str, ...]
    skipped: tuple[str, ...]

    def __init__(self, fs: AbstractFileSystem, files: list[InputFile],
                 directories: tuple[str, ...] = (), skipped: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "directories", directories)
        object.__setattr__(self, "skipped", skipped)


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
        check_protocol(url)
        this_fs, path = resolve(url, storage_options)
        if fs is None:
            fs = this_fs
        elif this_fs is not fs:
            raise ConfigError(
                f"all inputs must be on one filesystem; {url!r} is on "
                f"{protocol_of(this_fs)!r}, the first input on {protocol_of(fs)!r}"
            )
        expanded = _list_one(this_fs, url, path)
        for name, info in expanded.files.items():
            found[name] = InputFile(name, int(info["size"]), _token(info), compression_of(name))
        if expanded.directory is not None:
            directories.append(expanded.directory)
        skipped.extend(expanded.skipped)
    assert fs is not None
    _check_codecs(found.values())
    return InputListing(fs, [found[name] for name in sorted(found)],
                        tuple(dict.fromkeys(directories)), tuple(sorted(set(skipped))))



def _list_one(fs: AbstractFileSystem, url: str, path: str) -> _Expanded:
    """List one input argument (retried), with a one-line error for a refused access."""
    with access_refused_as_error(url, "list the input",
                                 "check its permissions or the credentials"):
        return retry_call(functools.partial(_expand, fs, url, path), f"to list {url!r}")


def _check_codecs(files: Iterable[InputFile]) -> None:
    """Refuse a compressed input whose codec is not installed, naming the package."""
    for item in files:
        if item.compression and item.compression not in _available_compressions():
            package = COMPRESSION_PACKAGES.get(item.compression, item.compression)
            raise ConfigError(
                f"input {item.path!r} is {item.compression}-compressed and the codec is not "
                f"installed; run `pip install {package}`"
            )


def _available_compressions() -> list[str]:
    import fsspec  # only for compressed inputs: plain local jobs never load it

    return fsspec.available_compressions()  # type: ignore[no-any-return]


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


class _Expanded(FrozenSlots):
    _fields = ("files", "directory", "skipped")
    __slots__ = _fields
    files: dict[str, Mapping[str, Any]]
    directory: str | None
    skipped: tuple[str, ...]

    def __init__(self, files: dict[str, Mapping[str, Any]], directory: str | None = None,
                 skipped: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "directory", directory)
        object.__setattr__(self, "skipped", skipped)


def _outputs_below(root: str, entries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Return the directories strictly below ``root`` that are blockproc outputs.

    Examples
    --------
    >>> _outputs_below("/in", {"/in/a.log": {}, "/in/x/_SUCCESS": {}, "/in/x/y/_blockproc/p": {},
    ...                        "/in/z/part-0": {}, "/in/z/_blockproc/plan.json": {}})
    ['/in/x', '/in/z']
    """
    outputs: set[str] = set()
    for name in entries:
        parts = name[len(root):].strip("/").split("/")
        for depth in range(1, len(parts)):
            if parts[depth] in OUTPUT_MARKERS:
                outputs.add(root + "/" + "/".join(parts[:depth]))
                break
    # an output inside a skipped output is skipped with it (a look at each one's
    # ancestors, not a comparison of every pair of outputs)
    return sorted(o for o in outputs if not _inside(o, root, outputs))


def _inside(name: str, root: str, outputs: set[str]) -> bool:
    """True if a directory strictly above ``name`` (and below ``root``) is in ``outputs``.

    Examples
    --------
    >>> _inside("/in/x/part-0", "/in", {"/in/x"}), _inside("/in/xy/a", "/in", {"/in/x"})
    (True, False)
    """
    end = name.rfind("/")
    while end > len(root):
        if name[:end] in outputs:
            return True
        end = name.rfind("/", 0, end)
    return False


def _expand(fs: AbstractFileSystem, url: str, path: str) -> _Expanded:
    if any(c in path for c in GLOB_CHARS):
        matches = fs.glob(path, detail=True)
        first_glob = min(path.index(c) for c in GLOB_CHARS if c in path)
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
    skip = set(outputs)
    files: dict[str, Mapping[str, Any]] = {}
    for name, entry in entries.items():
        if _is_hidden(name[len(root):]) or (skip and _inside(name, root, skip)):
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
