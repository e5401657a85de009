"""Image URLs fetched safely: the one way the service downloads what a client names.

Every hop (the URL, then each redirect) is checked before any connection: http(s) only, no
credentials, a sane host and port; the host is resolved once and every address judged
(:func:`refused_address`), then the connection goes to the checked address itself, so that
no second lookup (DNS rebinding) can change where it lands. The whole download ends by one
deadline however slowly the origin sends; the body is cut off as soon as it passes the upload
limit, and nothing is decompressed. docs/urls.md has the why of each rule.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException, RemoteDisconnected
from typing import Callable
from urllib.parse import quote, urljoin, urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util.ssl_match_hostname import CertificateError

from app.pipeline.errors import ClientGone, FailedImageDownload, InvalidImageUrl

MAX_URL_CHARS = 2048
REDIRECTS = frozenset({301, 302, 303, 307, 308})
HEADERS = {"User-Agent": "bgremove-fetch/1 (+image_url)", "Accept": "image/*",
           "Accept-Encoding": "identity", "Connection": "close"}
READ_BYTES = 64 * 1024
POLL_S = 0.1  # how often the client's presence is checked while waiting
ALLOWED_WITH_PRIVATE = frozenset({"loopback", "private", "link-local", "shared"})
_KINDS = [(ipaddress.ip_network(net), kind) for net, kind in [
    ("0.0.0.0/8", "unspecified"), ("::/128", "unspecified"),
    ("224.0.0.0/4", "multicast"), ("ff00::/8", "multicast"),
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
    ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
    ("fc00::/7", "private"), ("fec0::/10", "private"), ("64:ff9b:1::/48", "private"),
    ("100.64.0.0/10", "shared"),
]]
_EMBEDS_LOW_32 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96")]  # NAT64, IPv4-compatible
_HOSTNAME = re.compile(r"(?=.{1,253}$)[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*\.?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# getaddrinfo takes no timeout: it runs here, waited on for the time left, so that a hung
# resolver holds one of these threads for a while, never the request.
_RESOLVER = ThreadPoolExecutor(max_workers=8, thread_name_prefix="url-resolve")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int  # the upload limit
    timeout_s: float  # the whole fetch: lookups, connections, redirects, body
    connect_timeout_s: float  # each connection
    allow_private: bool = False  # loopback, private, link-local and shared addresses reachable
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings) -> FetchPolicy:
        return cls(max_bytes=settings.max_file_size_bytes, timeout_s=settings.url_fetch_timeout_s,
                   connect_timeout_s=settings.url_fetch_connect_timeout_s,
                   allow_private=settings.url_fetch_allow_private)


def address_kind(ip: IPAddress) -> str | None:
    """What makes ``ip`` other than a public unicast address (``loopback``, ``private``,
    ``link-local``, ``shared``, ``unspecified``, ``multicast``, ``reserved``), None when nothing
    does. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are
    judged by it: ``::ffff:127.0.0.1`` is this machine."""
    if ip.version == 6:
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(ip in net for net in _EMBEDS_LOW_32) and int(ip) > 1:  # not :: or ::1
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        kinds = [address_kind(v4) for v4 in embedded if v4 is not None]
        if kinds:
            return next((k for k in kinds if k), None)
    kind = next((kind for net, kind in _KINDS if ip in net), None)
    return kind or (None if ip.is_global else "reserved")


def refused_address(ip: IPAddress, allow_private: bool = False) -> str | None:
    """Why the server may not connect to ``ip`` (its kind), None when it may. ``allow_private``
    opens loopback, private, link-local and shared addresses; unspecified (``0.0.0.0`` reaches
    this machine), multicast and reserved addresses are never targets."""
    kind = address_kind(ip)
    return None if kind is None or (allow_private and kind in ALLOWED_WITH_PRIVATE) else kind


class _Refused(Exception):
    """A URL refused before any connection: InvalidImageUrl for the client's, FailedImageDownload for a redirect's."""


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII, lower case; an IP literal without brackets
    written: str  # the host as the URL has it (for messages)
    port: int
    path: str  # the request target, percent-encoded
    host_header: str
    ip: IPAddress | None  # the host, when it is an IP literal


def _parse_url(url: str) -> _Target:
    """The parts of ``url`` a connection needs, or _Refused: what no connection should be tried for."""
    if len(url) > MAX_URL_CHARS:
        raise _Refused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if _CONTROL.search(url):
        raise _Refused("the URL contains control characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise _Refused("not a valid URL (malformed host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _Refused(f"only http and https URLs are fetched (got {scheme + ':' if scheme else 'no scheme'})")
    if "@" in parts.netloc:
        raise _Refused("credentials in the URL are not allowed")
    host = parts.hostname or ""
    try:
        ip = ipaddress.ip_address(host) if ":" in host or host.replace(".", "").isdigit() else None
    except ValueError:
        raise _Refused("not a valid URL (malformed host)") from None
    if ip is None:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _Refused("not a valid URL (malformed host)") from None
        if not _HOSTNAME.fullmatch(host):
            raise _Refused("not a valid URL (malformed host)")
    elif ip.version == 6 and ip.scope_id:
        raise _Refused("not a valid URL (IPv6 zone in the host)")
    if port == 0:
        raise _Refused("not a valid URL (port 0)")
    default = 443 if scheme == "https" else 80
    shown = f"[{ip.compressed}]" if ip and ip.version == 6 else host
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~") + (
        "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~?") if parts.query else "")
    return _Target(scheme, ip.compressed if ip else host, parts.hostname or "", port or default, path,
                   shown if port in (None, default) else f"{shown}:{port}", ip)


class _Watchdog:
    """Shuts the current connection down at the deadline, or when the client leaves: a blocking
    read (headers, TLS handshake, body) ends then, however slowly the origin trickles bytes,
    which a per-read timeout alone would not ensure. It holds its own duplicate of the socket,
    so it never touches a descriptor that was closed and reused."""

    def __init__(self, ends: float, cancelled: Callable[[], bool] | None):
        self.ends, self.cancelled = ends, cancelled
        self.fired: str | None = None  # "deadline" or "cancelled"
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._run, name="url-fetch-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            wait = self.ends - time.monotonic()
            if self._stopped.wait(max(0.0, min(wait, POLL_S) if self.cancelled else wait)):
                return
            if time.monotonic() >= self.ends:
                return self._fire("deadline")
            if self.cancelled is not None and self.cancelled():
                return self._fire("cancelled")

    def _fire(self, reason: str) -> None:
        with self._lock:
            self.fired = reason
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._close()
            self._sock = sock.dup()
            if self.fired:
                self._shutdown()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            self._close()


class _Watched:
    """A urllib3 connection whose new socket goes to the watchdog before anything is read from it."""

    watchdog: _Watchdog

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self.watchdog.watch(sock)
        return sock


class _HTTP(_Watched, HTTPConnection):
    pass


class _HTTPS(_Watched, HTTPSConnection):
    pass


def fetch(url: str, policy: FetchPolicy, *, field: str = "image_url", deadline: float | None = None,
          cancelled: Callable[[], bool] | None = None) -> bytes:
    """The body at ``url``, or InvalidImageUrl / FailedImageDownload (``field`` names the
    request's field). It ends by the earlier of ``deadline`` (monotonic) and ``timeout_s`` from
    now; ``cancelled()`` true (the client left) stops it with ClientGone."""
    ends = time.monotonic() + policy.timeout_s
    why_late = f"the download took longer than {policy.timeout_s:g} s (URL_FETCH_TIMEOUT_S)"
    if deadline is not None and deadline < ends:
        ends, why_late = deadline, "the download ran past the request's deadline"
    watchdog = _Watchdog(ends, cancelled)
    try:
        return _Fetch(policy, field, ends, why_late, watchdog).run(url)
    finally:
        watchdog.stop()


@dataclass
class _Fetch:
    policy: FetchPolicy
    field: str
    ends: float
    why_late: str
    watchdog: _Watchdog

    def failed(self, message: str) -> FailedImageDownload:
        return FailedImageDownload(f"{self.field}: {message}", field=self.field)

    def check(self) -> None:
        if self.watchdog.fired == "cancelled":
            raise ClientGone("the client closed the connection; the download was stopped")
        if self.watchdog.fired or time.monotonic() >= self.ends:
            raise self.failed(self.why_late)

    def run(self, url: str) -> bytes:
        for hop in range(self.policy.max_redirects + 1):
            try:
                target = _parse_url(url)
                addresses = self.resolve(target)
            except _Refused as e:
                if hop == 0:
                    raise InvalidImageUrl(f"{self.field}: {e}", field=self.field) from None
                raise self.failed(f"redirected to a refused URL: {e}") from None
            location = self.get(target, addresses)
            if isinstance(location, bytes):
                return location
            url = urljoin(url, location)
        raise self.failed(f"more than {self.policy.max_redirects} redirects")

    def resolve(self, target: _Target) -> list[IPAddress]:
        """The host's addresses, looked up once, each judged: one refused refuses them all."""
        if target.ip is not None:
            addresses = [target.ip]
        else:
            lookup = _RESOLVER.submit(socket.getaddrinfo, target.host, target.port, type=socket.SOCK_STREAM)
            while True:
                self.check()
                try:
                    infos = lookup.result(timeout=max(0.0, min(self.ends - time.monotonic(), POLL_S)))
                    break
                except TimeoutError:
                    continue
                except (OSError, UnicodeError):
                    raise self.failed(f"could not resolve {target.host}") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for ip in addresses:
            kind = refused_address(ip, self.policy.allow_private)
            if kind:
                what = "is" if target.ip else "resolves to"
                article = "an" if kind[0] in "aeiou" else "a"
                raise _Refused(f"{target.written} {what} {article} {kind} address, which this server does not fetch from")
        return addresses

    def get(self, target: _Target, addresses: list[IPAddress]) -> bytes | str:
        """The body, or the Location of a redirect."""
        conn, response = self.connect(target, addresses), None
        try:
            conn.timeout = max(self.ends - time.monotonic(), 0.001)
            conn.request("GET", target.path, headers={"Host": target.host_header, **HEADERS},
                         preload_content=False, decode_content=False)
            response = conn.getresponse()
            if response.status in REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise self.failed(f"the origin answered {response.status} without a Location")
                return location
            if not 200 <= response.status < 300:
                raise self.failed(f"the origin answered {response.status}")
            return self.body(response)
        except (HTTPError, HTTPException, OSError) as e:
            self.check()
            raise self.failed(f"the download from {target.host} failed: {_reason(e)}") from None
        finally:
            if response is not None:
                response.close()  # with Connection: close, the socket is the response's
            conn.close()

    def connect(self, target: _Target, addresses: list[IPAddress]) -> HTTPConnection:
        """A connection to the first checked address that answers (the next on failure)."""
        failure: Exception | None = None
        for ip in addresses:
            self.check()
            timeout = min(self.policy.connect_timeout_s, self.ends - time.monotonic())
            if target.scheme == "https":  # the certificate is verified against the name, not the address
                conn: HTTPConnection = _HTTPS(ip.compressed, target.port, timeout=timeout, cert_reqs="CERT_REQUIRED",
                                              server_hostname=target.host, assert_hostname=target.host)
            else:
                conn = _HTTP(ip.compressed, target.port, timeout=timeout)
            conn.watchdog = self.watchdog
            try:
                conn.connect()
                return conn
            except (HTTPError, OSError, CertificateError) as e:
                conn.close()
                self.check()
                failure = e
                if not isinstance(e, ConnectTimeoutError):  # TLS: an origin answered there; no other address
                    break
        if isinstance(failure, ConnectTimeoutError) and not isinstance(failure, NewConnectionError):
            raise self.failed(f"could not connect to {target.host} within {self.policy.connect_timeout_s:g} s")
        raise self.failed(f"could not connect to {target.host}: {_reason(failure)}")

    def body(self, response: BaseHTTPResponse) -> bytes:
        limit = self.policy.max_bytes
        too_large = self.failed(f"the image is larger than the {round(limit / 2**20, 3):g} MB upload limit (MAX_FILE_SIZE_MB)")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large
        body = bytearray()
        while chunk := response.read(min(READ_BYTES, limit + 1 - len(body)), decode_content=False):
            body += chunk
            if len(body) > limit:
                raise too_large
            self.check()
        self.check()  # a body cut short by the watchdog reads as a clean end
        return bytes(body)


def _reason(e: BaseException) -> str:
    """A short reason for a failed connection, from the innermost error."""
    while isinstance(e, (HTTPError, HTTPException)) and (e.__cause__ or e.__context__):
        e = e.__cause__ or e.__context__
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {(e.reason or str(e)).lower().replace('_', ' ')}"
    if isinstance(e, CertificateError):  # urllib3's own check of the name
        return "TLS certificate: the name does not match"
    if isinstance(e, RemoteDisconnected):
        return "the origin closed the connection"
    if isinstance(e, (ProtocolError, HTTPException)):
        return "the connection broke before the whole answer arrived"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return type(e).__name__
