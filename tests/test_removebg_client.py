"""remove.bg's own npm client, unchanged but for its endpoint, against POST /v1.0/removebg.

The client is the npm package `remove.bg` 1.3.0 (MIT, by Eddy Verbruggen; unirest 0.6 on the
wire), pinned by tests/removebg_client/package-lock.json and installed with `npm ci` into the
git-ignored tests/removebg_client/node_modules. tests/removebg_client/drive.js runs one of its
calls with only its API_ENDPOINT string pointed at a real gunicorn.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import shutil
import subprocess
import threading

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

from tests.conftest import FIXTURES, photo
from tests.serverkit import ROOT, running_server

CLIENT_DIR = ROOT / "tests" / "removebg_client"
NODE = shutil.which("node")
KEY = "client-test-key"
PREVIEW_PIXELS = 250_000  # remove.bg's "preview": at most 0.25 megapixels

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the remove.bg npm client needs it")


def _installed_as_locked() -> bool:
    """npm writes what it installed to node_modules/.package-lock.json: the same packages as the lockfile?"""
    hidden = CLIENT_DIR / "node_modules" / ".package-lock.json"
    if not hidden.is_file():
        return False
    locked = json.loads((CLIENT_DIR / "package-lock.json").read_text())["packages"]
    locked.pop("")
    return json.loads(hidden.read_text())["packages"] == locked


@pytest.fixture(scope="session")
def removebg_client():
    """The locked client in node_modules: `npm ci` once, not again while it matches the lockfile."""
    if not _installed_as_locked():
        npm = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=CLIENT_DIR,
                             capture_output=True, text=True, timeout=300)
        assert npm.returncode == 0, f"npm ci failed:\n{npm.stdout}\n{npm.stderr}"
        assert _installed_as_locked()
    return CLIENT_DIR / "drive.js"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def photos_url():
    """The fixture photos over HTTP on loopback, for image_url and bg_image_url."""
    handler = functools.partial(_QuietHandler, directory=str(FIXTURES / "images"))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Loopback URLs are refused unless private addresses are allowed.
    env = {"API_KEYS": KEY, "URL_FETCH_ALLOW_PRIVATE": "true"}
    with running_server(env, log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def drive(removebg_client, server, call: str, **options) -> dict:
    """One call of the client: {"resolved": result} or {"rejected": what it rejected with}."""
    job = {"call": call, "endpoint": server.url + "/v1.0/removebg", "options": {"apiKey": KEY, **options}}
    done = subprocess.run([NODE, str(removebg_client)], input=json.dumps(job), capture_output=True, text=True,
                          cwd=CLIENT_DIR, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def resolved_image(answer: dict) -> Image.Image:
    """The result's image, after checking the headers the client reports beside it."""
    assert "resolved" in answer, answer
    result = answer["resolved"]
    img = Image.open(io.BytesIO(base64.b64decode(result["base64img"], validate=True)))
    img.load()
    assert result["creditsCharged"] == "0"
    assert (result["resultWidth"], result["resultHeight"]) == (str(img.width), str(img.height))
    assert result["detectedType"]
    return img


