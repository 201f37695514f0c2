"""End to end: `detkit server web` in a child process, its page in headless Chromium, a raccoon photo uploaded.

Needs Debian's Chromium (`apt-get install -y --no-install-recommends chromium`) and the Playwright Python
package (in the `test` extra); Playwright drives the system browser, so `playwright install` (a download) is
never needed. Skipped, with that reason, where Chromium is not installed.
"""
from __future__ import annotations

import os
import shutil

import pytest
from server_helpers import require_web_extra, running_server

require_web_extra()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed; install it with `apt-get install -y --no-install-recommends chromium` "
           "(Debian/Ubuntu) to run the browser test",
)


def test_page_draws_detections_of_an_uploaded_photo_and_filters_them_in_place(tiny_run, raccoon_dir, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed: pip install -e '.[test]'")
    photo = os.path.join(raccoon_dir, "images", "raccoon-1.jpg")
    # --min-prob 0: the slider starts at 0, so the tiny model's low-scoring boxes are all drawn.
    args = ["--checkpoint", tiny_run["run_dir"], "--min-prob", "0", "--no-access-log"]
    with running_server(args, str(tmp_path / "server.log")) as url:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                requests, problems = [], []
                page.on("request", lambda r: requests.append((r.method, r.url)))
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.goto(url)
                page.wait_for_selector("#classes li")
                assert page.inner_text("#classes").split() == ["raccoon"]

                page.set_input_files("#file", photo)
                page.wait_for_selector("#viewer .detection", timeout=60_000)
                boxes = page.locator("#viewer .detection")
                total = int(page.get_attribute("#viewer", "data-total"))
                assert boxes.count() == int(page.get_attribute("#viewer", "data-count")) == total > 0
                assert page.locator("#detections tbody tr").count() == total
                assert "raccoon" in boxes.first.inner_text()
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

                # The slider filters in the page: no new request, fewer boxes, then all of them again.
                predicts = [r for r in requests if r[1].endswith("/api/fasterrcnn/predict/")]
                assert predicts == [("POST", url + "api/fasterrcnn/predict/")]
                top = float(page.locator("#viewer .detection").first.get_attribute("data-prob"))
                page.fill("#min-prob", "1")
                page.dispatch_event("#min-prob", "input")
                assert boxes.count() == (total if top >= 1 else 0)
                page.fill("#min-prob", "0")
                page.dispatch_event("#min-prob", "input")
                assert boxes.count() == total
                assert len([r for r in requests if r[1].endswith("/api/fasterrcnn/predict/")]) == 1

                # Everything the page loaded came from the server itself.
                assert all(u.startswith((url, "data:", "blob:")) for _, u in requests), requests
                assert not problems, problems
            finally:
                browser.close()
