"""Every error as HTTP, in one place: the status and headers of each error class, and the JSON body.

Every response that is not a success is ``{"error": {"code", "message", "field"?}}``;
nothing a client sends produces a 500 or a stack trace. The pipeline's errors
(``app/pipeline/errors.py``) carry no statuses: :data:`ERRORS` gives them theirs, and the
error table of /openapi.json is generated from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from adapters.base import SegmenterBusy
from app.pipeline.cache import CacheUnavailable
from app.pipeline.errors import (
    BadOption, ClientGone, FailedImageDownload, FileTooLarge, ImageTooComplex, ImageTooLarge, InvalidImage,
    InvalidImageUrl, MissingFile, Overloaded, ServiceError, UnsupportedImage,
)
from config import Settings

log = logging.getLogger(__name__)


class TooManyFields(ServiceError):  # more multipart parts than any endpoint takes
    code = "too_many_fields"


class FieldTooLarge(ServiceError):  # a non-file field (or a part's headers) over the limit; only `file` may be large
    code = "field_too_large"


class MultipleSources(ServiceError):  # one image sent two ways (a file and a URL, ...)
    code = "multiple_sources"


class UnknownForeground(ServiceError):  # remove.bg's route: the model found no subject
    code = "unknown_foreground"
    field = "image_file"


class Unauthorized(ServiceError):
    code = "unauthorized"

    def __init__(self, message: str, challenge: str = 'Bearer realm="admin"'):
        super().__init__(message)
        self.challenge = challenge


class Forbidden(ServiceError):
    code = "forbidden"


class RateLimited(ServiceError):
    """A rate limit's budget is spent (flask-limiter's breach, answered as ours); ``retry_after``:
    seconds, or None where flask-limiter adds its own Retry-After and X-RateLimit-* headers."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Kind:
    """How one kind of error is answered: its status, its code, what /openapi.json says of it
    (``{names}`` filled in from the settings' limits, :func:`limits`), and its headers."""

    status: int
    code: str
    doc: str
    headers: Callable[[BaseException], dict[str, str]] = lambda exc: {}


def _retry_after(seconds: Callable[[Any], int]) -> Callable[[BaseException], dict[str, str]]:
    return lambda exc: {"Retry-After": str(seconds(exc))}


