"""The processing endpoints' edge: ``@processing`` turns a request into a pipeline job, and the
image response.

``@processing(Options)`` starts the request's deadline, parses the form into the typed options
(a field the options do not declare is a 400 naming it), reads the upload, and calls the view
with the :class:`~app.pipeline.Job` and the upload; the view runs the job and responds. The
job's cache statuses (``X-Cache``), its ``Server-Timing`` and its cache writes (made once the
response is sent) are added here, on success and on failure alike.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

from flask import Response, current_app, request
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from app.pipeline import IMAGE, Budget, Job, Rendered, peer_closed
from app.pipeline.errors import FileTooLarge, MissingFile
from app.pipeline.imaging import OUTPUT_FORMATS
from app.pipeline.options import Options, unknown_fields
from app.web import current_runtime
from app.web.errors import too_large_message
from config import Settings

# The upload's form field, besides each endpoint's options (documented in /openapi.json).
FILE_FIELD = {
    "file": {"type": "string", "format": "binary", "description": "the image (JPEG, PNG, WebP, GIF, BMP, TIFF)"},
    "background_file": {"type": "string", "format": "binary",
                        "description": "an image laid under the subject (background=image, implied when sent)"},
}


@dataclass(frozen=True)
class Upload:
    data: bytes
    stem: str  # safe file name without extension, for the response's file name


@dataclass(frozen=True)
class Processing:
    """What ``@processing`` declares about a view (for protection, telemetry and /openapi.json)."""

    options: type[Options]
    produces: str  # image | json


def processing(options: type[Options], produces: str = "image") -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """A processing endpoint: it takes an upload, has a deadline, needs an API key (when keys are
    configured) and counts against the rate limit. The view is called as ``view(job, upload)``."""

    def decorate(view: Callable[[Job, Upload], Any]) -> Callable[..., Response]:
        @functools.wraps(view)
        def endpoint() -> Response:
            runtime = current_runtime()
            budget = Budget(time.monotonic() + runtime.settings.request_timeout_s,
                            peer_closed(request.environ.get("gunicorn.socket")))
            form = request.form  # reads the body: werkzeug refuses one over MAX_CONTENT_LENGTH (413)
            files = sent_files()
            refused = unknown_fields(options, [*form.keys(), *files], request.path, also=tuple(FILE_FIELD))
            if refused:
                raise refused
            for name in FILE_FIELD:  # upload fields sent as text: a 400, not silently ignored
                if name in form:
                    raise MissingFile(f"{name}: send the image as a file (multipart part with a filename)", field=name)
            if "background_file" in files and not form.get("background", "").strip():
                form = {**form.to_dict(), "background": "image"}  # the upload says what the background is
            opts = options.from_form(form).resolved()  # every option checked before the uploads are read
            upload = read_upload(runtime.settings, files)
            background = read_upload(runtime.settings, files, "background_file") if "background_file" in files else None
            job = Job(runtime, opts, upload.data, budget, background and background.data)
            try:
                response = current_app.make_response(view(job, upload))
                runtime.activity.served()
            except Exception as exc:  # noqa: BLE001 - answered by the app's error handlers, with the job's headers
                response = current_app.make_response(current_app.handle_user_exception(exc))
            response.headers.update(job.cache.headers())
            timing = job.timings.server_timing()
            if timing:
                response.headers["Server-Timing"] = timing
            if job.cache.has_pending:
                response.call_on_close(job.cache.flush)
            return response

        endpoint.processing = Processing(options, produces)  # type: ignore[attr-defined]
        return endpoint

    return decorate


def processing_of(endpoint: str | None) -> Processing | None:
    """The ``@processing`` declaration of the view serving ``endpoint``, if it is one."""
    view = current_app.view_functions.get(endpoint) if endpoint else None
    return getattr(view, "processing", None)


def sent_files() -> dict[str, FileStorage]:
    """The request's file parts, less the empty ones: a file input left blank (a browser's form,
    Swagger UI's "Try it out") sends a part with ``filename=""`` and no bytes, meaning no file."""
    sent = {}
    for name, storage in request.files.items():
        if not storage.filename:
            empty = not storage.stream.read(1)
            storage.stream.seek(0)
            if empty:
                continue
        sent[name] = storage
    return sent


def read_upload(settings: Settings, files: dict[str, FileStorage], field: str = "file") -> Upload:
    if not request.mimetype.startswith("multipart/form-data"):
        raise MissingFile(f"{field}: send the image as multipart/form-data in the field '{field}'", field=field)
    storage = files.get(field)
    if storage is None:
        raise MissingFile(f"{field}: no file in the multipart field '{field}'", field=field)
    data = storage.read(settings.max_file_size_bytes + 1)
    if len(data) > settings.max_file_size_bytes:
        raise FileTooLarge(too_large_message(settings.max_file_size_mb, field), field=field)
    stem = secure_filename(storage.filename or "").rsplit(".", 1)[0] or "image"
    return Upload(data, stem[:100])


def image_response(rendered: Rendered, job: Job, upload: Upload) -> Response:
    """The encoded image, shown inline, named for a download; not cached by browsers or proxies
    (the same URL answers a different upload each time). A plain response, not send_file's
    passthrough, so that callbacks registered with ``call_on_close`` run after it is sent."""
    fmt = job.options.format
    _, mimetype, extension = OUTPUT_FORMATS[fmt]
    prefix = "mask" if getattr(job.options, "only_mask", False) else "nobg"
    response = Response(rendered.images[IMAGE], mimetype=mimetype)
    response.headers.set("Content-Disposition", "inline", filename=f"{prefix}_{upload.stem}.{extension}")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(size_headers(rendered, IMAGE))
    return response


def size_headers(rendered: Rendered, name: str) -> dict[str, str]:
    """The output's size and the subject's box in it, by remove.bg's header names; the mask's confidence."""
    headers = {"X-Width": str(rendered.width), "X-Height": str(rendered.height)}
    if rendered.mask_confidence is not None:
        headers["X-Mask-Confidence"] = f"{rendered.mask_confidence:.3f}"
    box = rendered.foreground.get(name)
    if box is not None:
        left, top, width, height = box
        headers.update({"X-Foreground-Top": str(top), "X-Foreground-Left": str(left),
                        "X-Foreground-Width": str(width), "X-Foreground-Height": str(height)})
    return headers
