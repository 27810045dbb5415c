"""The code blocks of README.md run as written, so the README cannot drift from the code.

Every ``python``, ``bash`` or ``sh`` block either runs, or says right before its fence,
in an HTML comment (invisible on GitHub), why it cannot run here::

    <!-- not run: needs an S3 store -->          a reason: installs, other machines, ...
    <!-- file: logs.py -->                        the block is a file a user saves

The runnable blocks run in README order, as a user would type them, in one fresh
directory: Python blocks in one interpreter (as ``__main__``, sharing their names, so a
later block may use ``bp`` imported by an earlier one), shell blocks with ``bash -e`` in
the same directory. ``HOME`` and ``XDG_CACHE_HOME`` point into that directory, so
nothing outside it is touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CODE_LANGUAGES = {"python", "bash", "sh", "shell"}
TIMEOUT = 600
"""Seconds all the README's blocks may take together (about a minute on 2 busy cores)."""

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```\n", re.M | re.S)
_MARK = re.compile(r"<!--\s*(?P<kind>not run|file):\s*(?P<value>.+?)\s*-->\s*\n\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README and what to do with it."""

    line: int
    lang: str
    code: str
    skip: str | None = None  # why it cannot run here
    file: str | None = None  # the file a user saves it as

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks(text: str) -> list[Block]:
    """Return the README's fenced code blocks, with the comment before each, if any."""
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()]
        mark = _MARK.search(before[-300:])
        kind, value = (mark["kind"], mark["value"]) if mark else (None, None)
        blocks.append(Block(before.count("\n") + 1, m["lang"], m["code"],
                            skip=value if kind == "not run" else None,
                            file=value if kind == "file" else None))
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))

DRIVER = textwrap.dedent('''
    import json, subprocess, sys, traceback
    namespace = {"__name__": "__main__"}
    for block in json.load(open(sys.argv[1])):
        print(f"--- {block['name']}", flush=True)
        if block["file"]:
            with open(block["file"], "w") as f:
                f.write(block["code"])
        elif block["lang"] == "python":
            try:
                exec(compile(block["code"], block["name"], "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                sys.exit(f"FAILED: {block['name']}")
        else:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]])
            if done.returncode:
                sys.exit(f"FAILED: {block['name']} exited with {done.returncode}")
''')


def test_the_readme_has_runnable_python_and_shell_blocks() -> None:
    # Guard against the parsing finding nothing (and the test below running nothing).
    runnable = [b for b in BLOCKS if b.lang in CODE_LANGUAGES and not b.skip]
    assert {b.lang for b in runnable} >= {"python", "bash"} and len(runnable) >= 6


def test_every_code_block_that_does_not_run_says_why() -> None:
    for block in BLOCKS:
        if block.skip is not None:
            assert len(block.skip) >= 10, f"{block.name}: say why it cannot run"


def test_blocks_are_read_with_the_comment_right_before_them() -> None:
    text = ("Intro\n\n<!-- not run: needs a cluster -->\n```bash\nssh a\n```\n\n"
            "<!-- file: m.py -->\n```python\nX = 1\n```\nthen\n\n```python\nimport m\n```\n"
            "```\nout/part-00000.txt\n```\n")
    blocks = readme_blocks(text)
    assert [(b.line, b.lang, b.skip, b.file) for b in blocks] == [
        (4, "bash", "needs a cluster", None), (9, "python", None, "m.py"),
        (14, "python", None, None), (17, "", None, None)]
    assert blocks[1].code == "X = 1\n"


@pytest.mark.slow
def test_the_readme_blocks_run_as_written(tmp_path: Path) -> None:
    runnable = [{"name": b.name, "lang": b.lang, "code": b.code, "file": b.file}
                for b in BLOCKS if b.lang in CODE_LANGUAGES and b.skip is None]
    (tmp_path / "blocks.json").write_text(json.dumps(runnable))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "blocks.json")],
                          cwd=work, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"{done.stderr[-6000:]}\n{done.stdout[-3000:]}"
    ran = [line for line in done.stdout.splitlines() if line.startswith("--- README.md:")]
    assert len(ran) == len(runnable)


def test_the_notebooks_readme_command_that_clears_outputs_runs(tmp_path: Path) -> None:
    # notebooks/README.md tells contributors to clear outputs with nbconvert (in the
    # test extra): run that block, as written, on a copy of a notebook with an output.
    import nbformat

    text = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
    (command,) = [b.code for b in readme_blocks(text) if "nbconvert" in b.code]
    notebook = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale\n")]
    cell.execution_count = 3
    (tmp_path / "notebooks").mkdir()
    nbformat.write(notebook, tmp_path / "notebooks" / "01_quickstart.ipynb")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                   os.environ.get("PATH", "")])}
    done = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    cleared = nbformat.read(tmp_path / "notebooks" / "01_quickstart.ipynb", as_version=4)
    assert all(not c.outputs and c.execution_count is None
               for c in cleared.cells if c.cell_type == "code")
