"""Formats and writers end to end: jobs through the API and the CLI, round trips (one
job's parts are the next job's input), compressed and UTF-16 inputs."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

import blockproc as bp
from blockproc.cli import main
from blockproc.formats import CSV, Fixed, JSONLines, Lines, Parquet
from blockproc.output_formats import CSVOutput, ParquetOutput
from blockproc.testing import read_parts, write_files

ROWS = [{"id": str(i), "name": f"n{i}\n{i},fake" if i % 3 == 0 else f"n{i}",
         "amount": str(i * 1.5)} for i in range(400)]


def csv_bytes(rows: list[dict[str, str]] = ROWS) -> bytes:
    buf = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def local(root: str, name: str, data: bytes) -> str:
    path = Path(root) / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def parts(output: str) -> list[str]:
    manifest = json.loads((Path(output) / "_SUCCESS").read_text()) if "://" not in output \
        else None
    assert manifest is not None
    return [str(Path(output) / b["part"]) for b in manifest["blocks"]]


# module-level mappers, so worker processes can import them


def add_total(table: pa.Table) -> pa.Table:
    """map_blocks over CSV: the table with a typed column added."""
    amount = pc.cast(table["amount"], pa.float64())
    return table.append_column("double", pc.multiply(amount, 2.0))


def row_to_dict(row: dict[str, Any]) -> dict[str, Any] | None:
    """map_lines over CSV/JSONL/Parquet: rows are dicts."""
    return None if int(row["id"]) % 2 else {"id": row["id"], "name": row["name"]}


def double_x(arr: np.ndarray) -> np.ndarray:
    """map_blocks over fixed-width records: a numpy array in, an array out."""
    out = arr.copy()
    out["x"] *= 2
    return out


# -- CSV -------------------------------------------------------------------------------


def test_csv_to_parquet_and_back_every_executor(local_root: str, executor: str) -> None:
    src = local(local_root, "data.csv", csv_bytes())
    out1 = str(Path(local_root) / "out1")
    res = bp.map_blocks(add_total, src, output=out1, format="csv", block_size=997,
                        output_format="parquet", executor=executor, workers=2)
    assert res.num_records == len(ROWS) == res.num_records_out
    assert all(p.endswith(".parquet") for p in res.parts)
    table = pa.concat_tables([pq.read_table(p) for p in res.parts])
    assert table.column("name").to_pylist() == [r["name"] for r in ROWS]
    assert table.column("double").to_pylist() == [float(r["amount"]) * 2 for r in ROWS]
    # round trip: the Parquet parts are the next job's input, written back as CSV
    out2 = str(Path(local_root) / "out2")
    res2 = bp.map_blocks(lambda t: t.drop_columns(["double"]), out1, output=out2,
                         format="parquet", block_size=300, output_format="csv",
                         executor=executor, workers=2)
    assert res2.num_records == len(ROWS)
    strings = pa_csv.ConvertOptions(column_types=dict.fromkeys(ROWS[0], pa.string()),
                                    strings_can_be_null=False)
    back = pa.concat_tables(pa_csv.read_csv(p, convert_options=strings) for p in parts(out2))
    assert back.to_pylist() == ROWS


def test_map_lines_over_csv_gets_dicts_and_csv_parts_read_back_as_input(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.csv": csv_bytes()})
    res = bp.map_lines(row_to_dict, src, output=f"{memfs}/o1", format="csv", block_size=500,
                       output_format="csv", executor="threads")
    assert res.num_records == 400 and res.num_records_out == 200
    assert res.parts[0].endswith("part-00000.csv")
    # every part has its header; the next job reads them as CSV again
    res2 = bp.map_lines(json.dumps, f"{memfs}/o1", output=f"{memfs}/o2",
                        format="csv", block_size=64, executor="inline")
    got = [json.loads(x) for x in read_parts(f"{memfs}/o2").decode().splitlines()]
    assert got == [{"id": r["id"], "name": r["name"]} for r in ROWS if int(r["id"]) % 2 == 0]
    assert res2.num_records == 200


def test_csv_options_and_column_types_through_the_job(memfs: str) -> None:
    data = b"k;v\n'a;b';1\nc;2\n"
    (src,) = write_files(memfs, {"a.csv": data})
    fmt = CSV(sep=";", quote_char="'", column_types={"v": "int64"})
    bp.map_blocks(lambda t: [str(pc.sum(t["v"]).as_py())], src, output=f"{memfs}/o",
                  format=fmt, executor="inline", block_size=5)
    assert sum(int(x) for x in read_parts(f"{memfs}/o").split()) == 3


# -- JSON lines ------------------------------------------------------------------------


def test_jsonl_round_trip(memfs: str) -> None:
    data = "".join(json.dumps({"id": str(i), "name": f"é{i}", "tags": [i]}) + "\n"
                   for i in range(300)).encode()
    (src,) = write_files(memfs, {"a.jsonl": data})
    res = bp.map_lines(row_to_dict, src, output=f"{memfs}/o1", format="jsonl",
                       output_format="jsonl", block_size=333, executor="threads")
    assert res.num_records == 300 and res.num_records_out == 150
    res2 = bp.map_blocks(lambda t: t, f"{memfs}/o1", output=f"{memfs}/o2", format="jsonl",
                         output_format="parquet", block_size=1000, executor="inline")
    assert res2.num_records == 150
    out = read_parts(f"{memfs}/o1").decode().splitlines()
    assert json.loads(out[1]) == {"id": "2", "name": "é2"}
    dicts = bp.map_blocks(lambda rows: [str(len(rows))], src, output=f"{memfs}/o3",
                          format=JSONLines(block_as="dicts"), executor="inline")
    assert dicts.num_records == 300


# -- fixed-width and npy ---------------------------------------------------------------


DTYPE = np.dtype([("id", "<u4"), ("x", "<f8")])


def test_fixed_to_npy_and_back(local_root: str, executor: str) -> None:
    whole = np.zeros(1000, DTYPE)
    whole["id"] = np.arange(1000)
    whole["x"] = np.arange(1000) / 8
    src = local(local_root, "data.bin", whole.tobytes())
    out1 = str(Path(local_root) / "o1")
    res = bp.map_blocks(double_x, src, output=out1, format=Fixed(DTYPE), block_size=1000,
                        output_format="npy", executor=executor, workers=2)
    assert res.num_records == 1000 == res.num_records_out
    loaded = np.concatenate([np.load(p) for p in res.parts])
    assert np.array_equal(loaded["x"], whole["x"] * 2)
    # round trip: the .npy parts, read as fixed-width records after their header
    with open(res.parts[0], "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        header = f.tell()
    res2 = bp.map_lines(lambda rec: str(int(rec["id"])), out1, output=str(Path(local_root) /
                        "o2"), format=Fixed(DTYPE, header_size=header), block_size=4096,
                        executor="inline")
    assert res2.num_records == 1000


def test_a_partial_trailing_record_fails_at_plan_time(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.bin": b"x" * 17})
    with pytest.raises(bp.InputError, match="not a 0-byte header plus whole 4-byte records"):
        bp.plan(src, format=Fixed(record_size=4))


# -- Parquet ---------------------------------------------------------------------------


def test_parquet_input_selected_columns_every_row_once(local_root: str) -> None:
    table = pa.table({"id": list(range(5000)), "text": [f"t{i}" * 20 for i in range(5000)]})
    path = Path(local_root) / "in" / "t.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=400)
    out = str(Path(local_root) / "o")
    res = bp.map_blocks(lambda t: t, str(path), output=out, format=Parquet(columns=["id"]),
                        block_size=5000, output_format=ParquetOutput(schema={"id": "int64"}),
                        executor="threads")
    schemas = {pq.read_schema(p) for p in res.parts}
    assert len(schemas) == 1  # empty parts too
    got = pa.concat_tables(pq.read_table(p) for p in res.parts)
    assert got.column("id").to_pylist() == list(range(5000))
    every = bp.map_blocks(lambda t: [str(t.num_rows)], str(path), output=out + "-all",
                          format="parquet", block_size=5000, executor="threads")
    text_size = sum(pq.ParquetFile(path).metadata.row_group(i).column(1).total_compressed_size
                    for i in range(13))
    assert res.num_bytes_read <= every.num_bytes_read - text_size  # text was never fetched


def test_a_command_cannot_write_parquet(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.log": b"a\n"})
    with pytest.raises(bp.ConfigError, match="output_format must be text, csv or jsonl"):
        bp.map_command("cat", src, output=f"{memfs}/o", output_format="parquet",
                       executor="inline")


# -- compressed inputs: one block per file, and the plan says so ---------------------------

COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}
try:
    import zstandard

    COMPRESSORS["zst"] = lambda data: zstandard.ZstdCompressor().compress(data)
except ImportError:  # pragma: no cover - zstd is optional
    pass


@pytest.mark.parametrize("ext", ["gz", "bz2", "xz", "zst"])
def test_compressed_inputs_are_one_block_per_file(local_root: str, ext: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if ext not in COMPRESSORS:
        pytest.skip("zstandard is not installed")
    compress = COMPRESSORS[ext]
    text = b"".join(b"line %d\n" % i for i in range(2000))
    csv_data = csv_bytes()
    a = local(local_root, f"a.log.{ext}", compress(text))
    b = local(local_root, f"b.csv.{ext}", compress(csv_data))
    plan = bp.plan(a, block_size=100)
    assert len(plan.blocks) == 1 and plan.files[0].compression is not None
    assert main(["plan", a, "--block-size", "100"]) == 0
    assert "(compressed: one block)" in capsys.readouterr().out
    out = str(Path(local_root) / "o1")
    res = bp.map_lines(str.upper, a, output=out, block_size=100, executor="inline")
    assert read_parts(out) == text.upper() and res.num_records == 2000
    res = bp.map_blocks(lambda t: [str(t.num_rows)], b, output=str(Path(local_root) / "o2"),
                        format="csv", block_size=100, executor="inline")
    assert len(res.blocks) == 1 and res.num_records == len(ROWS)


# -- UTF-16 ------------------------------------------------------------------------------


def test_utf16_job_end_to_end(memfs: str) -> None:
    lines = [f"{i} \u0a05\u0100 \U0001f600" for i in range(500)]
    data = "\r\n".join(lines).encode("utf-16")  # BOM, native order, CRLF, no final newline
    (src,) = write_files(memfs, {"a.txt": data})
    plan = bp.plan(src, block_size=77, format=Lines("utf-16"))
    assert plan.format["encoding"] in ("utf-16-le", "utf-16-be")
    res = bp.map_lines(str.upper, src, output=f"{memfs}/o", block_size=77,
                       format=Lines("utf-16"), executor="threads")
    assert read_parts(f"{memfs}/o").decode("utf-8").splitlines() == [x.upper() for x in lines]
    assert res.num_records == 500


def test_undecodable_utf16_fails_with_the_byte_offset(memfs: str) -> None:
    data = codecs.BOM_UTF16_LE + "ok\n".encode("utf-16-le") + b"\x00\xdc\n\x00"
    (src,) = write_files(memfs, {"a.txt": data})
    with pytest.raises(bp.BlockFailedError, match="at byte 8 of the file"):
        bp.map_lines(str.upper, src, output=f"{memfs}/o", format=Lines("utf-16"),
                     executor="inline", max_attempts=1)


# -- the CLI ---------------------------------------------------------------------------


def test_cli_csv_to_parquet_with_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fmtmod.py").write_text(
        "import pyarrow.compute as pc\n"
        "def total(table):\n"
        "    return table.append_column('twice', pc.multiply(table['amount'], 2))\n")
    (tmp_path / "in.csv").write_bytes(csv_bytes())
    code = main(["run", "in.csv", "-o", "out", "--map-blocks", "fmtmod:total",
                 "--format", "csv", "--format-option", 'column_types={"amount": "float64"}',
                 "--format-option", "columns=id,amount", "--output-format", "parquet",
                 "--output-option", "compression=zstd", "--block-size", "2KiB",
                 "--executor", "inline", "-q"])
    assert code == 0, capsys.readouterr().err
    got = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out").glob("*.parquet")))
    assert got.column_names == ["id", "amount", "twice"] and got.num_rows == len(ROWS)
    assert main(["status", "out", "--verify"]) == 0
    capsys.readouterr()
    assert main(["plan", "in.csv", "--format", "csv", "--block-size", "1KiB", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["format"]["aligned"] is True
    assert plan["format"]["column_names"] == ["id", "name", "amount"]
    data = (tmp_path / "in.csv").read_bytes()
    starts = [b["start"] for b in plan["blocks"]]
    assert all(data[s - 1:s] == b"\n" for s in starts[1:])


def test_cli_refuses_bad_format_and_output_options(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"a\n1\n")
    assert main(["plan", str(src), "--format", "csv", "--format-option", "nope=1"]) == 2
    assert "--format-option for --format csv" in capsys.readouterr().err
    assert main(["plan", str(src), "--format", "lines", "--format-option", "sep=;"]) == 2
    assert main(["run", str(src), "-o", str(tmp_path / "o"), "--cmd", "cat",
                 "--output-format", "npy"]) == 2
    assert main(["run", str(src), "-o", str(tmp_path / "o"), "--cmd", "cat",
                 "--output-format", "csv", "--output-option", "bogus=1"]) == 2
    assert "--output-option for --output-format csv" in capsys.readouterr().err
    assert main(["plan", str(src), "--format", "fixed"]) == 2


def test_csv_output_header_can_be_dropped(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.csv": b"k\n1\n2\n"})
    bp.map_lines(lambda r: r, src, output=f"{memfs}/o", format="csv",
                 output_format=CSVOutput(header=False), executor="inline")
    assert read_parts(f"{memfs}/o") == b"1\n2\n"
