"""Reports on a finished job for people: an HTML summary and a timeline of every attempt.

:meth:`JobResult._repr_html_ <blockproc.JobResult._repr_html_>` (what Jupyter shows for a
result) and :meth:`JobResult.timeline <blockproc.JobResult.timeline>` call this module,
and ``blockproc status OUT --timeline chart.png`` draws the same chart from the
``_SUCCESS`` manifest. Only the model is imported here; matplotlib is imported when a
chart is drawn, and is an optional extra: ``pip install "blockproc[plot]"``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from blockproc._frozen import field_names
from blockproc._units import format_size
from blockproc.model import AttemptRecord, BlockResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATUSES = ("committed", "failed", "lost", "discarded")
"""How an attempt can end, in the order the chart's legend lists them."""

STATUS_COLORS = {"committed": "#2e7d32", "failed": "#c62828", "lost": "#ef6c00",
                 "discarded": "#9e9e9e"}
"""Bar colour of each attempt status in the timeline."""

SPECULATIVE_HATCH = "///"
"""Hatching of the bars of speculative attempts (second attempts of a straggler)."""

NUM_SLOWEST = 5
"""How many of the slowest blocks the HTML summary lists."""

PLOT_HINT = 'pip install "blockproc[plot]"'



class ResultLike(Protocol):
    """What the report reads of a :class:`~blockproc.JobResult` (which imports this
    module to show itself, so the report names it by shape, not by import)."""

    @property
    def output(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def blocks(self) -> tuple[BlockResult, ...]: ...
    @property
    def seconds(self) -> float: ...
    @property
    def attempts(self) -> tuple[AttemptRecord, ...]: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def num_records(self) -> int: ...
    @property
    def num_records_out(self) -> int: ...
    @property
    def num_bytes_read(self) -> int: ...
    @property
    def num_bytes_written(self) -> int: ...
    @property
    def num_retries(self) -> int: ...


def is_speculative(attempt: AttemptRecord) -> bool:
    """Return True for a speculative attempt (a backup copy of a straggling block)."""
    return bool(getattr(attempt, "speculative", False))


def summary(result: ResultLike) -> dict[str, Any]:
    """Return the figures of the report on ``result`` as a JSON-safe dict.

    Inputs are counted from the blocks (files with no block, such as empty ones, are not
    seen). ``throughput_mb_s`` is input bytes per second of wall time, in 10**6 bytes.

    Examples
    --------
    >>> from blockproc.model import Block, BlockResult
    >>> from blockproc.result import JobResult
    >>> block = BlockResult(Block(0, "data/a.log", 0, 2_000_000), "part-00000.txt", 1,
    ...                     "host:1", 10, 4, 2_000_000, 80, "crc32:0", 0.0, 0.5)
    >>> s = summary(JobResult("out", "job1", (block,), seconds=1.0))
    >>> s["num_inputs"], s["records_in"], s["throughput_mb_s"], s["slowest"][0]["path"]
    (1, 10, 2.0, 'data/a.log')
    """
    blocks = result.blocks
    by_status = dict.fromkeys(STATUSES, 0)
    for attempt in result.attempts:
        by_status[attempt.status] = by_status.get(attempt.status, 0) + 1
    input_bytes = sum(b.block.end - b.block.start for b in blocks)
    slowest = sorted(blocks, key=lambda b: (-b.seconds, b.block.id))[:NUM_SLOWEST]
    return {
        "output": result.output,
        "job_id": result.job_id,
        "num_inputs": len({b.block.path for b in blocks}),
        "input_bytes": input_bytes,
        "num_blocks": len(blocks),
        "records_in": result.num_records,
        "records_out": result.num_records_out,
        "bad_records": sum(int(getattr(b, "bad_records", 0)) for b in blocks),
        "blocks_with_stderr": sum(1 for b in blocks if b.stderr_bytes),
        "bytes_read": result.num_bytes_read,
        "bytes_written": result.num_bytes_written,
        "seconds": result.seconds,
        "throughput_mb_s": input_bytes / result.seconds / 1e6 if result.seconds > 0 else None,
        "num_attempts": len(result.attempts),
        "attempts_by_status": by_status,
        "num_retries": result.num_retries,
        "num_speculative": sum(1 for a in result.attempts if is_speculative(a)),
        "num_workers": len({a.worker for a in result.attempts} | {b.worker for b in blocks}),
        "slowest": [_slow_block(b) for b in slowest],
        "counters": result.counters,
    }


def what_was_kept(output: str, bad_records: int, blocks_with_stderr: int,
                  num_blocks: int) -> list[str]:
    """Return the lines that say what a job kept besides its part-files: the records it
    skipped (``max_bad_records``) and the stderr of a ``--cmd``.

    Examples
    --------
    >>> print("\\n".join(what_was_kept("out", 2, 3, 5)))
    bad records: 2 skipped, logged in out/_errors/
    stderr: kept for 3 of 5 blocks in out/_logs/
    >>> what_was_kept("out", 0, 0, 5)
    []
    """
    base = output.rstrip("/")
    lines = []
    if bad_records:
        lines.append(f"bad records: {bad_records:,} skipped, logged in {base}/_errors/")
    if blocks_with_stderr:
        lines.append(f"stderr: kept for {blocks_with_stderr:,} of {num_blocks:,} blocks in "
                     f"{base}/_logs/")
    return lines


def earlier_runs(manifest: Mapping[str, Any]) -> tuple[int, int]:
    """Return ``(blocks, attempts)``: the blocks of a resumed job that earlier runs
    committed, and the attempts those runs made (``earlier_attempts``: every attempt of
    the earlier runs that ended; in older manifests, each block's committed attempt
    number).

    Examples
    --------
    >>> earlier_runs({"blocks": [{"id": 0, "attempt": 2}, {"id": 1, "attempt": 1}],
    ...               "attempts": [{"block_id": 1, "attempt": 1, "status": "committed"}]})
    (1, 2)
    """
    this_run = {a["block_id"] for a in manifest.get("attempts", ())
                if a.get("status") == "committed"}
    if not manifest.get("attempts"):
        return 0, 0  # an older manifest: no attempts recorded, runs cannot be told apart
    earlier = [b for b in manifest["blocks"] if b["id"] not in this_run]
    if "earlier_attempts" in manifest:  # every attempt of the earlier runs that ended
        return len(earlier), len(manifest["earlier_attempts"])
    return len(earlier), sum(int(b.get("attempt", 1)) for b in earlier)


def _slow_block(b: BlockResult) -> dict[str, Any]:
    return {"id": b.block.id, "path": b.block.path, "start": b.block.start,
            "end": b.block.end, "seconds": b.seconds, "worker": b.worker,
            "records_in": b.records_in}


def html_summary(result: ResultLike) -> str:
    """Return an HTML table that sums up ``result`` (what Jupyter shows for it).

    Examples
    --------
    >>> from blockproc.result import JobResult
    >>> "<table" in html_summary(JobResult("out", "job1", (), seconds=0.0))
    True
    """
    import html  # only here: every job imports this module, few render HTML

    s = summary(result)
    e = html.escape
    attempts = ", ".join(f"{n:,} {status}" for status, n in s["attempts_by_status"].items())
    throughput = "n/a" if s["throughput_mb_s"] is None else f"{s['throughput_mb_s']:,.1f} MB/s"
    rows = [
        ("output", e(s["output"]) or "none: values returned to the master"),
        ("inputs", f"{s['num_inputs']:,} files, {format_size(s['input_bytes'])}"),
        ("blocks", f"{s['num_blocks']:,}"),
        ("records", f"{s['records_in']:,} in, {s['records_out']:,} out"),
        ("bytes", f"{format_size(s['bytes_read'])} read, "
                  f"{format_size(s['bytes_written'])} written"),
        ("wall time", f"{s['seconds']:.2f} s"),
        ("throughput", f"{throughput} of input"),
        ("attempts", f"{s['num_attempts']:,}: {attempts}" if s["num_attempts"] else
         "not recorded"),
        ("retries", f"{s['num_retries']:,}"),
        ("speculative attempts", f"{s['num_speculative']:,}"),
    ]
    if s["counters"]:
        rows.append(("counters", e(", ".join(f"{name} = {amount:,}"
                                             for name, amount in s["counters"].items()))))
    if s["bad_records"]:
        rows.append(("bad records", f"{s['bad_records']:,} skipped, logged in _errors/"))
    if s["blocks_with_stderr"]:
        rows.append(("stderr", f"kept for {s['blocks_with_stderr']:,} of "
                               f"{s['num_blocks']:,} blocks in _logs/"))
    style = 'style="text-align:left"'
    head = "".join(f"<tr><th {style}>{name}</th><td {style}>{value}</td></tr>"
                   for name, value in rows)
    slow = "".join(
        f"<tr><td>{b['id']}</td><td {style}>{e(b['path'])}</td>"
        f"<td>[{b['start']:,}, {b['end']:,})</td><td>{b['seconds']:.2f} s</td>"
        f"<td>{b['records_in']:,}</td><td {style}>{e(b['worker'])}</td></tr>"
        for b in s["slowest"])
    slowest = (
        f"<table><caption {style}>slowest blocks</caption><tr><th>block</th>"
        f"<th {style}>path</th><th>range</th><th>time</th><th>records in</th>"
        f"<th {style}>worker</th></tr>{slow}</table>" if slow else "")
    return (f'<div class="blockproc-job-result"><table><caption {style}><b>blockproc job '
            f"{e(s['job_id'])}</b></caption>{head}</table>{slowest}</div>")


def attempts_from_manifest(manifest: Mapping[str, Any]) -> tuple[AttemptRecord, ...]:
    """Return the attempts a ``_SUCCESS`` manifest records (none for an older manifest)."""
    names = set(field_names(AttemptRecord))
    return tuple(AttemptRecord(**{k: v for k, v in entry.items() if k in names})
                 for entry in manifest.get("attempts", ()))


def _worker_labels(workers: Iterable[str]) -> dict[str, str]:
    """Return a short label per worker name (``host:pid[:thread]`` becomes ``pid 123``
    when all the workers run on one host)."""
    names = list(workers)
    parts = {name: name.split(":") for name in names if name}
    local = len({p[0] for p in parts.values()}) == 1 and all(
        len(p) > 1 and p[1].isdigit() for p in parts.values())
    return {name: (" ".join(["pid", *parts[name][1:]]) if local and name else name)
            or "(no worker)" for name in names}


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"drawing a timeline needs matplotlib, which is not installed "
                          f"({exc}); {PLOT_HINT}") from exc
    if _in_jupyter():
        # pyplot makes the inline backend register how Jupyter shows a Figure; the
        # figure is closed at once, so only the returned value is shown, once.
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(width, height), layout="constrained")
        plt.close(fig)
        return fig
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # no GUI and no global state: safe in scripts and threads
    return fig


