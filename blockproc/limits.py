"""How many worker processes one machine may start: a bound from its CPUs and memory,
which ``BLOCKPROC_MAX_WORKERS`` replaces (``--workers 10000`` must not start 10,000
processes)."""

from __future__ import annotations

import os

from blockproc._units import format_size
from blockproc.errors import ConfigError
from blockproc.executors import default_workers

WORKERS_PER_CPU = 8
"""At most this many worker processes per CPU (I/O-bound maps may use more than one)."""

WORKER_MEMORY = 256 * 2**20
"""Memory to count per worker process: the interpreter, its imports and a 64 MiB block."""

MAX_WORKERS_ENV = "BLOCKPROC_MAX_WORKERS"
"""The environment variable that replaces the machine's worker bound (see max_workers)."""


def max_workers() -> tuple[int, str]:
    """Return the most worker processes one machine may start, and where that comes from.

    ``WORKERS_PER_CPU`` per CPU, and no more than the machine's memory holds at
    ``WORKER_MEMORY`` each; the environment variable ``BLOCKPROC_MAX_WORKERS=N``
    replaces the bound.

    Examples
    --------
    >>> bound, why = max_workers()
    >>> bound >= 1 and "CPU" in why
    True
    """
    override = os.environ.get(MAX_WORKERS_ENV)
    if override is not None:
        try:
            value = int(override)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{MAX_WORKERS_ENV}={override!r} must be a whole number >= 1")
        return value, f"{MAX_WORKERS_ENV}={value}"
    cpus = default_workers()
    bound = WORKERS_PER_CPU * cpus
    why = f"{WORKERS_PER_CPU} per CPU, {cpus} CPU{'s' if cpus != 1 else ''}"
    memory = total_memory()
    if memory:
        bound = min(bound, memory // WORKER_MEMORY)
        why += f"; {format_size(WORKER_MEMORY)} each of {format_size(memory)} memory"
    return max(1, bound), why


def total_memory() -> int:
    """Bytes of physical memory of this machine (0 where it cannot be told)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on Linux or macOS
        return 0
