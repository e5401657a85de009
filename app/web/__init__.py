"""The HTTP edge: the app factory (``factory.py``), blueprints, forms and uploads, errors as JSON,
auth and protection, OpenAPI. The pipeline it drives is ``app.pipeline``; this package is its only Flask user."""

from __future__ import annotations

from flask import current_app

from app.pipeline.runtime import Runtime

EXTENSION_KEY = "bgremove"  # where the app keeps its Runtime


def current_runtime() -> Runtime:
    """The :class:`~app.pipeline.runtime.Runtime` of the app serving this request."""
    return current_app.extensions[EXTENSION_KEY]
