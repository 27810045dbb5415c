"""Where workers run: ``inline``, ``threads``, ``processes`` (the default), ``cluster``
(workers that connect over TCP) or ``dask`` (a dask.distributed cluster)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from blockproc._registry import Registry
from blockproc.errors import ConfigError
from blockproc.executors.base import Event, Executor, Failed, Finished, Progress

REGISTRY = Registry("executor", {
    "inline": "blockproc.executors.inline:InlineExecutor",
    "threads": "blockproc.executors.threads:ThreadExecutor",
    "processes": "blockproc.executors.processes:ProcessExecutor",
    "cluster": "blockproc.executors.cluster:ClusterExecutor",
    "dask": "blockproc.executors.dask:DaskExecutor",
}, requires={"dask": ["distributed"]})
"""The names ``executor=`` accepts; ``cluster`` and ``dask`` are imported on first use."""

EXECUTORS = REGISTRY.names()
"""The executor names, in the order the help lists them."""

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
    cls = REGISTRY.load(name)
    if hasattr(cls, "from_options"):  # cluster, dask: they read their own options
        return cls.from_options(options or {}, workers)  # type: ignore[no-any-return]
    if options:
        raise ConfigError(f"executor {name!r} takes no executor_options, got "
                          f"{sorted(options)}; they are for 'cluster' and 'dask'")
    if "num_slots" in _parameters(cls):
        return cls(workers or default_workers())  # type: ignore[no-any-return]
    return cls()  # type: ignore[no-any-return]


def _parameters(cls: type) -> tuple[str, ...]:
    """The parameter names of ``cls(...)`` (``inspect.signature`` without importing
    ``inspect``, which costs a small job's start-up ~5 ms).

    >>> class Pool:
    ...     def __init__(self, num_slots, *, name=""): pass
    >>> _parameters(Pool)
    ('num_slots', 'name')
    """
    code = getattr(cls.__init__, "__code__", None)  # type: ignore[misc]
    if code is None:  # written in C: takes what object() does
        return ()
    return tuple(code.co_varnames[1:code.co_argcount + code.co_kwonlyargcount])
