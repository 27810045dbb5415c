"""The local filesystem without fsspec (blockproc.storage.local): every call a job makes
answers as fsspec's LocalFileSystem does (tests/unit/test_startup.py checks that a small
local job then never imports fsspec)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem as FsspecLocal
from hypothesis import given, settings
from hypothesis import strategies as st

from blockproc.storage import filesystem, resolve
from blockproc.storage.local import LocalFileSystem, local_filesystem, local_path, strip_protocol

THEIRS = FsspecLocal()
OURS = local_filesystem()


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call returns, or the type of what it raises."""
    try:
        return "ok", call()
    except Exception as exc:  # the exception's type is the outcome
        return "raised", type(exc).__name__


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.log").write_bytes(b"one\ntwo\n")
    (tmp_path / "d" / "sub" / "b.log").write_bytes(b"")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "d" / "a.log")
    (tmp_path / "d" / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "d" / "fifo")
    return tmp_path / "d"


NAMES = ["", "a.log", "sub", "sub/b.log", "link", "dangling", "fifo", "missing", "sub/"]


METHODS = ["info", "exists", "isdir", "isfile", "size", "ls", "ls_detail", "cat_file",
           "unstrip_protocol"]


@pytest.mark.parametrize(("name", "method"), [
    (name, method) for method in METHODS for name in NAMES
    if (name, method) != ("fifo", "cat_file")  # reading a FIFO blocks on both
])
def test_each_call_answers_as_fsspec(tree: Path, name: str, method: str) -> None:
    path = f"{tree}/{name}" if name else str(tree)

    def call(fs: Any) -> Any:
        if method == "ls_detail":
            return sorted(fs.ls(path, detail=True), key=lambda i: i["name"])
        result = getattr(fs, method)(path)
        return sorted(result) if method == "ls" else result

    assert outcome(lambda: call(OURS)) == outcome(lambda: call(THEIRS))


@pytest.mark.parametrize("name", [*NAMES, "sub/b.log/"])
@pytest.mark.parametrize("detail", [False, True])
def test_find_walks_as_fsspec(tree: Path, name: str, detail: bool) -> None:
    (tree / "sub" / "deeper").mkdir()
    (tree / "sub" / "deeper" / "c.log").write_bytes(b"c")
    (tree / "dirlink").symlink_to(tree / "sub")
    path = f"{tree}/{name}" if name else str(tree)
    assert outcome(lambda: OURS.find(path, detail=detail)) == \
        outcome(lambda: THEIRS.find(path, detail=detail))


@pytest.mark.parametrize("url_of", [str, lambda p: f"file://{p}", lambda p: f"local://{p}/",
                                    os.path.relpath])
def test_resolve_gives_the_local_fs_and_fsspecs_path(tree: Path, url_of: Any) -> None:
    url = url_of(str(tree / "a.log"))
    fs, path = resolve(url)
    assert fs is OURS and fs is filesystem("file") is filesystem("local")
    assert path == fsspec.core.url_to_fs(url)[1]
    assert os.path.normpath(path) == str(tree / "a.log")


@pytest.mark.parametrize("url", ["memory://x/a", "s3://bucket/a", "simplecache::file:///a",
                                 "data:text/plain,abc"])
def test_other_urls_stay_with_fsspec(url: str) -> None:
    assert local_path(url) is None


def test_storage_options_keep_fsspecs_filesystem(tree: Path) -> None:
    fs, _ = resolve(str(tree), {"auto_mkdir": True})
    assert isinstance(fs, FsspecLocal) and fs.auto_mkdir


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b.log", "..", ".", "", "~", "x y", "é"]), max_size=5),
       st.sampled_from(["", "/", "./", "file://", "file:", "local://", "local:", "~/"]),
       st.booleans())
def test_paths_are_fsspecs(parts: list[str], prefix: str, slash: bool) -> None:
    path = prefix + "/".join(parts) + ("/" if slash else "")
    assert strip_protocol(path) == FsspecLocal._strip_protocol(path)


def test_writes_renames_and_removes_as_fsspec(tmp_path: Path) -> None:
    for fs, root in ((OURS, tmp_path / "ours"), (THEIRS, tmp_path / "theirs")):
        base = str(root)
        fs.makedirs(f"{base}/x/y", exist_ok=True)
        assert outcome(lambda fs=fs, b=base: fs.makedirs(f"{b}/x/y")) == \
            ("raised", "FileExistsError")
        with fs.open(f"{base}/x/f", "wb") as f:
            f.write(b"data")
        with fs.open(f"{base}/x/f", "ab") as f:
            f.write(b"+")
        assert outcome(lambda fs=fs, b=base: fs.open(f"{b}/x/f", "xb")) == \
            ("raised", "FileExistsError")
        fs.pipe_file(f"{base}/x/g", b"gg")
        assert outcome(lambda fs=fs, b=base: fs.pipe_file(f"{b}/x/g", b"", mode="create")) \
            == ("raised", "FileExistsError")
        fs.cp_file(f"{base}/x/g", f"{base}/x/h")
        fs.mv(f"{base}/x/h", f"{base}/x/y/h")
        fs.rm_file(f"{base}/x/g")
        assert outcome(lambda fs=fs, b=base: fs.rm(f"{b}/x/y")) == ("raised", "ValueError")
        assert outcome(lambda fs=fs, b=base: fs.rm_file(f"{b}/x/g")) == \
            ("raised", "FileNotFoundError")
        with fs.open(f"{base}/x/f", "rb", block_size=0, cache_type="none") as f:
            f.seek(2)
            assert f.read(10) == b"ta+"
    listing = {name: sorted(os.path.relpath(p, tmp_path / name)
                            for p in THEIRS.find(str(tmp_path / name), withdirs=True))
               for name in ("ours", "theirs")}
    assert listing["ours"] == listing["theirs"] == [".", "x", "x/f", "x/y", "x/y/h"]
    OURS.rm(str(tmp_path / "ours"), recursive=True)
    assert not os.path.exists(tmp_path / "ours")


def test_the_rest_is_fsspecs(tree: Path) -> None:
    assert OURS.glob(f"{tree}/*.log") == THEIRS.glob(f"{tree}/*.log")
    assert OURS.find(str(tree), detail=True) == THEIRS.find(str(tree), detail=True)
    with OURS.open(str(tree / "a.log"), "r") as f:  # text mode: fsspec's opener
        assert f.read() == "one\ntwo\n"
    assert OURS.cat_file(str(tree / "a.log"), start=-4) == b"two\n"


def test_pickles_to_the_one_instance() -> None:
    assert pickle.loads(pickle.dumps(OURS)) is OURS
    assert isinstance(OURS, LocalFileSystem) and repr(OURS) == "LocalFileSystem()"
