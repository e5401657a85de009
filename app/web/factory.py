"""The Flask application factory: ``gunicorn -c config/gunicorn.conf.py "app.web.factory:create_app()"``."""

from __future__ import annotations

import logging

from flask import Flask

from adapters import Segmenter
from app.ops import logs, observability
from app.pipeline.runtime import build_runtime
from app.web import EXTENSION_KEY, bg, index, openapi, ops, protection, removebg, v2
from app.web.errors import register_error_handlers
from app.web.multipart import MAX_FIELD_BYTES, MAX_FORM_PARTS, UploadRequest
from config import Settings


def create_app(settings: Settings | None = None, segmenter: Segmenter | None = None) -> Flask:
    """Build the app. The settings come from the environment unless given; the runtime (the model
    with it) is built here, at boot (:func:`app.pipeline.runtime.build_runtime`).
    Raises :class:`config.BootError` with a one-line reason if it cannot start."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, settings.log_format, settings.gcp_project)
    runtime = build_runtime(settings, segmenter)
    segmenter = runtime.segmenter

    app = Flask(__name__)
    # Multipart parsing that reads Latin-1 part headers and names each limit it enforces (web/multipart.py).
    app.request_class = UploadRequest
    app.config.update(
        # werkzeug refuses larger bodies (also chunked ones) while reading them.
        MAX_CONTENT_LENGTH=settings.max_request_body_bytes,
        MAX_FORM_PARTS=MAX_FORM_PARTS,  # more: 413 too_many_fields
        MAX_FORM_MEMORY_SIZE=MAX_FIELD_BYTES,  # a larger non-file field: 413 field_too_large
    )
    app.json.sort_keys = False
    app.extensions[EXTENSION_KEY] = runtime
    register_error_handlers(app, settings.max_file_size_mb)
    observability.register(app)  # first: its timer and request id cover the other hooks
    protection.register(app, settings)
    for blueprint in (index.bp, bg.bp, bg.compat, v2.bp, removebg.bp, ops.bp, openapi.bp):
        app.register_blueprint(blueprint)
    engine = segmenter.runtime()
    logging.getLogger(__name__).info(
        "serving %s/%s (%s%s) with %d inference slot(s), queue %d; %s result cache",
        segmenter.info.name, segmenter.info.model_id, segmenter.info.device,
        "".join(f", {engine[k]}" for k in ("engine", "precision", "precision_reason") if engine.get(k)),
        settings.max_concurrent_inferences, settings.max_queue, runtime.cache.name,
    )
    return app
