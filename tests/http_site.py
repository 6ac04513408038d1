"""A static web server on 127.0.0.1 for the download tests, started and stopped by the test itself.

It serves files from memory as a static web server does (``Content-Length``, an ``ETag``, ``Range`` and
``If-Range`` requests answered with 206), records every request, and misbehaves on demand: it closes the
connection part way through a file (``drop``), ignores ranges (``ranges=False``), or answers slowly
(``delay_s``). A name it does not hold gets a 404.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STANFORD = {"train": "train", "valid": "tst2012", "test": "tst2013"}
REAL_LINES = {"train": 133_317, "valid": 1_553, "test": 1_268}


def stanford_files(lines: dict[str, int] = REAL_LINES, splits=("train", "valid", "test")) -> dict[str, bytes]:
    """Line-aligned English and Vietnamese text under Stanford's IWSLT'15 names, that many lines per split."""
    files = {}
    for split in splits:
        stem = STANFORD[split]
        files[f"{stem}.en"] = "".join(f"{split} sentence {i} &apos;s .\n" for i in range(lines[split])).encode()
        files[f"{stem}.vi"] = "".join(f"câu {split} số {i} của tôi .\n" for i in range(lines[split])).encode()
    return files


class Site:
    """``with Site(files) as site:`` serves ``files`` (name → bytes) under ``site.url`` until the block ends."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True, delay_s: float = 0.0):
        self.files = dict(files)
        self.ranges = ranges  # False: every GET gets the whole file (200), as from a server without range support
        self.delay_s = delay_s  # before each answer
        self.drop: dict[str, float] = {}  # name → share of the body sent before the connection is closed
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header) of every GET
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site._answer(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/projects/nmt/data/iwslt15.en-vi"

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every GET of ``name`` so far (None: the whole file was asked for)."""
        with self._lock:
            return [r for n, r in self.requests if n == name]

    def etag(self, name: str) -> str:
        return '"' + hashlib.sha256(self.files[name]).hexdigest()[:16] + '"'

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.rsplit("/", 1)[-1]
        asked = handler.headers.get("Range")
        with self._lock:
            self.requests.append((name, asked))
        time.sleep(self.delay_s)
        data = self.files.get(name)
        if data is None:
            handler.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        same = handler.headers.get("If-Range") in (None, self.etag(name))
        if match and self.ranges and same:
            start = int(match[1])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("ETag", self.etag(name))
        handler.end_headers()
        body = data[start:]
        if name in self.drop:
            body = body[: int(len(body) * self.drop[name])]
        handler.wfile.write(body)
        handler.wfile.flush()  # HTTP/1.0: the connection is closed after each answer, short or not


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: a connection is refused at once, as on a machine offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Silent:
    """``with Silent() as port:`` a server that accepts connections and never answers (a stalled network)."""

    def __enter__(self) -> int:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        return self.socket.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.socket.close()
