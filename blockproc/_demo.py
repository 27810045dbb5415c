"""``blockproc demo``: make a sample access log in a cache directory and map a parser over it."""

from __future__ import annotations

import os
from pathlib import Path

from blockproc.api import map_lines
from blockproc.datasets import access_log
from blockproc.result import JobResult


def cache_dir() -> Path:
    """Return the cache directory: ``$XDG_CACHE_HOME/blockproc`` or ``~/.cache/blockproc``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "blockproc"


def parse_access_line(line: str) -> str | None:
    """Return ``ip,status,bytes`` for a server error (5xx) line of an access log, else None.

    Examples
    --------
    >>> parse_access_line('1.2.3.4 - - [x] "GET / HTTP/1.1" 503 12 "-" "curl"')
    '1.2.3.4,503,12'
    >>> parse_access_line('1.2.3.4 - - [x] "GET / HTTP/1.1" 200 12 "-" "curl"') is None
    True
    """
    after = line.split('" ', 1)[1]
    if after[0] != "5":
        return None
    status, size = after.split(" ", 2)[:2]
    return f"{line.split(' ', 1)[0]},{status},{size}"


def demo_input(size: int, seed: int = 0) -> Path:
    """Return the demo access log of ``size`` bytes, generating it on first use."""
    return demo_input_status(size, seed)[0]


def demo_input_status(size: int, seed: int = 0) -> tuple[Path, bool]:
    """Return the demo access log of ``size`` bytes and whether this call generated it
    (False: it was in the cache already)."""
    path = cache_dir() / "demo" / f"access-{size}-seed{seed}.log"
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    access_log(path, size, seed=seed)
    return path, True


def run_demo(size: int, *, output: str | None, executor: str, workers: int | None,
             progress: bool | None, block_size: int) -> JobResult:
    """Run the demo job and return its result."""
    source = demo_input(size)
    target = output or str(cache_dir() / "demo" / "out")
    return map_lines(parse_access_line, str(source), output=target, if_exists="overwrite",
                     executor=executor, workers=workers, progress=progress,
                     block_size=block_size)
