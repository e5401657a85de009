#!/usr/bin/env python3
"""Make the README's picture of the web page: the real page, served by a real gunicorn, in Debian's
chromium (Playwright), with pet photos dropped on it and their results shown.

    .venv/bin/python scripts/page_screenshot.py [--width 1280] [--out docs/pictures/page.png]

Starts the service on a free loopback port (``tests/serverkit.py``, no result cache), opens ``/`` at
``--width`` px, chooses the "Square on white" layout, adds a dog and a cat from the quality set
(``tests/data/quality/am2k``: AM-2k, MIT), waits for both results and writes a screenshot of the
page's first screen (PNG, reduced to 256 colours by Pillow: a few hundred KB).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browserkit import chromium, open_page, wait_ready  # noqa: E402
from tests.serverkit import running_server  # noqa: E402

PHOTOS = [ROOT / "tests" / "data" / "quality" / "am2k" / name for name in ("am2k-11.jpg", "am2k-03.jpg")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=860)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "pictures" / "page.png")
    parser.add_argument("--preset", default="square-white", help="layout preset to choose ('' for none)")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not its first screen")
    args = parser.parse_args()
    with running_server({"LOG_FORMAT": "text", "LOG_LEVEL": "warning"}) as server, chromium() as browser:
        page = open_page(browser, server.url + "/", width=args.width, height=args.height)
        if args.preset:
            page.get_by_label("Layout preset").select_option(args.preset)
        page.set_input_files("#drop-input", [str(p) for p in PHOTOS])
        wait_ready(page, len(PHOTOS))
        page.mouse.move(0, 0)  # no hover effect in the picture
        shot = page.screenshot(full_page=args.full_page)
    image = Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"{args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}: "
          f"{image.width}x{image.height}, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
