"""app/pipeline/fetch.py against real HTTP(S) origins on loopback: what is refused before any
connection (schemes, credentials, private addresses, DNS rebinding), redirects, the size limit,
the deadline against trickling origins, and certificates checked against the URL's name.

The system resolver (socket.getaddrinfo) is replaced where a test needs a name to resolve to a
chosen address; socket.socket.connect is wrapped where a test must see which address was tried
(and the public one refused, so nothing leaves this machine)."""

from __future__ import annotations

import datetime
import errno
import gzip
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from app.pipeline.errors import ClientGone, FailedImageDownload, InvalidImageUrl
from app.pipeline.fetch import FetchPolicy, fetch, refused_address
from tests.conftest import photo

PHOTO = photo("animal-1.jpg").read_bytes()
PUBLIC = FetchPolicy(max_bytes=2**20, timeout_s=5.0, connect_timeout_s=1.0)  # the default: public addresses only
LOCAL = replace(PUBLIC, allow_private=True)
BOMB = gzip.compress(bytes(8 * 2**20), 9)  # 8 MB of zeros in ~8 KB
PUBLIC_IP = "93.184.216.34"
CODES = [301, 302, 303, 307, 308]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        origin = self.server
        origin.requests.append((self.path, dict(self.headers)))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route, _, arg = url.path.strip("/").partition("/")
        if route == "photo":
            self.answer(200, PHOTO, {"Content-Type": query.get("type", "image/jpeg")})
        elif route == "hops":  # /hops/N: N redirects (relative, each code in turn), then the photo
            n = int(arg)
            if n == 0:
                self.answer(200, PHOTO)
            else:
                self.answer(CODES[n % 5], b"", {"Location": f"/hops/{n - 1}"})
        elif route == "to":  # a redirect to ?u=
            self.answer(int(query.get("code", 302)), b"", {"Location": query["u"]} if "u" in query else {})
        elif route == "loop":
            self.answer(302, b"", {"Location": "/loop"})
        elif route == "status":
            self.answer(int(arg), b"no")
        elif route == "gzip":
            self.answer(200, BOMB, {"Content-Encoding": "gzip"})
        elif route == "huge":  # a Content-Length far over the limit, then nothing: refused from the header alone
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.pour(b"", delay=0.05)
        elif route == "endless":  # chunked, never ending
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.pour(b"%x\r\n%s\r\n" % (65536, bytes(65536)), delay=0.0)
        elif route == "trickle":  # a body of a byte per 50 ms
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.pour(b"x", delay=0.05)
        elif route == "trickle-headers":  # headers of a byte per 50 ms
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self.pour(b"x", delay=0.05)
        elif route == "hang-up":
            self.close_connection = True

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def pour(self, data: bytes, delay: float) -> None:
        """``data`` over and over until the client leaves or the test ends (at most 10 s)."""
        ends = time.monotonic() + 10
        try:
            while not self.server.stopping.is_set() and time.monotonic() < ends:
                self.wfile.write(data)
                self.wfile.flush()
                time.sleep(delay)
        except OSError:
            pass  # the client hung up: what the test wanted
        self.close_connection = True


