"""/docs in a real browser: Swagger UI's "Try it out" on the image endpoints, run in Debian's chromium
against a real gunicorn, shows the image it got back (from a blob: URL, which the docs page's CSP
allows); and every operation of /openapi.json has a summary a person can read."""

from __future__ import annotations

import re

import pytest

from tests.browserkit import chromium
from tests.serverkit import fixture_images, running_server

CSP_WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""


def test_every_operation_has_a_human_summary(client):
    spec = client.get("/openapi.json").get_json()
    summaries = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            summary = op.get("summary", "")
            summaries.append(summary)
            # a sentence, not the view's endpoint name (what an undocumented view falls back to)
            assert summary and not re.fullmatch(r"[\w.]+", summary), (method, path, summary)
            assert len(summary.split()) >= 3, (method, path, summary)
    assert not {"index.index", "bg.health", "bg.status"} & set(summaries)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server({"LOG_FORMAT": "text"}, log_dir=tmp_path_factory.mktemp("docs")) as srv:
        yield srv


@pytest.mark.parametrize("operation,media", [("bg_remove", "image/png"), ("bg_change_color", "image/jpeg")])
def test_try_it_out_shows_the_image(server, operation, media):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.add_init_script(CSP_WATCH)
        page.goto(server.url + "/docs")
        op = page.locator(f"#operations-bg-{operation}")
        op.wait_for()
        op.locator(".opblock-summary").first.click()
        op.get_by_role("button", name="Try it out").click()
        # the request body's `file` row (background_file's input is left blank, as a person leaves it)
        row = op.locator("tr[data-property-name='file'], tr[data-param-name='file']")
        row.locator("input[type=file]").set_input_files(str(fixture_images()[0]))
        op.get_by_role("button", name="Execute").click()
        image = op.locator(".live-responses-table img")
        image.wait_for(timeout=60_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        assert image.get_attribute("src").startswith("blob:")
        assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1000, 667]
        table = op.locator(".live-responses-table").inner_text()
        assert re.search(r"^200\b", table, re.M) and f"content-type: {media}" in table
        assert page.evaluate("window.__csp") == [], "Content-Security-Policy violations"
