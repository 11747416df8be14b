"""A real browser (Debian's Chromium via Playwright) enters the access token, uploads a real IU X-ray
and reads the page, under the server's Content-Security-Policy.

Never runs `playwright install`: it drives /usr/bin/chromium (`apt-get install chromium`).
With CXRGEN_SCREENSHOT=1 it retakes the screenshot that docs/serve.md shows (docs/img/serve_page.png);
otherwise the screenshot goes to a temporary folder, so a test run never edits the docs.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxrgen.labeler import CONDITIONS
from cxrgen.inference import ReportGenerator
from cxrgen.serve import create_app
from cxrgen.serve.similar import SimilarCases
from cxrgen.testing import StandInClip, make_calibrated_checkpoint, serving, similar_case_studies

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--headless"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "serve_page.png"
FRONTAL, LATERAL = "CXR1900_IM-0584-1001.png", "CXR1900_IM-0584-2001.png"
TOKEN = "browser-test-token-0123456789abcdefghij"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install chromium")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tiny real checkpoint (random weights, OOD statistics from synthetic ramps, so a real X-ray is
    flagged) and similar-case search with a keyword stand-in CLIP, served with an access token by
    uvicorn on a loopback port in a background thread."""
    generator = ReportGenerator.from_pretrained(make_calibrated_checkpoint(tmp_path_factory.mktemp("m") / "tiny"))
    app = create_app(generator, retriever=SimilarCases(StandInClip(), similar_case_studies()), model_name="tiny-random",
                     tokens=[TOKEN])
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


# Waits use locators, never wait_for_function with a string: when its condition is not yet true,
# Playwright polls it through eval, which the page's Content-Security-Policy forbids.


def enter_token(page, token: str) -> None:
    """Type the token into the page's field once it asks for it."""
    page.wait_for_selector("#token-form:not([hidden])", timeout=30_000)
    page.fill("#token-input", token)
    page.click("#token-submit")


def test_upload_shows_every_section(server, page, shared_iu, tmp_path):
    images = shared_iu / "smoke" / "images"
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server)
    assert "Not for clinical use" in page.locator("#banner").inner_text()

    # The API answered 401, so the page asks for the token: a wrong one is refused, the right one kept.
    enter_token(page, "not-the-token-" + "x" * 30)
    page.locator("#token-status", has_text="not accepted").wait_for(timeout=30_000)
    assert "kept for this tab only" in page.locator("#token-note").inner_text().lower()
    enter_token(page, TOKEN)
    page.wait_for_selector("#token-form", state="hidden", timeout=30_000)
    assert "model tiny-random" in page.locator("#server").inner_text()
    page.locator("#model-card", has_text="image check on").wait_for(timeout=30_000)
    assert "Trained on unrecorded data · date not recorded · test metrics: not recorded" in \
        page.locator("#model-card").inner_text()
    assert page.evaluate("sessionStorage.getItem('cxrgen-token')") == TOKEN
    assert page.evaluate("document.cookie") == "" and TOKEN not in page.url
    page.reload()  # the same tab keeps it: no second question
    page.locator("#server", has_text="tiny-random").wait_for(timeout=30_000)
    assert page.locator("#token-form").is_hidden()

    assert page.locator("#submit").is_disabled()
    page.set_input_files("#frontal-input", str(images / FRONTAL))
    page.set_input_files("#lateral-input", str(images / LATERAL))
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden])", timeout=60_000)

    assert page.locator("#findings").inner_text().strip()
    assert page.locator("#plain").inner_text().strip()
    guard = page.locator("#guard").inner_text()  # what the guard compares, never a verdict on the draft
    assert guard.startswith(("The plain version says the same as the draft", "Warning:")), guard
    assert "Checked" not in guard
    assert page.locator("#chart svg g.bar").count() == len(CONDITIONS)
    agreement = page.locator("#agreement").inner_text()  # the random model's draft and calls, side by side
    assert "the classifier calls" in agreement or "which the classifier does not call" in agreement
    assert page.locator("#chart").inner_text().count("%") >= len(CONDITIONS)
    assert page.locator("#similar ol.cases li").count() == 3
    for img in ("#frontal-img", "#heatmap", "#lateral-img"):  # decoded, not broken
        assert page.eval_on_selector(img, "i => i.complete && i.naturalWidth > 0"), img
    assert "Done" in page.locator("#status").inner_text()
    # the model was "trained" on synthetic ramps: a real radiograph is unlike them, and the page says so
    assert page.locator("#ood-banner").is_visible() and page.locator("#ood-none").is_hidden()
    assert "unlike the images this model was trained on; the draft is not meaningful" in \
        page.locator("#ood-banner").inner_text()
    assert "frontal view: score" in page.locator("#ood-detail").inner_text()
    assert not errors, errors
    shot = SCREENSHOT if os.environ.get("CXRGEN_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0


def test_bad_upload_shows_the_servers_message(server, page, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an X-ray")
    page.goto(server)
    enter_token(page, TOKEN)
    page.wait_for_selector("#token-form", state="hidden", timeout=30_000)
    page.set_input_files("#frontal-input", str(fake))
    page.click("#submit")
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "not a PNG, JPEG or DICOM" in page.locator("#status").inner_text()
    assert page.locator("#results").is_hidden()
