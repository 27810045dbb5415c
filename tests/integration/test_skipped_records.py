"""Records whose function raises are skipped one by one (``max_bad_records``): the
results before and after each of them in the same batch are kept, in order, and the log
names each skipped record by its number in the block."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.testing import read_parts, write_files


def fails_on_x(line: str) -> str:
    if "x" in line:
        raise ValueError(f"bad {line!r}")
    return line.upper()


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.sampled_from(["a", "b", "x", "ax", "c"]), min_size=1, max_size=40))
def test_every_raising_record_is_skipped_and_the_others_kept_in_order(lines: list[str]) -> None:
    root = f"memory://skipped-{uuid.uuid4().hex}"
    write_files(root, {"in.log": ("\n".join(lines) + "\n").encode()})
    res = bp.map_lines(fails_on_x, root, output=f"{root}-out", executor="inline",
                       max_bad_records=len(lines))
    kept = [line.upper() for line in lines if "x" not in line]
    assert bytes(read_parts(f"{root}-out")).decode().splitlines() == kept
    assert res.num_records == len(lines)
    assert sum(b.bad_records for b in res.blocks) == sum("x" in line for line in lines)


def test_the_log_names_each_skipped_record(tmp_path: Path) -> None:
    lines = ["a", "x1", "b", "c", "x2", "x3", "d"]
    src = tmp_path / "in.log"
    src.write_text("\n".join(lines) + "\n")
    bp.map_lines(fails_on_x, str(src), output=str(tmp_path / "out"), executor="inline",
                 max_bad_records=5)
    logged = [json.loads(line) for path in sorted((tmp_path / "out" / "_errors").iterdir())
              for line in path.read_text().splitlines()]
    assert [e["record"] for e in logged] == [1, 4, 5]
    assert [e["preview"] for e in logged] == ["'x1'", "'x2'", "'x3'"]
