"""The job report: the short repr, the HTML summary and the timeline chart."""

from __future__ import annotations

import dataclasses
import doctest
import struct
import sys
import types
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from blockproc import report
from blockproc.model import AttemptRecord, Block, BlockResult
from blockproc.result import JobResult

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

T0 = 1_800_000_000.0  # attempts carry wall-clock times


def _block(block_id: int, path: str, start: int, end: int, seconds: float,
           worker: str) -> BlockResult:
    return BlockResult(Block(block_id, path, start, end), f"part-{block_id:05d}.txt", 1, worker,
                       records_in=1000 * (block_id + 1), records_out=10 * (block_id + 1),
                       bytes_read=end - start + 100, bytes_written=100 * (block_id + 1),
                       checksum="crc32:00000000", started=T0, seconds=seconds)


def _attempt(block_id: int, attempt: int, worker: str, start: float, end: float, status: str,
             **extra: object) -> AttemptRecord:
    return AttemptRecord(block_id, attempt, worker, T0 + start, T0 + end, status, **extra)


BLOCKS = (
    _block(0, "data/a.log", 0, 1_000_000, 0.5, "vm:11"),
    _block(1, "data/a.log", 1_000_000, 2_000_000, 1.5, "vm:12"),
    _block(2, "data/<b>&.log", 0, 1_000_000, 0.2, "vm:11"),
)
ATTEMPTS = (
    _attempt(0, 1, "vm:11", 0.0, 0.5, "committed"),
    _attempt(1, 1, "vm:12", 0.0, 0.1, "failed", error="ValueError: bad line"),
    _attempt(1, 2, "vm:13", 0.1, 0.9, "lost", error="worker died"),
    _attempt(1, 3, "vm:12", 0.9, 2.4, "committed"),
    _attempt(2, 1, "vm:11", 0.5, 1.8, "discarded"),
    _attempt(2, 2, "vm:13", 1.0, 1.2, "committed", speculative=True),
    _attempt(2, 3, "", 2.0, 2.0, "discarded", error="job stopped"),  # zero length, no worker
)
RESULT = JobResult(output="file:///tmp/out", job_id="job-1", blocks=BLOCKS, seconds=2.0,
                   attempts=ATTEMPTS)