class Origin(ThreadingHTTPServer):
    """A real HTTP server on loopback, in a thread; ``requests`` lists (path, headers) as they come."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server_address[1]
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up mid-answer are what these tests are about

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


@pytest.fixture()
def origin():
    server = Origin()
    yield server
    server.stop()


@pytest.fixture()
def names(monkeypatch):
    """Names for the system resolver: ``names["x.test"] = [answer, answer...]``, each answer a
    list of addresses, one answer per lookup (the last repeats); ``names.lookups`` counts them."""
    real = socket.getaddrinfo

    class Names(dict):
        lookups: dict[str, int]

    table = Names()
    table.lookups = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            return real(host, port, *args, **kwargs)
        n = table.lookups[host] = table.lookups.get(host, 0) + 1
        answer = table[host][min(n, len(table[host])) - 1]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port) if ":" not in ip else (ip, port, 0, 0)) for ip in answer]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture()
def connects(monkeypatch):
    """Every address a connection is attempted to. The public test address stands for the
    internet: it refuses at once, unless ``connects.route`` sends it to that local port."""
    real = socket.socket.connect

    class Tried(list):
        route: int | None = None

    tried = Tried()

    def connect(sock, address):
        tried.append(address[0])
        if address[0] == PUBLIC_IP:
            if tried.route is None:
                raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
            address = ("127.0.0.1", tried.route)
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


def refused(url: str, policy: FetchPolicy = PUBLIC, error=InvalidImageUrl, **kwargs) -> str:
    with pytest.raises(error) as caught:
        fetch(url, policy, **kwargs)
    assert caught.value.field == kwargs.get("field", "image_url")
    return caught.value.message


# --- What is refused before any connection ---------------------------------------------------

def test_loopback_refused_by_default_and_no_request_reaches_it(origin, connects):
    message = refused(origin.url("/photo"))
    assert message == "image_url: 127.0.0.1 is a loopback address, which this server does not fetch from"
    assert origin.requests == [] and connects == []
    assert refused(origin.url("/photo", host="localhost")).startswith("image_url: localhost resolves to a loopback address")


def test_allow_private_fetches_the_exact_bytes_with_our_headers(origin):
    assert fetch(origin.url("/photo"), LOCAL) == PHOTO
    (_, headers), = origin.requests
    assert headers["User-Agent"] == "bgremove-fetch/1 (+image_url)"
    assert headers["Accept"] == "image/*" and headers["Accept-Encoding"] == "identity"
    assert headers["Host"] == f"127.0.0.1:{origin.port}"


def test_content_type_is_not_trusted_either_way(origin):
    assert fetch(origin.url("/photo?type=text/html"), LOCAL) == PHOTO


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://example.com/a.jpg",
                                 "data:image/png;base64,iVBORw0KGgo=", "example.com/a.jpg", "//example.com/a.jpg",
                                 "javascript:alert(1)"])
def test_only_http_and_https(url, connects):
    assert "only http and https URLs are fetched" in refused(url, LOCAL)
    assert connects == []


@pytest.mark.parametrize("url", ["http://user:pass@example.com/a.jpg", "http://user@example.com/a.jpg",
                                 "http://example.com\\@127.0.0.1/a.jpg"])
def test_credentials_refused(url, connects):
    assert refused(url, LOCAL) == "image_url: credentials in the URL are not allowed"
    assert connects == []


@pytest.mark.parametrize("url", ["http://example.com:99999/", "http://example.com:http/", "http://example.com:0/",
                                 "http://[::1/", "http://exa mple.com/", "http:///a.jpg", "http://example..com/",
                                 "http://exam\nple.com/", "http://2130706433/", "http://1.2.3/",
                                 "http://[fe80::1%25eth0]/", "http://" + "a" * 64 + ".com/"])
def test_malformed_hosts_and_ports_refused(url, connects):
    assert refused(url, LOCAL).startswith("image_url: ")
    assert connects == []


def test_over_long_url_refused(connects):
    url = "http://example.com/" + "a" * 2030
    assert len(url) > 2048
    assert refused(url) == "image_url: the URL is longer than 2048 characters"


@pytest.mark.parametrize("host, kind", [("[::1]", "loopback"), ("[::ffff:127.0.0.1]", "loopback"),
                                        ("[fe80::1]", "link-local"), ("[::]", "unspecified"),
                                        ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"),
                                        ("[64:ff9b::a9fe:a9fe]", "link-local"), ("[2002:a00:1::]", "private")])
def test_address_literals_refused_without_connecting(host, kind, connects):
    assert f" {kind} address, which this server does not fetch from" in refused(f"http://{host}:8080/latest/meta-data/")
    assert connects == []


def test_the_field_is_named(origin):
    message = refused(origin.url("/photo"), field="background_url")
    assert message.startswith("background_url: ")


@pytest.mark.parametrize("address, kind, with_private", [
    ("8.8.8.8", None, None), ("2606:4700:4700::1111", None, None), ("93.184.216.34", None, None),
    ("127.0.0.1", "loopback", None), ("127.255.0.9", "loopback", None), ("::1", "loopback", None),
    ("10.1.2.3", "private", None), ("172.16.0.1", "private", None), ("192.168.1.1", "private", None),
    ("fd00::1", "private", None), ("fec0::1", "private", None),
    ("169.254.169.254", "link-local", None), ("fe80::1", "link-local", None),
    ("100.64.0.1", "shared", None), ("100.127.255.254", "shared", None),
    ("0.0.0.0", "unspecified", "unspecified"), ("0.1.2.3", "unspecified", "unspecified"),
    ("::", "unspecified", "unspecified"),
    ("224.0.0.1", "multicast", "multicast"), ("239.255.255.250", "multicast", "multicast"),
    ("ff02::1", "multicast", "multicast"),
    ("255.255.255.255", "reserved", "reserved"), ("240.0.0.1", "reserved", "reserved"),
    ("192.0.2.1", "reserved", "reserved"), ("198.18.0.1", "reserved", "reserved"),
    ("2001:db8::1", "reserved", "reserved"), ("100::1", "reserved", "reserved"),
    ("::ffff:127.0.0.1", "loopback", None), ("::ffff:169.254.169.254", "link-local", None),
    ("::ffff:8.8.8.8", None, None), ("::127.0.0.1", "loopback", None), ("::8.8.8.8", None, None),
    ("64:ff9b::127.0.0.1", "loopback", None), ("64:ff9b::8.8.8.8", None, None), ("64:ff9b:1::1", "private", None),
    ("2002:7f00:1::", "loopback", None), ("2002:a9fe:a9fe::1", "link-local", None), ("2002:808:808::1", None, None),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback", None),  # Teredo, client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None, None),  # Teredo, client 8.8.8.8
    ("::ffff:224.0.0.1", "multicast", "multicast"), ("::ffff:0.0.0.0", "unspecified", "unspecified"),
])
def test_refused_addresses(address, kind, with_private):
    ip = ipaddress.ip_address(address)
    assert refused_address(ip) == kind
    assert refused_address(ip, allow_private=True) == with_private


# --- One lookup, checked, and the connection made to what was checked -------------------------

def test_dns_rebinding_cannot_redirect_the_connection(origin, names, connects):
    """The first lookup answers a public address, any later one this machine: the connection goes
    to the address that was checked, and no second lookup happens."""
    names["rebind.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    message = refused(origin.url("/photo", host="rebind.test"), error=FailedImageDownload)
    assert message == "image_url: could not connect to rebind.test: connection refused"
    assert names.lookups == {"rebind.test": 1}
    assert connects == [PUBLIC_IP] and origin.requests == []


def test_a_name_with_any_refused_address_is_refused(origin, names, connects):
    names["mixed.test"] = [[PUBLIC_IP, "127.0.0.1"]]
    message = refused(origin.url("/photo", host="mixed.test"))
    assert message == "image_url: mixed.test resolves to a loopback address, which this server does not fetch from"
    assert connects == [] and origin.requests == []


def test_a_name_connects_to_its_checked_address_with_its_host_header(origin, names, connects):
    names["photos.test"] = [["127.0.0.1"]]
    assert fetch(origin.url("/photo", host="photos.test"), LOCAL) == PHOTO
    assert origin.requests[0][1]["Host"] == f"photos.test:{origin.port}"
    assert connects == ["127.0.0.1"] and names.lookups == {"photos.test": 1}


def test_the_next_address_is_tried_when_one_refuses(origin, names, connects):
    names["two.test"] = [[PUBLIC_IP, "127.0.0.1"]]
    assert fetch(origin.url("/photo", host="two.test"), LOCAL) == PHOTO
    assert connects == [PUBLIC_IP, "127.0.0.1"]


def test_ipv6_origin():
    server = Origin("::1")
    try:
        assert refused(server.url("/photo", host="[::1]")).startswith("image_url: ::1 is a loopback address")
        assert fetch(server.url("/photo", host="[::1]"), LOCAL) == PHOTO
        assert server.requests[0][1]["Host"] == f"[::1]:{server.port}"
    finally:
        server.stop()


def test_unresolvable_name(connects):
    assert refused("http://no-such-host.invalid/a.jpg", error=FailedImageDownload) == \
        "image_url: could not resolve no-such-host.invalid"


# --- Redirects ---------------------------------------------------------------------------------

def test_five_redirects_followed_six_refused(origin):
    assert fetch(origin.url("/hops/5"), LOCAL) == PHOTO  # 301, 302, 303, 307, 308, relative
    assert origin.paths() == [f"/hops/{n}" for n in range(5, -1, -1)]
    origin.requests.clear()
    assert refused(origin.url("/hops/6"), LOCAL, FailedImageDownload) == "image_url: more than 5 redirects"
    assert origin.paths() == [f"/hops/{n}" for n in range(6, 0, -1)]
    assert refused(origin.url("/loop"), LOCAL, FailedImageDownload) == "image_url: more than 5 redirects"


@pytest.mark.parametrize("target, why", [
    ("file:///etc/passwd", "only http and https URLs are fetched (got file:)"),
    ("gopher://127.0.0.1:70/_GET", "only http and https URLs are fetched (got gopher:)"),
    ("http://0.0.0.0:{port}/photo", "0.0.0.0 is an unspecified address"),
    ("http://[::]:{port}/photo", ":: is an unspecified address"),
    ("http://user:pw@127.0.0.1:{port}/photo", "credentials in the URL are not allowed"),
    ("http://multicast.test:{port}/photo", "multicast.test resolves to a multicast address"),
])
def test_a_redirect_to_a_refused_url_is_refused_even_with_allow_private(origin, names, connects, target, why):
    names["multicast.test"] = [["224.0.0.1"]]
    location = quote(target.format(port=origin.port), safe="")
    message = refused(origin.url(f"/to?u={location}"), LOCAL, FailedImageDownload)
    assert message.startswith(f"image_url: redirected to a refused URL: {why}")
    assert origin.paths() == [f"/to?u={location}"] and connects == ["127.0.0.1"]


@pytest.mark.parametrize("target, why", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://internal.test/a.jpg", "internal.test resolves to a private address"),
    ("http://127.0.0.1:{port}/photo", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:10.0.0.1]/a.jpg", "::ffff:10.0.0.1 is a private address"),
])
def test_a_redirect_to_a_private_address_is_refused_by_default(origin, names, connects, target, why):
    """cdn.test resolves to a public address, routed to the origin: under the default policy its
    redirect to a private target is refused before any connection to it."""
    names["cdn.test"], names["internal.test"] = [[PUBLIC_IP]], [["10.0.0.5"]]
    connects.route = origin.port
    assert fetch(origin.url("/hops/2", host="cdn.test"), PUBLIC) == PHOTO  # the route works
    connects.clear()
    message = refused(origin.url("/to?u=" + quote(target.format(port=origin.port), safe=""), host="cdn.test"),
                      PUBLIC, FailedImageDownload)
    assert message.startswith(f"image_url: redirected to a refused URL: {why}")
    assert connects == [PUBLIC_IP] and len(origin.requests) == 4


def test_other_answers_name_their_status(origin):
    for status in (404, 500, 300, 304):
        assert refused(origin.url(f"/status/{status}"), LOCAL, FailedImageDownload) == \
            f"image_url: the origin answered {status}"
    assert refused(origin.url("/to?code=302"), LOCAL, FailedImageDownload) == \
        "image_url: the origin answered 302 without a Location"


def test_connection_failures_are_download_failures(origin):
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
    assert refused(f"http://127.0.0.1:{port}/a.jpg", LOCAL, FailedImageDownload) == \
        "image_url: could not connect to 127.0.0.1: connection refused"
    assert refused(origin.url("/hang-up"), LOCAL, FailedImageDownload) == \
        "image_url: the download from 127.0.0.1 failed: the origin closed the connection"
    assert refused(origin.url("/photo", scheme="https"), LOCAL, FailedImageDownload) == \
        "image_url: could not connect to 127.0.0.1: TLS: wrong version number"


# --- The body ----------------------------------------------------------------------------------

def test_the_size_limit(origin):
    exact = replace(LOCAL, max_bytes=len(PHOTO))
    assert fetch(origin.url("/photo"), exact) == PHOTO
    too_large = "image_url: the image is larger than the 0.132 MB upload limit (MAX_FILE_SIZE_MB)"
    assert refused(origin.url("/photo"), replace(exact, max_bytes=len(PHOTO) - 1), FailedImageDownload) == too_large
    started = time.monotonic()
    assert refused(origin.url("/huge"), LOCAL, FailedImageDownload).endswith("larger than the 1 MB upload limit (MAX_FILE_SIZE_MB)")
    assert refused(origin.url("/endless"), LOCAL, FailedImageDownload).endswith("larger than the 1 MB upload limit (MAX_FILE_SIZE_MB)")
    assert time.monotonic() - started < 5


def test_content_encoding_is_not_decoded(origin):
    """A gzip bomb comes back as the bytes received: 8 MB of zeros stay ~8 KB (the decoder refuses them later)."""
    assert len(gzip.decompress(BOMB)) > LOCAL.max_bytes > len(BOMB)
    assert fetch(origin.url("/gzip"), LOCAL) == BOMB


# --- The deadline ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/trickle", "/trickle-headers"])
def test_a_trickling_origin_ends_at_the_deadline(origin, path):
    started = time.monotonic()
    message = refused(origin.url(path), replace(LOCAL, timeout_s=1.0), FailedImageDownload)
    assert message == "image_url: the download took longer than 1 s (URL_FETCH_TIMEOUT_S)"
    assert time.monotonic() - started < 1.0 + 1.5


def test_the_request_deadline_when_earlier(origin):
    started = time.monotonic()
    message = refused(origin.url("/trickle"), LOCAL, FailedImageDownload, deadline=started + 0.5)
    assert message == "image_url: the download ran past the request's deadline"
    assert time.monotonic() - started < 0.5 + 1.5
    assert refused(origin.url("/photo"), LOCAL, FailedImageDownload, deadline=started - 1).endswith("deadline")


def test_a_client_that_leaves_stops_the_download(origin):
    started = time.monotonic()
    with pytest.raises(ClientGone):
        fetch(origin.url("/trickle"), LOCAL, cancelled=lambda: time.monotonic() > started + 0.3)
    assert time.monotonic() - started < 0.3 + 1.5


# --- TLS: the connection goes to the address, the certificate is checked against the name ------

@pytest.fixture()
def tls_origin(tmp_path, monkeypatch, names):
    """An HTTPS origin on 127.0.0.1 with a certificate for photos.test from a test CA, which the
    system's default trust (SSL_CERT_FILE) is pointed at."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def certificate(name, key, issuer, issuer_key, ca):
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("photos.test")]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def subject(cn):
        return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ca.pem").write_bytes(certificate(subject("test CA"), ca_key, subject("test CA"), ca_key, True))
    (tmp_path / "leaf.pem").write_bytes(certificate(subject("photos.test"), key, subject("test CA"), ca_key, False))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    names["photos.test"] = names["other.test"] = [["127.0.0.1"]]
    server = Origin(tls=context)
    server.server_names = server_names
    yield server
    server.stop()


def test_https_connects_to_the_address_and_verifies_the_name(tls_origin):
    assert fetch(tls_origin.url("/photo", host="photos.test", scheme="https"), LOCAL) == PHOTO
    assert tls_origin.server_names == ["photos.test"]
    assert tls_origin.requests[0][1]["Host"] == f"photos.test:{tls_origin.port}"


def test_https_refuses_a_certificate_for_another_name(tls_origin):
    message = refused(tls_origin.url("/photo", host="other.test", scheme="https"), LOCAL, FailedImageDownload)
    assert message.startswith("image_url: could not connect to other.test: TLS certificate")
    assert tls_origin.requests == []
