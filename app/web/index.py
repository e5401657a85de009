"""GET /: the web page for browsers (``Accept: text/html``), a short description of the API as plain
text for everyone else (curl).

The page is static (app/web/page.html, its modules and stylesheet under app/web/static/, served at
/static/): it builds its forms from GET /api/v2/effects and GET /api/v2/layouts and calls the API like
any client. Its Content-Security-Policy (:data:`app.web.protection.PAGE_CSP`) allows this origin only.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, request

from app.pipeline.imaging import ALLOWED_EXTENSIONS
from app.web import current_runtime
from app.web.openapi import responds
from app.web.protection import PAGE_CSP

PAGE = Path(__file__).with_name("page.html")

bp = Blueprint("index", __name__)

_TEXT = """Background removal service ({adapter}: {model})

Open this address in a browser for a page to try it: drop photos, choose a look, download.

POST /api/bg/remove        multipart field `file`; options: format=png|webp, only_mask=true|false
                           -> the subject on a transparent background (or the 8-bit mask)
POST /api/bg/change_color  multipart field `file`; options: color (#00FF00, 00FF00, #0F0, 255,0,0,
                           CSS name; default white), format=jpeg|png|webp, quality=1-100
                           -> the subject over a solid colour
POST /api/v2/process       multipart field `file`; effects=["blackwhite","dither","popart","8bit"] (1-4),
                           effect_params={{"dither": {{"dot_spacing": 3}}}}, remove_background, background,
                           format=png|webp|jpeg, quality -> JSON with one base64 image per effect
GET  /api/v2/effects       every effect's parameters (type, range, default) and presets
GET  /api/bg/health        200 when ready to serve, 503 otherwise
GET  /api/bg/status        model, limits, memory, uptime, requests served, cache
POST /remove-background    the original service's route: file, output_format=png|jpeg|webp, quality
GET  /health, /model-info  probe; the model's id, size, parameters, device and runtime
GET  /stats                this worker's figures (requests, latency, queue, memory, cache hit rate)
GET  /metrics              Prometheus text, summed over the workers
GET  /openapi.json, /docs  the OpenAPI document and its rendering
POST /api/bg/clear_cache   empty the result cache; needs `Authorization: Bearer <ADMIN_TOKEN>`

Every processing endpoint takes use_cache=true|false (default true) and answers with
X-Cache: HIT | MISS | BYPASS.

Accepted images: {extensions}; at most {max_mb:g} MB; larger than {max_dim} px on the
longest side are scaled down to fit. Errors are JSON: {{"error": {{"code": "...", "message": "..."}}}}.

Example:
  curl -F file=@dog.jpg http://HOST/api/bg/remove -o dog.png
"""


@bp.get("/")
@responds("text/plain")
def index():
    """This service described as plain text; browsers (Accept: text/html) get the web page to use it."""
    if request.accept_mimetypes.best_match(["text/plain", "text/html"], default="text/plain") == "text/html":
        response = Response(PAGE.read_bytes(), mimetype="text/html")
        response.headers["Content-Security-Policy"] = PAGE_CSP
    else:
        response = Response(_text(), mimetype="text/plain")
    response.vary.add("Accept")
    return response


def _text() -> str:
    runtime = current_runtime()
    s = runtime.settings
    return _TEXT.format(
        adapter=runtime.segmenter.info.name,
        model=runtime.segmenter.info.model_id,
        extensions=", ".join(ALLOWED_EXTENSIONS),
        max_mb=s.max_file_size_mb,
        max_dim=s.max_dimension,
    )
