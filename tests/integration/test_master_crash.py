"""A master that dies between renaming part-files and writing their ledger lines (the
lines wait up to ``master.LEDGER_DELAY``, issue 16): the output holds committed-looking
parts the ledger does not name. Resume trusts only the ledger, so it runs those blocks
again, replaces their parts, and ends byte-identical to a clean run, each block once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import blockproc as bp
from blockproc.output.layout import LEDGER, STATE_DIR
from tests import jobs

LINES = [f"{i:05d} {'y' * (i % 29)}" for i in range(3000)]
DATA = ("\n".join(LINES) + "\n").encode()
LEASE = 1.0

DIES_BEFORE_ITS_LEDGER = """
import sys
import blockproc as bp
import blockproc.master
from tests import jobs
blockproc.master.LEDGER_DELAY = 3600.0  # no ledger line is written before the crash
src, out, marker, trigger = sys.argv[1:5]
bp.map_lines(jobs.exit_once(marker, trigger), src, output=out, block_size=4096,
             executor="inline", progress=False)
"""


def _parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}


def _ledger_ids(out: Path) -> list[int]:
    return [json.loads(line)["id"] for path in sorted((out / STATE_DIR / LEDGER).glob("*"))
            for line in path.read_text().splitlines() if line.strip()]


def test_parts_without_ledger_lines_are_run_again_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    clean, out, marker = tmp_path / "clean", tmp_path / "out", tmp_path / "died"
    env = {**os.environ, "BLOCKPROC_LOCK_LEASE": str(LEASE)}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", DIES_BEFORE_ITS_LEDGER, str(src), str(out),
                           str(marker), LINES[2500]], env=env, cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr  # the master itself died (inline executor)
    left = _parts(out)
    assert len(left) >= 2 and _ledger_ids(out) == []  # parts the ledger does not name
    assert not (out / "_SUCCESS").exists()

    monkeypatch.setenv("BLOCKPROC_LOCK_LEASE", str(LEASE))
    time.sleep(LEASE * 1.5)  # the dead master's lease runs out
    res = bp.map_lines(jobs.identity, str(src), output=str(out), block_size=4096,
                       if_exists="resume", workers=2, progress=False)
    bp.map_lines(jobs.identity, str(src), output=str(clean), block_size=4096,
                 executor="inline", progress=False)
    num_blocks = len(bp.plan(str(src), block_size=4096).blocks)
    assert {a.block_id for a in res.attempts} == set(range(num_blocks))  # all ran again
    assert _parts(out) == _parts(clean) and b"".join(_parts(out).values()) == DATA
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert [b["id"] for b in manifest["blocks"]] == list(range(num_blocks))
    assert sorted(_ledger_ids(out)) == list(range(num_blocks))  # each block once
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
