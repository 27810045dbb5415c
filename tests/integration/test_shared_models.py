"""Every s3fs filesystem of a process parses botocore's models once: filesystems made by
``resolve`` share one loader, a worker forked from the master uses the master's, and a
filesystem given its own session (or a broken profile) is left to s3fs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from blockproc.storage import resolve, share_models
from tests.s3server import S3Bucket

pytest.importorskip("s3fs")


def loader_of(fs: object) -> object:
    return fs.session.get_component("data_loader")  # type: ignore[attr-defined]


def test_filesystems_with_different_options_share_one_loader(s3: S3Bucket) -> None:
    first, _ = resolve(s3.url("a"), dict(s3.storage_options, skip_instance_cache=True))
    second, _ = resolve(s3.url("b"), dict(s3.storage_options, skip_instance_cache=True,
                                          default_block_size=2**20))
    assert first is not second
    assert first.session is not second.session  # each its own session, as s3fs makes it
    assert loader_of(first) is loader_of(second)
    second.pipe(f"{s3.name}/b", b"it works")  # the session reaches the store
    assert first.cat_file(f"{s3.name}/b") == b"it works"


def test_a_filesystem_with_its_own_session_is_left_alone(s3: S3Bucket) -> None:
    from aiobotocore.session import AioSession

    own = AioSession()
    fs, _ = resolve(s3.url(), dict(s3.storage_options, session=own,
                                   skip_instance_cache=True))
    assert fs.session is own
    assert not share_models(fs)


def test_a_profile_that_does_not_exist_is_reported_by_s3fs_on_first_use(
        s3: S3Bucket) -> None:
    from botocore.exceptions import ProfileNotFound

    fs, _ = resolve(s3.url(), dict(s3.storage_options, profile="no-such-profile-here",
                                   skip_instance_cache=True))
    assert fs.session is None  # not given one: s3fs makes it and says what is wrong
    with pytest.raises(ProfileNotFound, match="no-such-profile-here"):
        fs.ls(s3.name)


def test_other_filesystems_are_not_touched() -> None:
    fs, _ = resolve("memory://shared-models/x")
    assert not share_models(fs)
    assert not hasattr(fs, "session")


WORKER_LOADERS = """
import json, sys
import blockproc as bp
from blockproc.storage import aws_models
from blockproc.testing import read_parts

def loaders(batch):
    import s3fs
    return [json.dumps(sorted({id(fs.session.get_component("data_loader"))
                               for fs in s3fs.S3FileSystem._cache.values()
                               if fs.session is not None}))]

options = json.loads(sys.argv[1])
bp.map_blocks(loaders, sys.argv[2], output=sys.argv[3], executor="processes",
                       workers=2, block_size=64, progress=False, storage_options=options)
lines = read_parts(sys.argv[3], options).decode().split("\\n")
print(json.dumps({"master": sorted(map(id, aws_models._loaders.values())),
                  "workers": sorted(set(lines) - {""})}))
"""


def test_forked_workers_use_the_masters_loader(s3: S3Bucket) -> None:
    [src] = s3.put({"in.log": b"".join(b"line %d\n" % i for i in range(100))})
    done = subprocess.run([sys.executable, "-c", WORKER_LOADERS,
                           json.dumps(s3.storage_options), src, s3.url("out")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen["master"]) == 1
    assert seen["workers"] == [json.dumps(seen["master"])]  # every block, every worker