def subject_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels of alpha 8/255 and more, as `crop` frames them."""
    rows, cols = np.nonzero(alpha >= 8)
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


def test_file_preview_crop_is_the_subjects_box(removebg_client, server):
    answer = drive(removebg_client, server, "removeBackgroundFromImageFile", path=str(photo("animal-1.jpg")),
                   size="preview", crop=True)
    img = resolved_image(answer)
    assert img.mode == "RGBA" and img.width * img.height <= PREVIEW_PIXELS
    alpha = np.asarray(img.getchannel("A"))
    assert subject_box(alpha) == (0, 0, img.width, img.height)  # the subject touches every edge
    # the same proportions as the subject's box in the full-size cut-out of our own endpoint
    with open(photo("animal-1.jpg"), "rb") as f:
        cutout = requests.post(server.url + "/api/bg/remove", files={"file": f}, headers={"X-API-Key": KEY},
                               timeout=60)
    assert cutout.status_code == 200
    left, top, right, bottom = subject_box(np.asarray(Image.open(io.BytesIO(cutout.content)).getchannel("A")))
    assert img.width / img.height == pytest.approx((right - left) / (bottom - top), rel=0.02)


def test_file_full_bg_color_is_opaque_in_that_colour(removebg_client, server):
    answer = drive(removebg_client, server, "removeBackgroundFromImageFile", path=str(photo("animal-1.jpg")),
                   size="full", bg_color="81d4fa")
    img = resolved_image(answer)
    assert img.size == Image.open(photo("animal-1.jpg")).size
    if img.mode == "RGBA":
        assert np.asarray(img.getchannel("A")).min() == 255
    corner = np.asarray(img.convert("RGB"))[:8, :8].reshape(-1, 3).astype(int)
    assert np.abs(corner - (0x81, 0xD4, 0xFA)).max() <= 3  # JPEG may round a flat colour by a step or two


def test_base64_auto_scale_resizes_the_subject_on_the_photos_canvas(removebg_client, server):
    encoded = base64.b64encode(photo("animal-2.jpg").read_bytes()).decode()
    answer = drive(removebg_client, server, "removeBackgroundFromImageBase64", base64img=encoded, size="auto",
                   scale="80%")
    img = resolved_image(answer)
    assert img.mode == "RGBA" and img.size == Image.open(photo("animal-2.jpg")).size
    left, top, right, bottom = subject_box(np.asarray(img.getchannel("A")))
    share = max((right - left) / img.width, (bottom - top) / img.height)
    assert share == pytest.approx(0.8, abs=0.02)


def test_preview_with_scale_keeps_the_canvas_within_preview(removebg_client, server):
    """remove.bg's `scale` shrinks the subject on the image's canvas; `preview` bounds what comes back."""
    answer = drive(removebg_client, server, "removeBackgroundFromImageFile", path=str(photo("animal-1.jpg")),
                   size="preview", scale="80%")
    img = resolved_image(answer)
    assert img.width * img.height <= PREVIEW_PIXELS
    assert img.width / img.height == pytest.approx(1000 / 667, rel=0.01)  # animal-1's proportions
    left, top, right, bottom = subject_box(np.asarray(img.getchannel("A")))
    assert max((right - left) / img.width, (bottom - top) / img.height) == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize("call, source", [
    ("removeBackgroundFromImageFile", "path"),  # multipart
    ("removeBackgroundFromImageBase64", "base64img"),  # JSON
])
def test_declared_type_comes_back_as_detected_type(removebg_client, server, call, source):
    image = photo("animal-2.jpg")
    value = str(image) if source == "path" else base64.b64encode(image.read_bytes()).decode()
    answer = drive(removebg_client, server, call, type="animal", **{source: value})
    resolved_image(answer)
    assert answer["resolved"]["detectedType"] == "animal"


def test_url_with_background_image_url(removebg_client, server, photos_url):
    answer = drive(removebg_client, server, "removeBackgroundFromImageUrl", url=photos_url + "/animal-2.jpg",
                   size="full", bg_image_url=photos_url + "/plants-1.jpg")
    img = resolved_image(answer)
    assert img.size == Image.open(photo("animal-2.jpg")).size
    # animal-2's top left is sky, so there the result is the background, scaled to cover the canvas
    background = ImageOps.fit(Image.open(photo("plants-1.jpg")).convert("RGB"), img.size)
    got = np.asarray(img.convert("RGB"))[:16, :16].astype(int)
    want = np.asarray(background)[:16, :16].astype(int)
    assert np.abs(got - want).mean() <= 12
    assert np.abs(got - np.asarray(Image.open(photo("animal-2.jpg")).convert("RGB"))[:16, :16]).mean() > 40


def test_wrong_key_rejects_with_removebg_errors(removebg_client, server):
    answer = drive(removebg_client, server, "removeBackgroundFromImageFile", path=str(photo("animal-1.jpg")),
                   apiKey="not-the-key")
    errors = answer.get("rejected")
    assert isinstance(errors, list) and len(errors) == 1, answer
    assert errors[0]["code"] == "auth_failed" and errors[0]["title"]