def draw_timeline(attempts: Sequence[AttemptRecord], path: str | os.PathLike[str] | None = None,
                  *, title: str | None = None) -> Figure:
    """Draw every attempt per worker over time (a Gantt chart) and return the Figure.

    One row per worker, one bar per attempt from its start to its end, coloured by how it
    ended (:data:`STATUS_COLORS`); speculative attempts are hatched. Time is in seconds
    since the first attempt started.

    Parameters
    ----------
    attempts : sequence of AttemptRecord
        What :attr:`JobResult.attempts` holds, or :func:`attempts_from_manifest` returns.
    path : str or os.PathLike, optional
        Also save the chart there, as PNG (or the format the suffix names, such as .svg).
    title : str, optional
        Title above the chart.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        When matplotlib is not installed; the message says ``pip install "blockproc[plot]"``.
    """
    labels = _worker_labels({a.worker for a in attempts})
    workers = sorted(labels, key=lambda w: (
        min(a.started for a in attempts if a.worker == w), labels[w]))
    rows = {worker: i for i, worker in enumerate(workers)}
    fig = _new_figure(10.0, min(max(2.5, 1.4 + 0.45 * len(workers)), 14.0))
    ax = fig.add_subplot()
    if len(workers) > 28:  # a tall chart is capped: smaller worker labels
        ax.tick_params(axis="y", labelsize=max(3.0, 8.0 * 28 / len(workers)))
    t0 = min((a.started for a in attempts), default=0.0)
    span = max((a.finished - t0 for a in attempts), default=1.0) or 1.0
    for status in STATUSES + tuple(sorted({a.status for a in attempts} - set(STATUSES))):
        for speculative in (False, True):
            group = [a for a in attempts
                     if a.status == status and is_speculative(a) == speculative]
            if not group:
                continue
            ax.barh([rows[a.worker] for a in group],
                    [max(a.finished - a.started, span / 400) for a in group],
                    left=[a.started - t0 for a in group], height=0.6,
                    color=STATUS_COLORS.get(status, "#5c6bc0"), edgecolor="black",
                    linewidth=0.4, hatch=SPECULATIVE_HATCH if speculative else None)
    if len(attempts) <= 100:
        for a in attempts:
            if a.finished - a.started > span / 30:
                ax.text((a.started + a.finished) / 2 - t0, rows[a.worker], str(a.block_id),
                        ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(workers)), [labels[w] for w in workers])
    ax.set_ylim(max(len(workers), 1) - 0.5, -0.5)
    if not attempts:
        ax.text(span / 2, 0, "no attempts recorded", ha="center", va="center")
    ax.set_xlim(0, span * 1.02)
    ax.set_xlabel("seconds since the first attempt started")
    ax.set_ylabel("worker")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"{len(attempts)} attempts on {len(workers)} workers", fontsize=10)
    _legend(fig, attempts)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def _legend(fig: Figure, attempts: Sequence[AttemptRecord]) -> None:
    from matplotlib.patches import Patch

    seen = {a.status for a in attempts}
    handles = [Patch(facecolor=STATUS_COLORS.get(s, "#5c6bc0"), edgecolor="black",
                     linewidth=0.4, label=f"{s} ({sum(a.status == s for a in attempts)})")
               for s in STATUSES + tuple(sorted(seen - set(STATUSES))) if s in seen]
    num_speculative = sum(1 for a in attempts if is_speculative(a))
    if num_speculative:
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=0.4,
                             hatch=SPECULATIVE_HATCH, label=f"speculative ({num_speculative})"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                   fontsize=8, frameon=False)
