"""Values sent back to the master: each block's result, pickled in the worker, kept in
block order (``map_blocks`` without ``output=``) or folded into one accumulator as blocks
commit (:func:`~blockproc.reduce_blocks`).

Only the committed attempt of a block hands its value over, so a retried or speculative
attempt never counts twice; with an output directory the pickled value is the block's
part-file, so a resumed job reads back what earlier runs committed.

Examples
--------
>>> values = Values(3)
>>> for block_id, value in [(2, "c"), (0, "a"), (1, "b")]:
...     values.add(block_id, pickle_value(value))
>>> values.collected()
['a', 'b', 'c']
>>> total = Values(3, combine=lambda a, b: a + b, initial=0)
>>> for block_id in range(3):
...     total.add(block_id, pickle_value(block_id * 10))
>>> total.folded()
30
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable
from typing import Any, Final

from blockproc._units import format_size, parse_size
from blockproc.errors import ConfigError, JobError, ReturnTypeError, ValueTooLargeError

MAX_BLOCK_VALUE_ENV = "BLOCKPROC_MAX_BLOCK_VALUE"
"""The environment variable for the largest value one block may send to the master."""

MAX_JOB_VALUES_ENV = "BLOCKPROC_MAX_JOB_VALUES"
"""The environment variable for the largest total of values a job may collect."""


class _Nothing:
    """The ``initial`` of a fold that has none: the first partial starts it."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Final = _Nothing()

ADVICE = ("write the results to files with output=... (CLI: -o), or fold them as they "
          "arrive with bp.reduce_blocks (CLI: --combine)")


def value_limits() -> tuple[int, int]:
    """Return the most bytes (pickled) one block's value and all of a job's values may take.

    64 MiB per block and 1 GiB per job, unless the environment variables
    ``BLOCKPROC_MAX_BLOCK_VALUE`` and ``BLOCKPROC_MAX_JOB_VALUES`` (sizes such as
    ``256MiB``) replace them; the master's environment decides, for every worker.

    Examples
    --------
    >>> value_limits() == (64 * 2**20, 2**30)
    True
    """
    return (_size_from_env(MAX_BLOCK_VALUE_ENV, 64 * 2**20),
            _size_from_env(MAX_JOB_VALUES_ENV, 2**30))


def _size_from_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = parse_size(text)
    except (ValueError, TypeError):
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={text!r} must be a size such as 64MiB or 1GiB")
    return value


def check_value_size(data: bytes, limit: int, where: str) -> None:
    """Refuse a pickled value over ``limit`` bytes; ``where`` names the block.

    >>> check_value_size(b"x" * 200, 100, "block 7 (a.log [0, 10))")
    Traceback (most recent call last):
    ...
    blockproc.ValueTooLargeError: block 7 (a.log [0, 10)) returned a value of 200 B ...
    """
    if len(data) > limit:
        raise ValueTooLargeError(
            f"{where} returned a value of {format_size(len(data))} (pickled), over the "
            f"limit of {format_size(limit)} per block ({MAX_BLOCK_VALUE_ENV}); {ADVICE}")


def pickle_value(value: Any) -> bytes:
    """Return ``value`` pickled for the master.

    Plain pickle first (fast, and what most values need); cloudpickle for what plain
    pickle refuses, such as a lambda or a class defined in a notebook. A value neither
    can pickle (an open file, a lock) raises :class:`~blockproc.ReturnTypeError`: the
    same value would fail on every attempt.

    Examples
    --------
    >>> load_value(pickle_value({"GET": 3}))
    {'GET': 3}
    >>> import threading
    >>> pickle_value(threading.Lock())
    Traceback (most recent call last):
    ...
    blockproc.ReturnTypeError: the function returned lock <unlocked _thread.lock ...
    """
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        import cloudpickle  # only for what plain pickle refuses (start-up of every job)

        try:
            data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ReturnTypeError(
                f"the function returned {type(value).__name__} {value!r:.80}, which cannot "
                f"be pickled to send it to the master ({type(exc).__name__}: {exc}); "
                f"return plain data (dicts, lists, numbers, str, arrays)") from None
        return data


def load_value(data: bytes) -> Any:
    """Return the value :func:`dump_value` pickled."""
    return pickle.loads(data)


class Values:
    """What the master keeps of the blocks' values.

    Without ``combine``, every block's value, returned in block order by
    :meth:`collected`; their pickled sizes together may not pass ``max_total``. With
    ``combine``, one accumulator: ``acc = combine(acc, value)`` for each block as it
    commits, starting from ``initial`` (or from the first value when there is none), so
    memory holds one accumulator however many blocks there are. ``initial`` is copied, so
    a ``combine`` that updates the accumulator in place never changes the caller's object.

    >>> start = {"n": 0}
    >>> total = Values(2, combine=lambda a, b: a.update(n=a["n"] + b) or a, initial=start)
    >>> total.add(0, pickle_value(5)); total.add(1, pickle_value(2))
    >>> total.folded(), start
    ({'n': 7}, {'n': 0})
    """

    def __init__(self, num_blocks: int, *, combine: Callable[[Any, Any], Any] | None = None,
                 initial: Any = NOTHING, max_total: int = 2**30) -> None:
        self.num_blocks = num_blocks
        self.combine = combine
        self.max_total = max_total
        self.total_bytes = 0
        self._values: dict[int, Any] = {}
        # the caller's object stays theirs (Spark clones its zero value too)
        self._acc = initial if initial is NOTHING else copy.deepcopy(initial)

    def add(self, block_id: int, data: bytes | None) -> None:
        """Take the pickled value of committed block ``block_id`` (once per block)."""
        value = None if data is None else load_value(data)
        if self.combine is None:
            self.total_bytes += len(data or b"")
            if self.total_bytes > self.max_total:
                raise ValueTooLargeError(
                    f"the values of {len(self._values) + 1} blocks take "
                    f"{format_size(self.total_bytes)} (pickled) with block {block_id}, over "
                    f"the limit of {format_size(self.max_total)} per job "
                    f"({MAX_JOB_VALUES_ENV}); {ADVICE}")
            self._values[block_id] = value
            return
        if self._acc is NOTHING:
            self._acc = value
            return
        try:
            self._acc = self.combine(self._acc, value)
        except Exception as exc:
            raise JobError(f"combine raised {type(exc).__name__}: {exc} when folding in "
                           f"the value of block {block_id}") from exc

    def collected(self) -> list[Any]:
        """Every block's value, in block order (None for a block not added)."""
        return [self._values.get(i) for i in range(self.num_blocks)]

    def folded(self) -> Any:
        """The accumulator (None if no block was folded and there was no ``initial``)."""
        return None if self._acc is NOTHING else self._acc
