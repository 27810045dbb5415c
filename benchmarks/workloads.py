"""The per-line and per-batch code of the benchmarks, shared by every engine.

These are module-level functions so that cloudpickle and multiprocessing send them to
worker processes *by reference* (``workloads.grep_5xx_upper``): the workers import this
module, which works because the benchmark scripts put ``benchmarks/`` on ``sys.path``
(and ``PYTHONPATH`` for their children) before importing it.

Input lines are Apache combined-format access log lines as written by
:func:`blockproc.datasets.access_log`::

    203.0.113.7 - - [27/Nov/2026:00:00:01 +0000] "GET /api/items/123 HTTP/1.1" 200 5123 "-" "UA"

Split on spaces, field 8 is the status and field 9 the bytes (the generator never puts a
space inside a request path). Each workload has a per-line form (for ``map_lines``) and
a per-batch form (for the hand-written Pool and ``map_batches``): the same expression
inlined in one list comprehension, so a batch costs one call, not one per line.
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
    return line.upper() if line.split(" ", 9)[8][0] == "5" else None


def grep_5xx_upper_batch(lines: list[str]) -> list[str]:
    """W1 for a batch of lines: one call, no call per line."""
    return [line.upper() for line in lines if line.split(" ", 9)[8][0] == "5"]


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


def count_batch(lines: list[str]) -> list[str]:
    """W2 for a batch of lines: its counts as sorted ``METHOD,STATUS,COUNT`` lines (the
    verification sums the counts of every batch)."""
    return format_counts(count_lines(lines))


# W3 -------------------------------------------------------------------------------------


def parse_project(line: str) -> str:
    """W3: ``ip,status,bytes`` of a line."""
    p = line.split(" ", 10)
    return f"{p[0]},{p[8]},{p[9]}"


def parse_project_batch(lines: list[str]) -> list[str]:
    """W3 for a batch of lines: one call, no call per line."""
    return [f"{p[0]},{p[8]},{p[9]}" for line in lines for p in (line.split(" ", 10),)]
