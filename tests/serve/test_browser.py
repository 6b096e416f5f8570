"""The web UI in a real browser: headless Chromium (Playwright) against a live server.

The mock model calls the FAKESEG test double, then the measure expert, then
answers. The test uploads the real CT, moves the slice slider, asks, and checks
the answer and the overlay image in the page. The screenshot is saved as
``test-artifacts/serve_ui.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.serve.conftest import LiveServer, segment_measure_answer

from medm3.vlm.mock import MockBackend

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists() and shutil.which("chromium") is None,
        reason="no Chromium at /usr/bin/chromium (apt-get install chromium) for the browser test",
    ),
]
pytestmark.append(pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.*"))
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
pytest.importorskip("gradio")


def _img_src(page: Any, selector: str) -> str:
    return page.locator(f"{selector} img").first.get_attribute("src") or ""


def test_upload_slide_ask_and_see_overlay(make_app: Any, fake_experts: None, ct_path: Path) -> None:
    # Chaining (segment, then MEASURE) is the medm3 protocol; mock is VILA-format (released).
    app = make_app(MockBackend("mock", script=segment_measure_answer), ui=True, protocol="medm3")
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with LiveServer(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/ui/")
            page.locator("#m3-upload input[type=file]").set_input_files(str(ct_path))
            sync_api.expect(page.locator("#m3-info")).to_contain_text("CT, 122x101x30")
            page.wait_for_function("() => document.querySelector('#m3-view img')?.src?.length > 0")
            first = _img_src(page, "#m3-view")
            number = page.locator("#m3-slice input[type=number]")
            sync_api.expect(number).to_have_value("15")  # the middle axial slice
            page.locator("#m3-slice input[type=range]").fill("22")
            sync_api.expect(number).to_have_value("22")
            page.wait_for_function(
                "(old) => document.querySelector('#m3-view img')?.src !== old", arg=first
            )
            question = page.locator("#m3-question textarea")
            question.fill("Segment the bright region and measure it.")
            question.press("Enter")
            chat = page.locator("#m3-chat")
            sync_api.expect(chat).to_contain_text("segmented and measured", timeout=60_000)
            sync_api.expect(chat).to_contain_text("MEASURE: ")  # the overlay's caption
            overlay = chat.locator("img")
            sync_api.expect(overlay.first).to_be_visible()
            page.wait_for_function(
                "() => [...document.querySelectorAll('#m3-chat img')]"
                ".some(i => i.complete && i.naturalWidth > 100)"
            )
            assert chat.locator("img").count() >= 2  # FAKESEG's and MEASURE's overlays
            sync_api.expect(page.locator("#m3-download")).to_be_enabled()
            page.get_by_text("Behind the scenes").click()
            sync_api.expect(page.locator("#m3-trace")).to_contain_text("fakeseg")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve_ui.png"), full_page=True)
        finally:
            browser.close()
        service = app.state.service
        (session,) = service.store.list_sessions()
        stored = service.store.messages(session.id)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert [s["expert"] for s in stored[1].trace if s["step"] == "expert"] == [
            "fakeseg",
            "measure",
        ]
        # the model saw the slice chosen with the slider (axial 22 of 30)
        assert session.state["messages"][0]["content"]
        assert service.backend.calls[0][0].images


def test_signed_in_browser_session_belongs_to_its_key(make_app: Any) -> None:
    """Several keys: a question asked in a signed-in browser makes a session of that key
    (Gradio hands the signed-in request to the handler), which the other key cannot read."""
    import httpx

    from medm3.serve.auth import key_owner

    app = make_app(ui=True, api_keys=("k1", "k2"))
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with LiveServer(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context()
            login = context.request.post(
                f"{server.url}/ui/login", form={"username": "ann", "password": "k2"}
            )
            assert login.status == 200, login.text()
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/ui/")
            question = page.locator("#m3-question textarea")
            question.fill("Who owns this conversation?")
            question.press("Enter")
            chat = page.locator("#m3-chat")
            sync_api.expect(chat).to_contain_text("echo: Who owns", timeout=60_000)
        finally:
            browser.close()
        (session,) = app.state.service.store.list_sessions()
        assert session.state["owner"] == key_owner("k2")
        url = f"{server.url}/v1/sessions/{session.id}"
        assert httpx.get(url, headers={"Authorization": "Bearer k2"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer k1"}).status_code == 404
