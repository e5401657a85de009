"""Admin endpoints: ``Authorization: Bearer <ADMIN_TOKEN>``.

401 without a bearer token, 403 with a wrong one, 403 ``admin_disabled`` when no
``ADMIN_TOKEN`` is configured (the endpoints are then off for everyone).
The comparison takes the same time whatever the token's prefix (hmac.compare_digest).
"""

from __future__ import annotations

import hmac

from flask import request

from app.web.errors import Forbidden, Unauthorized
from config import Settings


def require_admin(settings: Settings) -> None:
    if not settings.admin_token:
        raise Forbidden("admin endpoints are disabled on this server (ADMIN_TOKEN is not set)", code="admin_disabled")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("admin token required: send `Authorization: Bearer <token>`")
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), settings.admin_token.encode("utf-8")):
        raise Forbidden("wrong admin token")
