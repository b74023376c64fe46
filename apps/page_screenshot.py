"""A screenshot of the search page over an index, taken in headless Chromium: the picture the docs show, retaken
with one command whenever the page or the index changes.

    python -m apps.page_screenshot --index INDEX --query "a red circle grows" --out assets/search_page_demo.png

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (`scripts/browser_check.sh`
installs them); they are not runtime dependencies of the project, so they are imported only here.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from apps.retrieval import Retriever
from apps.search_server import serve_in_thread
from apps.search_service import SearchService

WINDOW = (1280, 1400)


def headless_chromium(window: tuple[int, int] = WINDOW):
    """A Selenium driver for headless Chromium that autoplays muted video and logs the page's console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        raise FileNotFoundError("needs chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window[0]},{window[1]}",
                 "--autoplay-policy=no-user-gesture-required", "--no-proxy-server"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll ``condition`` every 0.1 s until it returns something true; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def screenshot(driver, base_url: str, query: str, out: Path, video: str | None = None, settle_s: float = 1.0) -> Path:
    """The page with ``query``'s results (and ``video`` opened, if given), scrolled to the top, as a PNG."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/?{urlencode({'q': query, **({'video': video} if video else {})})}")
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#results .card"), what="the results")
    if video:
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#similar .card"), what="the similar videos")
    time.sleep(settle_s)  # previews a few frames in, and the detail view's smooth scroll over
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(out)):
        raise OSError(f"{out}: the browser could not save the screenshot")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="an index folder made by retrieve.py index")
    p.add_argument("--query", required=True, help="the text typed into the page")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--video", help="also open this indexed video (path relative to the index root)")
    p.add_argument("--checkpoint", help="default: the checkpoint recorded in the index")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        service = SearchService(Retriever.from_index(args.index, args.checkpoint, device=args.device, workers=0))
        driver = headless_chromium()
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"page_screenshot: error: {err}", file=sys.stderr)
        return 1
    server, base = serve_in_thread(service)
    try:
        print(screenshot(driver, base, args.query, args.out, args.video))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
