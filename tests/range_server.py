"""Test helper (not a test module): local servers that video URLs are read from.

:class:`RangeHTTPServer` serves a folder over HTTP on 127.0.0.1 with byte ranges
(``Range: bytes=a-b`` → 206 Partial Content; Python's ``http.server`` ignores Range) and
counts the body bytes it sent. :class:`LocalS3` runs moto's S3-compatible server on
127.0.0.1 in this process and points fsspec's ``s3://`` at it (environment variables,
restored on exit). Both also serve the benchmarks.
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["LocalS3", "RangeHTTPServer"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeHTTPServer:
    """``with RangeHTTPServer(folder) as server: server.url("clip.mp4")``; ``server.bytes_sent``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.bytes_sent = 0
        self.requests = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args) -> None:  # quiet
                pass

            def _target(self) -> Path | None:
                path = (owner.root / self.path.split("?", 1)[0].lstrip("/")).resolve()
                return path if path.is_file() and owner.root.resolve() in path.parents else None

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self._target()
                if path is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                match = _RANGE.match(self.headers.get("Range", "").strip())
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                    else:  # the last N bytes
                        start = max(0, size - int(match.group(2)))
                    if start > end:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(end - start + 1))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read(end - start + 1)
                self.wfile.write(data)
                with owner._lock:
                    owner.bytes_sent += len(data)
                    owner.requests += 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def __enter__(self) -> RangeHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class LocalS3:
    """moto's S3 server on 127.0.0.1 (a free port), one bucket; fsspec's ``s3://`` pointed at it.

    ``with LocalS3("videos") as s3: s3.put(local_path, "clip.mp4")`` → ``s3.url("clip.mp4")``.
    """

    _ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}

    def __init__(self, bucket: str = "videos") -> None:
        self.bucket = bucket
        self._old: dict[str, str | None] = {}

    def __enter__(self) -> LocalS3:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        env = {**self._ENV, "FSSPEC_S3_ENDPOINT_URL": self.endpoint}
        for key, value in env.items():
            self._old[key] = os.environ.get(key)
            os.environ[key] = value
        import fsspec

        fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec read its FSSPEC_* variables at import
        fsspec.filesystem("s3").clear_instance_cache()
        self.fs = fsspec.filesystem("s3", skip_instance_cache=True)
        self.fs.mkdir(self.bucket)
        return self

    def put(self, local: str | os.PathLike, name: str) -> str:
        self.fs.put_file(str(local), f"{self.bucket}/{name}")
        self.fs.invalidate_cache()
        return self.url(name)

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def __exit__(self, *exc) -> None:
        import fsspec

        self._server.stop()
        for key, value in self._old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        fsspec.config.conf.pop("s3", None)
        fsspec.filesystem("s3").clear_instance_cache()
