"""remove.bg's API (``POST /v1.0/removebg``, ``GET /v1.0/account``): a client of remove.bg switches
to this server by changing its base URL.

A dialect, not a second pipeline: :data:`PARAMS` maps each of remove.bg's parameters onto the
fields our options declare (``app.pipeline.options.fields``), the request runs the same
:class:`~app.pipeline.Job` as /api/bg/* (cache, limits, gate, metrics), and errors are answered in
remove.bg's shape, ``{"errors": [{"title", "code", "detail"}]}``, with its statuses. Several names
mean other things here than in our own form (``size``, ``scale``, ``position``, ``format``): each is
mapped explicitly. The mapping, parameter by parameter, and the error table: README, "Migrating
from remove.bg".
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import msgspec
from flask import Blueprint, Response, g, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from app.pipeline import IMAGE, Budget, Job, Rendered
from app.pipeline.errors import BadOption, MissingFile, ServiceError
from app.pipeline.imaging import OUTPUT_FORMATS
from app.pipeline.options import RemoveOptions, fields
from app.pipeline.runtime import Runtime
from app.web import current_runtime
from app.web.endpoints import Sources, Upload, processing, read_image, sent_files, size_headers
from app.web.errors import MultipleSources, UnknownForeground, answer, kind_of
from app.web.openapi import responds

bp = Blueprint("removebg", __name__, url_prefix="/v1.0")

IMAGE_SOURCES = Sources("image_file", "image_url", "image_file_b64")
BACKGROUND_SOURCES = Sources("bg_image_file", "bg_image_url")
# remove.bg's output sizes, in megapixels (None: as large as this tier allows: MAX_WORK_PIXELS, MAX_DIMENSION)
SIZES: dict[str, float | None] = {"preview": 0.25, "small": 0.25, "regular": 0.25, "medium": 1.5, "hd": 4.0,
                                  "full": None, "4k": None, "auto": None, "50mp": None}
DEFAULT_SIZE = "preview"  # remove.bg's own default
TYPES = ("auto", "person", "product", "animal", "car", "car_interior", "car_part", "transportation", "graphics",
         "other")
FALLBACK_TYPE = "other"  # X-Type when the caller names no class: this service does not classify
FORMATS = {"auto": None, "png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "zip": "zip"}
MAX_MARGIN_PX, MAX_MARGIN_PERCENT = 500, 50
SHADOWS = {"drop": "drop", "car": "contact", "3d": "contact"}  # shadow_type -> our shadow
_WORDS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class Param:
    """One of remove.bg's parameters: the fields of ours it sets (``ours``; none: accepted, no
    effect here), what it does here, and how its text becomes our form's text."""

    name: str
    ours: tuple[str, ...]
    doc: str
    read: Callable[[str, Mapping[str, str]], dict[str, str]]


def _size(value: str, params: Mapping[str, str]) -> dict[str, str]:
    megapixels = _choice("size", value, SIZES)
    return {} if megapixels is None else {"max_megapixels": f"{megapixels:g}"}


def _type(value: str, params: Mapping[str, str]) -> dict[str, str]:
    _choice("type", value, dict.fromkeys(TYPES))
    return {}


def _type_level(value: str, params: Mapping[str, str]) -> dict[str, str]:
    _choice("type_level", value, dict.fromkeys(("none", "latest", "1", "2")))
    return {}


def _format(value: str, params: Mapping[str, str]) -> dict[str, str]:
    fmt = _choice("format", value, FORMATS)
    return {} if fmt is None else {"format": fmt}


def _crop_margin(value: str, params: Mapping[str, str]) -> dict[str, str]:
    parts = re.split(r"[\s,]+", value.strip())
    for part in parts:
        found = re.fullmatch(r"(\d+(?:\.\d+)?)(px|%)?", part.lower())
        if not found or len(parts) not in (1, 2, 4):
            raise BadOption("crop_margin", f"{value[:40]!r}: expected 1, 2 or 4 margins, each px or %, e.g. 30px or 10%")
        limit = MAX_MARGIN_PERCENT if found.group(2) == "%" else MAX_MARGIN_PX
        if float(found.group(1)) > limit:
            raise BadOption("crop_margin", f"{value[:40]!r}: at most {MAX_MARGIN_PERCENT}% or {MAX_MARGIN_PX} px a side")
    return {"padding": value} if _bool("crop", params.get("crop", "false")) else {}  # only with crop, as remove.bg


