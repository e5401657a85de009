"""Logging for both tiers: one JSON object per line with the fields Cloud Logging reads, or plain text.

JSON (``LOG_FORMAT=json``, the default) through python-json-logger: ``severity``,
``message``, ``time``, ``logger``, plus ``request_id`` and, when Cloud Run sent a
trace header and ``GOOGLE_CLOUD_PROJECT`` is set, ``logging.googleapis.com/trace``,
which ties the line to its request in Cloud Logging. Access lines add ``httpRequest``.
gunicorn's own messages (config/gunicorn.conf.py) use the same formatter.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from config.logformat import JSON_FORMATTER_KWARGS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestContext(logging.Filter):
    """Adds the current request's id and trace to every record (``-`` outside a request)."""

    def __init__(self, project: str = ""):
        super().__init__()
        self.project = project

    def filter(self, record: logging.LogRecord) -> bool:
        from app.ops.observability import current_request_id, current_trace  # Flask-dependent, imported late

        record.request_id = current_request_id() or "-"
        trace = current_trace()
        if trace and self.project:
            setattr(record, "logging.googleapis.com/trace", f"projects/{self.project}/traces/{trace}")
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(**JSON_FORMATTER_KWARGS)


def configure(level: str, fmt: str, project: str = "") -> None:
    """One handler on the root logger, to stderr (where Cloud Run and Railway collect logs)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestContext(project))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_bgremove", False)]:
        root.removeHandler(old)
    handler._bgremove = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("app", "adapters", "effects"):
        logging.getLogger(name).setLevel(level.upper())
