"""Who may call what, how often, from which origins; and the headers every response carries.

- API keys (``API_KEYS``, comma-separated): when set, every processing endpoint needs
  ``X-API-Key`` with one of them (401 otherwise). Probes, status, docs and metrics stay open.
- Rate limit (``RATE_LIMIT``, e.g. ``60/minute``) on processing endpoints, per API key, or
  per client IP without one, through Flask-Limiter: 429 with ``Retry-After``. Counters live
  in ``RATE_LIMIT_STORAGE_URI``: ``memory://`` counts per worker process, so an instance
  with N workers allows up to N times the rate; a fleet shares ``redis://…``.
- ``PROXY_HOPS``: how many proxies in front set ``X-Forwarded-For`` (Cloud Run and Railway: 1),
  so the client IP is the caller's and not the load balancer's (werkzeug's ProxyFix).
- CORS (``CORS_ORIGINS``, comma-separated, or ``*``) through flask-cors, exposing our headers.
- Security headers on every response.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, request
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from app.errors import Unauthorized
from app.http_io import is_processing
from config import Settings

EXPOSED_HEADERS = ["X-Cache", "X-Cache-Mask", "X-Request-ID", "Server-Timing", "Retry-After", "Content-Disposition",
                   "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",  # ignored by browsers over plain HTTP
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# The docs page loads its own scripts and styles (served from this app, never from a CDN).
DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def register(app: Flask, settings: Settings) -> None:
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops,
                                x_host=settings.proxy_hops)
    if settings.api_keys:
        _require_api_keys(app, settings.api_keys)
    if settings.rate_limit:
        Limiter(
            _client_key, app=app, default_limits=[settings.rate_limit],
            default_limits_exempt_when=lambda: not is_processing(),
            storage_uri=settings.rate_limit_storage_uri, headers_enabled=True,
            swallow_errors=True,  # a rate-limit store that is down must not fail requests
        )
    if settings.cors_origins:
        origins = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
        CORS(app, origins=origins, expose_headers=EXPOSED_HEADERS, max_age=600,
             allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID"])

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint == "docs.page" or (request.endpoint or "").startswith("docs."):
            response.headers["Content-Security-Policy"] = DOCS_CSP
        return response


def _require_api_keys(app: Flask, keys: tuple[str, ...]) -> None:
    digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    @app.before_request
    def _check_api_key() -> None:
        if not is_processing() or request.method == "OPTIONS":
            return
        given = request.headers.get("X-API-Key", "")
        if not given:
            raise Unauthorized("API key required: send it in the X-API-Key header", header='ApiKey header="X-API-Key"')
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        if not any(hmac.compare_digest(digest, known) for known in digests):  # no early exit on a prefix
            raise Unauthorized("invalid API key", header='ApiKey header="X-API-Key"')


def _client_key() -> str:
    """Rate-limit bucket: the API key (hashed, never stored as given), else the client IP."""
    key = request.headers.get("X-API-Key", "")
    if key:
        return "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return "ip:" + (get_remote_address() or "unknown")