# remove.bg keeps the photo's canvas and scales or moves the subject in it (our size=photo); ours
# with size=original keeps the subject's pixels and sizes the canvas around it. With crop, the canvas
# is the subject's either way.
def _scale(value: str, params: Mapping[str, str]) -> dict[str, str]:
    if value.strip().lower() == "original":
        return {}
    fixed = {} if _bool("crop", params.get("crop", "false")) else {"size": "photo", "max_upscale": "8"}
    return {"scale": value, **fixed}


def _position(value: str, params: Mapping[str, str]) -> dict[str, str]:
    word = value.strip().lower()
    if word == "original":
        return {}
    if re.fullmatch(r"\d+(?:\.\d+)?%", word):  # one value: both axes
        word = f"{word} {word}"
    return {"position": word, **({} if _bool("crop", params.get("crop", "false")) else {"size": "photo"})}


def _channels(value: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"only_mask": str(_choice("channels", value, {"rgba": False, "alpha": True})).lower()}


def _bg_color(value: str, params: Mapping[str, str]) -> dict[str, str]:
    text = value.strip().lstrip("#")
    if re.fullmatch(r"[0-9a-fA-F]{3,4}", text):  # short hex, with alpha too: each digit doubled
        text = "".join(c * 2 for c in text)
    if re.fullmatch(r"[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", text):
        return {"background": "#" + text}
    return {"background": value}


def _bg_image(value: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"background": "image"}


def _add_shadow(value: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"shadow": "contact"} if _bool("add_shadow", value) and "shadow_type" not in params else {}


def _shadow_type(value: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"shadow": _choice("shadow_type", value, SHADOWS)}


def _shadow_opacity(value: str, params: Mapping[str, str]) -> dict[str, str]:
    try:
        opacity = float(value)
    except ValueError:
        opacity = -1.0
    if not 0 <= opacity <= 100:
        raise BadOption("shadow_opacity", f"expected a number from 0 to 100, got {value[:40]!r}")
    return {"shadow_opacity": f"{opacity / 100:g}"}


def _accepted_bool(name: str) -> Callable[[str, Mapping[str, str]], dict[str, str]]:
    def read(value: str, params: Mapping[str, str]) -> dict[str, str]:
        _bool(name, value)
        return {}

    return read


def _to(name: str) -> Callable[[str, Mapping[str, str]], dict[str, str]]:
    return lambda value, params: {name: value}


