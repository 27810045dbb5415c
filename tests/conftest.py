"""Shared fixtures: a clean memory:// root, a local tmp root, the executor matrix, and an S3
server on loopback (``s3``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, settings

from tests.s3server import OFFLINE_ENV, S3Bucket, S3Server

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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (a free port), in this process, for the whole session.

    The offline AWS environment (fake credentials, no instance metadata) is set for the
    session, so worker processes spawned by the jobs inherit it; nothing reaches the
    internet.
    """
    saved = {name: os.environ.get(name) for name in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh bucket on the session's S3 server; the request log starts empty and any
    injected faults end with the test."""
    s3_server.reset()
    bucket = S3Bucket(s3_server, f"test-{uuid.uuid4().hex[:10]}")
    s3_server.reset()
    try:
        yield bucket
    finally:
        s3_server.reset()
