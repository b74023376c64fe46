"""The search page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium
types a query, sees the results play, reloads from the URL, opens a result and its "more like this" row.

Skipped where no browser is installed; `bash scripts/browser_check.sh` installs one, runs this and writes the
screenshot to assets/search_page.png (elsewhere it goes to the test's temporary folder)."""
import importlib.util
import os
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from apps.search_server import serve_in_thread
from apps.search_service import SearchService
from preprocess.make_synthetic import SyntheticConfig, make_dataset
from tests.test_retrieval import retriever

pytestmark = pytest.mark.skipif(
    shutil.which("chromedriver") is None or shutil.which("chromium") is None or importlib.util.find_spec("selenium") is None,
    reason="needs chromium, chromium-driver and selenium (bash scripts/browser_check.sh installs them)",
)
QUERY = "a red circle moves from left to right"
PLAYING = "const v = arguments[0]; return [v.readyState, v.paused, v.currentTime, v.muted, v.loop];"


@pytest.fixture(scope="module")
def page(gallery, transformer, tmp_path_factory):
    """A demo-style index (64 px H.264 clips of moving shapes) plus a Matroska file the browser cannot play."""
    root = tmp_path_factory.mktemp("browser")
    make_dataset(SyntheticConfig(train_videos=22, test_pairs=1, frames=12, size=64, workers=1), root / "data")
    videos = root / "data" / "videos"
    shutil.copy(gallery / "sub" / "texture.mkv", videos / "texture.mkv")
    r = retriever(transformer)
    r.index(videos, root / "index", progress=False)
    server, base = serve_in_thread(SearchService(r))
    yield base
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                 "--autoplay-policy=no-user-gesture-required", "--no-proxy-server"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def wait_until(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_playing(driver, video):
    """Loaded (readyState >= HAVE_CURRENT_DATA), not paused, muted, looping, and its clock advances."""
    ready, paused, start, muted, loop = wait_until(
        lambda: (state := driver.execute_script(PLAYING, video))[0] >= 2 and not state[1] and state[2] > 0 and state,
        what="the video to play",
    )
    assert muted and loop
    wait_until(lambda: driver.execute_script(PLAYING, video)[2] != start, 5, "the video's currentTime to advance")


def test_search_play_open_similar(page, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(page + "/")
    wait_until(lambda: "videos" in browser.find_element(By.ID, "info").text, what="the index info")
    browser.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
    cards = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#results .card"), what="results")
    assert len(cards) == 12 and parse_qs(urlsplit(browser.current_url).query)["q"] == [QUERY]
    assert "ms" in browser.find_element(By.ID, "status").text
    assert [c.find_element(By.CLASS_NAME, "rank").text for c in cards[:3]] == ["#1", "#2", "#3"]
    # The best-ranked playable result (the Matroska file, shown as frames, may rank first with this model).
    first_mp4 = next(c for c in cards if c.get_attribute("data-video").endswith(".mp4"))
    assert_playing(browser, first_mp4.find_element(By.TAG_NAME, "video"))

    # The URL carries the query: a reload shows the same results.
    names = [c.get_attribute("data-video") for c in cards]
    browser.refresh()
    again = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#results .card"), what="results after reload")
    assert [c.get_attribute("data-video") for c in again] == names
    assert browser.find_element(By.ID, "q").get_attribute("value") == QUERY

    # The file the browser cannot play comes as a strip of frames (all 23 results asked for, so it is there).
    browser.get(page + "/?q=" + QUERY.replace(" ", "+") + "&k=24")
    strip = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, '#results .card[data-video="texture.mkv"] img'),
                       what="the frame strip")[0]
    wait_until(lambda: browser.execute_script("return arguments[0].naturalWidth", strip) == 6 * 128, what="the strip")

    # Clicking a result shows it large, playing, with its nearest videos.
    cards = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#results .card"), what="results")
    first = next(c for c in cards if c.get_attribute("data-video").endswith(".mp4"))
    chosen = first.get_attribute("data-video")
    first.click()
    similar = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#similar .card"), what="more like this")
    assert browser.find_element(By.ID, "detail").is_displayed() and len(similar) == 8
    assert browser.find_element(By.ID, "detail-title").text == chosen
    assert chosen not in [c.get_attribute("data-video") for c in similar]
    assert parse_qs(urlsplit(browser.current_url).query)["video"] == [chosen]
    assert_playing(browser, browser.find_element(By.CSS_SELECTOR, "#detail-media video"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)  # a few frames further, so the screenshot shows moving shapes mid-way
    shot = Path(os.environ.get("SEARCH_PAGE_SCREENSHOT", tmp_path / "search_page.png"))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