# remove.bg's parameters, in its documentation's order, each onto our declared fields.
PARAMS: tuple[Param, ...] = (
    Param("size", ("max_megapixels",), "preview/small/regular: at most 0.25 megapixels; medium: 1.5; hd: 4; "
          "full/4k/auto/50MP: as large as this tier allows (MAX_WORK_PIXELS, MAX_DIMENSION). Default preview, "
          "as remove.bg", _size),
    Param("type", (), "accepted (auto, person, product, animal, car, ...); no effect: the model finds the subject "
          "whatever it is. X-Type echoes it, or says `other`", _type),
    Param("type_level", (), "accepted (none, 1, 2, latest); no effect", _type_level),
    Param("format", ("format",), "auto (default: PNG when the result has transparency, else JPEG), png, jpg, webp, "
          "zip (color.jpg + alpha.png)", _format),
    Param("roi", ("roi",), "region of interest, x1 y1 x2 y2 in px or %: only its contents can be the subject", _to("roi")),
    Param("crop", ("crop",), "true: the canvas cut to the subject", _to("crop")),
    Param("crop_margin", ("padding",), "with crop: margin around the subject, 1, 2 or 4 values, px or % of the "
          "subject (at most 50% or 500 px a side)", _crop_margin),
    Param("scale", ("scale", "size", "max_upscale"), "the subject's size as a share of the canvas (the photo's, "
          "capped by size), 10%-100%, or original (default)", _scale),
    Param("position", ("position", "size"), "original (default), center, X% (both axes) or X% Y%", _position),
    Param("channels", ("only_mask",), "rgba (default) or alpha (the mask alone, greyscale)", _channels),
    Param("bg_color", ("background",), "a solid background: hex (81d4fa, fff, 81d4fa77 with alpha) or a colour "
          "name", _bg_color),
    Param("bg_image_url", ("background",), "a background image's URL (fetched like image_url), covering the canvas",
          _bg_image),
    Param("bg_image_file", ("background",), "a background image as a file part, covering the canvas", _bg_image),
    Param("add_shadow", ("shadow",), "true: a contact (floor) shadow, as remove.bg's car shadow", _add_shadow),
    Param("shadow_type", ("shadow",), "drop: a drop shadow; car, 3D: a contact (floor) shadow", _shadow_type),
    Param("shadow_opacity", ("shadow_opacity",), "0-100", _shadow_opacity),
    Param("semitransparency", (), "accepted; no effect: the alpha is always soft where the subject is (fur, hair), "
          "there are no glass-specific semi-transparent regions", _accepted_bool("semitransparency")),
)
BY_NAME = {p.name: p for p in PARAMS}
SOURCE_NAMES = ("image_file", "image_file_b64", "image_url")
UPLOADS = ("image_file", "bg_image_file")


def _choice(name: str, value: str, choices: Mapping[str, Any]) -> Any:
    try:
        return choices[value.strip().lower()]
    except KeyError:
        raise BadOption(name, f"expected one of {', '.join(choices)}, got {value[:40]!r}") from None


def _bool(name: str, value: str) -> bool:
    return _choice(name, value, _WORDS)


def to_options(params: Mapping[str, str]) -> RemoveOptions:
    """remove.bg's parameters as our options (a :class:`BadOption` names remove.bg's parameter)."""
    if sum(1 for name in ("bg_color", "bg_image_url", "bg_image_file") if name in params) > 1:
        raise MultipleSources("bg_color, bg_image_url and bg_image_file: send one background only", field="bg_color")
    form: dict[str, str] = {}
    origin: dict[str, str] = {}  # our field -> the parameter that set it
    for name, value in {"size": DEFAULT_SIZE, **params}.items():
        if name in BY_NAME:
            for ours, text in BY_NAME[name].read(value, params).items():
                form[ours], origin[ours] = text, name
    try:
        options = RemoveOptions.from_form({"format": "png", **form})
        if "format" not in form and not options.only_mask and options.layout.opaque:  # auto: JPEG unless transparent
            options = RemoveOptions.from_form({**form, "format": "jpeg"})
    except BadOption as exc:
        theirs = origin.get(exc.field or "", exc.field or "")
        raise BadOption(theirs, exc.message.split(": ", 1)[-1]) from None
    return options


def read_removebg(options: type, runtime: Runtime,
                  budget: Budget) -> tuple[RemoveOptions, Upload, Upload | None, dict[str, bytes]]:
    """A remove.bg request: multipart, urlencoded or JSON; exactly one image source."""
    settings = runtime.settings
    # base64 in the body: the body may be a third larger than the upload limit
    request.max_content_length = request.max_form_memory_size = settings.max_b64_body_bytes
    params, files = _body()
    unknown = [name for name in [*params, *files] if name not in BY_NAME and name not in SOURCE_NAMES]
    if unknown:
        raise BadOption(unknown[0][:100], f"unknown parameter; this route takes {', '.join([*SOURCE_NAMES, *BY_NAME])}")
    for name in UPLOADS:
        if name in params and name not in files:
            raise MissingFile(f"{name}: send the image as a file (multipart part with a filename)", field=name)
    opts = to_options({**params, **{name: "(file)" for name in files if name in BY_NAME}})  # bg_image_file's part
    given = [name for name in SOURCE_NAMES if name in files or params.get(name, "").strip()]
    if not given:
        raise MissingFile("no image given: send image_file, image_file_b64 or image_url", field="image_file")
    g.removebg = {"type": params.get("type", ""), "file": given[0],
                  "background_file": next((n for n in ("bg_image_file", "bg_image_url") if n in params or n in files), "")}
    upload = read_image(settings, budget, params, files, IMAGE_SOURCES)
    background = None
    if opts.layout.background is not None and opts.layout.background[0] == "image":
        background = read_image(settings, budget, params, files, BACKGROUND_SOURCES)
    return opts, upload, background, {}  # remove.bg has no correction strokes


