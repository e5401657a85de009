"""The OpenAPI 3 document, generated from the app itself, and its rendering at /docs.

- Paths and methods: the app's URL map, so a new route appears without anyone editing a spec.
- Summary and description: the view's docstring.
- Request forms: the options class a processing view declares (``@processing(Options)``): its
  one declaration per field, as the walk over it gives it (``app.pipeline.options.form_schema``).
- Effect parameters: the effects registry's own schemas (``GET /api/v2/effects``).
- Security: ``X-API-Key`` on processing endpoints when ``API_KEYS`` is set; the admin bearer token
  on ``@admin_required`` endpoints.
- Error responses: generated from the one error table (``app.web.errors.ERRORS``), with the limits
  the settings give (upload MB, pixels, parts).
- Other responses: what a view declares with :func:`responds` (its media type, other statuses).

/docs is Swagger UI, served from the swagger-ui-bundle package: no CDN, nothing fetched at run time.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import swagger_ui_bundle
from flask import Blueprint, Flask, Response, current_app, jsonify, url_for

import effects
from app.pipeline.cache import CacheUnavailable
from app.pipeline.imaging import OUTPUT_FORMATS
from app.pipeline.options import form_schema
from app.web import EXTENSION_KEY
from app.web.endpoints import FILE_FIELD
from app.web.errors import ERRORS, Forbidden, Unauthorized, limits

bp = Blueprint("docs", __name__, static_folder=swagger_ui_bundle.swagger_ui_path, static_url_path="/docs/static")

_ADMIN_ERRORS = (Unauthorized, Forbidden, CacheUnavailable)  # what an admin endpoint answers besides 200


def build(app: Flask) -> dict[str, Any]:
    runtime = app.extensions[EXTENSION_KEY]
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.startswith("docs.static"):
            continue
        view = app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, view, runtime.settings)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Background removal service",
            "version": _version(),
            "description": f"Serving {runtime.segmenter.info.name}/{runtime.segmenter.info.model_id}. Errors are "
                           '`{"error": {"code": "...", "message": "...", "field": "..."}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}},
                },
                "Effects": {"type": "object", "description": "each effect's parameters (GET /api/v2/effects)",
                            "properties": {e["name"]: {"type": "object", "description": e["description"]}
                                           for e in effects.catalogue()}},
            },
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "AdminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _operation(endpoint: str, view, settings) -> dict[str, Any]:
    doc = inspect.getdoc(view) or endpoint
    summary, _, description = doc.partition("\n")
    op: dict[str, Any] = {"operationId": endpoint.replace(".", "_"), "summary": summary.strip(),
                          "tags": [endpoint.split(".")[0]]}
    if description.strip():
        op["description"] = description.strip()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    processing = getattr(view, "processing", None)
    if processing is not None and processing.form is not None:  # a dialect's own form (remove.bg's)
        schema = {"type": "object", "properties": dict(processing.form)}
        op["requestBody"] = {"required": True, "content": {
            media: {"schema": schema} for media in
            ("multipart/form-data", "application/x-www-form-urlencoded", "application/json")}}
        image = {"schema": {"type": "string", "format": "binary"}}
        op["responses"] = {
            "200": {"description": "the image (image/png, image/jpeg, image/webp or application/zip), or with "
                                   "`Accept: application/json` remove.bg's JSON",
                    "content": {**{m: image for m in ("image/png", "image/jpeg", "image/webp", "application/zip")},
                                "application/json": {"schema": {"type": "object"}}}},
            "400": {"description": "remove.bg's errors: `{\"errors\": [{\"title\", \"code\", \"detail\"}]}`",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "403": {"description": "auth_failed", "content": {"application/json": {"schema": {"type": "object"}}}},
            "429": {"description": "rate_limit_exceeded; see Retry-After",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
        }
        if settings.api_keys:
            op["security"] = [{"ApiKey": []}]
        return op
    if processing is not None:
        fields = {**FILE_FIELD, **form_schema(processing.options)}
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": fields}}}}
        kinds = [cls for cls, kind in ERRORS.items() if kind.doc and cls not in (Forbidden, CacheUnavailable)]
        op["responses"] = {"200": _success(processing.produces, fields), **_errors(kinds, settings)}
        if settings.api_keys:
            op["security"] = [{"ApiKey": []}]
        return op
    if getattr(view, "admin", False):
        op["security"] = [{"AdminToken": []}]
        op["responses"] = {"200": {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}},
                           **_errors(_ADMIN_ERRORS, settings)}
        return op
    media, statuses = getattr(view, "responds", ("application/json", {}))
    op["responses"] = {"200": {"description": "OK", "content": {media: {"schema": {"type": "string"} if media != "application/json" else {"type": "object"}}}}}
    for status, text in statuses.items():
        op["responses"][status] = {"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}
    return op


def _errors(classes, settings) -> dict[str, Any]:
    """The error responses of ``classes``, from :data:`app.web.errors.ERRORS`: by status, each code
    with what it means, the limits quoted from the settings."""
    quoted = limits(settings)
    texts: dict[str, list[str]] = {}
    for cls in classes:
        kind = ERRORS[cls]
        texts.setdefault(str(kind.status), []).append(f"{kind.code}: {kind.doc.format(**quoted)}")
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {status: {"description": "; ".join(lines), "content": error} for status, lines in sorted(texts.items())}


def responds(media: str = "application/json", **statuses: str):
    """Documents a view's success media type and its other statuses, e.g. ``@responds(s503="warming up")``."""

    def mark(view):
        view.responds = (media, {name.lstrip("s"): text for name, text in statuses.items()})
        return view

    return mark


