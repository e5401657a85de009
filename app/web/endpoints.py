"""The processing endpoints' edge: ``@processing`` turns a request into a pipeline job, and the
image response.

``@processing(Options)`` starts the request's deadline, reads the request into the typed options
(our form by default; a dialect such as remove.bg's brings its own reader), reads each image from
where the request put it (a file part, a URL fetched by :mod:`app.pipeline.fetch`, base64 text),
and calls the view with the :class:`~app.pipeline.Job` and the upload; the view runs the job and
responds. Images sent by URL are downloaded here, before the job takes an inference slot: a slow
origin never holds the model. The job's cache statuses (``X-Cache``), its ``Server-Timing`` and its
cache writes (made once the response is sent) are added here, on success and on failure alike.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import unquote, urlsplit

from flask import Response, current_app, request
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from app.pipeline import IMAGE, Budget, Job, Rendered, peer_closed
from app.pipeline.errors import FileTooLarge, InvalidImage, MissingFile
from app.pipeline.fetch import FetchPolicy, fetch
from app.pipeline.imaging import OUTPUT_FORMATS
from app.pipeline.options import STROKE_FIELDS, Options, unknown_fields
from app.pipeline.runtime import Runtime
from app.web import current_runtime
from app.web.errors import MultipleSources, too_large_message
from config import Settings

# The image fields, besides each endpoint's options (documented in /openapi.json): each image as a
# file part or by its URL.
FILE_FIELD = {
    "file": {"type": "string", "format": "binary", "description": "the image (JPEG, PNG, WebP, GIF, BMP, TIFF); "
                                                                  "or send its URL in image_url"},
    "image_url": {"type": "string", "description": "the image's http(s) URL, downloaded by the server "
                                                   "(instead of file)"},
    "background_file": {"type": "string", "format": "binary",
                        "description": "an image laid under the subject (background=image, implied when sent)"},
    "background_url": {"type": "string", "description": "background_file's http(s) URL, downloaded by the "
                                                        "server (background=image, implied when sent)"},
}
UPLOAD_FIELDS = ("file", "background_file")  # sent as file parts, never as text


@dataclass(frozen=True)
class Sources:
    """The fields one image may come in: a file part, a URL, base64 text (remove.bg's ``*_b64``)."""

    file: str
    url: str
    b64: str | None = None


IMAGE_SOURCES = Sources("file", "image_url")
BACKGROUND_SOURCES = Sources("background_file", "background_url")


@dataclass(frozen=True)
class Upload:
    data: bytes
    stem: str  # safe file name without extension, for the response's file name


@dataclass(frozen=True)
class Processing:
    """What ``@processing`` declares about a view (for protection, telemetry and /openapi.json).
    ``form``: the request's fields as /openapi.json documents them, when not ``options``' own form."""

    options: type[Options]
    produces: str  # image | json
    form: Mapping[str, Any] | None = None


# Reads a request: ``reader(options, runtime, budget) -> (options, image, background or None, masks)``,
# ``masks`` the correction strokes sent as images (field name -> bytes).
Reader = Callable[[type[Options], Runtime, Budget], "tuple[Options, Upload, Upload | None, dict[str, bytes]]"]


def processing(options: type[Options], produces: str = "image", reader: Reader | None = None,
               form: Mapping[str, Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """A processing endpoint: it takes an image, has a deadline, needs an API key (when keys are
    configured) and counts against the rate limit. The view is called as ``view(job, upload)``.
    ``reader``: how the request is read (default: our form, :func:`read_form`)."""
    read = reader or read_form

    def decorate(view: Callable[[Job, Upload], Any]) -> Callable[..., Response]:
        @functools.wraps(view)
        def endpoint() -> Response:
            runtime = current_runtime()
            budget = Budget(time.monotonic() + runtime.settings.request_timeout_s,
                            peer_closed(request.environ.get("gunicorn.socket")))
            opts, upload, background, masks = read(options, runtime, budget)
            job = Job(runtime, opts, upload.data, budget, background and background.data, masks)
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

        endpoint.processing = Processing(options, produces, form)  # type: ignore[attr-defined]
        return endpoint

    return decorate


def read_form(options: type[Options], runtime: Runtime,
              budget: Budget) -> tuple[Options, "Upload", "Upload | None", dict[str, bytes]]:
    """Our own form: the options by their declared names (a field the options do not declare is a
    400 naming it), then the image and the background, each from a file part or a URL."""
    form = request.form  # reads the body: werkzeug refuses one over MAX_CONTENT_LENGTH (413)
    files = sent_files()
    refused = unknown_fields(options, [*form.keys(), *files], request.path, also=tuple(FILE_FIELD))
    if refused:
        raise refused
    for name in UPLOAD_FIELDS:  # upload fields sent as text: a 400, not silently ignored
        # (empty: a blank file input, as Swagger UI's "Try it out" sends one it was given no file for)
        if (form.get(name) or "").strip():
            raise MissingFile(f"{name}: send the image as a file (multipart part with a filename)", field=name)
    background_sent = "background_file" in files or form.get("background_url", "").strip()
    if background_sent and not form.get("background", "").strip():
        form = {**form.to_dict(), "background": "image"}  # the upload says what the background is
    opts = options.from_form(form).resolved()  # every option checked before any image is read
    settings = runtime.settings
    upload = read_image(settings, budget, form, files, IMAGE_SOURCES)
    background = read_image(settings, budget, form, files, BACKGROUND_SOURCES) if background_sent else None
    masks = {}
    for name in STROKE_FIELDS:
        if name in files:
            if (form.get(name) or "").strip():
                raise MultipleSources(f"{name}: send the strokes one way only (JSON lines or a mask image)", field=name)
            masks[name] = read_upload(settings, files, name).data
    return opts, upload, background, masks


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


def read_image(settings: Settings, budget: Budget, form: Mapping[str, str], files: Mapping[str, FileStorage],
               sources: Sources) -> Upload:
    """The image sent one of ``sources``' ways (exactly one): a file part, a URL (downloaded now,
    within the request's deadline), or base64 text."""
    given = [name for name in (sources.file, sources.url, sources.b64)
             if name and (name in files or (form.get(name) or "").strip())]
    if len(given) > 1:
        raise MultipleSources(f"{' and '.join(given)}: send the image one way only", field=given[1])
    if not given or given[0] == sources.file:
        return read_upload(settings, files, sources.file)
    name = given[0]
    text = form[name].strip()
    if name == sources.url:
        data = fetch(text, FetchPolicy.from_settings(settings), field=name, deadline=budget.deadline,
                     cancelled=budget.client_gone)
        return Upload(data, _stem(unquote(urlsplit(text).path.rsplit("/", 1)[-1])))
    return Upload(read_b64(settings, text, name), "image")


def read_upload(settings: Settings, files: Mapping[str, FileStorage], field: str = "file") -> Upload:
    if not request.mimetype.startswith("multipart/form-data"):
        raise MissingFile(f"{field}: send the image as multipart/form-data in the field '{field}'", field=field)
    storage = files.get(field)
    if storage is None:
        raise MissingFile(f"{field}: no file in the multipart field '{field}'", field=field)
    data = storage.read(settings.max_file_size_bytes + 1)
    if len(data) > settings.max_file_size_bytes:
        raise FileTooLarge(too_large_message(settings.max_file_size_mb, field), field=field)
    return Upload(data, _stem(storage.filename or ""))


_DATA_URL = re.compile(r"data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def read_b64(settings: Settings, text: str, field: str) -> bytes:
    """An image sent as base64 text (a ``data:image/...;base64,`` prefix tolerated, whitespace
    ignored), refused from its length before it is decoded when it is over the upload limit."""
    prefix = _DATA_URL.match(text)
    text = "".join((text[prefix.end():] if prefix else text).split())
    if len(text) // 4 * 3 > settings.max_file_size_bytes + 2:
        raise FileTooLarge(too_large_message(settings.max_file_size_mb, field), field=field)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{field}: not valid base64", field=field) from None
    if len(data) > settings.max_file_size_bytes:
        raise FileTooLarge(too_large_message(settings.max_file_size_mb, field), field=field)
    if not data:
        raise MissingFile(f"{field}: empty", field=field)
    return data


def _stem(filename: str) -> str:
    """A safe file name without its extension, for the response's file name."""
    return (secure_filename(filename).rsplit(".", 1)[0] or "image")[:100]


def image_response(rendered: Rendered, job: Job, upload: Upload, name: str = IMAGE) -> Response:
    """The encoded image ``name`` (the cut-out, or one effect's), shown inline, named for a download;
    not cached by browsers or proxies (the same URL answers a different upload each time). A plain
    response, not send_file's passthrough, so that callbacks registered with ``call_on_close`` run
    after it is sent."""
    fmt = job.options.format
    _, mimetype, extension = OUTPUT_FORMATS[fmt]
    prefix = "mask" if getattr(job.options, "only_mask", False) else "nobg" if name == IMAGE else name
    response = Response(rendered.images[name], mimetype=mimetype)
    response.headers.set("Content-Disposition", "inline", filename=f"{prefix}_{upload.stem}.{extension}")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(size_headers(rendered, name))
    return response


def size_headers(rendered: Rendered, name: str) -> dict[str, str]:
    """The output's size and the subject's box in it, by remove.bg's header names; the mask's confidence."""
    headers = {"X-Width": str(rendered.width), "X-Height": str(rendered.height),
               "X-Upscaled": "true" if rendered.upscaled.get(name) else "false"}
    if rendered.scaled_from is not None:  # the photo was worked smaller than it came
        headers["X-Scaled-From"] = "{}x{}".format(*rendered.scaled_from)
    if rendered.mask_confidence is not None:
        headers["X-Mask-Confidence"] = f"{rendered.mask_confidence:.3f}"
        if rendered.mask_warnings is not None:
            headers["X-Mask-Warnings"] = ", ".join(rendered.mask_warnings) or "none"
    box = rendered.foreground.get(name)
    if box is not None:
        left, top, width, height = box
        headers.update({"X-Foreground-Top": str(top), "X-Foreground-Left": str(left),
                        "X-Foreground-Width": str(width), "X-Foreground-Height": str(height)})
    return headers
