"""Open a page in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) and report what a person would see go wrong."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium on a closed network keeps trying Google's services (see the machine notes).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class PageCheck:
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for besides itself and data: URIs
    text: str = ""
    screenshot: bytes = b""


def check_page(path: Path) -> PageCheck:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not found: install Debian's chromium (.ci/run does)"
    check = PageCheck()
    url = path.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: check.page_errors.append(str(e)))
            page.on("request", lambda r: check.requests.append(r.url) if r.url != url and not r.url.startswith("data:") else None)
            page.goto(url, wait_until="load")
            check.images = page.evaluate("document.images.length")
            check.broken_images = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")
            check.text = page.inner_text("body")
            check.screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    return check
