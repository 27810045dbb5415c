"""The progress bar: its counters, and how it behaves in a Jupyter kernel.

A real kernel is not started: ``tqdm.auto`` decides by looking at ``sys.modules`` and
``IPython.get_ipython()``, so the tests put stand-ins there.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator

import pytest

from blockproc.progress import NullProgress, TqdmProgress, in_jupyter, make_progress

TQDM_MODULES = ["tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"]


class ZMQInteractiveShell:
    """Named like the shell of a Jupyter kernel, which is all the detection reads."""


@pytest.fixture
def jupyter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Look like a Jupyter kernel without ipywidgets, with tqdm.auto not yet imported."""
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` fails
    for name in TQDM_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in TQDM_MODULES:  # imported under the stand-ins: drop them
        sys.modules.pop(name, None)


def test_bar_shows_bytes_throughput_blocks_busy_workers_and_retries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = TqdmProgress(total_bytes=8 * 2**20, total_blocks=8)
    bar.update(bytes_done=3 * 2**20, blocks_done=3, busy=2, retries=1)
    bar.close()
    err = capsys.readouterr().err
    assert "blockproc" in err and "B/s" in err and "8.00M" in err
    assert "blocks 3/8 busy 2 retries 1" in err


def test_bar_counts_blocks_already_committed_by_a_resumed_job(
    capsys: pytest.CaptureFixture[str],
) -> None:
    TqdmProgress(total_bytes=100, total_blocks=4, done_blocks=3).close()
    assert "blocks 3/4 busy 0 retries 0" in capsys.readouterr().err


def test_jupyter_without_ipywidgets_falls_back_to_the_text_bar_quietly(
    jupyter: None, capsys: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bar = TqdmProgress(total_bytes=100, total_blocks=1)
        bar.update(100, 1, 0, 0)
        bar.close()
    assert [str(w.message) for w in caught] == []
    from tqdm.notebook import tqdm_notebook

    assert not isinstance(bar._bar, tqdm_notebook)
    assert "blocks 1/1" in capsys.readouterr().err


def test_progress_is_on_by_default_in_jupyter(jupyter: None) -> None:
    assert in_jupyter()
    progress = make_progress(None, total_bytes=100, total_blocks=1)
    assert isinstance(progress, TqdmProgress)
    progress.close()


def test_progress_is_off_by_default_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not in_jupyter()
    assert isinstance(make_progress(None, total_bytes=100, total_blocks=1), NullProgress)
    assert isinstance(make_progress(False, total_bytes=100, total_blocks=1), NullProgress)
