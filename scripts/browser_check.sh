#!/usr/bin/env bash
# The search page in a real browser: installs Debian's chromium + chromium-driver (as root, if missing) and
# Selenium (into the venv, if missing), then runs tests/test_search_page_browser.py, which serves a synthetic
# index, checks the example queries of the empty page, searches, checks that the results play, the
# low-confidence cue of an absurd query, the 12-frame strip, opens one result (title and Close below the sticky
# header) with its "more like this" row, and saves assets/search_page.png and
# assets/search_page_low_confidence.png. Extra arguments go to pytest.
DGL_TEST_REQUIREMENTS=1  # the test-only packages too (requirements-test.txt)
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "browser_check: needs chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi
"$PY" -c "import selenium" 2>/dev/null || "$PY" -m pip install -q selenium
shot="$ROOT/assets/search_page.png"
started="$(mktemp)"
SEARCH_PAGE_SCREENSHOT="$shot" "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_search_page_browser.py "$@"
if [ ! "$shot" -nt "$started" ]; then
  echo "browser_check: FAIL: no new screenshot at $shot (was the test skipped?)" >&2
  rm -f "$started"
  exit 1
fi
rm -f "$started"
echo "browser_check: PASS; screenshot: $shot"
