"""One test's directory on an S3-compatible store (moto or SeaweedFS), with the client
options to reach it: what the object-store suite is written against, so the same tests run
on both stores."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.s3server import S3Server
from tests.seaweed import SeaweedServer


class StoreDir:
    """A fresh prefix ``s3://<bucket>/<test>/`` on a store; keys are relative to it.

    SeaweedFS makes a collection (and volumes) per bucket, so tests share one bucket per
    store and get a prefix each instead of a bucket each.
    """

    def __init__(self, kind: str, server: S3Server | SeaweedServer, bucket: str) -> None:
        import s3fs

        self.kind = kind
        self.server = server
        self.bucket = bucket
        self.root = f"{bucket}/t-{uuid.uuid4().hex[:10]}"
        self.storage_options: dict[str, Any] = server.storage_options()
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)
        if not self.fs.exists(bucket):
            self.fs.mkdir(bucket)

    def __repr__(self) -> str:
        return f"<StoreDir {self.kind} s3://{self.root}>"

    def url(self, key: str = "") -> str:
        """``s3://<bucket>/<test>/<key>``."""
        return f"s3://{self.root}/{key}" if key else f"s3://{self.root}"

    def put(self, files: dict[str, bytes]) -> list[str]:
        """Upload ``{key: data}`` and return their URLs, in key order."""
        self.fs.pipe({f"{self.root}/{k}": v for k, v in files.items()})
        self.fs.invalidate_cache()
        return [self.url(k) for k in sorted(files)]

    def get(self, key: str) -> bytes:
        """The bytes of one object (fresh: the listing cache may predate it)."""
        self.fs.invalidate_cache()
        return bytes(self.fs.cat_file(f"{self.root}/{key}"))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, fresh from the server, sorted."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(f"{self.root}/{prefix}".rstrip("/"))
        except FileNotFoundError:
            return []
        return sorted(k[len(self.root) + 1:] for k in found)

    def snapshot(self, prefix: str) -> dict[str, bytes]:
        """``{key: bytes}`` of everything under ``prefix``."""
        return {k: self.get(k) for k in self.keys(prefix)}

    def parts(self, out: str) -> list[str]:
        """Part-files under their final names (what a reader listing ``out`` sees)."""
        return [k.rsplit("/", 1)[1] for k in self.keys(out)
                if k.startswith(f"{out}/part-")]

    def manifest(self, out: str) -> dict[str, Any]:
        """The ``_SUCCESS`` manifest of ``out``."""
        return dict(json.loads(self.get(f"{out}/_SUCCESS")))

    def cli_options(self) -> list[str]:
        """``--storage-option`` arguments that reach this store."""
        options = self.storage_options
        return ["--storage-option", f"key={options['key']}",
                "--storage-option", f"secret={options['secret']}",
                "--storage-option", f"client_kwargs={json.dumps(options['client_kwargs'])}"]


def slow_upper(line: str) -> str:
    """Upper-case a line, 1 ms per line: a job that lasts long enough to be interfered with
    (imported by worker processes as ``tests.stores:slow_upper``)."""
    import time

    time.sleep(0.001)
    return line.upper()
