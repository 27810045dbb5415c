"""Shared fixtures: a clean memory:// root, a local tmp root, and the executor matrix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci")


@pytest.fixture
def memfs() -> Iterator[str]:
    """A fresh ``memory://`` root URL, removed afterwards."""
    root = f"memory://test-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root.replace("memory://", "/")
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture
def local_root(tmp_path: Path) -> str:
    """A local directory path as a string."""
    return str(tmp_path)


@pytest.fixture(params=["inline", "threads", "processes"])
def executor(request: pytest.FixtureRequest) -> str:
    """Each executor in turn."""
    return str(request.param)
