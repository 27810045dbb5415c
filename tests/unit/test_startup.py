"""Start-up (issue 14): a small local job loads only the code it runs, and the cheap
replacements made for that answer as what they replace."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockproc._units import _UNITS, parse_size

STARTUP = """
import json, sys
import blockproc as bp
after_import = sorted(sys.modules)
def shout(line):
    return line.upper()
fn = shout if sys.argv[3] == "main" else str.upper
res = bp.map_lines(fn, sys.argv[1], output=sys.argv[2], workers=2, progress=False)
print(json.dumps({"import": after_import, "job": sorted(sys.modules),
                  "records": res.num_records_out}))
"""

NEVER_FOR_A_LOCAL_LINES_JOB = (
    "fsspec", "asyncio", "blockproc.formats.csv_format", "blockproc.formats.csv_split",
    "blockproc.formats.parquet", "blockproc.formats.jsonl", "blockproc.formats.fixed",
    "blockproc.output_formats.csv_format", "blockproc.output_formats.parquet",
    "blockproc.output_formats.jsonl", "blockproc.output_formats.npy",
    "blockproc.executors.threads", "blockproc.executors.cluster", "blockproc.executors.dask",
    "blockproc.incremental", "blockproc.output.appending",
    "pyarrow", "numpy", "dask", "distributed", "decimal", "html", "datetime",
    "concurrent.futures", "blockproc.output.status", "gzip", "hashlib", "_hashlib",
    "blockproc.report", "blockproc.command",
)


ONLY_FOR_A_FUNCTION_BY_VALUE = ("cloudpickle", "logging", "uuid", "platform", "dataclasses",
                                "inspect", "ast", "dis")
"""A function workers can import by name travels with plain pickle: cloudpickle (and the
logging, uuid, platform and dataclasses, with inspect, it imports) load only for lambdas,
closures and what ``__main__`` defines; the engine's own ids come from ``os.urandom``,
its value classes are :class:`~blockproc._frozen.FrozenSlots` and plain classes."""


@pytest.mark.parametrize(("given", "fn"), [("file", "main"), ("directory", "main"),
                                           ("file", "importable")])
def test_a_small_local_job_loads_only_what_it_uses(tmp_path: Path, given: str,
                                                   fn: str) -> None:
    """In a fresh interpreter: ``import blockproc`` loads only its errors, and a lines job
    on a local file or directory with 2 worker processes loads no fsspec, no other
    format's code, no other executor and no optional package; with a function the
    workers can import by name, no cloudpickle either."""
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "a.log"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    url = str(src if given == "file" else src.parent)
    proc = subprocess.run([sys.executable, "-c", STARTUP, url, str(tmp_path / "out"), fn],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["records"] == 1000
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert not [m for m in seen["import"] if m.startswith("blockproc.")
                and m not in ("blockproc.errors",)], "import blockproc loads only its errors"
    never = NEVER_FOR_A_LOCAL_LINES_JOB + (ONLY_FOR_A_FUNCTION_BY_VALUE
                                           if fn == "importable" else ())
    loaded = [m for m in seen["job"] if any(m == n or m.startswith(f"{n}.") for n in never)]
    assert loaded == []
    if fn == "main":
        assert "cloudpickle" in seen["job"]  # __main__'s function went by value


BESIDE_A_THREAD = """
import sys, threading
import blockproc as bp
from blockproc.executors.processes import start_method
def shout(line):
    return line.upper()
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()
assert start_method() == "forkserver"
res = bp.map_lines(shout, sys.argv[1], output=sys.argv[2], workers=2, progress=False)
stop.set()
print(res.num_records_out)
"""


def test_a_main_function_reaches_workers_forked_from_the_template(tmp_path: Path) -> None:
    """Workers forked from the template process have another ``__main__``: a function
    defined in the script must travel by value (plain pickle would name it, and the
    worker could not find it)."""
    src = tmp_path / "a.log"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    proc = subprocess.run([sys.executable, "-c", BESIDE_A_THREAD, str(src),
                           str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "100"
    assert (tmp_path / "out" / "part-00000.txt").read_bytes().startswith(b"LINE 0\n")


@given(st.integers(0, 10**12), st.integers(0, 10**6), st.integers(0, 6),
       st.sampled_from(sorted(_UNITS)), st.sampled_from(["", " "]))
def test_sizes_parse_exactly_as_decimal_did(whole: int, fraction: int, digits: int,
                                            unit: str, space: str) -> None:
    number = f"{whole}.{str(fraction).zfill(digits)[:digits]}" if digits else str(whole)
    text = f"{number}{space}{unit.upper() if fraction % 2 else unit}"
    assert parse_size(text) == int(Decimal(number) * _UNITS[unit])


INHERITED_LIBC = """
import sys
import blockproc as bp
from blockproc.executors import _lifeline
def libc_id(line):
    return str(id(_lifeline._LIBC[0])) if _lifeline._LIBC else "none"
res = bp.map_lines(libc_id, sys.argv[1], output=sys.argv[2], workers=1, progress=False)
print(id(_lifeline._LIBC[0]) if _lifeline._LIBC else "none")
"""


def test_forked_workers_inherit_the_c_library_the_master_loaded(tmp_path: Path) -> None:
    """The master loads ctypes and the C library (``_lifeline.libc``) before it forks its
    workers; a worker that loaded them itself would start its first block milliseconds
    later (ctypes, libffi), in every job."""
    src = tmp_path / "a.log"
    src.write_bytes(b"x\n")
    proc = subprocess.run([sys.executable, "-c", INHERITED_LIBC, str(src),
                           str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    in_master = proc.stdout.strip().splitlines()[-1]
    assert in_master != "none"
    assert (tmp_path / "out" / "part-00000.txt").read_text() == f"{in_master}\n"


@pytest.mark.parametrize("first", ["import blockproc.output.status",
                                   "from blockproc.output import verify",
                                   "from blockproc.output import OutputStatus", "pass"])
def test_output_status_loads_on_first_use_and_stays_the_function(first: str) -> None:
    """``blockproc.output`` loads its ``status`` submodule only on first use, and
    ``blockproc.output.status`` is the function whichever name or import loads it."""
    code = ("import sys, blockproc.output as o\n"
            "assert 'blockproc.output.status' not in sys.modules\n"
            f"{first}\n"
            "from blockproc.output import status\n"
            "assert o.status is status and callable(status) and status.__name__ == 'status'\n"
            "assert o.verify.__name__ == 'verify' and o.OutputStatus.__name__ == 'OutputStatus'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
