"""The search page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium
starts on the example queries, types a query, sees the results play, reloads from the URL, sees the
low-confidence cue for an absurd query (and none for a matching caption), the 12-frame strip of a file the
browser cannot play, and opens a result (its title and Close button clear of the sticky header) with its
"more like this" row.

Skipped where no browser is installed; `bash scripts/browser_check.sh` installs one, runs this and writes the
screenshot to assets/search_page.png (elsewhere it goes to the test's temporary folder)."""
import copy
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
import torch

from apps.page_screenshot import headless_chromium, screenshot, wait_until
from apps.search_server import serve_in_thread
from apps.search_service import DEFAULT_EXAMPLES, SearchService
from apps.video_index import add_captions
from models.dgl import DGL, DGLConfig
from preprocess.make_synthetic import SyntheticConfig, make_dataset
from tests.test_retrieval import retriever
from tests.test_search_confidence import ABSURD, match_caption

pytestmark = pytest.mark.skipif(
    shutil.which("chromedriver") is None or shutil.which("chromium") is None or importlib.util.find_spec("selenium") is None,
    reason="needs chromium, chromium-driver and selenium (bash scripts/browser_check.sh installs them)",
)
MATCHED = "video3.mp4"  # made to match its own first caption perfectly (tests/test_search_confidence.py)
PLAYING = "const v = arguments[0]; return [v.readyState, v.paused, v.currentTime, v.muted, v.loop];"


@pytest.fixture(scope="module")
def page(gallery, transformer, tmp_path_factory):
    """A demo-style index (64 px H.264 clips of moving shapes, their captions stored, a demo-shaped model: the
    fixture's CLIP with T = 12) plus a Matroska file the browser cannot play."""
    root = tmp_path_factory.mktemp("browser")
    make_dataset(SyntheticConfig(train_videos=22, test_pairs=1, frames=12, size=64, workers=1), root / "data")
    videos = root / "data" / "videos"
    shutil.copy(gallery / "sub" / "texture.mkv", videos / "texture.mkv")
    torch.manual_seed(0)
    r = retriever(DGL(copy.deepcopy(transformer.clip), DGLConfig(shared_latent_space="transformer", max_frames=12)).eval())
    r.index(videos, root / "index", progress=False)
    sentences = json.loads((root / "data" / "MSRVTT_data.json").read_text())["sentences"]
    captions = {}
    for sentence in sentences:
        captions.setdefault(f"{sentence['video_id']}.mp4", []).append(sentence["caption"])
    add_captions(root / "index", captions)
    match_caption(r, MATCHED, captions[MATCHED][0])
    server, base = serve_in_thread(SearchService(r))
    yield base, captions[MATCHED][0]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def assert_playing(driver, video):
    """Loaded (readyState >= HAVE_CURRENT_DATA), not paused, muted, looping, and its clock advances."""
    ready, paused, start, muted, loop = wait_until(
        lambda: (state := driver.execute_script(PLAYING, video))[0] >= 2 and not state[1] and state[2] > 0 and state,
        what="the video to play",
    )
    assert muted and loop
    wait_until(lambda: driver.execute_script(PLAYING, video)[2] != start, 5, "the video's currentTime to advance")


def rect(driver, element):
    return driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom];", element)


def scrolled_still(driver):
    """The page's scroll position once a smooth scroll has ended (unchanged over 0.3 s)."""
    last = None
    for _ in range(100):
        now = driver.execute_script("return window.scrollY")
        if now == last:
            return now
        last = now
        time.sleep(0.3)
    raise AssertionError("the page kept scrolling")


