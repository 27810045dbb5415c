"""Tests of the seeded sample-data generators in ``blockproc.datasets``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from blockproc import datasets
from blockproc.datasets import access_log, main

REPO = Path(__file__).resolve().parents[2]
MAX_LINE = 512  # generous bound on one access log line
LINE = re.compile(
    rb"((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3})"
    rb" - - \[(\d\d/(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}"
    rb":(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d) \+0000\]"
    rb' "(GET|POST|PUT|DELETE|HEAD) (/[!-~]*) HTTP/1\.1"'
    rb" (200|301|304|404|500|502|503) (0|[1-9]\d{0,5})"
    rb' "(-|https?://[!-~]+)" "([ -!#-~]+)"\n\Z'
)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    assert access_log(a, 300_000, seed=7) == access_log(b, 300_000, seed=7)
    assert a.read_bytes() == b.read_bytes()


def test_different_seed_gives_different_bytes(tmp_path: Path) -> None:
    access_log(tmp_path / "a.log", 50_000, seed=1)
    access_log(tmp_path / "b.log", 50_000, seed=2)
    assert (tmp_path / "a.log").read_bytes() != (tmp_path / "b.log").read_bytes()


def test_smaller_file_is_a_prefix_of_a_larger_one(tmp_path: Path) -> None:
    access_log(tmp_path / "small.log", 10_000, seed=3)
    access_log(tmp_path / "large.log", 5_000_000, seed=3)  # several numpy chunks
    assert (tmp_path / "large.log").read_bytes().startswith((tmp_path / "small.log").read_bytes())


@pytest.mark.parametrize("size", [1, 2, 100, 4096, 65_537, 5_000_000])
def test_size_is_respected_and_lines_are_whole(tmp_path: Path, size: int) -> None:
    out = tmp_path / "access.log"
    written = access_log(out, size)
    data = out.read_bytes()
    assert written == len(data)
    assert size <= written < size + MAX_LINE
    assert data.endswith(b"\n")
    assert written - len(_lines(data)[-1]) < size  # stopped at the first line end >= size


def test_size_zero_writes_an_empty_file(tmp_path: Path) -> None:
    assert access_log(tmp_path / "empty.log", 0) == 0
    assert (tmp_path / "empty.log").read_bytes() == b""


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_bad_size_is_rejected(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        access_log(tmp_path / "x.log", size)
    assert list(tmp_path.iterdir()) == []


def test_every_line_matches_the_combined_format(tmp_path: Path) -> None:
    out = tmp_path / "access.log"
    access_log(out, 2**20, seed=11)
    lines = _lines(out.read_bytes())
    matches = [LINE.match(line) for line in lines]
    bad = [line for line, m in zip(lines, matches, strict=True) if m is None]
    assert bad == [], bad[:3]
    found = [m for m in matches if m is not None]
    stamps = [datetime.strptime(m[2].decode(), "%d/%b/%Y:%H:%M:%S") for m in found]
    assert stamps == sorted(stamps)
    assert stamps[-1] > stamps[0]
    statuses = Counter(m[5] for m in found)
    assert set(statuses) == {b"200", b"301", b"304", b"404", b"500", b"502", b"503"}
    assert statuses[b"200"] > len(found) / 2
    server_errors = sum(n for code, n in statuses.items() if code.startswith(b"5"))
    assert 0.005 <= server_errors / len(found) <= 0.05
    methods = Counter(m[3] for m in found)
    assert set(methods) == {b"GET", b"POST", b"PUT", b"DELETE", b"HEAD"}
    assert methods.most_common(1)[0][0] == b"GET"
    assert all(0 <= int(m[6]) <= 200_000 for m in found)
    assert 300 <= len({m[1] for m in found}) <= 1000
    templates = {re.sub(rb"\d+$", b"N", m[4]) for m in found}
    assert 20 <= len(templates) <= 60
    assert any(t.endswith(b"N") for t in templates)
    assert 3 <= len({m[8] for m in found}) <= 10


def test_missing_directory_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "access.log"
    with pytest.raises(FileNotFoundError):
        access_log(target, 10_000)
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_generation_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = datasets._access_log_chunks

    def failing(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
        chunks = real(rng)
        yield next(chunks)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(datasets, "_access_log_chunks", failing)
    target = tmp_path / "access.log"
    with pytest.raises(RuntimeError, match="disk on fire"):
        access_log(target, 50_000_000)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        access_log(target, 50_000_000)
    assert [p.name for p in tmp_path.iterdir()] == ["access.log"]
    assert target.read_bytes() == b"old\n"


def test_existing_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    target.write_bytes(b"x" * 1_000_000)
    written = access_log(target, 1000)
    assert target.stat().st_size == written < 2000
    assert [p.name for p in tmp_path.iterdir()] == ["access.log"]


def test_cli_writes_the_same_file_as_the_function(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.log"
    assert main(["access-log", "--size", "100KB", "-o", str(out), "--seed", "5"]) == 0
    assert str(out) in capsys.readouterr().out
    access_log(tmp_path / "api.log", 100_000, seed=5)
    assert out.read_bytes() == (tmp_path / "api.log").read_bytes()


@pytest.mark.parametrize(("text", "size"), [("123", 123), ("2KiB", 2048), ("1MB", 10**6)])
def test_cli_parses_sizes(tmp_path: Path, text: str, size: int) -> None:
    out = tmp_path / "cli.log"
    assert main(["access-log", "--size", text, "-o", str(out)]) == 0
    assert size <= out.stat().st_size < size + MAX_LINE


@pytest.mark.parametrize("argv", [["access-log", "--size", "12XB", "-o", "x"], ["nope"], []])
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_python_dash_m_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "access.log"
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    cmd = [sys.executable, "-m", "blockproc.datasets", "access-log", "--size", "10KB"]
    proc = subprocess.run(
        [*cmd, "-o", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert 10_000 <= out.stat().st_size < 10_000 + MAX_LINE
