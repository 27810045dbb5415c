"""Where workers run: ``inline``, ``threads``, ``processes`` (the default), ``cluster``
(workers that connect over TCP) or ``dask`` (a dask.distributed cluster)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from blockproc.errors import ConfigError
from blockproc.executors.base import Event, Executor, Failed, Finished, Progress
from blockproc.executors.inline import InlineExecutor
from blockproc.executors.processes import ProcessExecutor
from blockproc.executors.threads import ThreadExecutor

EXECUTORS = ("inline", "threads", "processes", "cluster", "dask")

__all__ = ["EXECUTORS", "Event", "Executor", "Failed", "Finished", "Progress",
           "default_workers", "make_executor"]


def default_workers() -> int:
    """Return the number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(name: str, workers: int | None,
                  options: Mapping[str, Any] | None = None) -> Executor:
    """Return a new executor by name.

    ``options`` are the executor's own settings (``executor_options`` in the API):
    ``listen``, ``authkey``, ``authkey_file`` for ``cluster``; ``client``, ``address``
    for ``dask``. For ``cluster``, ``workers`` is the number of local workers to start
    (default none: workers join with ``blockproc worker --connect``).

    Examples
    --------
    >>> make_executor("threads", 2).num_slots
    2
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"workers must be a positive int, got {workers!r}")
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"executor_options must be a mapping, got {options!r}")
    if name == "cluster":
        from blockproc.executors.cluster import ClusterExecutor

        return ClusterExecutor.from_options(options or {}, workers)
    if name == "dask":
        from blockproc.executors.dask import DaskExecutor

        return DaskExecutor.from_options(options or {}, workers)
    if options and name in EXECUTORS:
        raise ConfigError(f"executor {name!r} takes no executor_options, got "
                          f"{sorted(options)}; they are for 'cluster' and 'dask'")
    if name == "inline":
        return InlineExecutor()
    if name == "threads":
        return ThreadExecutor(workers or default_workers())
    if name == "processes":
        return ProcessExecutor(workers or default_workers())
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
