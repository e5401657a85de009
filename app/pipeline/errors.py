"""What can go wrong with a request, as the pipeline sees it: no HTTP here.

Each error has a stable ``code`` (what clients branch on), a message for people and, when one
field of the request is at fault, its ``field``. ``app/web/errors.py`` maps each class to its
HTTP status and headers, in one table.
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "bad_request"
    field: str | None = None  # the request field at fault, when there is one

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.field = field or self.field


class BadOption(ServiceError):
    """A field has a bad value; the message starts with the field's name (a dotted path for
    nested JSON fields, e.g. ``effect_params.dither.dot_spacing``), which is also ``field``."""

    code = "invalid_option"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)


class FileError(ServiceError):
    """The upload is at fault."""

    field = "file"


class MissingFile(FileError):
    code = "missing_file"


class InvalidImage(FileError):
    code = "invalid_image"


class UnsupportedImage(FileError):
    code = "unsupported_media_type"


class FileTooLarge(FileError):
    code = "file_too_large"


class ImageTooLarge(FileError):
    """Too many pixels, or too much decoding memory: refused from the header, before any pixel is decoded."""

    code = "image_too_large"


class ImageTooComplex(FileError):
    """Decoding would cost far more than the pixels justify (e.g. a progressive JPEG with
    thousands of scans): refused from the file's structure, before decoding."""

    code = "image_too_complex"


class ClientGone(ServiceError):
    """The client closed its connection: the work it asked for is dropped (nobody reads the answer)."""

    code = "client_closed_request"


class Overloaded(ServiceError):
    """Shed load: the client should retry after ``retry_after`` seconds."""

    code = "overloaded"

    def __init__(self, message: str, retry_after: int, *, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UrlError(ServiceError):
    """An image URL (``image_url``, ``background_url``, remove.bg's ``bg_image_url``) is at fault."""

    field = "image_url"


class InvalidImageUrl(UrlError):
    """The URL is refused before any connection: not http(s), credentials in it, a malformed or
    over-long URL, or a host that is (or resolves to) an address the server may not reach."""

    code = "invalid_image_url"


class FailedImageDownload(UrlError):
    """The URL was fine but its image could not be had: the connection failed or timed out, the
    origin answered an error, too many redirects (or one to a refused address), a body over the
    upload limit, or no deadline left."""

    code = "failed_image_download"
