"""A real S3-compatible server on loopback for tests and benchmarks: moto's S3 behind a
WSGI layer that logs every request, counts the body bytes the server sends, and can fail
a chosen fraction of requests (503 SlowDown, 500 InternalError) to exercise retries.

In a test process (threads of this process)::

    server = S3Server().start()
    server.storage_options()   # {"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}
    server.bytes_sent("GET", "/bucket/in/")
    server.stop()

As a separate process (the benchmark, so client and server do not share a GIL)::

    python -m tests.s3server --fast-ranges     # prints the endpoint URL, serves until stdin closes

``fast_ranges=True`` answers ranged GETs of whole objects from the stored bytes with one
seek, instead of moto's copy of the whole object per request (moto reads the full value
and slices it, so 1 MiB ranges of a 1 GiB object would measure moto, not the client).
Only the benchmark uses it; tests run moto's own code path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


def client_options(endpoint_url: str, **extra: Any) -> dict[str, Any]:
    """fsspec/s3fs options that reach the S3 endpoint ``endpoint_url`` with the test keys."""
    return {"key": ACCESS_KEY, "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": endpoint_url}, **extra}

#: Environment that keeps boto from looking for real credentials or instance metadata.
OFFLINE_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
}

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>blockproc-test</RequestId></Error>"
)
_ERRORS = {503: ("SlowDown", "Please reduce your request rate."),
           500: ("InternalError", "We encountered an internal error. Please try again.")}


@dataclass(slots=True)
class Request:
    """One request as the server saw it (logged when it arrives; ``status`` and
    ``bytes_sent`` are filled in before the bytes go out, so a client never sees a
    response that the log does not count yet)."""

    method: str
    path: str
    query: str
    range: str
    status: int
    bytes_sent: int


@dataclass
class Faults:
    """Fail matching requests with an S3 error response: a random fraction (``rate``,
    seeded) or, deterministically, every ``every``-th one."""

    rate: float = 0.0
    every: int = 0
    methods: tuple[str, ...] = ("GET",)
    path_contains: str = ""
    status: int = 503
    max_failures: int | None = None
    seed: int = 0
    failed: int = 0
    matched: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def should_fail(self, method: str, path: str) -> bool:
        """Decide for one request (called under the server's lock)."""
        if (self.rate <= 0 and self.every <= 0) or method not in self.methods \
                or self.path_contains not in path:
            return False
        if self.max_failures is not None and self.failed >= self.max_failures:
            return False
        self.matched += 1
        hit = self.matched % self.every == 0 if self.every else self._rng.random() < self.rate
        if hit:
            self.failed += 1
        return hit


class S3Server:
    """moto's S3 on ``127.0.0.1`` (a free port), served by threads of this process."""

    def __init__(self, *, port: int = 0, fast_ranges: bool = False) -> None:
        self._port = port
        self._fast_ranges = fast_ranges
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._faults = Faults()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.endpoint_url = ""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> S3Server:
        """Start serving; returns self."""
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", self._port, self._wsgi(app), threaded=True,
                                   request_handler=QuietHandler)
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="s3server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what clients need -----------------------------------------------------------------

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """fsspec/s3fs options that reach this server (and nothing else)."""
        return client_options(self.endpoint_url, **extra)

    # -- accounting and faults ---------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request served since the last :meth:`reset`."""
        with self._lock:
            return [Request(r.method, r.path, r.query, r.range, r.status, r.bytes_sent)
                    for r in self._requests]

    def reset(self) -> None:
        """Forget the logged requests and stop injecting faults."""
        with self._lock:
            self._requests.clear()
            self._faults = Faults()

    def inject(self, faults: Faults) -> Faults:
        """Fail requests as ``faults`` says from now on (until :meth:`reset`)."""
        with self._lock:
            self._faults = faults
        return faults

    def bytes_sent(self, method: str = "GET", prefix: str = "") -> int:
        """Response body bytes sent for ``method`` requests whose path starts with ``prefix``."""
        return sum(r.bytes_sent for r in self.requests
                   if r.method == method and r.path.startswith(prefix))

    def count(self, method: str, prefix: str = "", query: str | None = None) -> int:
        """How many ``method`` requests went to paths under ``prefix`` (and had ``query``
        in their query string, if given)."""
        return sum(1 for r in self.requests if r.method == method
                   and r.path.startswith(prefix) and (query is None or query in r.query))

    # -- the WSGI layer ------------------------------------------------------------------------

    def _wsgi(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def application(environ: dict[str, Any], start_response: Callable[..., Any]
                        ) -> Iterable[bytes]:
            method = environ["REQUEST_METHOD"]
            path = urllib.parse.unquote(environ.get("PATH_INFO", ""))
            query = environ.get("QUERY_STRING", "")
            range_header = environ.get("HTTP_RANGE", "")
            request = Request(method, path, query, range_header, 0, 0)

            def recording_start(status_line: str, headers: list[tuple[str, str]],
                                exc_info: Any = None) -> Any:
                request.status = int(status_line.split()[0])
                return start_response(status_line, headers, exc_info)

            with self._lock:
                self._requests.append(request)
                fail = self._faults.should_fail(method, path)
                fail_status = self._faults.status
            if fail:
                body = self._error(fail_status, recording_start)
            elif self._fast_ranges and method == "GET" and range_header and not query:
                fast = self._serve_range(path, range_header, environ, recording_start)
                body = fast if fast is not None else app(environ, recording_start)
            else:
                body = app(environ, recording_start)
            return self._counted(body, request)

        return application

    def _counted(self, body: Iterable[bytes], request: Request) -> Iterator[bytes]:
        try:
            for chunk in body:
                with self._lock:
                    request.bytes_sent += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _error(status: int, start_response: Callable[..., Any]) -> list[bytes]:
        code, message = _ERRORS.get(status, ("ServiceUnavailable", "Service unavailable"))
        body = _ERROR_BODY.format(code=code, message=message).encode()
        reason = {503: "Slow Down", 500: "Internal Server Error"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "application/xml"),
                                              ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _serve_range(path: str, range_header: str, environ: dict[str, Any],
                     start_response: Callable[..., Any]) -> list[bytes] | None:
        """Answer ``GET /bucket/key`` with a simple ``bytes=a-b`` range from the stored
        value, or return None to let moto answer."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket, _, key_name = path.lstrip("/").partition("/")
        unit, _, spec = range_header.partition("=")
        first, _, last = spec.partition("-")
        if unit != "bytes" or "," in spec or not first.isdigit() or not last.isdigit():
            return None
        try:
            key = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, key_name)
        except Exception:
            return None
        if key is None or not hasattr(key, "_value_buffer"):
            return None
        if_match = environ.get("HTTP_IF_MATCH")
        if if_match and if_match != key.etag:
            return S3Server._error_precondition(start_response)
        begin, end = int(first), min(int(last), key.size - 1)
        if begin > end:
            return None
        with key.lock:
            key._value_buffer.seek(begin)
            data = key._value_buffer.read(end - begin + 1)
        start_response("206 Partial Content", [
            ("Content-Type", "binary/octet-stream"), ("Content-Length", str(len(data))),
            ("Content-Range", f"bytes {begin}-{end}/{key.size}"), ("ETag", key.etag),
            ("Last-Modified", key.last_modified_RFC1123), ("Accept-Ranges", "bytes"),
        ])
        return [data]

    @staticmethod
    def _error_precondition(start_response: Callable[..., Any]) -> list[bytes]:
        body = _ERROR_BODY.format(code="PreconditionFailed",
                                  message="At least one of the pre-conditions you specified "
                                          "did not hold").encode()
        start_response("412 Precondition Failed", [("Content-Type", "application/xml"),
                                                   ("Content-Length", str(len(body)))])
        return [body]


class S3Bucket:
    """One test's bucket on an :class:`S3Server`, with the client options to reach it."""

    def __init__(self, server: S3Server, name: str) -> None:
        import s3fs

        self.server = server
        self.name = name
        self.storage_options = server.storage_options()
        self.fs = s3fs.S3FileSystem(**self.storage_options)
        self.fs.mkdir(name)

    def url(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.name}/{key}" if key else f"s3://{self.name}"

    def prefix(self, key: str = "") -> str:
        """The request path the server logs for ``key`` (``/<bucket>/<key>``)."""
        return f"/{self.name}/{key}"

    def put(self, files: dict[str, bytes]) -> list[str]:
        """Upload ``{key: data}`` (concurrently) and return their URLs, in key order."""
        self.fs.pipe({f"{self.name}/{k}": v for k, v in files.items()})
        self.fs.invalidate_cache()
        return [self.url(k) for k in sorted(files)]

    def get(self, key: str) -> bytes:
        """The bytes of one object."""
        return bytes(self.fs.cat_file(f"{self.name}/{key}"))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, fresh from the server, sorted."""
        self.fs.invalidate_cache()
        root = f"{self.name}/{prefix}".rstrip("/")
        try:
            found = self.fs.find(root)
        except FileNotFoundError:
            return []
        return sorted(k[len(self.name) + 1:] for k in found)


def main(argv: list[str] | None = None) -> int:
    """Serve until standard input closes; print the endpoint URL first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fast-ranges", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    server = S3Server(port=args.port, fast_ranges=args.fast_ranges).start()
    print(server.endpoint_url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
