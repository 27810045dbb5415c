"""What a finished job returns: :class:`JobResult`, with its counts, its attempts, the
HTML summary Jupyter shows and the timeline chart (drawn by :mod:`blockproc.report`).

It lives apart from :mod:`blockproc.model` so that the report, which reads the model's
values, and the result, which shows itself with the report, import in one direction:
``result -> report -> model``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from blockproc._frozen import FrozenSlots
from blockproc._units import format_size
from blockproc.model import AttemptRecord, BlockResult, sum_counters

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class JobResult(FrozenSlots):
    """The committed output of a finished job.

    ``parts`` are the part-file URLs in block order; counts are summed over blocks.
    ``values`` holds each block's value, in block order, when the function's results
    went back to the master (``map_blocks``/``map_lines`` without ``output=``, or
    ``output_format="pickle"``); ``value`` is what :func:`~blockproc.reduce_blocks`
    folded; ``counters`` sums what the function counted with ``bp.counter``.
    In Jupyter it shows as an HTML summary; :meth:`timeline` draws its attempts.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/result", {"a.log": b"a 500\\nb 200\\nc 503\\n"})
    ['memory://doc/result/a.log']
    >>> result = bp.map_lines(lambda s: s if " 5" in s else None, "memory://doc/result",
    ...                       output="memory://doc/result-out", block_size=6,
    ...                       executor="inline")
    >>> result  # doctest: +ELLIPSIS
    <JobResult 3 blocks, 3 records in, 2 out, 12 B written, ...s, output='memory://doc/result-out'>
    >>> result.parts[0]
    'memory://doc/result-out/part-00000.txt'
    >>> result.num_records, result.num_records_out, result.num_retries
    (3, 2, 0)
    >>> result.num_bytes_read >= 18, result.num_bytes_written
    (True, 12)
    >>> def count_5xx(batch):
    ...     fives = sum(" 5" in line for line in batch.records)
    ...     bp.counter("5xx").add(fives)
    ...     return fives
    >>> counted = bp.map_blocks(count_5xx, "memory://doc/result", executor="inline")
    >>> counted.values, counted.counters
    ((2,), {'5xx': 2})
    """

    output: str
    job_id: str
    blocks: tuple[BlockResult, ...]
    seconds: float
    attempts: tuple[AttemptRecord, ...]
    values: tuple[Any, ...] | None
    value: Any
    _fields = ("output", "job_id", "blocks", "seconds", "attempts", "values", "value")
    _shown = _fields[:5]
    __slots__ = _fields

    def __init__(self, output: str, job_id: str, blocks: tuple[BlockResult, ...],
                 seconds: float, attempts: tuple[AttemptRecord, ...] = (),
                 values: tuple[Any, ...] | None = None, value: Any = None) -> None:
        self._init(output, job_id, blocks, seconds, attempts, values, value)

    @property
    def parts(self) -> tuple[str, ...]:
        """Part-file URLs, in block order (none for a job without output)."""
        if not self.output:
            return ()
        base = self.output.rstrip("/")
        return tuple(f"{base}/{b.part}" for b in self.blocks)

    @property
    def counters(self) -> dict[str, int]:
        """What the function counted with ``bp.counter(name).add()``, summed over the
        committed attempts (one per block), by name."""
        return sum_counters(b.counters for b in self.blocks)

    @property
    def num_records(self) -> int:
        """Records read from the input."""
        return sum(b.records_in for b in self.blocks)

    @property
    def num_records_out(self) -> int:
        """Records written to the part-files."""
        return sum(b.records_out for b in self.blocks)

    @property
    def num_bytes_read(self) -> int:
        """Bytes fetched from storage, overhang included."""
        return sum(b.bytes_read for b in self.blocks)

    @property
    def num_bytes_written(self) -> int:
        """Bytes written to the part-files."""
        return sum(b.bytes_written for b in self.blocks)

    @property
    def num_retries(self) -> int:
        """Attempts that did not end in a commit (failed, lost or discarded)."""
        return sum(1 for a in self.attempts if a.status != "committed")

    def __repr__(self) -> str:
        made = (f"{self.num_records_out} out, {format_size(self.num_bytes_written)} "
                f"written, {self.seconds:.2f}s, output={self.output!r}" if self.output else
                f"{self.num_records_out} values back, {self.seconds:.2f}s")
        return (f"<JobResult {len(self.blocks)} block{'s' if len(self.blocks) != 1 else ''}, "
                f"{self.num_records} records in, {made}>")

    def _repr_html_(self) -> str:
        """Return the HTML summary Jupyter shows: inputs, blocks, records, bytes, wall
        time, throughput, retries, speculative attempts and the slowest blocks."""
        from blockproc.report import html_summary  # on first show: not a job's start-up

        return html_summary(self)

    def timeline(self, path: str | os.PathLike[str] | None = None) -> Figure:
        """Draw every attempt per worker over time (a Gantt chart); return the Figure.

        Bars are coloured by how the attempt ended (committed, failed, lost, discarded);
        speculative attempts are hatched. Needs matplotlib: ``pip install
        "blockproc[plot]"``. ``blockproc status OUT --timeline chart.png`` draws the same.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Also save the chart there as a PNG (or the format its suffix names).

        Examples
        --------
        >>> import pathlib, tempfile
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/timeline", {"a.log": b"x\\n" * 100})
        ['memory://doc/timeline/a.log']
        >>> result = bp.map_lines(str.upper, "memory://doc/timeline", block_size=50,
        ...                       output="memory://doc/timeline-out", executor="inline")
        >>> chart = pathlib.Path(tempfile.mkdtemp()) / "timeline.png"
        >>> fig = result.timeline(chart)
        >>> chart.read_bytes()[:4], len(fig.axes[0].patches)
        (b'\\x89PNG', 4)
        """
        from blockproc.report import draw_timeline

        return draw_timeline(self.attempts, path, title=f"blockproc job {self.job_id}: "
                             f"{len(self.attempts)} attempts, {self.seconds:.2f}s")
