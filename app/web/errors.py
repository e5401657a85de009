"""Every error as HTTP, in one place: the status and headers of each error class, and the JSON body.

Every response that is not a success is ``{"error": {"code", "message", "field"?}}``;
nothing a client sends produces a 500 or a stack trace. The pipeline's errors
(``app/pipeline/errors.py``) carry no statuses; this table gives them theirs.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from adapters.base import SegmenterBusy
from app.pipeline.cache import CacheUnavailable
from app.pipeline.errors import (
    BadOption, ClientGone, FileTooLarge, ImageTooComplex, ImageTooLarge, InvalidImage, MissingFile, Overloaded,
    ServiceError, UnsupportedImage,
)

log = logging.getLogger(__name__)


class TooManyFields(ServiceError):  # more multipart parts than any endpoint takes
    code = "too_many_fields"


class FieldTooLarge(ServiceError):  # a non-file field (or a part's headers) over the limit; only `file` may be large
    code = "field_too_large"


class Unauthorized(ServiceError):
    code = "unauthorized"

    def __init__(self, message: str, challenge: str = 'Bearer realm="admin"'):
        super().__init__(message)
        self.challenge = challenge


class Forbidden(ServiceError):
    code = "forbidden"


STATUSES: dict[type[ServiceError], int] = {
    BadOption: 400, MissingFile: 400, InvalidImage: 400,
    Unauthorized: 401, Forbidden: 403,
    FileTooLarge: 413, TooManyFields: 413, FieldTooLarge: 413,
    UnsupportedImage: 415,
    ImageTooLarge: 422, ImageTooComplex: 422,
    ClientGone: 499,  # nginx's "client closed request"; logged, never seen by the client
    Overloaded: 503,
}


def status_of(exc: ServiceError) -> int:
    return next((STATUSES[cls] for cls in type(exc).__mro__ if cls in STATUSES), 400)


def headers_of(exc: ServiceError) -> dict[str, str]:
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": exc.challenge}
    return {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, field: str | None = None
):
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def too_large_message(max_file_size_mb: float, field: str = "file") -> str:
    return f"{field}: larger than the {max_file_size_mb:g} MB allowed"


def register_error_handlers(app: Flask, max_file_size_mb: float) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        return error_response(status_of(exc), exc.code, exc.message, headers_of(exc), exc.field)

    @app.errorhandler(SegmenterBusy)
    def _segmenter_busy(exc: SegmenterBusy):
        return error_response(503, "model_busy", str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.errorhandler(CacheUnavailable)
    def _cache_unavailable(exc: CacheUnavailable):
        return error_response(503, "cache_unavailable", f"cache: {exc}; retry later", {"Retry-After": "5"})

    @app.errorhandler(MemoryError)
    def _out_of_memory(exc: MemoryError):
        log.warning("out of memory while serving a request; answered 503")
        return error_response(503, "out_of_memory", "the server ran out of memory for this request; retry shortly",
                              {"Retry-After": "2"})

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:  # werkzeug refused the body (MAX_CONTENT_LENGTH): by its Content-Length, or chunked
            return _service_error(FileTooLarge(too_large_message(max_file_size_mb)))
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(status, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request was logged")