def test_search_play_open_similar(page, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, query = page  # query: the caption that MATCHED matches

    # An empty page offers example queries: captions of indexed videos, as /api/info lists them.
    browser.get(page + "/")
    wait_until(lambda: "videos" in browser.find_element(By.ID, "info").text, what="the index info")
    info = browser.execute_script("return fetch('/api/info').then((r) => r.json())")
    assert "test-model" in browser.find_element(By.ID, "info").text and "T=12" in browser.find_element(By.ID, "info").text
    examples = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#example-list button"), what="examples")
    assert browser.find_element(By.ID, "examples").is_displayed() and len(examples) == 4
    assert [e.text for e in examples] == info["examples"] and not set(info["examples"]) & set(DEFAULT_EXAMPLES)
    examples[1].click()
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#results .card")) == 12, what="an example's results")
    assert parse_qs(urlsplit(browser.current_url).query)["q"] == [info["examples"][1]]
    assert not browser.find_element(By.ID, "examples").is_displayed()

    browser.get(page + "/")
    wait_until(lambda: browser.find_element(By.ID, "examples").is_displayed(), what="the examples")
    shot = Path(os.environ.get("SEARCH_PAGE_SCREENSHOT", tmp_path / "search_page.png"))
    assert browser.save_screenshot(str(tmp_path / "landing.png"))
    browser.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
    cards = wait_until(lambda: len(found := browser.find_elements(By.CSS_SELECTOR, "#results .card")) == 12 and found,
                       what="results")
    assert parse_qs(urlsplit(browser.current_url).query)["q"] == [query]
    assert "ms" in browser.find_element(By.ID, "status").text
    assert [c.find_element(By.CLASS_NAME, "rank").text for c in cards[:3]] == ["#1", "#2", "#3"]
    # The perfectly matching video comes first and the page shows no low-confidence cue.
    assert cards[0].get_attribute("data-video") == MATCHED and not browser.find_element(By.ID, "cue").is_displayed()
    assert_playing(browser, cards[0].find_element(By.TAG_NAME, "video"))

    # The URL carries the query: a reload shows the same results.
    names = [c.get_attribute("data-video") for c in cards]
    browser.refresh()
    again = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#results .card"), what="results after reload")
    assert [c.get_attribute("data-video") for c in again] == names
    assert browser.find_element(By.ID, "q").get_attribute("value") == query

    # An absurd query: every score is below the index's floor, and the page says so.
    browser.get(page + "/?q=" + quote_plus(ABSURD))
    cue = wait_until(lambda: (c := browser.find_element(By.ID, "cue")).is_displayed() and c, what="the low-confidence cue")
    assert cue.text.startswith("Low confidence") and f"{info['score_floor']['threshold']:.4f}, the 95th percentile" in cue.text
    assert "results-low" in browser.find_element(By.ID, "results").get_attribute("class")
    assert browser.save_screenshot(str(shot.with_name(shot.stem + "_low_confidence.png")))

    # The file the browser cannot play comes as a strip of the model's 12 frames (all 24 results asked for).
    browser.get(page + "/?q=" + quote_plus(query) + "&k=24")
    strip = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, '#results .card[data-video="texture.mkv"] img'),
                       what="the frame strip")[0]
    wait_until(lambda: browser.execute_script("return arguments[0].naturalWidth", strip) == 12 * 128, what="the strip")
    assert info["frames"] == 12

    # Clicking a result shows it large, playing, with its nearest videos; title and Close clear of the header.
    cards = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#results .card"), what="results")
    first = next(c for c in cards[6:] if c.get_attribute("data-video").endswith(".mp4"))  # one further down
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
    chosen = first.get_attribute("data-video")
    first.click()
    similar = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#similar .card"), what="more like this")
    assert browser.find_element(By.ID, "detail").is_displayed() and len(similar) == 8
    assert browser.find_element(By.ID, "detail-title").text == chosen
    assert chosen not in [c.get_attribute("data-video") for c in similar]
    assert parse_qs(urlsplit(browser.current_url).query)["video"] == [chosen]
    assert scrolled_still(browser) > 0  # the page did scroll to the detail view
    header_bottom = rect(browser, browser.find_element(By.TAG_NAME, "header"))[1]
    for element in ("detail-title", "close"):
        top, bottom = rect(browser, browser.find_element(By.ID, element))
        assert header_bottom <= top < bottom, (element, header_bottom, top)
    assert_playing(browser, browser.find_element(By.CSS_SELECTOR, "#detail-media video"))
    browser.find_element(By.ID, "close").click()  # reachable: not under the header
    wait_until(lambda: not browser.find_element(By.ID, "detail").is_displayed(), what="the detail view to close")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    # The screenshot (apps/page_screenshot.py): the matching query's results, its video opened.
    assert screenshot(browser, page, query, shot, video=MATCHED) == shot and shot.stat().st_size > 10_000
    assert browser.find_element(By.ID, "detail-title").text == MATCHED
