"""gunicorn settings for both tiers, derived from the validated :class:`config.Settings`.

Started as ``gunicorn -c config/gunicorn.conf.py "app:create_app()"``. A bad
environment variable stops the master here with one line naming it; a model
that fails to load stops the worker (and, through gunicorn's "app failed to
load" exit, the master) with one line naming the file. No traceback either way.
"""

import sys

from config import BootError, ConfigError, Settings

try:
    settings = Settings.from_env()
except ConfigError as exc:
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(2)

bind = [f"{settings.host}:{settings.port}"]
# One process per worker, each with its own model; threads share it. On the 512 MB
# tier that is one worker: a second copy of the model would double the memory.
workers = settings.web_concurrency
worker_class = "gthread"
threads = settings.web_threads
# Not preloaded: each worker loads the model itself, at boot, before it serves.
preload_app = False
# The heartbeat limit; requests themselves are bounded by REQUEST_TIMEOUT_S.
timeout = max(120, int(settings.request_timeout_s * 2))
# SIGTERM: stop accepting, finish in-flight requests for up to this long, then exit.
graceful_timeout = int(settings.graceful_timeout_s)
keepalive = 5
# gunicorn's control socket (one fixed path per user) is unused here; several instances
# on one host would fight over it, and containers may have no writable home.
control_socket_disable = True
loglevel = settings.log_level
accesslog = "-"
errorlog = "-"
# Bound what one connection can make us hold before the app sees it.
limit_request_line = 8190
limit_request_fields = 100


def post_fork(server, worker):
    """Turn a model that will not load into gunicorn's 'App failed to load' exit.

    gunicorn prints an ``AppImportError``'s message alone and halts the master
    (exit 4) instead of respawning the worker forever.
    """
    from gunicorn.errors import AppImportError

    load_wsgi = worker.load_wsgi

    def load_wsgi_or_halt():
        try:
            load_wsgi()
        except BootError as exc:
            raise AppImportError(f"boot error: {exc}") from None

    worker.load_wsgi = load_wsgi_or_halt