def _body() -> tuple[dict[str, str], dict[str, Any]]:
    """The parameters as text, and the file parts, from whichever body remove.bg takes."""
    if request.mimetype == "application/json":
        try:
            data = request.get_data(cache=False)
            request.stream.read(1)  # a chunked body past the limit: 413 (get_data() truncates it silently)
            body = msgspec.json.decode(data or b"{}", type=dict[str, str | int | float | bool | None])
        except msgspec.ValidationError as exc:
            raise BadOption(_where(exc), "each parameter is text, a number or true/false") from None
        except msgspec.DecodeError as exc:
            raise BadOption("body", f"malformed JSON ({exc})") from None
        return {name: _text(value) for name, value in body.items() if value is not None}, {}
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return {name: value for name, value in request.form.items()}, sent_files()
    if not request.content_length and request.mimetype in ("", "application/octet-stream"):
        return {}, {}  # no body: missing_source
    raise BadOption("Content-Type", f"{request.mimetype[:60]!r}: send multipart/form-data, "
                                    "application/x-www-form-urlencoded or application/json")


def _where(exc: msgspec.ValidationError) -> str:
    found = re.search(r"\$\[\.\.\.\]|\$\[['\"]?([^'\"\]]+)", str(exc))
    return (found.group(1) if found and found.group(1) else "body")[:100]


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


# -- the route ------------------------------------------------------------------------------

_DOC_FORM = {
    "image_file": {"type": "string", "format": "binary", "description": "the image as a file part"},
    "image_file_b64": {"type": "string", "description": "the image as base64 (a data: URL prefix tolerated)"},
    "image_url": {"type": "string", "description": "the image's http(s) URL, downloaded by the server"},
    **{p.name: {"type": "string", "description": p.doc + (f" (ours: {', '.join(p.ours)})" if p.ours else "")}
       for p in PARAMS},
}


@bp.post("/removebg")
@bp.post("/removebg.json", endpoint="removebg_json")
@processing(RemoveOptions, reader=read_removebg, form=_DOC_FORM)
def removebg(job: Job, upload: Upload):
    """remove.bg's API: the image (or, with `Accept: application/json`, remove.bg's JSON)
    Parameters as remove.bg names them (multipart, urlencoded or JSON), one of image_file, image_file_b64,
    image_url. Errors in remove.bg's shape: `{"errors": [{"title", "code", "detail"}]}`. No credits:
    X-Credits-Charged is 0."""
    rendered = job.run()
    box = rendered.foreground.get(IMAGE)
    if box is None:
        raise UnknownForeground("could not identify a foreground in the image (the mask is empty)")
    headers = {**size_headers(rendered, IMAGE), "X-Credits-Charged": "0",
               "X-Type": _declared_type(), "Cache-Control": "no-store"}
    if request.accept_mimetypes.best_match(["image/*", "application/json"]) == "application/json" \
            and "application/json" in request.accept_mimetypes.values():
        left, top, width, height = box
        response = jsonify({"data": {"result_b64": base64.b64encode(rendered.images[IMAGE]).decode("ascii"),
                                     "foreground_top": top, "foreground_left": left,
                                     "foreground_width": width, "foreground_height": height}})
    else:
        response = _image(rendered, job.options.format)
    response.headers.update(headers)
    return response


def _image(rendered: Rendered, fmt: str) -> Response:
    _, mimetype, extension = OUTPUT_FORMATS[fmt]
    response = Response(rendered.images[IMAGE], mimetype=mimetype)
    response.headers.set("Content-Disposition", "inline", filename=f"no-bg.{extension}")
    return response


