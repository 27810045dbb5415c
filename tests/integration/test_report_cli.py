"""``blockproc status OUT --timeline chart.png``: the job report drawn from a manifest."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc import report
from blockproc.cli import main

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _fail_once(marker: Path, trigger: str) -> Callable[[str], str]:
    """A mapper that raises the first time it sees ``trigger``, so that block is retried."""

    def mapper(line: str) -> str:
        if line == trigger and not marker.exists():
            marker.write_text("failed once")
            raise ValueError(f"bad line {line!r}")
        return line.upper()

    return mapper


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def finished_job(tmp_path: Path) -> Path:
    """A job on 8 blocks with one failed attempt, run with two threads."""
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i:04d}\n" for i in range(400)))  # 4000 bytes
    result = bp.map_lines(_fail_once(tmp_path / "marker", "line 0250"), str(source),
                          output=str(tmp_path / "out"), block_size=500, executor="threads",
                          workers=2, progress=False)
    statuses = [a.status for a in result.attempts]
    assert (statuses.count("committed"), statuses.count("failed")) == (8, 1)
    return tmp_path / "out"


def _manifest(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "_SUCCESS").read_text()))


def test_status_draws_the_timeline_of_a_finished_job(
    finished_job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "chart.png"
    assert main(["status", str(finished_job), "--timeline", str(chart)]) == 0
    out = capsys.readouterr().out
    attempts = report.attempts_from_manifest(_manifest(finished_job))
    n = len(attempts)  # 9, or more if the scheduler ran a speculative copy
    assert n >= 9 and sum(a.status == "failed" for a in attempts) == 1
    assert f"attempts: {n} (8 committed, 1 failed" in out
    assert f"timeline: {n} attempts on 2 workers, drawn to {chart}" in out
    assert _png_size(chart)[0] == 1000
    assert len(report.draw_timeline(attempts).axes[0].patches) == n


def test_status_draws_every_status_from_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    attempts = [
        {"block_id": 0, "attempt": 1, "worker": "h:1", "started": 10.0, "finished": 11.0,
         "status": "committed", "error": ""},
        {"block_id": 1, "attempt": 1, "worker": "h:2", "started": 10.0, "finished": 10.5,
         "status": "failed", "error": "ValueError"},
        {"block_id": 1, "attempt": 2, "worker": "h:2", "started": 10.5, "finished": 12.0,
         "status": "lost", "error": "worker died"},
        {"block_id": 1, "attempt": 3, "worker": "h:1", "started": 11.0, "finished": 14.0,
         "status": "discarded", "error": ""},
        {"block_id": 1, "attempt": 4, "worker": "h:3", "started": 12.5, "finished": 13.0,
         "status": "committed", "error": "", "speculative": True},
    ]
    manifest = {"job_id": "job-x", "finished": "2026-11-27T00:00:00Z", "seconds": 4.0,
                "executor": "processes", "workers": 3, "format": {"name": "lines"},
                "inputs": [{"path": "in.txt", "size": 100}],
                "totals": {"num_blocks": 2, "records_in": 10, "records_out": 10,
                           "bytes_read": 100, "bytes_written": 100},
                "blocks": [], "attempts": attempts}
    (out / "_SUCCESS").write_text(json.dumps(manifest))
    chart = tmp_path / "chart.png"
    assert main(["status", str(out), "--timeline", str(chart)]) == 0
    assert ("attempts: 5 (2 committed, 1 failed, 1 lost, 1 discarded); 1 speculative"
            in capsys.readouterr().out)
    assert chart.read_bytes()[:8] == PNG


def test_status_json_with_timeline_prints_only_the_manifest(
    finished_job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "chart.png"
    assert main(["status", str(finished_job), "--json", "--timeline", str(chart)]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"]
    assert chart.read_bytes()[:8] == PNG


def test_status_timeline_of_a_manifest_without_attempts_fails_clearly(
    finished_job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(finished_job)
    del manifest["attempts"]
    (finished_job / "_SUCCESS").write_text(json.dumps(manifest))
    assert main(["status", str(finished_job), "--timeline", str(tmp_path / "c.png")]) == 1
    assert "records no attempts" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_status_timeline_without_matplotlib_names_the_extra(
    finished_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    assert main(["status", str(finished_job), "--timeline", str(tmp_path / "c.png")]) == 1
    assert 'pip install "blockproc[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_status_timeline_into_a_missing_directory_fails_clearly(
    finished_job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "c.png"
    assert main(["status", str(finished_job), "--timeline", str(target)]) == 1
    assert "cannot draw the timeline" in capsys.readouterr().err


def test_status_help_mentions_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--help"]) == 0
    assert "--timeline PATH" in capsys.readouterr().out
