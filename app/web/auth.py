"""Admin endpoints: ``@admin_required``, ``Authorization: Bearer <ADMIN_TOKEN>``.

401 without a bearer token, 403 with a wrong one, 403 ``admin_disabled`` when no
``ADMIN_TOKEN`` is configured (the endpoints are then off for everyone).
The comparison takes the same time whatever the token's prefix (hmac.compare_digest).
"""

from __future__ import annotations

import functools
import hmac
from typing import Any, Callable

from flask import request

from app.web import current_runtime
from app.web.errors import Forbidden, Unauthorized


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def endpoint(**kwargs: Any) -> Any:
        _check_admin(current_runtime().settings.admin_token)
        return view(**kwargs)

    endpoint.admin = True  # type: ignore[attr-defined]  # /openapi.json documents its security
    return endpoint


def _check_admin(admin_token: str) -> None:
    if not admin_token:
        raise Forbidden("admin endpoints are disabled on this server (ADMIN_TOKEN is not set)", code="admin_disabled")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("admin token required: send `Authorization: Bearer <token>`")
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), admin_token.encode("utf-8")):
        raise Forbidden("wrong admin token")
