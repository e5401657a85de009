"""bgremove: the service's code. ``app.pipeline`` (no Flask) turns an upload and typed options into
images, ``app.quality`` measures cut-outs against true mattes, ``app.web`` is the HTTP edge
(``gunicorn "app.web.factory:create_app()"``), ``app.ops`` its telemetry and process tuning."""
