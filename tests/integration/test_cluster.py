"""The ``cluster`` executor with real processes on loopback: a master (``blockproc run
--executor cluster``) and workers (``blockproc worker --connect``), each its own OS
process, talking TCP with an authkey."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockproc.executors._cluster_worker import StorageUnreachable, check_storage
from blockproc.output import read_ledger
from blockproc.storage import resolve
from blockproc.testing import read_parts

KEY = "0123456789abcdef-test-key"
LINES = [f"{i:05d} {'GET' if i % 3 else 'POST'} {500 if i % 7 == 0 else 200}"
         for i in range(4000)]
DATA = ("\n".join(LINES) + "\n").encode()
BLOCK_SIZE = "4KiB"  # about 20 blocks
TRIGGER = LINES[2500]
MAPPER = f'''
import os, signal, time
from pathlib import Path

def upper(line):
    return line.upper()

def slow(line):
    time.sleep(0.0006)   # ~0.12 s per block: a job of ~2.5 s on one slot
    return line.upper()

def gated(line):
    """Wait until the test creates the file "go", then work like slow."""
    while not Path("go").exists():
        time.sleep(0.01)
    return slow(line)

def kill_my_worker(line):
    """SIGKILL the worker (this slot's parent) in the middle of a block, once."""
    if line == {TRIGGER!r} and not Path("killed").exists():
        Path("killed").write_text(f"{{os.getppid()}} {{os.getpid()}}")
        os.kill(os.getppid(), signal.SIGKILL)
    return slow(line)
'''


class Proc:
    """A blockproc command in its own process, its stderr collected line by line."""

    def __init__(self, args: list[str], cwd: Path, key: str | None = KEY) -> None:
        env = {k: v for k, v in os.environ.items() if k != "BLOCKPROC_AUTHKEY"}
        if key is not None:
            env["BLOCKPROC_AUTHKEY"] = key
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "blockproc", *args], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines: list[str] = []
        self._new: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Wait until a line of stderr matches ``pattern``; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if found := regex.search(line):
                    return found
            seen = len(self.lines)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s in "
                                     f"`blockproc {' '.join(self.args)}`:\n{self.stderr}")
            try:
                self._new.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.process.poll() is not None and seen == len(self.lines):
                    self._reader.join(timeout=1)
                    if seen == len(self.lines):
                        raise AssertionError(
                            f"`blockproc {' '.join(self.args)}` exited "
                            f"({self.process.returncode}) without a line matching "
                            f"{pattern!r}:\n{self.stderr}") from None

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "access.log").write_bytes(DATA)
    (tmp_path / "mymod.py").write_text(MAPPER)
    return tmp_path


@pytest.fixture
def spawn(work: Path) -> Iterator[type[Proc]]:
    started: list[Proc] = []

    class Tracked(Proc):
        def __init__(self, args: list[str], cwd: Path = work, key: str | None = KEY) -> None:
            super().__init__(args, cwd, key)
            started.append(self)

    yield Tracked
    for proc in started:
        proc.stop()


def start_master(spawn: type[Proc], fn: str = "slow", *extra: str) -> tuple[Proc, int]:
    master = spawn(["run", "data/access.log", "-o", "out", "--map", f"mymod:{fn}",
                    "--executor", "cluster", "--listen", "127.0.0.1:0",
                    "--block-size", BLOCK_SIZE, "--no-progress", *extra])
    port = int(master.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    return master, port


def start_worker(spawn: type[Proc], port: int, *extra: str, **kwargs: object) -> Proc:
    return spawn(["worker", "--connect", f"127.0.0.1:{port}", "--slots", "1", "--once",
                  *extra], **kwargs)  # type: ignore[arg-type]


def manifest(work: Path) -> dict:
    return json.loads((work / "out" / "_SUCCESS").read_text())


def test_master_and_two_worker_processes_match_the_processes_executor(
        spawn: type[Proc], work: Path) -> None:
    reference = spawn(["run", "data/access.log", "-o", "ref", "--map", "mymod:slow",
                       "--block-size", BLOCK_SIZE, "--workers", "2", "--no-progress"])
    master, port = start_master(spawn)
    assert master.expect(r"BLOCKPROC_AUTHKEY=<the same key as the master> blockproc worker "
                         r"--connect 127\.0\.0\.1:\d+")
    workers = [start_worker(spawn, port) for _ in range(2)]
    assert master.wait() == 0, master.stderr
    assert reference.wait() == 0, reference.stderr
    assert read_parts(str(work / "out")) == read_parts(str(work / "ref")) == DATA.upper()
    ours, theirs = manifest(work), json.loads((work / "ref" / "_SUCCESS").read_text())
    assert [b["checksum"] for b in ours["blocks"]] == [b["checksum"] for b in theirs["blocks"]]
    assert ours["executor"] == "cluster" and ours["workers"] == 2
    assert len({b["worker"] for b in ours["blocks"]}) == 2  # both workers ran blocks
    for worker in workers:
        assert worker.wait() == 0
        master.expect(rf"worker \S+:{worker.pid} \(127\.0\.0\.1:\d+\) joined with 1 slot")
        assert re.search(r"this worker ran [1-9]\d* blocks?", worker.stderr), worker.stderr
    assert not (work / "out" / "_temporary").exists()


def test_worker_killed_mid_job_its_blocks_run_again_exactly_once(
        spawn: type[Proc], work: Path) -> None:
    master, port = start_master(spawn, "kill_my_worker")
    workers = {w.pid: w for w in (start_worker(spawn, port), start_worker(spawn, port))}
    assert master.wait() == 0, master.stderr
    victim, slot = (int(n) for n in (work / "killed").read_text().split())
    assert victim in workers
    assert workers[victim].wait() == -signal.SIGKILL
    master.expect(rf"lost worker \S+:{victim} .*its 1 running attempt will run again")
    assert read_parts(str(work / "out")) == DATA.upper()
    doc = manifest(work)
    assert [b["id"] for b in doc["blocks"]] == list(range(len(doc["blocks"])))
    lost = [a for a in doc["attempts"] if a["status"] == "lost"]
    assert len(lost) == 1 and "was lost" in lost[0]["error"]
    assert doc["blocks"][lost[0]["block_id"]]["attempt"] == 2
    deadline = time.monotonic() + 5  # the killed worker's slot died with it
    while Path(f"/proc/{slot}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{slot}").exists()
    assert not (work / "out" / "_temporary").exists()


def test_worker_joining_mid_job_gets_work_at_once(spawn: type[Proc], work: Path) -> None:
    master, port = start_master(spawn, "gated")
    early = start_worker(spawn, port)
    master.expect(rf"worker \S+:{early.pid} .* ready")
    time.sleep(0.5)  # the early worker is inside its first block, held there by the gate
    late = start_worker(spawn, port)
    master.expect(rf"worker \S+:{late.pid} .* ready with 1 slot \(2 workers, 2 slots in all\)")
    (work / "go").touch()  # the job goes on only once the late worker is in (however slow)
    assert master.wait() == 0, master.stderr
    assert late.wait() == 0
    ran = int(re.search(r"this worker ran (\d+) block", late.stderr).group(1))  # type: ignore[union-attr]
    assert ran >= 1, late.stderr
    assert read_parts(str(work / "out")) == DATA.upper()


def test_wrong_key_is_refused_on_both_sides_and_gets_no_task(
        spawn: type[Proc], work: Path) -> None:
    master, port = start_master(spawn, "upper")
    silent = socket.create_connection(("127.0.0.1", port))  # says nothing: must not block
    intruder = start_worker(spawn, port, key="another-key-of-enough-length")
    assert intruder.wait(timeout=20) == 2
    assert "the master at 127.0.0.1:" in intruder.stderr
    assert "refused this worker: its authkey does not match the master's" in intruder.stderr
    master.expect(r"refused a worker from 127\.0\.0\.1:\d+: its authkey does not match this "
                  r"master's; it got no task")
    good = start_worker(spawn, port)
    assert master.wait() == 0, master.stderr
    assert good.wait() == 0
    silent.close()
    assert read_parts(str(work / "out")) == DATA.upper()
    assert "job" not in intruder.stderr  # it never saw the job


def test_worker_without_a_key_or_with_a_short_key_is_a_usage_error(
        spawn: type[Proc]) -> None:
    nokey = spawn(["worker", "--connect", "127.0.0.1:9"], key=None)
    assert nokey.wait() == 2
    assert "no authkey: set BLOCKPROC_AUTHKEY or pass --authkey-file" in nokey.stderr
    short = spawn(["worker", "--connect", "127.0.0.1:9"], key="short")
    assert short.wait() == 2
    assert "use at least 16" in short.stderr


def test_authkey_file_on_both_sides(spawn: type[Proc], work: Path) -> None:
    (work / "key").write_text(KEY + "\n")
    master, port = start_master(spawn, "upper", "--authkey-file", "key")
    master.expect(r"^    blockproc worker --connect 127\.0\.0\.1:\d+ --authkey-file key$")
    spawn(["worker", "--connect", f"127.0.0.1:{port}", "--authkey-file", "key", "--once"],
          key=None)
    assert master.wait() == 0, master.stderr
    assert read_parts(str(work / "out")) == DATA.upper()


def test_worker_that_cannot_import_the_function_fails_the_job_clearly(
        spawn: type[Proc], work: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # no mymod.py there
    master, port = start_master(spawn)
    worker = start_worker(spawn, port, cwd=elsewhere)
    assert master.wait() == 1
    assert re.search(r"error: no connected worker can run this job: \S+ \(127\.0\.0\.1:\d+\): "
                     r"worker \S+ cannot load the job's function: ModuleNotFoundError: No "
                     r"module named 'mymod'", master.stderr), master.stderr
    assert "cannot load the job's function: ModuleNotFoundError" in worker.stderr
    assert not (work / "out" / "_SUCCESS").exists()


def test_worker_that_cannot_see_the_input_is_reported_and_gets_no_more_work(
        spawn: type[Proc], work: Path) -> None:
    master, port = start_master(spawn)
    (work / "data" / "access.log").unlink()  # planned by the master, invisible to workers
    start_worker(spawn, port)
    assert master.wait() == 1
    assert "does not exist on worker host" in master.stderr
    assert "every worker must see the same storage" in master.stderr
    assert "no connected worker can run this job" in master.stderr


def test_check_storage_names_the_missing_path(tmp_path: Path) -> None:
    import blockproc as bp
    from blockproc.job import Job
    from blockproc.worker import Mapper

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    plan = bp.plan(str(src), block_size=4096)
    job = Job(plan, Mapper("record", str.upper), output_fs=plan_fs(),  # type: ignore[arg-type]
              output_path=str(tmp_path / "out"), executor=None)  # type: ignore[arg-type]
    task = job._master._task((0, 1))
    with pytest.raises(StorageUnreachable, match="output directory"):
        check_storage(task, set())
    (tmp_path / "out").mkdir()
    check_storage(task, seen := set())
    assert len(seen) == 2
    src.unlink()
    with pytest.raises(StorageUnreachable, match=r"the input '.*in\.log' does not exist"):
        check_storage(task, set())


def plan_fs() -> object:
    from blockproc.storage import filesystem

    return filesystem("file")


def test_master_shows_which_worker_runs_which_block_and_its_rate(tmp_path: Path) -> None:
    import blockproc as bp
    from blockproc.executors.cluster import ClusterExecutor
    from blockproc.job import Job, run_job
    from blockproc.worker import Mapper
    from tests import jobs

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    plan = bp.plan(str(src), block_size=8192)
    lines: list[str] = []
    executor = ClusterExecutor(authkey=KEY, local_workers=2, log=lines.append,
                               status_interval=0.25)
    job = Job(plan, Mapper("record", jobs.slow(0.0005)), output_fs=plan_fs(),  # type: ignore[arg-type]
              output_path=str(tmp_path / "out"), executor=executor)
    run_job(job)
    assert job.result().num_records == len(LINES)
    status = [line for line in lines if line.startswith("status:")]
    assert status, lines
    assert re.search(r"\S+:\d+ \(127\.0\.0\.1:\d+\) \(1 slot\): block \d+ \(attempt 1\) "
                     r"\d+% at [\d.]+ (B|KiB|MiB)/s", "\n".join(status)), status
    assert re.search(r"\d+ blocks? done", "\n".join(status))


def test_slot_killed_by_its_function_runs_again_through_the_api(tmp_path: Path) -> None:
    import blockproc as bp
    from tests import jobs

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    out, marker = tmp_path / "out", tmp_path / "killed"
    res = bp.map_lines(jobs.kill_once(str(marker), LINES[2000]), str(src), output=str(out),
                       block_size=4096, executor="cluster", workers=2,
                       speculation=False,  # under load a speculative copy could win first
                       executor_options={"authkey": KEY})
    assert marker.exists()
    assert read_parts(str(out)) == DATA
    lost = [a for a in res.attempts if a.status == "lost"]
    assert len(lost) == 1 and "killed by SIGKILL" in lost[0].error
    assert res.blocks[lost[0].block_id].attempt == 2


def test_cancel_stops_the_remote_workers_and_leaves_resumable_state(tmp_path: Path) -> None:
    import blockproc as bp
    from tests import jobs

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    out = str(tmp_path / "out")
    plan = bp.plan(str(src), block_size=2048)
    job = bp.submit(plan, jobs.slow(0.002), output=out, executor="cluster", workers=2)
    deadline = time.monotonic() + 30  # cancel once some blocks are committed, not all
    while len(read_ledger(*resolve(out))) < 2:
        assert time.monotonic() < deadline and not job.done()
        time.sleep(0.02)
    started = time.monotonic()
    assert job.cancel()
    with pytest.raises(bp.JobCancelledError, match="resume"):
        job.result(timeout=30)
    assert time.monotonic() - started < 5
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert not (tmp_path / "out" / "_temporary").exists()
    res = bp.map_lines(jobs.identity, str(src), output=out, block_size=2048,
                       if_exists="resume", executor="cluster", workers=2)
    assert read_parts(out) == DATA
    assert len({a.block_id for a in res.attempts}) < len(plan.blocks)


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"listen": "localhost"}, "ConfigError", r"listen must look like HOST:PORT .*got 'localhost'"),
    ({"listen": "127.0.0.1:99999"}, "ConfigError", "listen must look like HOST:PORT"),
    ({"authkey": "short"}, "ConfigError", "has 5 characters; use at least 16"),
    ({"authkey": KEY, "authkey_file": "k"}, "ConfigError", "authkey or authkey_file, not both"),
    ({"authkey_file": "/nonexistent/key"}, "ConfigError", "cannot read the authkey file"),
    ({"scheduler": "x"}, "ConfigError",
     r"unknown executor_options \['scheduler'\] for executor='cluster'; valid keys: listen"),
    ({"authkey": 12345678901234567}, "TypeError", "authkey must be a str or bytes"),
])
def test_bad_cluster_options_are_refused_before_anything_runs(
        tmp_path: Path, options: dict, error: str, match: str) -> None:
    import blockproc as bp
    from tests import jobs

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    expected = bp.ConfigError if error == "ConfigError" else TypeError
    with pytest.raises(expected, match=match):
        bp.map_lines(jobs.upper, str(src), output=str(tmp_path / "out"), executor="cluster",
                     executor_options=options)
    assert not (tmp_path / "out").exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import blockproc as bp
    from tests import jobs

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(bp.ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port}: "
                                                 r".*choose another port"):
            bp.map_lines(jobs.upper, str(src), output=str(tmp_path / "out"),
                         executor="cluster", executor_options={"listen": f"127.0.0.1:{port}"})


# -- workers in their own network namespaces (root and iproute2 only) -----------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def netns_workers() -> Iterator[tuple[str, list[str], list[str]]]:
    """Two network namespaces joined to this one by veth pairs on a bridge.

    Yields the bridge's address (the master listens there), the namespace names and the
    host ends of their links.
    Traffic between master and workers really crosses network interfaces, and a link can
    be cut without either side sending a FIN.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = os.urandom(3).hex()
    subnet = f"10.231.{int(tag[:2], 16)}"
    bridge, spaces = f"bpbr{tag}", [f"bpns{tag}{i}" for i in range(2)]
    links = [f"bpv{tag}{i}h" for i in range(2)]
    made: list[tuple[str, ...]] = []
    try:
        try:
            _ip("netns", "add", spaces[0])
        except (subprocess.CalledProcessError, OSError) as exc:
            pytest.skip(f"`ip netns add` is not permitted here: {exc}")
        made.append(("netns", "del", spaces[0]))
        _ip("netns", "add", spaces[1])
        made.append(("netns", "del", spaces[1]))
        _ip("link", "add", bridge, "type", "bridge")
        made.append(("link", "del", bridge))
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, space in enumerate(spaces):
            host, inner = links[i], f"bpv{tag}{i}n"
            _ip("link", "add", host, "type", "veth", "peer", "name", inner)
            made.append(("link", "del", host))
            _ip("link", "set", inner, "netns", space)
            _ip("link", "set", host, "master", bridge)
            _ip("link", "set", host, "up")
            _ip("-n", space, "addr", "add", f"{subnet}.{i + 2}/24", "dev", inner)
            _ip("-n", space, "link", "set", inner, "up")
            _ip("-n", space, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for command in reversed(made):
            subprocess.run(["ip", *command], check=False, capture_output=True, timeout=20)
        pytest.skip(f"cannot build the test network: {exc.stderr!r}")
    try:
        yield f"{subnet}.1", spaces, links
    finally:
        for command in reversed(made):
            subprocess.run(["ip", *command], check=False, capture_output=True, timeout=20)


def test_workers_in_network_namespaces_and_a_cut_link(
        netns_workers: tuple[str, list[str], list[str]], tmp_path: Path) -> None:
    import blockproc as bp
    from blockproc.executors.cluster import ClusterExecutor
    from blockproc.job import Job, start_job
    from blockproc.worker import Mapper
    from tests import jobs

    address, spaces, links = netns_workers
    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    with socket.create_server((address, 0)) as probe:  # a free port on the bridge
        port = probe.getsockname()[1]
    lines: list[str] = []
    executor = ClusterExecutor(listen=f"{address}:{port}", authkey=KEY, log=lines.append,
                               heartbeat_timeout=2.0)
    plan = bp.plan(str(src), block_size=2048)
    job = Job(plan, Mapper("record", jobs.slow(0.001)), output_fs=plan_fs(),  # type: ignore[arg-type]
              output_path=str(tmp_path / "out"), executor=executor)
    env = dict(os.environ, BLOCKPROC_AUTHKEY=KEY,
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    workers = [subprocess.Popen(["ip", "netns", "exec", space, sys.executable, "-m",
                                 "blockproc", "worker", "--connect", f"{address}:{port}",
                                 "--slots", "1", "--once"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
               for space in spaces]
    try:
        start_job(job)
        deadline = time.monotonic() + 20
        while sum("ready with" in line for line in lines) < 2:
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        subnet = address.rsplit(".", 1)[0]
        assert all(f"({subnet}." in line for line in lines if "joined" in line), lines
        time.sleep(0.8)
        _ip("link", "set", links[0], "down")  # no FIN, no RST: the packets just stop
        res = job.result(timeout=60)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=10)
            if worker.stderr is not None:
                worker.stderr.close()
    assert read_parts(str(tmp_path / "out")) == DATA
    lost = [a for a in res.attempts if a.status == "lost"]
    assert len(lost) == 1 and "no heartbeat for 2s" in lost[0].error, res.attempts
    assert any("lost worker" in line and "no heartbeat" in line for line in lines)
    assert sorted(b.block.id for b in res.blocks) == list(range(len(plan.blocks)))
