"""A worker process dies with its parent: ``processes`` workers with their master, the
slots of ``blockproc worker`` with their supervisor."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from typing import Any

WATCH_INTERVAL = 0.2
"""Seconds between a worker process's checks that its parent is still there."""

_LIBC: list[Any] = []  # [the C library through ctypes, or None], once per process


def libc() -> Any:
    """Return this process's C library through ctypes (None where it cannot be loaded),
    loading it once: the master calls it before it forks its workers, so that a forked
    worker finds it loaded (importing ctypes and loading libffi in every worker would
    delay each worker's first block).

    Examples
    --------
    >>> libc() is libc()
    True
    """
    if not _LIBC:
        found: Any = None
        with contextlib.suppress(OSError):
            found = ctypes.CDLL(None, use_errno=True)
            for name in ("prctl", "mallopt"):  # resolved here, not in every worker
                with contextlib.suppress(AttributeError):
                    getattr(found, name)
        _LIBC.append(found)
    return _LIBC[0]


def die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the process ``parent_pid`` (this one's parent) is gone, whatever
    the main thread is doing.

    On Linux the kernel kills this process the moment its parent dies
    (``PR_SET_PDEATHSIG``), even inside C code that holds the GIL. Where that cannot be
    set, a daemon thread checks the parent every ``WATCH_INTERVAL`` seconds, kills this
    process's own children (a mapper's shell command) and exits; where it is set, no
    thread is started (the kernel's SIGKILL would come first, and a worker starts its
    first block sooner without it). The parent must not spawn this process from a
    thread that ends before the process should (the death signal follows the spawning
    thread): blockproc spawns from the thread that later stops its workers.
    """
    armed = False
    with contextlib.suppress(Exception):
        armed = libc().prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCH_INTERVAL)
        _kill_children()
        os._exit(1)

    threading.Thread(target=watch, name="blockproc-watchdog", daemon=True).start()


def _kill_children() -> None:
    """SIGKILL this process's children (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError):
        for thread in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{thread}/children") as listing:
                for pid in listing.read().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
