"""The service as deployed: nginx in front of gunicorn, one container (started by ``config/serve``).

Why a proxy in front: gunicorn's gthread worker hands a connection to a thread as soon as
its first byte arrives, and the thread then blocks reading headers and body with no
deadline. A few idle, dripping or slow-uploading clients (one per thread) stopped every
request, health probes included. nginx reads each request completely (headers within
``HEADER_TIMEOUT_S``, the body with at most ``BODY_TIMEOUT_S`` between two reads, every body
spooled to a temporary file) with an event loop that holds thousands of slow
connections for a few KB each, and only then passes it to gunicorn over a unix socket;
a thread is never spent waiting on a client. It also buffers responses for slow readers
and answers its own errors (malformed requests, oversized headers, timeouts, the app not
up yet) in the service's JSON error shape. This is the arrangement gunicorn's own
deployment docs prescribe.

This module renders nginx's configuration from the settings. ``config/serve``, a POSIX shell
script (about 1 MB resident, where a Python supervisor took 15 of the 512 MB tier's budget), is
the container's process 1: it starts gunicorn, then nginx once a worker serves (its model loaded
and warm: until then the port is closed, so nginx never finds the app's socket missing and
logs no [crit]), prints one ``listening on http://HOST:PORT`` line, and on SIGTERM stops them in the order
that loses nothing: nginx first (it stops accepting and finishes every request it has taken,
so queued requests are answered), then gunicorn. If either exits on its own, the other is
stopped and the exit status passed on, so the platform restarts the container.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from config import ConfigError, Settings

HEADER_TIMEOUT_S = 10  # the whole request line and headers (nginx: client_header_timeout)
BODY_TIMEOUT_S = 20  # between two reads of the body: a phone uploading slowly is fine, a stalled one is cut
SEND_TIMEOUT_S = 30  # between two writes of the response
KEEPALIVE_S = 15
# Per connection, nginx holds at most a 1 KB header buffer (2 x 8 KB for long headers) and this
# much of the body in memory, as its write buffer: every body waits in a temporary file until
# complete (client_body_in_file_only; removed after the request), so every connection held open at
# once costs at most ~34 MB. A buffer sized to the largest body instead would let one client's
# PER_CLIENT_CONNECTIONS uploads hold 64 x 8 MB in memory, the whole 512 MB tier. Bodies always on
# disk are logged at notice, under the error log's level; bodies spilling over a buffer were
# logged as a warning for most uploads.
BODY_BUFFER = "16k"
MAX_CONNECTIONS = 2048
# Connections one client may hold at once (429 past it), so that no single client can take the
# edge's connections: a browser opens 6, a batch client a few dozen.
PER_CLIENT_CONNECTIONS = 64

# Errors nginx answers itself, in the API's shape. 502/504: the app is not answering (booting
# or restarting); the client should retry.
_EDGE_ERRORS = {
    400: (400, "bad_request", "malformed HTTP request"),
    413: (413, "file_too_large", "the request body is larger than allowed"),
    414: (414, "uri_too_long", "the request line is too long"),
    405: (405, "method_not_allowed", "the method is not allowed"),
    411: (411, "length_required", "the request needs a Content-Length"),
    417: (417, "expectation_failed", "the Expect header cannot be met"),
    429: (429, "too_many_connections", "too many connections from this client at once; retry shortly"),
    494: (431, "request_header_fields_too_large", "the request headers are too large"),
    500: (503, "unavailable", "the service is not answering; retry shortly"),
    502: (503, "unavailable", "the service is starting or restarting; retry shortly"),
    503: (503, "unavailable", "the service is not answering; retry shortly"),
    501: (501, "not_implemented", "the request uses a transfer coding or method this server does not implement"),
    504: (503, "timeout", "the service did not answer in time; retry shortly"),
    505: (505, "http_version_not_supported", "the HTTP version is not supported"),
}
# The edge's answers that remove.bg names otherwise (status, code), under /v1.0/.
_REMOVEBG_EDGE = {413: (400, "file_too_large"), 429: (429, "rate_limit_exceeded")}


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not found:
        raise ConfigError("nginx: not installed (run `make setup`, or `apt-get install nginx-light`)")
    return found


def render_nginx_conf(settings: Settings, run_dir: Path, upstream: Path) -> str:
    """nginx.conf for ``settings``: listen on HOST:PORT, pass complete requests to ``upstream``."""
    max_body = settings.max_request_body_bytes
    # The app's own deadline plus room for encoding, so nginx never cuts an answer the app will give.
    read_timeout = int(settings.request_timeout_s) + 30
    temp = {name: run_dir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    user = "user root;" if os.geteuid() == 0 else ""  # as root, nginx would drop its workers to nobody
    error_pages = []
    for status, (answer, code, message) in _EDGE_ERRORS.items():
        error_pages.append(f"    error_page {status} ={answer} /_edge/{status};")
        error_pages.append(
            f"    location = /_edge/{status} {{ internal; default_type application/json;"
            f"{' add_header Retry-After 2 always;' if answer in (429, 503) else ''}"
            " add_header X-Content-Type-Options nosniff always; add_header Cache-Control no-store always;"
            f" return {answer} '{{\"error\": {{\"code\": \"{code}\", \"message\": \"{message}\"}}}}\\n'; }}"
        )
    error_block = "\n".join(error_pages)
    # Under remove.bg's API (/v1.0/) the same answers in its shape, {"errors": [{title, code, detail}]},
    # and its statuses: a body too large is its 400 file_too_large, too many connections its 429.
    # A location with error_page directives inherits none of the server's, so it lists them all.
    removebg_pages = []
    for status, (answer, code, message) in _EDGE_ERRORS.items():
        answer, code = _REMOVEBG_EDGE.get(status, (answer, code))
        title = code.replace("_", " ").capitalize()
        removebg_pages.append(f"      error_page {status} ={answer} /_edge/removebg/{status};")
        error_pages.append(
            f"    location = /_edge/removebg/{status} {{ internal; default_type application/json;"
            f"{' add_header Retry-After 2 always;' if answer in (429, 503) else ''}"
            " add_header X-Content-Type-Options nosniff always; add_header Cache-Control no-store always;"
            f" return {answer} '{{\"errors\": [{{\"title\": \"{title}\", \"code\": \"{code}\", "
            f"\"detail\": \"{message}\"}}]}}\\n'; }}"
        )
    error_block = "\n".join(error_pages)
    removebg_block = "\n".join(removebg_pages)
    # PROXY_HOPS counts the edge (config/serve makes 0 or unset 1): the proxies in front of it are one fewer.
    outer = max(settings.proxy_hops, 1) - 1
    # The client a connection belongs to: the peer, or behind outer proxies the address the
    # outermost trusted one appended to X-Forwarded-For (the app's ProxyFix reads the same one).
    if outer:
        last = r"(?:,[^,]*)" + "{%d}" % (outer - 1) if outer > 1 else ""
        client = ("map $http_x_forwarded_for $edge_client {\n"
                  f'    "~(?<addr>[^,\\s]+)\\s*{last}$" $addr;\n    default $remote_addr;\n  }}\n'
                  "  limit_conn_zone $edge_client zone=per_client:2m;")
        # Each trusted proxy appends what it saw; the app counts PROXY_HOPS from the end.
        forwarded = ("$proxy_add_x_forwarded_for", "$edge_forwarded_proto", "$edge_forwarded_host")
        client += ('\n  map $http_x_forwarded_proto $edge_forwarded_proto { "" $scheme; default "$http_x_forwarded_proto, $scheme"; }'
                   '\n  map $http_x_forwarded_host $edge_forwarded_host { "" $http_host; default "$http_x_forwarded_host, $http_host"; }')
    else:
        client = "limit_conn_zone $binary_remote_addr zone=per_client:2m;"
        # The edge is the outermost trusted proxy: the client's own X-Forwarded-* are replaced, never
        # appended to, so no client chooses the address its rate limit is counted against.
        forwarded = ("$remote_addr", "$scheme", "$http_host")
    return f"""# Rendered by config/edge.py at start; do not edit.