# Every error a client can get, by class (the most derived one in this table answers). Besides the
# service's own errors, the model's (SegmenterBusy), the cache's and the interpreter's (MemoryError);
# werkzeug's other HTTP errors answer with their own status (:func:`register_error_handlers`).
ERRORS: dict[type[BaseException], Kind] = {
    BadOption: Kind(400, BadOption.code, "a bad option value; the error names the field"),
    MissingFile: Kind(400, MissingFile.code, "no image in the field `file` (or an image field sent as text)"),
    InvalidImage: Kind(400, InvalidImage.code, "the upload is not a readable image"),
    MultipleSources: Kind(400, MultipleSources.code, "one image sent two ways (a file part and a URL)"),
    InvalidImageUrl: Kind(400, InvalidImageUrl.code, "an image URL refused before any connection: not http(s), "
                                                     "credentials in it, or a host that is a private address"),
    FailedImageDownload: Kind(400, FailedImageDownload.code, "an image URL could not be downloaded within "
                                                             "{url_fetch_timeout_s:g} s and {max_file_size_mb:g} MB "
                                                             "(the origin's status, a refused redirect, ...)"),
    UnknownForeground: Kind(400, UnknownForeground.code, "remove.bg's route: no subject was found in the image"),
    Unauthorized: Kind(401, Unauthorized.code, "API key (or admin token) required",
                       lambda exc: {"WWW-Authenticate": exc.challenge}),
    Forbidden: Kind(403, Forbidden.code, "wrong admin token, or admin endpoints disabled"),
    FileTooLarge: Kind(413, FileTooLarge.code, "an upload over {max_file_size_mb:g} MB (MAX_FILE_SIZE_MB)"),
    TooManyFields: Kind(413, TooManyFields.code, "more than {max_form_parts} form parts"),
    FieldTooLarge: Kind(413, FieldTooLarge.code, "a non-file field over {max_field_kb:g} KB"),
    UnsupportedImage: Kind(415, UnsupportedImage.code, "an image format we don't take ({formats})"),
    ImageTooLarge: Kind(422, ImageTooLarge.code, "more than {max_input_pixels:,} pixels, or more than "
                                                 "{max_decode_mb:g} MB to decode (judged from the header)"),
    ImageTooComplex: Kind(422, ImageTooComplex.code, "a JPEG with too many scans, a TIFF with too long a strip or "
                                                     "tile list, an RLE BMP with too many runs (judged before decoding)"),
    RateLimited: Kind(429, RateLimited.code, "rate limit ({rate_limit}) exceeded; see Retry-After",
                      lambda exc: {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}),
    ClientGone: Kind(499, ClientGone.code, ""),  # nginx's "client closed request"; logged, never seen by the client
    Overloaded: Kind(503, Overloaded.code, "overloaded or past the request's deadline; see Retry-After",
                     _retry_after(lambda exc: exc.retry_after)),
    SegmenterBusy: Kind(503, SegmenterBusy.code, "the model cannot take the request now; see Retry-After",
                        _retry_after(lambda exc: exc.retry_after_s)),
    CacheUnavailable: Kind(503, CacheUnavailable.code, "the result cache is unavailable; see Retry-After",
                           _retry_after(lambda exc: 5)),
    MemoryError: Kind(503, "out_of_memory", "the server ran out of memory for this request; see Retry-After",
                      _retry_after(lambda exc: 2)),
}
STATUSES: dict[type[BaseException], int] = {cls: kind.status for cls, kind in ERRORS.items()}


def kind_of(exc: BaseException) -> Kind | None:
    return next((ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS), None)


def status_of(exc: BaseException) -> int:
    kind = kind_of(exc)
    return kind.status if kind else 400


def limits(settings: Settings) -> dict[str, Any]:
    """The limits the errors' documentation quotes, from the settings."""
    from app.pipeline.imaging import ALLOWED_EXTENSIONS
    from app.web.multipart import MAX_FIELD_BYTES, MAX_FORM_PARTS

    return {"max_file_size_mb": settings.max_file_size_mb, "max_form_parts": MAX_FORM_PARTS,
            "max_field_kb": MAX_FIELD_BYTES / 1000, "max_input_pixels": settings.max_input_pixels,
            "max_decode_mb": settings.max_decode_mb, "url_fetch_timeout_s": settings.url_fetch_timeout_s,
            "rate_limit": settings.rate_limit or "RATE_LIMIT",
            "formats": ", ".join(ALLOWED_EXTENSIONS)}


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
    return f"{field}: upload exceeds {max_file_size_mb:g} MB (MAX_FILE_SIZE_MB)"


def answer(exc: BaseException):
    """The JSON error of anything in :data:`ERRORS`."""
    kind = kind_of(exc)
    assert kind is not None, type(exc)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, CacheUnavailable):
        message = f"cache: {exc}; retry later"
    elif isinstance(exc, MemoryError):
        log.warning("out of memory while serving a request; answered 503")
        message = "the server ran out of memory for this request; retry shortly"
    return error_response(kind.status, getattr(exc, "code", None) or kind.code, message, kind.headers(exc),
                          getattr(exc, "field", None))


def register_error_handlers(app: Flask, max_file_size_mb: float) -> None:
    for cls in (ServiceError, MemoryError):  # the model's, the cache's and the rate limits' errors are ServiceErrors
        app.register_error_handler(cls, answer)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:  # werkzeug refused the body (MAX_CONTENT_LENGTH): by its Content-Length, or chunked
            return answer(FileTooLarge(too_large_message(max_file_size_mb)))
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(status, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request was logged")
