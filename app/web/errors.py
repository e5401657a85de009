"""One error hierarchy, mapped to the JSON error body and status in one place.

Every response that is not a success is ``{"error": {"code", "message"}}``;
nothing a client sends produces a 500 or a stack trace.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from adapters.base import SegmenterBusy

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    field: str | None = None  # the request field at fault, when there is one

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}


class BadOption(ApiError):
    """A form field has a bad value; the message starts with the field's name (a dotted
    path for nested JSON fields, e.g. ``effect_params.dither.dot_spacing``), which the
    error body also carries as ``field``."""

    code = "invalid_option"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class MissingFile(ApiError):
    code = "missing_file"
    field = "file"


class InvalidImage(ApiError):
    code = "invalid_image"
    field = "file"


class UnsupportedImage(ApiError):
    status = 415
    code = "unsupported_media_type"
    field = "file"


class FileTooLarge(ApiError):
    status = 413
    code = "file_too_large"
    field = "file"


class TooManyFields(ApiError):
    """The multipart form has more parts than any endpoint takes (the file and its options)."""

    status = 413
    code = "too_many_fields"


class FieldTooLarge(ApiError):
    """A non-file form field (or a part's headers) is larger than a form field may be; only
    ``file`` may be large. ``field`` names the part when it has a name."""

    status = 413
    code = "field_too_large"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ImageTooLarge(ApiError):
    """Too many pixels: refused from the header, before any pixel is decoded."""

    status = 422
    code = "image_too_large"
    field = "file"


class ImageTooComplex(ApiError):
    """Decoding would cost far more than the pixels justify (e.g. a progressive JPEG with
    thousands of scans): refused from the file's structure, before decoding."""

    status = 422
    code = "image_too_complex"
    field = "file"


class ClientGone(ApiError):
    """The client closed its connection: the work it asked for is dropped (nobody reads the answer)."""

    status = 499  # nginx's "client closed request"; logged, never seen by the client
    code = "client_closed_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, header: str = 'Bearer realm="admin"'):
        super().__init__(message, headers={"WWW-Authenticate": header})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class Overloaded(ApiError):
    """Shed load: the client should retry after ``retry_after`` seconds."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: int, *, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


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


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.field)

    @app.errorhandler(SegmenterBusy)
    def _segmenter_busy(exc: SegmenterBusy):
        return error_response(503, "model_busy", str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.errorhandler(MemoryError)
    def _out_of_memory(exc: MemoryError):
        log.warning("out of memory while serving a request; answered 503")
        return error_response(503, "out_of_memory", "the server ran out of memory for this request; retry shortly",
                              {"Retry-After": "2"})

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:
            return error_response(413, "file_too_large", "the request body is larger than allowed")
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(status, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request was logged")
