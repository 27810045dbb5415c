"""Status lines of remote executors: which worker runs which block, how fast, who lags.

The ``cluster`` and ``dask`` executors print these from ``describe()``. Every number
comes from the job's :class:`~blockproc.scheduler.Scheduler` (progress, start, lag);
the executor only says which of its workers holds which attempt.
"""

from __future__ import annotations

from collections.abc import Iterable

from blockproc._units import format_size
from blockproc.scheduler import AttemptKey, Scheduler


def worker_line(name: str, slots: int, keys: Iterable[AttemptKey], attempts: Scheduler,
                *, done: int = 0, bytes_done: int = 0) -> str:
    """One worker's line: its running attempts with percent done and rate, and totals.

    Attempts that :meth:`Scheduler.stragglers` names are marked ``LAGGING``.

    Examples
    --------
    >>> s = Scheduler(1, clock=lambda: 10.0, block_sizes=[1000])
    >>> key = s.assign()
    >>> s.heartbeat(key, 500, 7)
    >>> worker_line("host:42", 2, [key], s)
    'host:42 (2 slots): block 0 (attempt 1) 50% at 0 B/s; 0 blocks done, 0 B'
    >>> worker_line("host:42", 1, [], s, done=1, bytes_done=1000)
    'host:42 (1 slot): idle; 1 block done, 1000 B'
    """
    now = attempts.clock()
    slow = set(attempts.stragglers())
    parts = []
    for key in sorted(keys):
        attempt = attempts.running.get(key)
        if attempt is None:
            continue
        percent = 100 * attempt.bytes_done // max(attempts.size(attempt.block), 1)
        text = (f"block {key[0]} (attempt {key[1]}) {min(percent, 100)}% at "
                f"{format_size(int(attempt.rate(now)))}/s")
        parts.append(text + (" LAGGING" if key in slow else ""))
    return (f"{name} ({slots} slot{'s' if slots != 1 else ''}): {'; '.join(parts) or 'idle'}; "
            f"{done} block{'s' if done != 1 else ''} done, {format_size(bytes_done)}")
