"""The checks that refuse an output before anything is written: an output holding an
input, files blockproc did not write, or an earlier job that ``if_exists`` does not allow.

Examples
--------
>>> refuse_foreign("memory://out", ["/out/part-00000.txt", "/out/notes.txt"], "overwrite")
Traceback (most recent call last):
...
blockproc.OutputExistsError: output 'memory://out' holds files ... did not write (notes.txt); ...
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from blockproc._types import IfExists
from blockproc.errors import (
    ConfigError,
    OutputExistsError,
    OutputLockedError,
    UnfinishedOutputError,
)
from blockproc.output.layout import BLOCKPROC_ENTRY, PLAN, STATE_DIR, SUCCESS, names
from blockproc.output.ledger import read_ledger
from blockproc.storage import AbstractFileSystem, retry_call


def check_not_input(path: str, url: str, inputs: Sequence[str]) -> None:
    """Raise :class:`~blockproc.ConfigError` if the output ``path`` is or holds an input.

    Examples
    --------
    >>> check_not_input("/data/out", "file:///data/out", ["/data/in.txt"])
    >>> check_not_input("/data", "file:///data", ["/data/in.txt"])
    Traceback (most recent call last):
    ...
    blockproc.ConfigError: output 'file:///data' contains the input '/data/in.txt'; ...
    """
    root = path.rstrip("/") + "/"
    for input_path in inputs:
        if input_path == path or input_path.startswith(root):
            raise ConfigError(
                f"output {url!r} contains the input {input_path!r}; blockproc never writes "
                f"over its inputs, so choose an output directory outside them"
            )


def refuse_foreign(url: str, entries: Sequence[str], if_exists: IfExists) -> None:
    """Refuse a directory holding entries blockproc did not write, naming a few."""
    foreign = sorted(n for n in names(list(entries)) if not BLOCKPROC_ENTRY.match(n))
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                      if len(foreign) > 5 else "")
    what = ("blockproc never deletes files it did not write"
            if if_exists == "overwrite" else "blockproc writes only into its own outputs")
    raise OutputExistsError(
        f"output {url!r} holds files blockproc did not write ({shown}); {what}, "
        f"so choose a new or empty output directory (or move those files away)")


def exists_error(fs: AbstractFileSystem, path: str, url: str,
                 entries: Sequence[str]) -> OutputExistsError:
    """Return the error for an existing output under ``if_exists="error"``: one being set
    up, one unfinished (resume it) or one finished (overwrite it)."""
    found = set(names(list(entries)))
    plan = posixpath.join(path, STATE_DIR, PLAN)
    if STATE_DIR in found and SUCCESS not in found and \
            not retry_call(lambda: fs.exists(plan), f"to look for {plan!r}"):
        return OutputLockedError(
            f"output {url!r} is being set up by another job right now (or by one "
            f"that crashed while starting); try again in a moment, or pass "
            f"if_exists='overwrite' (CLI: --if-exists overwrite) to start over")
    if STATE_DIR in found and SUCCESS not in found:
        done = len(read_ledger(fs, path))
        return UnfinishedOutputError(
            f"output {url!r} already exists and holds an unfinished blockproc job "
            f"({done} blocks committed); pass if_exists='resume' (CLI: --resume) to "
            f"finish it, or if_exists='overwrite' (CLI: --if-exists overwrite) to "
            f"start over")
    what = "holds a finished blockproc job" if SUCCESS in found else \
        "holds blockproc part-files"
    return OutputExistsError(
        f"output {url!r} already exists and {what}; pass if_exists='overwrite' "
        f"(CLI: --if-exists overwrite) to replace it, or choose another output")