worker_processes 1;
worker_rlimit_nofile {4 * MAX_CONNECTIONS};  # a client connection and its upstream socket each
daemon off;
{user}
pid {run_dir}/nginx.pid;
error_log stderr warn;
worker_shutdown_timeout {int(settings.graceful_timeout_s)}s;  # SIGQUIT: finish what was taken, for this long at most
events {{ worker_connections {MAX_CONNECTIONS}; }}
http {{
  access_log off;  # the app writes one JSON access line per request
  server_tokens off;
  client_body_temp_path {temp['body']};
  proxy_temp_path {temp['proxy']};
  fastcgi_temp_path {temp['fastcgi']};
  uwsgi_temp_path {temp['uwsgi']};
  scgi_temp_path {temp['scgi']};
  client_header_timeout {HEADER_TIMEOUT_S}s;
  client_body_timeout {BODY_TIMEOUT_S}s;
  send_timeout {SEND_TIMEOUT_S}s;
  keepalive_timeout {KEEPALIVE_S}s;
  reset_timedout_connection on;
  client_max_body_size {max_body};
  client_body_buffer_size {BODY_BUFFER};
  client_body_in_file_only clean;
  client_header_buffer_size 1k;
  large_client_header_buffers 2 8k;
  {client}
  limit_conn_status 429;
  limit_conn_log_level warn;
  upstream app {{ server unix:{upstream}; }}
  server {{
    listen {settings.host}:{settings.port} backlog=1024;
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For {forwarded[0]};
    proxy_set_header X-Forwarded-Proto {forwarded[1]};
    proxy_set_header X-Forwarded-Host {forwarded[2]};
    proxy_request_buffering on;  # the whole body first, then the app
    proxy_buffering on;  # and the whole answer, so slow readers do not hold a thread
    proxy_connect_timeout 5s;
    proxy_read_timeout {read_timeout}s;
    proxy_send_timeout {read_timeout}s;
    location / {{
      limit_conn per_client {PER_CLIENT_CONNECTIONS};
      proxy_pass http://app;
    }}
    # remove.bg's API takes the image as base64 in the body too: a third larger
    location /v1.0/ {{
      limit_conn per_client {PER_CLIENT_CONNECTIONS};
      client_max_body_size {settings.max_b64_body_bytes};
      proxy_pass http://app;
{removebg_block}
    }}
    # the platform's probes are never refused for the connections their address holds
    location ~ ^/(api/bg/)?health$ {{
      proxy_pass http://app;
    }}
{error_block}
  }}
}}
"""


def main(argv: list[str]) -> int:
    """``python -m config.edge render DIR``: validate the settings, write DIR/nginx.conf and DIR/url
    (the public address config/serve announces). One line
    on stderr and exit status 2 if a setting is bad or nginx is missing (config/serve stops there)."""
    if len(argv) != 2 or argv[0] != "render":
        sys.stderr.write("usage: python -m config.edge render RUN_DIR\n")
        return 2
    try:
        settings = Settings.from_env()
        nginx_binary()
    except ConfigError as exc:
        sys.stderr.write(f"config error: {exc}\n")
        return 2
    run_dir = Path(argv[1])
    (run_dir / "nginx.conf").write_text(render_nginx_conf(settings, run_dir, run_dir / "app.sock"))
    (run_dir / "url").write_text(public_url(settings) + "\n")
    return 0


def public_url(settings: Settings) -> str:
    """Where clients reach the service: HOST:PORT (the edge's when it runs, else gunicorn's)."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
