"""bgremove: the service's code. ``app.pipeline`` (no Flask) turns an upload and typed options into
images; ``app.web`` is the HTTP edge (``gunicorn "app.web.factory:create_app()"``); ``app.ops`` its telemetry and tuning."""


def __getattr__(name):  # TEMPORARY during the reshaping (removed before commit)
    if name == "create_app":
        from app.web.factory import create_app
        return create_app
    raise AttributeError(name)
