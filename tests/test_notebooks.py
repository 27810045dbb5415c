"""The notebooks in ``notebooks/`` run from top to bottom without an error, so they cannot rot.

Each notebook is executed with nbclient in a fresh kernel of this interpreter, in its own
temporary working directory, with a timeout per cell; any cell error fails the test, and
so does a traceback printed to a cell's output (an exception in a background thread or a
logged one). The kernel imports blockproc from this checkout (``PYTHONPATH``), as the
test process does, and draws with matplotlib's Agg backend, so no display is needed.

Notebooks are stored without outputs: run them in Jupyter, then clear the outputs
(Edit > Clear Outputs of All Cells) before committing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_tables_and_arrays.ipynb", "03_scaling_out.ipynb",
            "04_answers_back.ipynb"}

KERNEL_NAME = "python3"
"""The kernel the notebooks' metadata names (the one ipykernel installs)."""
CELL_TIMEOUT = 180
"""Seconds one cell may run; each notebook takes well under 20 s in all on 2 cores."""
STARTUP_TIMEOUT = 120
"""Seconds the kernel may take to start (a cold, busy CI machine)."""


def _read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)


def test_the_notebooks_are_found() -> None:
    # Guard against the parametrised tests below running on nothing.
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_valid_and_without_outputs(path: Path) -> None:
    import nbformat

    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; notebooks are "
        f"stored without outputs (Jupyter: Edit > Clear Outputs of All Cells)"
    )
    assert nb.cells and nb.cells[0].cell_type == "markdown", (
        f"{path.name} should open with a markdown cell that says what it shows"
    )


def _kernel_dirs(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point Jupyter at private directories under ``base``.

    A kernelspec named python3 that runs this interpreter comes first on JUPYTER_PATH, so
    the notebooks run here even if another python3 kernelspec (in the user's data
    directory, say, for another Python) exists; connection files go to a private runtime
    directory and the kernel gets an empty IPython profile (no user startup scripts).
    """
    from ipykernel.kernelspec import write_kernel_spec

    kernels = base / "jupyter" / "kernels"
    kernels.mkdir(parents=True)
    write_kernel_spec(kernels / KERNEL_NAME)
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [str(base / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(base / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(base / "ipython"))


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"  # no display; the inline backend is not needed to run
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _tracebacks(nb: Any) -> list[str]:
    """Return the text of stream outputs that hold a Python traceback."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and "Traceback (most recent call last)" in out.text:
                found.append(f"cell {i} ({out.name}):\n{out.text}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_errors(path: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Older jupyter_core releases warn (DeprecationWarning, an error under
    # filterwarnings=error) that Jupyter's paths move to platformdirs, unless this opts in
    # to the new paths now; the directories that matter are set in _kernel_dirs anyway.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    _kernel_dirs(tmp_path, monkeypatch)
    workdir = tmp_path / "work"
    workdir.mkdir()
    nb = _read(path)
    client = NotebookClient(
        nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute(env=_kernel_env())
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed in {workdir}:\n{exc}", pytrace=False)
    tracebacks = _tracebacks(nb)
    assert not tracebacks, f"{path.name} printed tracebacks:\n" + "\n".join(tracebacks)