def _declared_type() -> str:
    """X-Type: the class the caller named (``type``), else ``other``; this service does not classify."""
    named = g.removebg["type"].strip().lower()
    return named if named in TYPES and named != "auto" else FALLBACK_TYPE


@bp.get("/account")
@responds()
def account():
    """remove.bg's account: unlimited credits on a self-hosted server
    The credit figures are a large constant (clients compare numbers); `unlimited` says what they mean."""
    unlimited = 10**9
    return jsonify({"data": {"attributes": {
        "credits": {"total": unlimited, "subscription": unlimited, "payg": 0, "enterprise": 0},
        "api": {"free_calls": unlimited, "sizes": "all"},
        "unlimited": True,
    }}})


account.api_key = True  # type: ignore[attr-defined]  # remove.bg's account needs the key, as processing does


# -- errors in remove.bg's shape --------------------------------------------------------------

# Our error codes as remove.bg's (status, code, title); a code not listed keeps its own name and
# remove.bg's 400 for client errors. README's error table of this route is this table.
DIALECT: dict[str, tuple[int, str, str]] = {
    "missing_file": (400, "missing_source", "No image given"),
    "multiple_sources": (400, "multiple_sources", "Multiple image sources given"),
    "invalid_image_url": (400, "invalid_image_url", "Invalid image URL"),
    "failed_image_download": (400, "failed_image_download", "Failed to download the image"),
    "file_too_large": (400, "file_too_large", "File too large"),
    "field_too_large": (400, "file_too_large", "Parameter too large"),
    "too_many_fields": (400, "invalid_parameters", "Too many parameters"),
    "invalid_option": (400, "invalid_parameters", "Invalid parameter"),
    "invalid_image": (400, "invalid_file", "Invalid image file"),
    "unsupported_media_type": (400, "unknown_format", "Unsupported image format"),
    "image_too_large": (400, "resolution_too_high", "Image resolution too high"),
    "image_too_complex": (400, "invalid_file", "Image too costly to decode"),
    "unknown_foreground": (400, "unknown_foreground", "Could not identify foreground in image"),
    "unauthorized": (403, "auth_failed", "Invalid API key"),
    "forbidden": (403, "auth_failed", "Invalid API key"),
    "too_many_requests": (429, "rate_limit_exceeded", "Rate limit exceeded"),
}


def errors_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None,
                    title: str | None = None) -> Response:
    status, code, title = DIALECT.get(code, (status, code, title or code.replace("_", " ").capitalize()))
    response = jsonify({"errors": [{"title": title, "code": code, "detail": detail}]})
    response.status_code = status
    response.headers.update(dict(headers or {}))
    response.headers.pop("WWW-Authenticate", None)  # remove.bg answers 403, not a challenge
    return response


@bp.errorhandler(ServiceError)
@bp.errorhandler(MemoryError)
def _service_error(exc: BaseException) -> Response:
    if kind_of(exc) is None:  # a ServiceError of no listed kind: a client error
        return errors_response(400, getattr(exc, "code", "bad_request"), str(exc))
    ours = answer(exc)  # the app's own answer: its status, message and Retry-After
    body = ours.get_json()["error"]
    message, field = body["message"], body.get("field")
    theirs = g.get("removebg", {}).get(field or "")  # the pipeline names our upload fields: say the one sent
    if theirs and message.startswith(f"{field}:"):
        message = theirs + message[len(field):]
    return errors_response(ours.status_code, body["code"], message,
                           {"Retry-After": ours.headers["Retry-After"]} if "Retry-After" in ours.headers else None)


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc: RateLimitExceeded) -> Response:
    retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
    if retry_after is None:
        reset = getattr(exc.limit.limit, "get_expiry", lambda: 60)()
        retry_after = str(reset)
    return errors_response(429, "too_many_requests", exc.description or "rate limit exceeded",
                           {"Retry-After": retry_after})


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        settings = current_runtime().settings
        return errors_response(400, "file_too_large", f"the request body exceeds {settings.max_b64_body_bytes:,} bytes "
                                                      f"(an image of {settings.max_file_size_mb:g} MB as base64)")
    code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
    return errors_response(status, code, exc.description or exc.name)

