"""gunicorn settings for both tiers, derived from the validated :class:`config.Settings`.

Started as ``gunicorn -c config/gunicorn.conf.py "app.web.factory:create_app()"``. A bad
environment variable stops the master here with one line naming it; a model
that fails to load stops the worker (and, through gunicorn's "app failed to
load" exit, the master) with one line naming the file. No traceback either way.
"""

import contextlib
import os
import shutil
import sys
import tempfile

from app.ops import tuning
from config import BootError, ConfigError, Settings
from config.logformat import JSON_FORMATTER_KWARGS

try:
    settings = Settings.from_env()
except ConfigError as exc:
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(2)


# The onnx tier's malloc tunables (huge pages for onnxruntime's per-run activations in lean and balanced)
# are read by glibc at process start only: restart the master with them now, before it binds or
# forks, so that every worker inherits them (no-op when they are set or not wanted). The app
# package's own __init__ imports nothing, so this loads no app (nor onnxruntime) into the master.
tuning.exec_with_malloc_tunables(settings)

bind = [f"{settings.host}:{settings.port}"]
# One process per worker, each with its own model; threads share it. On the 512 MB
# tier that is one worker: a second copy of the model would double the memory.
workers = settings.web_concurrency
# gthread, with gunicorn's own error answers (malformed requests) in the API's JSON shape.
worker_class = "config.worker.ThreadWorker"
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
# The app writes one access line per request itself (app/observability.py: JSON with Cloud
# Logging's httpRequest, the request id), so gunicorn's own access log is off.
accesslog = None
errorlog = "-"
if settings.log_format == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        # The formatter by its library's name: naming app.ops.logs here would import the whole app into the master.
        "formatters": {"json": {"()": "pythonjsonlogger.json.JsonFormatter", **JSON_FORMATTER_KWARGS}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        # The root logger is the app's (app/logs.py adds its handler in each worker).
        "root": {"level": "WARNING", "handlers": []},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": settings.log_level.upper(), "propagate": False},
            "gunicorn.access": {"handlers": [], "propagate": False},
        },
    }

# Prometheus multiprocess mode: every worker writes its metrics to files in one directory,
# which /metrics adds up. A fresh directory per server start (stale files would add old counts).
if settings.metrics_dir:
    for stale in os.listdir(settings.metrics_dir):
        if stale.endswith(".db"):
            os.unlink(os.path.join(settings.metrics_dir, stale))
    _metrics_dir = settings.metrics_dir
else:
    _metrics_dir = tempfile.mkdtemp(prefix="bgremove-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir  # read by prometheus-client in the workers
# The scheme comes from ProxyFix with PROXY_HOPS (app/protection.py), never from gunicorn: it
# trusts any peer on a unix socket (nginx's, which passes clients' X-Forwarded-Proto through).
secure_scheme_headers = {}
# Bound what one connection can make us hold before the app sees it.
limit_request_line = 8190
limit_request_fields = 100


def child_exit(server, worker):
    """A worker is gone: its live gauges (queue depth, memory) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)


# Created by the first worker that serves, once per server start (see post_worker_init).
_ready_marker = ""


def when_ready(server):
    """Bound, no worker yet: where the first serving worker will mark itself. Beside a unix socket
    (config/serve waits for it there, then starts nginx), else in a directory of this start's own."""
    global _ready_marker
    address = server.cfg.address[0]
    _ready_marker = address + ".ready" if isinstance(address, str) else os.path.join(
        tempfile.mkdtemp(prefix="bgremove-ready-"), "ready")


def post_worker_init(worker):
    """This worker serves (its model loaded and, with WARMUP, run). The first one of this start
    says so: on a TCP port, one "listening on" line; behind config/serve, the marker file it
    waits for (it then prints the line with the edge's address)."""
    try:
        os.close(os.open(_ready_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    address = worker.cfg.address[0]
    if not isinstance(address, str):
        host, port = address
        worker.log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)


def on_exit(server):
    if not settings.metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    if _ready_marker.endswith(".ready"):  # beside a unix socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_ready_marker)
    elif _ready_marker:
        shutil.rmtree(os.path.dirname(_ready_marker), ignore_errors=True)


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
