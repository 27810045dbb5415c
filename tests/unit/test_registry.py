"""The one registry helper behind ``format=``, ``output_format=`` and ``executor=``:
lazy dotted-path entries, install hints for optional packages, unknown names listed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockproc import formats, output_formats
from blockproc._deps import install_hint, require
from blockproc._registry import Registry
from blockproc.errors import ConfigError
from blockproc.executors import EXECUTORS, REGISTRY, make_executor


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A directory on sys.path holding ``bp_plugin_lazy.py``; yields the module's name."""
    name = "bp_plugin_lazy"
    (tmp_path / f"{name}.py").write_text("class Thing:\n    loaded = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def test_an_entry_is_imported_on_first_use_only(plugin_dir: str) -> None:
    registry = Registry("codec", {"thing": f"{plugin_dir}:Thing"})
    assert registry.names() == ("thing",) and "thing" in registry
    assert plugin_dir not in sys.modules
    cls = registry.load("thing")
    assert plugin_dir in sys.modules
    assert cls.loaded is True
    assert registry.load("thing") is cls


def test_an_unknown_name_lists_the_known_ones_in_order() -> None:
    registry = Registry("codec", {"b": "json:dumps", "a": "json:loads"},
                        alternative=" or pass a codec instance")
    with pytest.raises(ConfigError, match=r"^unknown codec 'x'; choose one of b, a or pass "
                                          r"a codec instance$"):
        registry.load("x")


def test_an_unhashable_name_is_unknown_too() -> None:
    with pytest.raises(ConfigError, match=r"unknown codec \['a'\]"):
        Registry("codec", {"a": "json:dumps"}).load(["a"])  # type: ignore[arg-type]


def test_a_missing_required_package_gives_the_install_hint() -> None:
    registry = Registry("executor", {"dask": "json:dumps"},
                        requires={"dask": ["distributed_not_installed_xyz"]})
    with pytest.raises(ConfigError, match=r"executor='dask' needs the "
                                          r"'distributed_not_installed_xyz' package.*"
                                          r"run `pip install distributed_not_installed_xyz`"):
        registry.load("dask")


def test_a_target_whose_import_fails_on_a_missing_package_gives_the_install_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bp_plugin_broken.py").write_text("import zz_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("format", {"broken": "bp_plugin_broken:Format"})
    with pytest.raises(ConfigError, match=r"format='broken' needs the "
                                          r"'zz_missing_dependency_xyz' package"):
        registry.load("broken")


def test_register_refuses_a_taken_name_and_a_bad_target() -> None:
    registry = Registry("codec", {"json": "json:dumps"})
    with pytest.raises(ValueError, match="registered already"):
        registry.register("json", "pickle:dumps")
    with pytest.raises(ValueError, match=r"package\.module:attr"):
        registry.register("pickle", "pickle.dumps")


@pytest.mark.parametrize(("module", "hint"), [
    ("distributed", 'pip install "blockproc[dask]"'),
    ("zstandard", 'pip install "blockproc[zstd]"'),
    ("matplotlib", 'pip install "blockproc[plot]"'),
    ("pyarrow.parquet", "pip install pyarrow"),
])
def test_install_hints_name_the_extra_that_brings_a_package(module: str, hint: str) -> None:
    assert install_hint(module) == hint


def test_require_names_the_feature_and_the_install() -> None:
    with pytest.raises(ConfigError, match=r"^reading \.zst inputs needs the 'zz_absent' "
                                          r"package"):
        require("zz_absent.sub", "reading .zst inputs")


# -- the three registries ------------------------------------------------------------------


def test_the_names_users_type_are_unchanged() -> None:
    assert EXECUTORS == ("inline", "threads", "processes", "cluster", "dask")
    assert output_formats.OUTPUT_FORMATS == ("text", "csv", "jsonl", "parquet", "npy", "pickle")
    assert formats.available_formats() == ["csv", "delimited", "fixed", "jsonl", "lines",
                                           "parquet", "raw"]


def test_unknown_names_fail_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown executor 'gpu'; choose one of inline, "
                                          r"threads, processes, cluster, dask$"):
        make_executor("gpu", 1)
    with pytest.raises(ConfigError, match="unknown output_format 'xlsx'; choose one of "
                                          "text, csv, jsonl, parquet, npy, pickle or pass a spec"):
        output_formats.get_output_format("xlsx")
    with pytest.raises(ConfigError, match=r"unknown format 'xml'; choose one of csv, "
                                          r"delimited, fixed, .* or pass a format instance"):
        formats.get_format("xml")


def test_the_dask_executor_needs_distributed() -> None:
    assert REGISTRY.entry("dask").requires == ("distributed",)


def test_local_executors_refuse_executor_options() -> None:
    with pytest.raises(ConfigError, match="executor 'threads' takes no executor_options"):
        make_executor("threads", 1, {"listen": "x"})
    assert make_executor("inline", None).num_slots == 1


def test_cluster_and_dask_are_imported_when_first_named_only() -> None:
    code = textwrap.dedent("""
        import sys
        import blockproc as bp
        from blockproc.executors import make_executor
        lazy = ("blockproc.executors.cluster", "blockproc.executors.dask", "distributed")
        print(sorted(m for m in lazy if m in sys.modules))
        make_executor("threads", 1)
        print(sorted(m for m in lazy if m in sys.modules))
        make_executor("cluster", None)
        print(sorted(m for m in lazy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    assert out == ["[]", "[]", "['blockproc.executors.cluster']"]
