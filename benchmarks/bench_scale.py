"""The master at scale: the real Scheduler, Master loop and commit ledger against a
simulated executor, at up to 1,000,000 blocks and 1,000 workers.

    python benchmarks/bench_scale.py --blocks 10000 100000 1000000 --workers 10 100 1000

No processes and no data: :class:`SimExecutor` gives every attempt a random duration on a
simulated clock (log-normal around 1 s; 1% stragglers ten times slower, so speculation
happens once nothing is pending), fails some attempts (0.5% raise, 0.1% lose their worker,
0.01% hang until their lease expires), and "finishes" an attempt by creating its empty
staged part-file, which the master then commits for real: rename, ledger line, and at the
end the ``_SUCCESS`` manifest and the attempts file. The output is a temporary directory
(on ``/dev/shm`` when there is one, so the disk does not decide the figures).

Each case runs in a fresh child process (its own peak RSS) and reports:

* master CPU per block (µs): the process's CPU time in ``Master.run`` minus the simulated
  executor's own, whole run (prepare, loop, commits, manifest, attempts file);
* the loop alone per block (the same without writing ``_SUCCESS``);
* memory per block: peak RSS minus the RSS before the plan was built, over the blocks
  (the plan, the scheduler, the results and the manifest written at the end);
* ``_SUCCESS`` written (s): ``OutputDir.finish`` (build the manifest, serialise, write),
  wall and CPU seconds (on a shared machine the CPU figure is the steadier one);
* ``status`` (s): ``blockproc.output.status(output)`` (``bp.status``), reading the
  manifest back, and ``blockproc status OUT`` as a fresh process (interpreter start
  included).

``--plan-files 100000`` also plans that many small files on ``memory://`` (in 100
directories) and counts the filesystem's listing calls.

Targets (issue 16), at 1,000,000 blocks: CPU <= 50 µs/block, memory <= 2 KiB/block,
``_SUCCESS`` <= 10 s, ``status`` <= 5 s; planning 100,000 files <= 10 s, one listing
call per directory argument.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from time import process_time
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import blockproc as bp  # noqa: E402
from blockproc.executors import Event, Failed, Finished, Progress  # noqa: E402
from blockproc.master import JobOptions, Master  # noqa: E402
from blockproc.model import Block, BlockResult, InputFile, Plan  # noqa: E402
from blockproc.output import OutputDir  # noqa: E402
from blockproc.output import status as output_status  # noqa: E402
from blockproc.scheduler import AttemptKey, Scheduler  # noqa: E402
from blockproc.storage import filesystem  # noqa: E402
from blockproc.worker import BlockTask, Mapper  # noqa: E402

BLOCK_SIZE = 64 << 20
"""Nominal size of a simulated block (nothing is read)."""

BLOCKS_PER_FILE = 1000


class SimClock:
    """A clock the simulated executor moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SimExecutor:
    """A fake executor on a simulated clock: random durations, stragglers, failures.

    ``run`` draws an attempt's fate; ``events(timeout)`` jumps the clock to the next due
    event (or by ``timeout`` if none is due that soon) and returns every event due within
    ``quantum`` of it, as a real executor returns what arrived while the master was busy.
    Its own CPU time is kept in ``cpu`` so that it can be taken out of the master's.
    """

    name = "sim"

    def __init__(self, slots: int, clock: SimClock, *, seed: int = 0, fail: float = 0.005,
                 lost: float = 0.001, hang: float = 0.0001, straggle: float = 0.01,
                 quantum: float = 0.01) -> None:
        self.num_slots = slots
        self.clock = clock
        self.rng = random.Random(seed)
        self.fail, self.lost, self.hang, self.straggle = fail, lost, hang, straggle
        self.quantum = quantum
        self.cpu = 0.0
        self.started = 0
        self._heap: list[tuple[float, int, AttemptKey, str]] = []
        self._live: dict[AttemptKey, BlockTask] = {}
        self._seq = 0
        self._dirs: set[str] = set()

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Nothing to start."""

    def _push(self, when: float, key: AttemptKey, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key, kind))

    # Each call the master makes is timed inline (a context manager here cost about a
    # microsecond per call, on the master's side of the clock reading).

    def run(self, task: BlockTask) -> None:
        """Draw the attempt's duration and fate."""
        t0 = process_time()
        try:
            self._run(task)
        finally:
            self.cpu += process_time() - t0

    def _run(self, task: BlockTask) -> None:
        assert len(self._live) < self.num_slots, "more attempts than slots"
        key, rng, now = task.key, self.rng, self.clock.now
        self._live[key] = task
        self.started += 1
        duration = rng.lognormvariate(0.0, 0.3)
        if rng.random() < self.straggle:
            duration *= 10
        fate = rng.random()
        if fate < self.hang:
            return  # never heard of again: its lease expires
        kind = ("lost" if fate < self.hang + self.lost else
                "fail" if fate < self.hang + self.lost + self.fail else "done")
        self._push(now + duration / 2, key, "progress")
        self._push(now + duration, key, kind)

    def events(self, timeout: float) -> list[Event]:
        """Advance the clock and return the events now due."""
        t0 = process_time()
        try:
            return self._events(timeout)
        finally:
            self.cpu += process_time() - t0

    def _events(self, timeout: float) -> list[Event]:
        heap, live, out = self._heap, self._live, []
        while heap and heap[0][2] not in live:
            heapq.heappop(heap)  # a cancelled attempt's
        if not heap or heap[0][0] > self.clock.now + timeout:
            self.clock.now += timeout
            return []
        self.clock.now = max(self.clock.now, heap[0][0])
        until = self.clock.now + self.quantum
        while heap and heap[0][0] <= until:
            _, _, key, kind = heapq.heappop(heap)
            task = live.get(key)
            if task is not None:
                out.append(self._event(key, kind, task))
        return out

    def _event(self, key: AttemptKey, kind: str, task: BlockTask) -> Event:
        block = task.block
        worker = f"sim:{hash(key) % self.num_slots}"
        if kind == "progress":
            return Progress(key, (block.end - block.start) // 2, 500, worker)
        del self._live[key]
        if kind == "lost":
            return Failed(key, f"worker {worker} was lost", worker=worker, lost=True)
        if kind == "fail":
            return Failed(key, "ValueError: a bad record", worker=worker)
        folder = os.path.dirname(task.staging_path)
        if folder not in self._dirs:  # as a worker's open_output does
            os.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        fd = os.open(task.staging_path, os.O_CREAT | os.O_WRONLY, 0o644)  # the part-file
        os.close(fd)
        return Finished(key, BlockResult(
            block, task.part, attempt=key[1], worker=worker, records_in=1000,
            records_out=1000, bytes_read=block.end - block.start, bytes_written=0,
            checksum="crc32:00000000", started=self.clock.now, seconds=1.0))

    def cancel(self, key: AttemptKey) -> None:
        """Forget the attempt (its pending events are dropped)."""
        t0 = process_time()
        self._live.pop(key, None)
        self.cpu += process_time() - t0

    def close(self) -> None:
        """Forget every attempt."""
        self._live.clear()


def sim_plan(num_blocks: int) -> Plan:
    """A plan of ``num_blocks`` nominal 64 MiB blocks over files of 1,000 blocks each
    (built directly: nothing exists to list or read)."""
    files, blocks = [], []
    for i in range(-(-num_blocks // BLOCKS_PER_FILE)):
        n = min(BLOCKS_PER_FILE, num_blocks - i * BLOCKS_PER_FILE)
        f = InputFile(f"/sim/in/f{i:05d}.log", n * BLOCK_SIZE, "mtime=0")
        files.append(f)
        for j in range(n):
            blocks.append(Block(len(blocks), f.path, j * BLOCK_SIZE, (j + 1) * BLOCK_SIZE))
    return Plan("memory", tuple(files), tuple(blocks), BLOCK_SIZE, {"name": "lines"})


def scratch_dir() -> str:
    """A fresh directory, in RAM when the machine has ``/dev/shm``."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.mkdtemp(prefix="bp-scale-", dir=base)


def rss_bytes() -> int:
    """The current resident set size (Linux), else 0."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def simulate(num_blocks: int, workers: int, *, seed: int = 0, root: str | None = None,
             speculation: bool = True, cli: bool = True, **fates: float) -> dict[str, Any]:
    """Run one simulated job and return its figures (see the module docstring)."""
    rss0 = rss_bytes()
    plan = sim_plan(num_blocks)
    clock = SimClock()
    executor = SimExecutor(workers, clock, seed=seed, **fates)
    own = root is None
    root = root or scratch_dir()
    fs = filesystem("file")
    out = OutputDir(fs, f"{root}/out", "sim-job")
    master = Master(plan, Mapper("record", str.upper), out, executor,  # type: ignore[arg-type]
                    input_fs=filesystem("memory"), progress=False, clock=clock,
                    options=JobOptions(lease_timeout=60.0, speculation=speculation))
    finish_seconds = [0.0, 0.0]  # wall, cpu
    real_finish = out.finish

    def timed_finish(*args: Any, **kwargs: Any) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        real_finish(*args, **kwargs)
        finish_seconds[0] += time.perf_counter() - w0
        finish_seconds[1] += time.process_time() - c0

    out.finish = timed_finish  # type: ignore[method-assign]
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = master.run(threading.Event())
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        peak = peak_rss_bytes()
        s0, sc0 = time.perf_counter(), time.process_time()
        st = output_status(out.url)
        status_seconds, status_cpu = time.perf_counter() - s0, time.process_time() - sc0
        assert st.is_finished and st.num_committed == num_blocks, st
        cli_seconds = cli_status_seconds(out.url, len(result.attempts)) if cli else None
        by_status: dict[str, int] = {}
        for a in result.attempts:
            by_status[a.status] = by_status.get(a.status, 0) + 1
        master_cpu = cpu - executor.cpu
        return {
            "blocks": num_blocks, "workers": workers, "attempts": len(result.attempts),
            "by_status": by_status,
            "speculative": sum(a.speculative for a in result.attempts),
            "sim_seconds": round(clock.now, 1),
            "wall_s": round(wall, 3), "master_cpu_s": round(master_cpu, 3),
            "cpu_us_per_block": round(master_cpu / num_blocks * 1e6, 2),
            "loop_us_per_block": round((master_cpu - finish_seconds[1]) / num_blocks * 1e6, 2),
            "executor_cpu_s": round(executor.cpu, 3),
            "manifest_s": round(finish_seconds[0], 3),
            "manifest_cpu_s": round(finish_seconds[1], 3),
            "manifest_mb": round(os.path.getsize(f"{root}/out/_SUCCESS") / 1e6, 1),
            "status_s": round(status_seconds, 3),
            "status_cpu_s": round(status_cpu, 3),
            "cli_status_s": cli_seconds,
            "peak_rss_mb": round(peak / 2**20, 1),
            "bytes_per_block": round((peak - rss0) / num_blocks) if rss0 else None,
        }
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def cli_status_seconds(url: str, attempts: int) -> float:
    """Wall seconds of ``blockproc status URL`` in a fresh interpreter."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "blockproc", "status", url],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0 and f"attempts: {attempts} (" in proc.stdout, proc
    return round(seconds, 3)


class CountingCalls:
    """Count calls to some methods of a filesystem class while in use."""

    def __init__(self, cls: type, names: tuple[str, ...]) -> None:
        self.cls, self.names = cls, names
        self.calls: dict[str, int] = dict.fromkeys(names, 0)
        self._saved: dict[str, Callable[..., Any]] = {}

    def __enter__(self) -> CountingCalls:
        for name in self.names:
            real = getattr(self.cls, name)
            self._saved[name] = real

            def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                self.calls[_name] += 1
                return _real(*args, **kw)

            setattr(self.cls, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, real in self._saved.items():
            setattr(self.cls, name, real)


def plan_small_files(num_files: int, dirs: int = 100) -> dict[str, Any]:
    """Write ``num_files`` small files into ``dirs`` directories on ``memory://``, plan
    them (the directory as one argument, and each directory as its own argument) and
    count the listing calls."""
    from fsspec.implementations.memory import MemoryFileSystem

    fs = filesystem("memory")
    root = f"/bp-scale-plan-{os.getpid()}"
    per_dir = -(-num_files // dirs)
    for i in range(num_files):
        fs.pipe_file(f"{root}/d{i // per_dir:03d}/f{i:06d}.log", b"a line\n" * 4)
    figures: dict[str, Any] = {"files": num_files, "dirs": dirs}
    try:
        names = ("ls", "find", "glob", "info", "walk")
        for label, paths in (("one_arg", [f"memory://{root}"]),
                             ("per_dir", [f"memory://{root}/d{d:03d}" for d in range(dirs)])):
            with CountingCalls(MemoryFileSystem, names) as counter:
                t0 = time.perf_counter()
                plan = bp.plan(paths)
                seconds = time.perf_counter() - t0
            assert len(plan.files) == num_files, len(plan.files)
            figures[label] = {"seconds": round(seconds, 3), "blocks": len(plan.blocks),
                              "calls": {k: v for k, v in counter.calls.items() if v},
                              "arguments": len(paths)}
    finally:  # straight from the store: fsspec's rm of 100,000 files takes minutes
        for name in [n for n in MemoryFileSystem.store if n.startswith(root + "/")]:
            del MemoryFileSystem.store[name]
        MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs
                                           if d != root and not d.startswith(root + "/")]
    return figures


def run_child(args: list[str]) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return its JSON line."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"case {args} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the cases."""
    head = ("| blocks | workers | attempts | CPU µs/block | loop µs/block | bytes/block | "
            "_SUCCESS s (CPU) | _SUCCESS MB | status() s (CPU) | CLI status s | wall s |")
    lines = [head, "|" + "---:|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['blocks']:,} | {r['workers']:,} | {r['attempts']:,} | "
            f"{r['cpu_us_per_block']:.1f} | {r['loop_us_per_block']:.1f} | "
            f"{r['bytes_per_block']:,} | {r['manifest_s']:.2f} ({r['manifest_cpu_s']:.2f}) | "
            f"{r['manifest_mb']:.0f} | {r['status_s']:.2f} ({r['status_cpu_s']:.2f}) | "
            f"{r['cli_status_s']:.2f} | {r['wall_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plan-files", type=int, default=0,
                        help="also plan this many small files on memory://")
    parser.add_argument("--one", type=int, nargs=2, metavar=("BLOCKS", "WORKERS"),
                        help=argparse.SUPPRESS)  # a child process's case
    parser.add_argument("--plan-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(simulate(*args.one, seed=args.seed)))
        return
    if args.plan_only:
        print(json.dumps(plan_small_files(args.plan_files)))
        return
    rows = []
    for blocks in args.blocks:
        for workers in args.workers:
            row = run_child(["--one", str(blocks), str(workers), "--seed", str(args.seed)])
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(table(rows))
    if args.plan_files:
        figures = run_child(["--plan-only", "--plan-files", str(args.plan_files)])
        print()
        print(f"plan {figures['files']:,} small files in {figures['dirs']} directories on "
              f"memory://")
        for label in ("one_arg", "per_dir"):
            f = figures[label]
            print(f"  {f['arguments']} argument(s): {f['seconds']:.2f} s, {f['blocks']:,} "
                  f"blocks, calls {f['calls']}")


if __name__ == "__main__":
    main()
