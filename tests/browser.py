"""A real headless Chromium (the system's, driven by Playwright) for report tests."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest


def chromium() -> str:
    """The system Chromium; skip (fail under SWEEP_REQUIRE_SERVICES) when absent."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "no chromium on PATH (scripts/test installs it as root: apt-get install chromium)"
        if os.environ.get("SWEEP_REQUIRE_SERVICES"):
            pytest.fail(reason + " (SWEEP_REQUIRE_SERVICES is set)")
        pytest.skip(reason)
    return path


@dataclass
class Opened:
    """What the browser saw of one page."""

    errors: list[str] = field(default_factory=list)
    #: element id -> PNG screenshot of that element
    shots: dict[str, bytes] = field(default_factory=dict)
    rows: int = 0
    first_rank_after_sort: str | None = None
    page_png: bytes = b""


def open_report(path: Path, elements: tuple[str, ...] = (), sort_by: str | None = None,
                full_page: bool = False) -> Opened:
    """Open ``path`` from disk (network blocked), screenshot ``elements`` (by id),
    count the table's rows, and click the column ``sort_by`` twice (descending)."""
    from playwright.sync_api import sync_playwright

    seen = Opened()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: seen.errors.append(m.text)
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            # a self-contained page asks for nothing but itself
            page.route("**/*", lambda route: route.continue_()
                       if route.request.url.startswith("file://")
                       else (seen.errors.append(f"network: {route.request.url}"),
                             route.abort())[1])
            page.goto(path.resolve().as_uri())
            for element in elements:
                seen.shots[element] = page.locator(f"#{element} svg").screenshot()
            seen.rows = page.locator("#cv-results tbody tr").count()
            if sort_by is not None:
                header = page.locator("#cv-results th", has_text=sort_by).first
                header.click()
                header.click()
                seen.first_rank_after_sort = page.locator(
                    "#cv-results tbody tr").first.locator("td").first.inner_text()
            if full_page:
                seen.page_png = page.screenshot(full_page=True)
        finally:
            browser.close()
    return seen


def drawn(png: bytes) -> tuple[int, float]:
    """(distinct colours, share of non-white pixels) of a PNG screenshot."""
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    flat = (pixels.reshape(-1, 3) * 255).astype(np.uint8)
    colours = len(np.unique(flat, axis=0))
    inked = float((flat.min(axis=1) < 240).mean())
    return colours, inked
