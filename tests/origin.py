"""A local HTTP origin for image-URL tests: serves given bytes by path on a loopback port and
records what it was asked. The service refuses loopback URLs unless URL_FETCH_ALLOW_PRIVATE is true."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class Origin:
    def __init__(self, server: ThreadingHTTPServer, files: dict[str, tuple[bytes, str]]):
        self.server, self.files, self.requests = server, files, []

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"


@contextmanager
def origin(files: dict[str, tuple[bytes, str]]) -> Iterator[Origin]:
    """``files``: path -> (body, content type). Any other path is a 404."""
    holder: list[Origin] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            holder[0].requests.append((self.path, dict(self.headers)))
            body, ctype = files.get(self.path, (b"not found", "text/plain"))
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Origin(server, files))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