class _Tables(HTMLParser):
    """Collect the cells of every table row: ``[[cell, ...], ...]`` per table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(text: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


@pytest.fixture
def no_pyplot_figures() -> Iterator[None]:
    yield
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


# --- repr and HTML summary ----------------------------------------------------------------

def test_repr_stays_short() -> None:
    text = repr(RESULT)
    assert text.startswith("<JobResult 3 blocks, 6000 records in, 60 out") and text.endswith(">")
    assert "\n" not in text and len(text) < 160


def test_summary_counts_inputs_records_attempts_and_throughput() -> None:
    s = report.summary(RESULT)
    assert (s["num_inputs"], s["input_bytes"], s["num_blocks"]) == (2, 3_000_000, 3)
    assert (s["records_in"], s["records_out"]) == (6000, 60)
    assert s["throughput_mb_s"] == pytest.approx(1.5)
    assert s["attempts_by_status"] == {"committed": 3, "failed": 1, "lost": 1, "discarded": 2}
    assert (s["num_attempts"], s["num_retries"], s["num_speculative"]) == (7, 4, 1)
    assert [b["id"] for b in s["slowest"]] == [1, 0, 2]


def test_html_summary_table_holds_the_numbers() -> None:
    summary_table, slowest = _tables(RESULT._repr_html_())
    rows = dict(summary_table)
    assert rows["inputs"] == "2 files, 2.9 MiB"
    assert rows["blocks"] == "3"
    assert rows["records"] == "6,000 in, 60 out"
    assert rows["bytes"] == "2.9 MiB read, 600 B written"
    assert rows["wall time"] == "2.00 s"
    assert rows["throughput"] == "1.5 MB/s of input"
    assert rows["attempts"] == "7: 3 committed, 1 failed, 1 lost, 2 discarded"
    assert rows["retries"] == "4"
    assert rows["speculative attempts"] == "1"
    assert "bad records" not in rows
    header, *blocks = slowest
    assert header == ["block", "path", "range", "time", "records in", "worker"]
    assert blocks[0] == ["1", "data/a.log", "[1,000,000, 2,000,000)", "1.50 s", "2,000", "vm:12"]
    assert [b[0] for b in blocks] == ["1", "0", "2"]


def test_html_summary_escapes_paths_and_names() -> None:
    text = report.html_summary(RESULT)
    assert "data/&lt;b&gt;&amp;.log" in text and "<b>&" not in text
    assert _tables(text)[1][3][1] == "data/<b>&.log"


def test_html_summary_lists_at_most_five_slowest_blocks() -> None:
    blocks = tuple(_block(i, f"f{i}.log", 0, 10, float(i), "vm:1") for i in range(8))
    text = report.html_summary(JobResult("out", "job-2", blocks, seconds=1.0))
    slowest = _tables(text)[1][1:]
    assert [row[1] for row in slowest] == ["f7.log", "f6.log", "f5.log", "f4.log", "f3.log"]


def test_html_summary_of_an_empty_result() -> None:
    rows = dict(_tables(report.html_summary(JobResult("out", "job-3", (), seconds=0.0)))[0])
    assert rows["blocks"] == "0" and rows["attempts"] == "not recorded"
    assert rows["throughput"] == "n/a of input"


def test_html_summary_shows_bad_records_when_there_are_some() -> None:
    if "bad_records" not in {f.name for f in dataclasses.fields(BlockResult)}:
        pytest.skip("BlockResult has no bad_records")
    blocks = (dataclasses.replace(BLOCKS[0], bad_records=7),)  # type: ignore[call-arg]
    rows = dict(_tables(report.html_summary(JobResult("out", "job-4", blocks, 1.0)))[0])
    assert rows["bad records"] == "7 skipped, logged in _errors/"
    assert "stderr" not in rows


def test_html_summary_shows_the_blocks_that_wrote_to_stderr() -> None:
    blocks = (dataclasses.replace(BLOCKS[0], stderr_bytes=12), BLOCKS[1])
    rows = dict(_tables(report.html_summary(JobResult("out", "job-5", blocks, 1.0)))[0])
    assert rows["stderr"] == "kept for 1 of 2 blocks in _logs/"


# --- timeline -----------------------------------------------------------------------------

def _bars(fig: Figure) -> list[Rectangle]:
    (ax,) = fig.axes
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_timeline_draws_one_bar_per_attempt_and_saves_a_png(
    tmp_path: Path, no_pyplot_figures: None
) -> None:
    chart = tmp_path / "chart.png"
    fig = RESULT.timeline(chart)
    assert isinstance(fig, Figure)
    bars = _bars(fig)
    assert len(bars) == len(ATTEMPTS)
    assert all(bar.get_width() > 0 for bar in bars)  # even the zero-length attempt shows
    width, height = _png_size(chart)
    assert width == 1000 and height >= 250
    assert "job-1" in fig.axes[0].get_title()


def test_timeline_rows_are_workers_and_bars_span_the_attempts(no_pyplot_figures: None) -> None:
    fig = report.draw_timeline(ATTEMPTS)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["pid 11", "pid 12", "pid 13", "(no worker)"]
    spans = sorted((round(b.get_x(), 6), round(b.get_x() + b.get_width(), 6), b.get_y() + 0.3)
                   for b in _bars(fig) if b.get_width() > 0.01)
    assert spans[:2] == [(0.0, 0.1, 1.0), (0.0, 0.5, 0.0)]  # rows: first start, then name
    assert (0.9, 2.4, 1.0) in spans  # block 1's third attempt, on the second worker


def test_timeline_colours_bars_by_status_and_hatches_speculative_ones(
    no_pyplot_figures: None,
) -> None:
    fig = report.draw_timeline(ATTEMPTS)
    colours = [b.get_facecolor() for b in _bars(fig)]
    for status, count in [("committed", 3), ("failed", 1), ("lost", 1), ("discarded", 2)]:
        assert colours.count(to_rgba(report.STATUS_COLORS[status])) == count, status
    assert [bool(b.get_hatch()) for b in _bars(fig)].count(True) == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["committed (3)", "failed (1)", "lost (1)", "discarded (2)",
                      "speculative (1)"]


def test_timeline_of_no_attempts_is_an_empty_chart(no_pyplot_figures: None) -> None:
    assert _bars(report.draw_timeline(())) == []


def test_timeline_without_matplotlib_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
                 "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "blockproc\[plot\]"'):
        RESULT.timeline(tmp_path / "chart.png")
    assert list(tmp_path.iterdir()) == []


class ZMQInteractiveShell:
    """Named like the shell of a Jupyter kernel, which is what the detection reads."""


def test_jupyter_is_detected_by_its_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not report._in_jupyter()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert report._in_jupyter()


def test_timeline_in_jupyter_leaves_no_open_pyplot_figure(
    monkeypatch: pytest.MonkeyPatch, no_pyplot_figures: None
) -> None:
    matplotlib.use("Agg")
    monkeypatch.setattr(report, "_in_jupyter", lambda: True)
    fig = RESULT.timeline()
    assert len(_bars(fig)) == len(ATTEMPTS)
    assert "matplotlib.pyplot" in sys.modules  # so Jupyter knows how to show a Figure


def test_timeline_docstring_example_runs() -> None:
    # Methods of re-exported classes escape --doctest-modules (their module is rewritten).
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(JobResult.timeline, "timeline", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=7)


# --- manifest -----------------------------------------------------------------------------

def test_attempts_round_trip_through_the_manifest() -> None:
    entries = [{**a.to_dict(), "future_field": 1} for a in ATTEMPTS]
    assert report.attempts_from_manifest({"attempts": entries}) == ATTEMPTS
    assert report.attempts_from_manifest({}) == ()
