"""Where workers run: ``inline``, ``threads`` or ``processes`` (the default)."""

from __future__ import annotations

import os

from blockproc.errors import ConfigError
from blockproc.executors.base import Event, Executor, Failed, Finished, Progress
from blockproc.executors.inline import InlineExecutor
from blockproc.executors.processes import ProcessExecutor
from blockproc.executors.threads import ThreadExecutor

EXECUTORS = ("inline", "threads", "processes")

__all__ = ["EXECUTORS", "Event", "Executor", "Failed", "Finished", "Progress",
           "default_workers", "make_executor"]


def default_workers() -> int:
    """Return the number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(name: str, workers: int | None) -> Executor:
    """Return a new executor by name.

    Examples
    --------
    >>> make_executor("threads", 2).num_slots
    2
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"workers must be a positive int, got {workers!r}")
    if name == "inline":
        return InlineExecutor()
    if name == "threads":
        return ThreadExecutor(workers or default_workers())
    if name == "processes":
        return ProcessExecutor(workers or default_workers())
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
