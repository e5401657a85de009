"""The HTTP edge shared by processing endpoints: reading the upload, sending an image back."""

from __future__ import annotations

import time
from dataclasses import dataclass

from typing import Callable, TypeVar

from flask import Flask, Response, current_app, g, request
from werkzeug.utils import secure_filename

from app.errors import FileTooLarge, MissingFile
from app.imaging import OUTPUT_FORMATS
from config import Settings

# Room for the multipart boundaries and the small option fields around the file.
MULTIPART_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Upload:
    data: bytes
    stem: str  # safe file name without extension, for the response's file name


V = TypeVar("V", bound=Callable)


def processing(form: type, produces: str = "image") -> Callable[[V], V]:
    """Marks a view as a processing endpoint: it takes an upload, has a deadline, needs an API key
    (when keys are configured) and counts against the rate limit. ``form`` is its options class
    (its ``FIELDS`` describe the form in /openapi.json); ``produces`` is ``image`` or ``json``."""

    def mark(view: V) -> V:
        view.processing = True  # type: ignore[attr-defined]
        view.form = form  # type: ignore[attr-defined]
        view.produces = produces  # type: ignore[attr-defined]
        return view

    return mark


def is_processing() -> bool:
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    return bool(getattr(view, "processing", False))


def register(app: Flask, settings: Settings) -> None:
    @app.before_request
    def _before_processing() -> None:
        if is_processing():
            start_processing(settings)


def start_processing(settings: Settings) -> None:
    """Before a processing request is read: refuse an oversized body from its header, start the deadline."""
    g.deadline = time.monotonic() + settings.request_timeout_s
    length = request.content_length
    if length is not None and length > settings.max_file_size_bytes + MULTIPART_SLACK_BYTES:
        raise FileTooLarge(_too_large_message(settings))


def read_upload(settings: Settings) -> Upload:
    if not request.mimetype.startswith("multipart/form-data"):
        raise MissingFile("file: send the image as multipart/form-data in the field 'file'")
    storage = request.files.get("file")
    if storage is None:
        raise MissingFile("file: no file in the multipart field 'file'")
    data = storage.read(settings.max_file_size_bytes + 1)
    if len(data) > settings.max_file_size_bytes:
        raise FileTooLarge(_too_large_message(settings))
    if not data:
        raise MissingFile("file: the uploaded file is empty")
    stem = secure_filename(storage.filename or "").rsplit(".", 1)[0] or "image"
    return Upload(data, stem[:100])


def image_response(data: bytes, fmt: str, download_name: str) -> Response:
    """The encoded image, shown inline, named for a download; not cached by browsers or proxies
    (the same URL answers a different upload each time). A plain response, not send_file's
    passthrough, so that callbacks registered with ``call_on_close`` run after it is sent."""
    response = Response(data, mimetype=OUTPUT_FORMATS[fmt][1])
    response.headers.set("Content-Disposition", "inline", filename=download_name)
    response.headers["Cache-Control"] = "no-store"
    return response


def output_name(prefix: str, stem: str, fmt: str) -> str:
    return f"{prefix}_{stem}.{OUTPUT_FORMATS[fmt][2]}"


def _too_large_message(settings: Settings) -> str:
    return f"file: larger than the {settings.max_file_size_mb:g} MB allowed"
