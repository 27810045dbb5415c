"""Tests of the seeded sample-data generators in ``blockproc.datasets``.

The access log is tested in depth first; then every generator's format is parsed back
with a reader that knows it, and all of them are checked for determinism and size.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from blockproc.datasets import (
    DATASETS,
    SENSOR_DTYPE,
    _text,
    access_log,
    events_jsonl,
    main,
    orders_parquet,
    reviews_csv,
    sensor_records,
)

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


@pytest.mark.parametrize("size", [-1, 1.5, True, "12XB"])
def test_bad_size_is_rejected(tmp_path: Path, size: Any) -> None:
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
    real = _text._access_log_chunks

    def failing(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
        chunks = real(rng)
        yield next(chunks)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_text, "_access_log_chunks", failing)
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


# --- every generator ----------------------------------------------------------------------

STREAMED = ["access-log", "csv", "jsonl", "sensors"]  # written as a stream of whole records
ALL = [*STREAMED, "parquet"]
RECORD_SLACK = {"access-log": MAX_LINE, "csv": 2048, "jsonl": 2048, "sensors": 32}


def _generate(name: str, path: Path, size: int, seed: int = 0, **options: Any) -> int:
    return DATASETS[name](path, size, seed=seed, **options)


def test_the_cli_names_are_the_documented_ones() -> None:
    assert list(DATASETS) == ALL
    readme = (REPO / "datasets" / "README.md").read_text(encoding="utf-8")
    for name in ALL:
        assert f"python -m blockproc.datasets {name} " in readme


@pytest.mark.parametrize("name", ALL)
def test_every_generator_is_deterministic_per_seed(tmp_path: Path, name: str) -> None:
    sizes = [_generate(name, tmp_path / f"{seed}-{i}", 150_000, seed)
             for seed, i in [(4, 0), (4, 1), (5, 0)]]
    same, again, other = ((tmp_path / f"{s}-{i}").read_bytes() for s, i in [(4, 0), (4, 1),
                                                                             (5, 0)])
    assert same == again
    assert same != other
    assert sizes[0] == len(same)


@pytest.mark.parametrize("name", STREAMED)
@pytest.mark.parametrize("size", [1, 33, 4096, 3_000_001])
def test_streamed_generators_respect_the_size(tmp_path: Path, name: str, size: int) -> None:
    written = _generate(name, tmp_path / "out", size)
    assert written == (tmp_path / "out").stat().st_size
    assert size <= written < size + RECORD_SLACK[name]


@pytest.mark.parametrize("name", STREAMED)
def test_streamed_smaller_file_is_a_prefix_of_a_larger_one(tmp_path: Path, name: str) -> None:
    _generate(name, tmp_path / "small", 40_000, seed=9)
    _generate(name, tmp_path / "large", 3_000_000, seed=9)  # several chunks
    assert (tmp_path / "large").read_bytes().startswith((tmp_path / "small").read_bytes())


@pytest.mark.parametrize("name", STREAMED)
def test_streamed_size_zero_writes_an_empty_file(tmp_path: Path, name: str) -> None:
    assert _generate(name, tmp_path / "empty", 0) == 0
    assert (tmp_path / "empty").read_bytes() == b""


@pytest.mark.parametrize("name", ALL)
def test_every_generator_accepts_a_size_string(tmp_path: Path, name: str) -> None:
    size: Any = "20KiB"
    assert _generate(name, tmp_path / "out", size) >= 20 * 1024


# --- CSV ----------------------------------------------------------------------------------

CSV_COLUMNS = ["review_id", "created_at", "product_id", "product", "customer", "rating",
               "verified", "helpful_votes", "title", "body"]


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, strict=True))


def test_csv_parses_back_with_quoted_commas_quotes_and_newlines(tmp_path: Path) -> None:
    out = tmp_path / "reviews.csv"
    reviews_csv(out, 2**20, seed=2)
    header, *rows = _csv_rows(out)
    assert header == CSV_COLUMNS
    assert all(len(row) == len(CSV_COLUMNS) for row in rows)
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    stamps = [datetime.strptime(r[1], "%Y-%m-%d %H:%M:%S") for r in rows]
    assert stamps == sorted(stamps)
    bodies = [r[9] for r in rows]
    assert 0.15 < sum("\n" in b for b in bodies) / len(rows) < 0.6  # multi-line fields
    assert any("\n\n" in b for b in bodies)
    assert any("," in b for b in bodies) and all("," in r[4] for r in rows)
    assert any('"' in b for b in bodies) and any('"' in r[3] for r in rows)
    assert any(b == "" for b in bodies)
    assert {r[5] for r in rows} == {"1", "2", "3", "4", "5"}
    assert {r[6] for r in rows} == {"true", "false"}
    assert any(not r[4].isascii() for r in rows)  # UTF-8 names
    raw = out.read_bytes()
    assert b'""' in raw and b"\r" not in raw


def test_csv_parses_back_with_pyarrow(tmp_path: Path) -> None:
    pacsv = pytest.importorskip("pyarrow.csv")
    out = tmp_path / "reviews.csv"
    reviews_csv(out, 500_000, seed=3)
    table = pacsv.read_csv(out, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    rows = _csv_rows(out)[1:]
    assert table.column_names == CSV_COLUMNS
    assert table.num_rows == len(rows)
    assert table.column("body").to_pylist()[:50] == [r[9] for r in rows[:50]]


def _record_ends_inside_quotes(data: bytes) -> list[int]:
    """Offsets just past the newlines that lie inside a quoted field."""
    ends, quoted = [], False
    for i, byte in enumerate(data):
        if byte == ord('"'):
            quoted = not quoted
        elif byte == ord("\n") and quoted:
            ends.append(i + 1)
    return ends


def test_csv_never_cuts_a_record_at_a_quoted_newline(tmp_path: Path) -> None:
    reviews_csv(tmp_path / "full.csv", 200_000, seed=4)
    full = (tmp_path / "full.csv").read_bytes()
    inside = _record_ends_inside_quotes(full)
    assert len(inside) > 20
    for size in inside[:10]:
        reviews_csv(tmp_path / "cut.csv", size, seed=4)
        data = (tmp_path / "cut.csv").read_bytes()
        assert full.startswith(data) and len(data) > size
        rows = _csv_rows(tmp_path / "cut.csv")
        assert all(len(row) == len(CSV_COLUMNS) for row in rows)
        assert data.count(b'"') % 2 == 0


def test_csv_field_quotes_only_when_needed() -> None:
    assert _text.csv_field("plain") == b"plain"
    assert _text.csv_field('a, "b"\nc') == b'"a, ""b""\nc"'
    assert _text.csv_field(" padded") == b'" padded"'


# --- JSON lines ---------------------------------------------------------------------------

def test_jsonl_every_line_is_a_json_object(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    events_jsonl(out, 2**20, seed=5)
    data = out.read_bytes()
    assert data.endswith(b"\n")
    events = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert all(set(e) == {"ts", "user_id", "session_id", "device", "event", "props"}
               for e in events)
    kinds = Counter(e["event"] for e in events)
    assert set(kinds) == {"page_view", "search", "add_to_cart", "purchase", "login", "logout",
                          "error"}
    assert kinds.most_common(1)[0][0] == "page_view"
    stamps = [datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ") for e in events]
    assert stamps == sorted(stamps)
    assert all(re.fullmatch(r"[0-9a-f]{16}", e["session_id"]) for e in events)
    assert all(isinstance(e["user_id"], int) and e["user_id"] >= 1 for e in events)
    purchases = [e["props"] for e in events if e["event"] == "purchase"]
    assert all(isinstance(p["items"], list) and p["total"] > 0 for p in purchases)
    assert any(e["props"].get("referrer", 0) is None for e in events)
    text = data.decode("utf-8")
    assert not text.isascii() and '\\"' in text and "\\n" in text


# --- fixed-width sensor records -----------------------------------------------------------

def test_sensor_records_read_back_with_the_dtype(tmp_path: Path) -> None:
    out = tmp_path / "sensors.bin"
    written = sensor_records(out, 3_000_000, seed=6)
    assert SENSOR_DTYPE.itemsize == 32 and not SENSOR_DTYPE.isalignedstruct
    assert written % SENSOR_DTYPE.itemsize == 0
    rec = np.fromfile(out, dtype=SENSOR_DTYPE)
    assert len(rec) == written // 32
    assert (np.diff(rec["time_ns"]) > 0).all()
    assert rec["time_ns"][0] // 10**9 == int(datetime(2026, 11, 27, tzinfo=UTC).timestamp())
    ids = np.unique(rec["sensor_id"])
    assert len(ids) == 1000 and ids[0] == 10001 and ids[-1] == 11000
    for sensor in ids[:5]:
        seq = rec["seq"][rec["sensor_id"] == sensor]
        assert (seq == np.arange(len(seq))).all()
    fault = (rec["status"] & 2) != 0
    assert fault.any() and np.isnan(rec["temperature"][fault]).all()
    assert np.isfinite(rec["temperature"][~fault]).all()
    for field, low, high in [("temperature", -10, 45), ("humidity", 0, 100),
                             ("pressure", 990, 1040)]:
        values = rec[field][~fault]
        assert low <= values.min() and values.max() <= high, field


# --- Parquet ------------------------------------------------------------------------------

def test_parquet_has_several_row_groups_and_the_documented_columns(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "orders.parquet"
    written = orders_parquet(out, 1_000_000, seed=7, row_group_size=10_000)
    assert written == out.stat().st_size
    assert 1_000_000 <= written < 1_100_000
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups > 1
    assert all(meta.row_group(i).num_rows <= 10_000 for i in range(meta.num_row_groups))
    table = pq.read_table(out)
    assert table.column_names == ["order_id", "created_at", "customer_id", "country",
                                  "product", "quantity", "unit_price", "total", "status",
                                  "coupon"]
    assert table.column("order_id").to_pylist() == list(range(1, table.num_rows + 1))
    created = table.column("created_at").to_numpy()
    assert (np.diff(created.astype(np.int64)) >= 0).all()
    assert 0.75 < table.column("coupon").null_count / table.num_rows < 0.95
    assert set(table.column("status").to_pylist()) == {"delivered", "shipped", "placed",
                                                       "returned", "cancelled"}


def test_parquet_size_zero_is_a_valid_empty_file(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "empty.parquet"
    orders_parquet(out, 0)
    assert pq.ParquetFile(out).metadata.num_rows == 0


@pytest.mark.parametrize("rows", [0, -3, True, 2.5])
def test_parquet_rejects_a_bad_row_group_size(tmp_path: Path, rows: Any) -> None:
    with pytest.raises(ValueError, match="row_group_size"):
        orders_parquet(tmp_path / "x.parquet", 1000, row_group_size=rows)
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(ImportError, match="pip install pyarrow"):
        orders_parquet(tmp_path / "x.parquet", 1000)
    assert list(tmp_path.iterdir()) == []


# --- command line -------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*ALL, "fixed"])
def test_cli_writes_every_dataset(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / name
    assert main([name, "--size", "50KB", "-o", str(out), "--seed", "3"]) == 0
    assert str(out) in capsys.readouterr().out
    ref = tmp_path / "ref"
    _generate("sensors" if name == "fixed" else name, ref, 50_000, seed=3)
    assert out.read_bytes() == ref.read_bytes()


def test_cli_passes_the_row_group_size(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "orders.parquet"
    assert main(["parquet", "--size", "200KB", "-o", str(out), "--row-group-size", "1000"]) == 0
    assert pq.ParquetFile(out).metadata.num_row_groups >= 5


@pytest.mark.parametrize("argv", [["parquet", "--size", "1KB", "-o", "x", "--row-group-size",
                                   "0"], ["csv", "--size", "1KB", "-o", "x",
                                          "--row-group-size", "5"]])
def test_cli_rejects_bad_row_group_sizes(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err
