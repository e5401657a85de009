"""Flask application factory: ``gunicorn -c config/gunicorn.conf.py "app:create_app()"``."""

from __future__ import annotations

import logging

from flask import Flask

from adapters import Segmenter, load_segmenter
from app.ops import logs, observability
from app.pipeline import request_cache
from app.web import bg as api_bg, index as api_index, ops as api_ops, openapi, protection, upload as http_io, v2 as api_v2
from app.web.errors import register_error_handlers
from app.web.upload import MAX_FIELD_BYTES, MAX_FORM_PARTS, UploadRequest
from app.service import EXTENSION_KEY, ServiceState
from config import Settings


def create_app(settings: Settings | None = None, segmenter: Segmenter | None = None) -> Flask:
    """Build the app. The settings come from the environment unless given; the model is
    loaded (and, with WARMUP, run once) here, at boot, never on a request.
    Raises :class:`config.BootError` with a one-line reason if it cannot start."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, settings.log_format, settings.gcp_project)
    segmenter = segmenter or load_segmenter(settings)
    state = ServiceState(settings, segmenter)
    if settings.warmup:
        state.warm_up()

    app = Flask(__name__)
    # Multipart parsing that reads Latin-1 part headers and names each limit it enforces (http_io).
    app.request_class = UploadRequest
    app.config.update(
        # werkzeug refuses larger bodies (also chunked ones) while reading them.
        MAX_CONTENT_LENGTH=settings.max_request_body_bytes,
        MAX_FORM_PARTS=MAX_FORM_PARTS,  # more: 413 too_many_fields
        MAX_FORM_MEMORY_SIZE=MAX_FIELD_BYTES,  # a larger non-file field: 413 field_too_large
    )
    app.json.sort_keys = False
    app.extensions[EXTENSION_KEY] = state
    register_error_handlers(app)
    observability.register(app, state.latency)  # first: its timer and request id cover the other hooks
    protection.register(app, settings)
    http_io.register(app, settings)
    request_cache.register(app)
    app.register_blueprint(api_index.bp)
    app.register_blueprint(api_bg.bp)
    app.register_blueprint(api_bg.compat)
    app.register_blueprint(api_v2.bp)
    app.register_blueprint(api_ops.bp)
    app.register_blueprint(openapi.bp)
    logging.getLogger(__name__).info(
        "serving %s/%s (%s) with %d inference slot(s), queue %d; %s result cache",
        segmenter.info.name, segmenter.info.model_id, segmenter.info.device,
        settings.max_concurrent_inferences, settings.max_queue, state.cache.name,
    )
    return app
