#!/usr/bin/env python
"""A PNG of a report.html as a browser shows it (the system's Chromium, via Playwright).

    python scripts/screenshot_report.py docs/article/exp6_dropout_maxnorm docs/report.png

Opens RESULTS/report.html from disk with the network blocked, and saves the first
WIDTH x HEIGHT pixels (the summary and the first picture), or the whole page with --full.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a folder with report.html")
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=760)
    parser.add_argument("--full", action="store_true", help="the whole page")
    args = parser.parse_args()
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.route("**/*", lambda route: route.continue_()
                   if route.request.url.startswith("file://") else route.abort())
        page.goto((args.results / "report.html").resolve().as_uri())
        page.screenshot(path=str(args.png), full_page=args.full)
        browser.close()
    print(f"{args.png}: {args.png.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
