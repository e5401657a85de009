"""gunicorn's gthread worker, with the errors gunicorn answers itself in the API's JSON shape.

gunicorn refuses some requests before the app sees them (an invalid request line or method, too
many or too large headers, a bad chunked body...) and writes those answers as HTML through
one function, ``gunicorn.util.write_error``; gunicorn has no setting for it. Importing this
module (gunicorn.conf.py names ``config.worker.ThreadWorker`` as the worker class) replaces
that function with one that writes ``{"error": {"code", "message"}}``. Behind the nginx edge
most of these are refused by nginx first, also as JSON (config/edge.py).
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

__all__ = ["ThreadWorker", "write_json_error"]

_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
          431: "request_header_fields_too_large", 500: "internal_error", 501: "not_implemented"}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    code = _CODES.get(status_int, "bad_request" if status_int < 500 else "internal_error")
    message = mesg if status_int < 500 else "internal error; the request was logged"
    body = json.dumps({"error": {"code": code, "message": message or reason}}).encode() + b"\n"
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error