def _success(produces: str, fields: dict[str, Any]) -> dict[str, Any]:
    headers = {"X-Cache": {"schema": {"type": "string", "enum": ["HIT", "MISS", "BYPASS"]}},
               "X-Request-ID": {"schema": {"type": "string"}},
               "Server-Timing": {"schema": {"type": "string"}}}
    if produces == "json":
        return {"description": "each effect's image, base64-encoded, with timings and the parameters applied",
                "headers": headers, "content": {"application/json": {"schema": {"type": "object"}}}}
    formats = (fields.get("format") or fields.get("output_format"))["enum"]
    box = {"schema": {"type": "integer"}, "description": "the subject's box in the output (absent: no subject)"}
    headers = {**headers, "X-Width": {"schema": {"type": "integer"}}, "X-Height": {"schema": {"type": "integer"}},
               **{f"X-Foreground-{side}": box for side in ("Top", "Left", "Width", "Height")},
               "X-Upscaled": {"schema": {"type": "string", "enum": ["true", "false"]},
                              "description": "whether the layout enlarged the subject past its own pixels"},
               "X-Scaled-From": {"schema": {"type": "string"},
                                 "description": "the upload's WxH, when it was worked smaller (MAX_WORK_PIXELS, "
                                                "MAX_DIMENSION, max_megapixels)"},
               "X-Mask-Confidence": {"schema": {"type": "number", "minimum": 0, "maximum": 1},
                                     "description": "how far the mask can be trusted (README: Mask confidence)"},
               "X-Mask-Warnings": {"schema": {"type": "string"},
                                   "description": "why a person should look at the cut-out, comma-separated: "
                                                  "undecided-regions, disconnected-regions, low-contrast-edge, "
                                                  "no-subject; none when it looks clean"}}
    return {"description": "the image", "headers": headers,
            "content": {OUTPUT_FORMATS[f][1]: {"schema": {"type": "string", "format": "binary"}} for f in formats}}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bgremove-service")
    except PackageNotFoundError:
        return "0"


@bp.get("/openapi.json")
def spec():
    """This API's OpenAPI 3 document, generated from the running app."""
    return jsonify(build(current_app))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Background removal API</title>
<link rel="stylesheet" href="{css}"></head>
<body><div id="swagger-ui"></div>
<script src="{bundle}"></script><script src="{init}"></script></body></html>
"""

_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: %r, dom_id: "#swagger-ui", deepLinking: true});
};
"""


@bp.get("/docs")
@responds("text/html")
def page():
    """The OpenAPI document rendered (Swagger UI, served locally)."""
    html = _PAGE.format(css=url_for("docs.static", filename="swagger-ui.css"),
                        bundle=url_for("docs.static", filename="swagger-ui-bundle.js"),
                        init=url_for("docs.init_script"))
    return Response(html, mimetype="text/html")


@bp.get("/docs/init.js")
@responds("text/javascript")
def init_script():
    """Starts Swagger UI on /openapi.json (a file, so the page needs no inline script)."""
    return Response(_INIT % url_for("docs.spec"), mimetype="text/javascript")
