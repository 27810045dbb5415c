"""A real full disk: the output on a small tmpfs that holds the part-files and the job's
state but not the ``_SUCCESS`` manifest.

The job must stop with a one-line storage error, exit 1 and the resume command, leave no
half-written manifest (final or staged), and finish with ``--resume`` once there is room.
Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockproc.output import read_manifest, verify_output
from blockproc.storage import filesystem
from blockproc.testing import read_parts

LINES = [f"{i:05d} {'ERROR' if i % 97 == 0 else 'ok'}" for i in range(20000)]
DATA = ("\n".join(LINES) + "\n").encode()
MAPPER = '''
def errors_only(line):
    return line if "ERROR" in line else None
'''
PAGE = 4096


def command() -> list[str]:
    exe = Path(sys.executable).with_name("blockproc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "blockproc"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mount point (sized by the test with ``resize``)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def resize(mount: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def pages(root: Path) -> int:
    """Bytes a tmpfs charges for the files under ``root`` (whole pages per file)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_disk_full_while_writing_the_manifest_stops_cleanly_and_resumes(
        tmp_path: Path, small_disk: Path) -> None:
    (tmp_path / "in.log").write_bytes(DATA)
    (tmp_path / "mymod.py").write_text(MAPPER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = [*command(), "run", str(tmp_path / "in.log"), "--map", "mymod:errors_only",
           "--block-size", "1KiB", "--workers", "2", "-q"]

    # measure what the job writes besides its manifest, on an ordinary disk
    probe = tmp_path / "probe"
    proc = subprocess.run([*run, "-o", str(probe)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    manifest_size = (probe / "_SUCCESS").stat().st_size
    assert manifest_size > 4 * PAGE
    rest = pages(probe) - -(-manifest_size // PAGE) * PAGE
    resize(small_disk, rest + 2 * PAGE + manifest_size // 2)

    out = small_disk / "out"
    failed = subprocess.run([*run, "-o", str(out)], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert "_SUCCESS" in failed.stderr and "No space left on device" in failed.stderr
    assert "--resume" in failed.stderr
    assert not (out / "_SUCCESS").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging left

    resize(small_disk, 64 * 2**20)
    resumed = subprocess.run([*run, "-o", str(out), "--resume"], env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    fs = filesystem("file")
    assert verify_output(fs, str(out), read_manifest(fs, str(out))) == []
    assert read_parts(str(out)) == read_parts(str(probe))
