"""Helpers for users' tests (and ours): write small inputs, read a job's output back,
count what a function counts."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from blockproc.counters import collecting
from blockproc.output.manifest import read_manifest
from blockproc.storage import resolve, to_url


def write_files(root: str, files: Mapping[str, bytes]) -> list[str]:
    """Write ``{relative name: bytes}`` under ``root`` and return their URLs, sorted.

    Examples
    --------
    >>> write_files("memory://doc/t", {"b.txt": b"2", "a.txt": b"1"})
    ['memory://doc/t/a.txt', 'memory://doc/t/b.txt']
    """
    fs, base = resolve(root)
    urls = []
    for name in sorted(files):
        path = posixpath.join(base, name)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, files[name])
        urls.append(to_url(fs, path))
    return urls


def read_parts(output: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """Return the concatenated part-files of a finished job, in block order.

    Reads only what the ``_SUCCESS`` manifest lists; raises FileNotFoundError if the job
    did not finish.

    Examples
    --------
    >>> read_parts("memory://doc/no-such-output")
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    fs, base = resolve(output, storage_options)
    manifest = read_manifest(fs, base)
    return b"".join(fs.cat_file(posixpath.join(base, b["part"])) for b in manifest["blocks"])


def counting() -> Any:
    """Count what ``bp.counter`` counts in the ``with`` block into a fresh dict, as one
    attempt of a job does: for unit tests of a mapper's counters.

    Examples
    --------
    >>> import blockproc as bp
    >>> def parse(line):
    ...     if not line:
    ...         bp.counter("blank").add()
    ...     return line or None
    >>> with counting() as counts:
    ...     _ = [parse(line) for line in ["a", "", "b", ""]]
    >>> counts
    {'blank': 2}
    """
    return collecting()
