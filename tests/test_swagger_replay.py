"""What the /docs page's "Try it out" sends, replayed without a browser; the 413's message; the
error table of /openapi.json, generated from app.web.errors.ERRORS and the settings."""

import io
import json

from openapi_spec_validator import validate
from PIL import Image

from app.web.errors import ERRORS
from tests.conftest import photo

DOG = photo("animal-1.jpg").read_bytes()
BOUNDARY = "----WebKitFormBoundarySwaggerReplay"


def swagger_form(operation: dict) -> dict[str, str]:
    """Each property's default, as text (what Swagger UI prefills). The real Swagger UI, run in
    chromium (tests/test_docs_page.py), also sends the fields without a default as empty text, and a
    blank file input as an empty text part: test_a_blank_file_input_sent_as_an_empty_text_part_is_no_file."""
    properties = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    form = {}
    for name, prop in properties.items():
        if prop.get("format") == "binary" or "default" not in prop:
            continue
        default = prop["default"]
        form[name] = json.dumps(default) if isinstance(default, bool) else str(default)
    return form


def multipart(fields: dict[str, str], files: list[tuple[str, str, str, bytes]]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for name, filename, mimetype, data in files:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {mimetype}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def test_try_it_out_with_an_empty_background_file_part_succeeds(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/api/bg/remove", "/api/bg/change_color", "/remove-background", "/api/v2/process"):
        form = swagger_form(spec["paths"][path]["post"])
        if path == "/api/v2/process":
            form["effects"] = '["8bit"]'  # required: the one field a user must fill in
        body = multipart(form, [("file", "dog.jpg", "image/jpeg", DOG),
                                ("background_file", "", "application/octet-stream", b"")])
        resp = client.post(path, data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
        assert resp.status_code == 200, (path, resp.get_json())
        if path == "/api/v2/process":
            assert set(resp.get_json()["images"]) == {"8bit"}
        else:
            assert resp.mimetype.startswith("image/")
            Image.open(io.BytesIO(resp.data)).load()
    # change_color untouched: over its `color` (white), not the transparent a document once advertised
    cc = client.post("/api/bg/change_color", content_type=f"multipart/form-data; boundary={BOUNDARY}",
                     data=multipart(swagger_form(spec["paths"]["/api/bg/change_color"]["post"]),
                                    [("file", "dog.jpg", "image/jpeg", DOG)]))
    assert cc.mimetype == "image/jpeg" and Image.open(io.BytesIO(cc.data)).getpixel((0, 0)) >= (240, 240, 240)


def test_a_blank_file_input_sent_as_an_empty_text_part_is_no_file(client):
    """What the real Swagger UI sends (tests/test_docs_page.py runs it in chromium): every field, the
    empty ones as empty text, and the file input left blank (background_file) as an empty text part."""
    spec = client.get("/openapi.json").get_json()
    properties = spec["paths"]["/api/bg/remove"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    form = {name: "" for name, prop in properties.items() if prop.get("format") != "binary"}
    form.update(swagger_form(spec["paths"]["/api/bg/remove"]["post"]), background_file="")
    body = multipart(form, [("file", "dog.jpg", "image/jpeg", DOG)])
    resp = client.post("/api/bg/remove", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert resp.status_code == 200 and resp.mimetype == "image/png", resp.get_json()
    # text in an upload field is still refused, not ignored
    body = multipart({"background_file": "photo.jpg"}, [("file", "dog.jpg", "image/jpeg", DOG)])
    resp = client.post("/api/bg/remove", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "background_file"


def test_an_empty_file_part_is_no_file(client):
    body = multipart({}, [("file", "", "application/octet-stream", b"")])
    resp = client.post("/api/bg/remove", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "missing_file"
    assert "no file in the multipart field 'file'" in resp.get_json()["error"]["message"]


def test_a_413_names_the_limit(make_app):
    client = make_app(max_file_size_mb=1).test_client()
    noise = bytes(range(256)) * 4096  # 1 MiB exactly: with its part headers, over the read check only
    over_read = client.post("/api/bg/remove", data={"file": (io.BytesIO(noise + b"x" * 1000), "a.jpg")})
    assert over_read.status_code == 413
    assert over_read.get_json()["error"]["message"] == "file: upload exceeds 1 MB (MAX_FILE_SIZE_MB)"
    over_body = client.post("/api/bg/remove", data={"file": (io.BytesIO(noise * 2), "a.jpg")})  # werkzeug's refusal
    assert over_body.status_code == 413 and over_body.get_json()["error"] == {
        "code": "file_too_large", "message": "file: upload exceeds 1 MB (MAX_FILE_SIZE_MB)", "field": "file"}


def test_the_error_table_of_the_document_is_the_one_table(make_app):
    spec = make_app(max_file_size_mb=3, max_input_pixels=1_000_000).test_client().get("/openapi.json").get_json()
    validate(spec)
    remove = spec["paths"]["/api/bg/remove"]["post"]["responses"]
    documented = [cls for cls, kind in ERRORS.items() if kind.doc]
    assert len(documented) >= 15
    for cls in documented:
        kind = ERRORS[cls]
        where = spec["paths"]["/api/bg/clear_cache"]["post"]["responses"] if kind.code in ("forbidden", "cache_unavailable") else remove
        assert f"{kind.code}:" in where[str(kind.status)]["description"], cls
    assert "upload over 3 MB" in remove["413"]["description"]
    assert "1,000,000 pixels" in remove["422"]["description"]
    assert "cache_unavailable" in spec["paths"]["/api/bg/clear_cache"]["post"]["responses"]["503"]["description"]
    other = make_app(max_file_size_mb=5).test_client().get("/openapi.json").get_json()
    assert "upload over 5 MB" in other["paths"]["/api/bg/remove"]["post"]["responses"]["413"]["description"]
