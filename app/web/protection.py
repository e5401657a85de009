"""Who may call what, how often, from which origins; and the headers every response carries
(the whole story, with measurements: docs/operations.md).

- API keys (``API_KEYS``): processing endpoints need ``X-API-Key`` (401 otherwise); probes, status,
  docs and metrics stay open. Failed checks are limited per client IP (``AUTH_FAILURE_LIMIT``):
  past it, 429 before the key is compared (a right key too: no oracle).
- Rate limit (``RATE_LIMIT``, Flask-Limiter): one budget per client, a *validated* key (hashed)
  else the client IP, in ``RATE_LIMIT_STORAGE_URI`` (per worker in ``memory://``, shared in Redis;
  short timeouts, and each worker's own memory while Redis is away).
- ``PROXY_HOPS`` (the edge counts as one): the client IP through ProxyFix. CORS
  (``CORS_ORIGINS``) through flask-cors, for allowed origins only. Security headers on every response.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Flask, Response, current_app, g, request
from flask_cors import CORS
from flask_limiter import Limit, Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.middleware.proxy_fix import ProxyFix

from app.web.endpoints import processing_of
from app.web.errors import RateLimited, Unauthorized, answer
from config import Settings

EXPOSED_HEADERS = ["X-Cache", "X-Cache-Mask", "X-Request-ID", "Server-Timing", "Retry-After", "Content-Disposition",
                   "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-Width", "X-Height",
                   "X-Foreground-Top", "X-Foreground-Left", "X-Foreground-Width", "X-Foreground-Height",
                   "X-Mask-Confidence", "X-Mask-Warnings", "X-Upscaled", "X-Scaled-From", "X-Credits-Charged", "X-Type"]
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",  # ignored by browsers over plain HTTP
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# The docs page loads its own scripts and styles (served from this app, never from a CDN); Swagger UI
# shows an image answer of "Try it out" from a blob: URL.
DOCS_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
# The web page at / (app/web/page.html): its modules, stylesheet and calls on this origin only; no inline
# script or style attribute (styles set from its modules through CSSOM are not attributes); results shown
# from blob: URLs, the checkerboard and icons from data: URLs; no plug-ins, no framing, forms post here only.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


AUTH_FAILURE_SCOPE = "auth-failure"
KEY_PREFIX = "bgremove"  # of every counter in a shared store


def register(app: Flask, settings: Settings) -> None:
    # PROXY_HOPS counts every proxy in front of gunicorn, the bundled edge included (config/serve
    # sets 1 for it, which replaces the client's X-Forwarded-* with what it saw itself).
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops,
                                x_host=settings.proxy_hops)
    # Hook order matters: the failed-auth budget is checked before the key is compared, the
    # request budget after it (its bucket is the validated key).
    if settings.api_keys:
        _limiter(app, settings, Limit(
            settings.auth_failure_limit, key_function=_client_ip, scope=AUTH_FAILURE_SCOPE, shared=True,
            exempt_when=lambda: not (_keyed() and request.headers.get("X-API-Key")),
            deduct_when=lambda response: bool(g.get("api_key_failed")),  # only failures cost
            on_breach=_auth_failures_exceeded,
            error_message="too many failed API key checks from this client; retry later",
        ), headers=False)
        _require_api_keys(app, settings.api_keys)
    if settings.rate_limit:
        _limiter(app, settings, Limit(
            settings.rate_limit, key_function=_client_key, scope="processing", shared=True,
            exempt_when=lambda: not _counted(),
        ), headers=True)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        if exc.response is not None:  # built by the limit's on_breach, with its Retry-After
            return exc.response
        retry_after = None  # Flask-Limiter adds Retry-After and X-RateLimit-* to the request budget's answer
        if exc.limit.scope == AUTH_FAILURE_SCOPE:  # on_breach failed (the store): a whole window
            retry_after = exc.limit.limit.get_expiry()
        return answer(RateLimited(exc.description or "rate limit exceeded", retry_after))

    if settings.cors_origins:
        origins = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
        CORS(app, origins=origins, expose_headers=EXPOSED_HEADERS, max_age=600,
             allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID"],
             always_send=False)  # no CORS headers for a request without an (allowed) Origin

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint == "docs.page" or (request.endpoint or "").startswith("docs."):
            response.headers["Content-Security-Policy"] = DOCS_CSP
        if settings.cors_origins:
            response.vary.add("Origin")  # the CORS headers depend on it: caches keep one answer per origin
        return response


def _limiter(app: Flask, settings: Settings, limit: Limit, *, headers: bool) -> Limiter:
    """A Flask-Limiter for one limit. Each has its own hooks, so each runs where it is registered."""
    return Limiter(
        _client_key, app=app, default_limits=[limit], key_prefix=KEY_PREFIX, headers_enabled=headers,
        storage_uri=settings.rate_limit_storage_uri, storage_options=_storage_options(settings),
        # A store that is down or slow must neither fail nor hold up requests: count in this
        # worker's memory meanwhile, and log (never raise) anything else the store does.
        in_memory_fallback_enabled=True, swallow_errors=True,
    )


def _storage_options(settings: Settings) -> dict:
    """redis-py's connection options: short timeouts, no retry (its defaults, 5 s timeouts and 3 retries
    with back-off, would hold each request for 20 s and more while Redis hangs). A pooled connection
    that Redis closed (a restart) is replaced by the pool itself, without a retry."""
    if settings.rate_limit_storage_uri.split("://", 1)[0].lower() == "memory":
        return {}
    timeout = settings.rate_limit_storage_timeout_s
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout, "retry": Retry(NoBackoff(), 0)}


def _counted() -> bool:
    """The request counts against the limits: a processing endpoint, not a CORS preflight."""
    return processing_of(request.endpoint) is not None and request.method != "OPTIONS"


def _keyed() -> bool:
    """The request needs the API key: a processing endpoint, or a view marked ``api_key`` (remove.bg's account)."""
    if request.method == "OPTIONS":
        return False
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    return _counted() or bool(getattr(view, "api_key", False))


def _require_api_keys(app: Flask, keys: tuple[str, ...]) -> None:
    digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    @app.before_request
    def _check_api_key() -> None:
        if not _keyed():
            return
        given = request.headers.get("X-API-Key", "")
        if not given:
            raise Unauthorized("API key required: send it in the X-API-Key header", challenge='ApiKey header="X-API-Key"')
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        if not any(hmac.compare_digest(digest, known) for known in digests):  # no early exit on a prefix
            g.api_key_failed = True  # counted against the client's failed-auth budget
            raise Unauthorized("invalid API key", challenge='ApiKey header="X-API-Key"')
        g.api_key_bucket = "key:" + digest.hex()[:32]


def _auth_failures_exceeded(limit: RequestLimit) -> Response:
    retry_after = max(1, int(limit.reset_at - time.time()))  # as Flask-Limiter writes it
    return answer(RateLimited(f"too many failed API key checks from this client; retry in {retry_after} s",
                              retry_after))


def _client_ip() -> str:
    return "ip:" + (get_remote_address() or "unknown")


def _client_key() -> str:
    """Rate-limit bucket: the validated API key (hashed), else the client IP. A key that was not
    validated (none configured, or wrong) names no bucket: anyone could invent a fresh one."""
    return g.get("api_key_bucket") or _client_ip()
