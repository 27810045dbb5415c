"""The blockproc command, run as a user runs it (a real process) and through main(argv)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockproc.cli import main
from blockproc.testing import read_parts

LINES = [f"{i} {'GET' if i % 3 else 'POST'} {500 if i % 7 == 0 else 200}" for i in range(5000)]
DATA = ("\n".join(LINES) + "\n").encode()
MAPPER = '''
def parse(line):
    number, method, status = line.split()
    return f"{number},{status}" if status.startswith("5") else None

def count(batch):
    return [f"{batch.block.id},{len(batch.records)}"]

def slow(line):
    import time
    time.sleep(0.002)
    return line
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "access.log").write_bytes(DATA)
    (tmp_path / "mymod.py").write_text(MAPPER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def blockproc(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("blockproc")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "blockproc"]
    return subprocess.run([*command, *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=120, **kwargs)  # type: ignore[call-overload]


def test_run_with_map_as_a_real_command(workdir: Path) -> None:
    proc = blockproc("run", "data/access.log", "-o", "out/", "--map", "mymod:parse",
                     "--block-size", "8KiB", "--workers", "2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    expected = "".join(f"{ln.split()[0]},{ln.split()[2]}\n" for ln in LINES if " 500" in ln)
    assert read_parts(str(workdir / "out")).decode() == expected
    assert "committed" in proc.stdout and "output:" in proc.stdout


def test_run_with_cmd(workdir: Path) -> None:
    proc = blockproc("run", "data/access.log", "-o", "out", "--cmd", "grep ' 500$'",
                     "--block-size", "10000", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    expected = "".join(f"{ln}\n" for ln in LINES if ln.endswith(" 500"))
    assert read_parts(str(workdir / "out")).decode() == expected


def test_run_with_map_blocks_in_process(workdir: Path) -> None:
    assert main(["run", "data/access.log", "-o", "out", "--map-blocks", "mymod:count",
                 "--block-size", "16KiB", "--executor", "threads", "-q"]) == 0
    rows = read_parts(str(workdir / "out")).decode().splitlines()
    assert sum(int(r.split(",")[1]) for r in rows) == len(LINES)


def test_plan_prints_the_block_table(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "data/access.log", "--block-size", "32KiB"]) == 0
    out = capsys.readouterr().out
    blocks = -(-len(DATA) // (32 * 1024))
    assert f"{blocks} blocks" in out and "fingerprint" in out
    assert len([ln for ln in out.splitlines() if "access.log" in ln]) == blocks
    assert main(["plan", "data/access.log", "--block-size", "32KiB", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in doc["blocks"]] == list(range(blocks))
    assert not (workdir / "out").exists()


def test_status_and_verify(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "data/access.log", "-o", "out", "--map", "mymod:parse", "-q",
                 "--executor", "inline", "--block-size", "16KiB"]) == 0
    assert main(["status", "out", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "records 5,000 in" in out and "verify: all" in out
    part = workdir / "out" / "part-00001.txt"
    part.write_bytes(part.read_bytes() + b"tampered\n")
    assert main(["status", "out", "--verify"]) == 1
    assert "part-00001.txt" in capsys.readouterr().out


def test_status_of_unfinished_job_says_how_to_resume(
        workdir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "bad.py").write_text("def f(line):\n    raise ValueError('nope')\n")
    code = main(["run", "data/access.log", "-o", "out", "--map", "bad:f", "--executor",
                 "inline", "--max-attempts", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ValueError: nope" in err and "--resume" in err
    assert main(["status", "out"]) == 1
    assert "unfinished" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["blockproc", "run", "data/access.log", "-o", "out",
                                      "--map", "mymod:parse"])
    assert main(sys.argv[1:]) == 2
    assert "blockproc run data/access.log -o out --map mymod:parse --resume" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("args", "fragment"), [
    (["run", "nope.log", "-o", "out", "--cmd", "cat"], "input 'nope.log' does not exist"),
    (["run", "data/access.log", "-o", "out"], "exactly one of --map"),
    (["run", "data/access.log", "-o", "out", "--map", "nomod:f"],
     "cannot import module 'nomod'"),
    (["run", "data/access.log", "-o", "out", "--map", "mymod:missing"], "has no 'missing'"),
    (["run", "data/access.log", "-o", "out", "--cmd", "cat", "--block-size", "0"],
     "must be >= 1 byte"),
    (["run", "data/access.log", "-o", "out", "--cmd", "cat", "--block-size", "big"],
     "is not a size"),
    (["status", "data"], "holds no blockproc output"),
])
def test_bad_input_exits_2_with_a_clear_message(
        workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    assert main(args) == 2
    assert fragment in capsys.readouterr().err
    assert not (workdir / "out").exists()


def test_existing_output_exits_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "data/access.log", "-o", "out", "--cmd", "cat", "-q"]) == 0
    assert main(["run", "data/access.log", "-o", "out", "--cmd", "cat"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["run", "data/access.log", "-o", "out", "--cmd", "cat", "--if-exists",
                 "overwrite", "-q"]) == 0


def test_ctrl_c_exits_130_and_prints_the_resume_command(workdir: Path) -> None:
    exe = Path(sys.executable).with_name("blockproc")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "blockproc"]
    args = ["run", "data/access.log", "-o", "out", "--map", "mymod:slow", "--block-size",
            "4KiB", "--workers", "2"]
    proc = subprocess.Popen([*command, *args], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ledger = workdir / "out" / "_blockproc" / "committed"
    deadline = time.monotonic() + 60
    while not (ledger.exists() and any(ledger.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130
    assert "blockproc run data/access.log -o out --map mymod:slow" in err and "--resume" in err
    assert not (workdir / "out" / "_SUCCESS").exists()
    resumed = blockproc(*args, "--resume", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert read_parts(str(workdir / "out")) == DATA


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = blockproc("demo", "--size", "2MiB", "--block-size", "256KiB", "--workers", "2",
                     cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "output:" in proc.stdout and "blockproc status" in proc.stdout
    out = tmp_path / "cache" / "blockproc" / "demo" / "out"
    assert (out / "_SUCCESS").exists()
    rows = read_parts(str(out)).decode().splitlines()
    assert rows and all(r.split(",")[1].startswith("5") for r in rows)


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "plan", "status", "demo"):
        assert name in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--map", "--map-blocks", "--cmd", "--block-size", "--workers", "--resume",
                   "--if-exists", "--executor", "--format"):
        assert option in out


GROWER = '''
import os

def grow(line):
    path = os.environ["GROW_INPUT"]
    if line.startswith("0 "):  # the first record: the input grows while the job runs
        with open(path, "ab") as f:
            f.write(b"appended while the job ran\\n")
    return line
'''


def test_input_changed_mid_job_advises_starting_over_not_resume(workdir: Path) -> None:
    (workdir / "grower.py").write_text(GROWER)
    env = {**os.environ, "GROW_INPUT": str(workdir / "data" / "access.log"),
           "PYTHONPATH": str(workdir)}
    proc = blockproc("run", "data/access.log", "-o", "out", "--map", "grower:grow",
                     "--block-size", "4KiB", "--executor", "inline", cwd=workdir, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "changed" in proc.stderr and "--if-exists overwrite" in proc.stderr
    assert "--resume" not in proc.stderr  # a resume would be refused: the plan is stale
    assert "Traceback" not in proc.stderr
