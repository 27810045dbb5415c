"""The per-line code of the core benchmarks, shared by every engine.

These are module-level functions so that cloudpickle sends them to blockproc's worker
processes *by reference* (``workloads.grep_5xx_upper``): the workers import this module,
which works because ``bench_core.py`` puts ``benchmarks/`` on ``sys.path`` before importing
it and spawned workers inherit the parent's ``sys.path``.

Input lines are Apache combined-format access log lines as written by
:func:`blockproc.datasets.access_log`::

    203.0.113.7 - - [27/Nov/2026:00:00:01 +0000] "GET /api/items/123 HTTP/1.1" 200 5123 "-" "UA"

The status is the field right after the first ``'" '`` (the quote closing the request);
the generator never puts ``'" '`` inside a request, so this is exact for this format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

# W1 -------------------------------------------------------------------------------------

# The same filter as a shell command, for bp.map_command and the sequential shell row.
# LC_ALL=C: byte-wise matching and ASCII-only case mapping (the input is pure ASCII, so
# `tr a-z A-Z` gives exactly str.upper()). grep's exit code 1 ("no match") is hidden by
# the pipeline (its status is tr's), so a block without 5xx lines is not an error.
GREP_5XX_PATTERN = "'\" 5[0-9][0-9] '"
GREP_5XX_UPPER_CMD = f"LC_ALL=C grep -E {GREP_5XX_PATTERN} | LC_ALL=C tr a-z A-Z"


def grep_5xx_upper(line: str) -> str | None:
    """W1: keep 5xx lines, upper-cased; drop the rest."""
    i = line.find('" ')
    if line[i + 2:i + 3] == "5":
        return line.upper()
    return None


# W2 -------------------------------------------------------------------------------------


def method_status(line: str) -> tuple[str, str]:
    """W2 per-line key: ``(HTTP method, status)``."""
    _, request, rest = line.split('"', 2)
    return request[:request.find(" ")], rest[1:4]


def count_lines(lines: Iterable[str], counts: Counter[tuple[str, str]] | None = None
                ) -> Counter[tuple[str, str]]:
    """Add the ``(method, status)`` of each line to ``counts`` (a new Counter by default)."""
    if counts is None:
        counts = Counter()
    counts.update(map(method_status, lines))
    return counts


def format_counts(counts: Counter[tuple[str, str]]) -> list[str]:
    """Return ``METHOD,STATUS,COUNT`` lines, sorted by method then status."""
    return [f"{m},{s},{n}" for (m, s), n in sorted(counts.items())]


def parse_counts(text: bytes) -> Counter[tuple[str, str]]:
    """Sum ``METHOD,STATUS,COUNT`` lines (e.g. the concatenated part-files of W2)."""
    total: Counter[tuple[str, str]] = Counter()
    for line in text.decode().splitlines():
        if line:
            m, s, n = line.split(",")
            total[m, s] += int(n)
    return total


def count_block(batch: Any) -> list[str]:
    """W2 for bp.map_blocks: this block's counts as sorted ``METHOD,STATUS,COUNT`` lines."""
    return format_counts(count_lines(batch.records))


# W3 -------------------------------------------------------------------------------------


def parse_project(line: str) -> str:
    """W3: ``ip,status,bytes`` of a line."""
    tail = line.partition('" ')[2]
    status, size, _ = tail.split(" ", 2)
    return f"{line[:line.find(' ')]},{status},{size}"
