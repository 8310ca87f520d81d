"""`sradm demo` in a real browser: the command serves the page on a free 127.0.0.1 port, headless Chromium (Debian's
`chromium`, driven by Playwright) uploads an image, runs a few steps and reads the page back.

Needs the [demo] extra (gradio), playwright (test extra) and /usr/bin/chromium (`.ci/run` installs them); without
them the tests are skipped with the reason, except under CI (``CI=true``, which `.ci/run` sets): there a missing or
unstartable browser fails the run. The bundled demo model does the sampling; inputs are 32x24 and 3 steps.

`SRADM_DEMO_SCREENSHOT=docs/web_demo.png pytest tests/test_demo_browser.py -k screenshot` also saves the README's
screenshot (the bundled sample, the page's default sampler and steps, two samples).
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str, module_level: bool = False):
    """Skip with ``reason``, or under CI fail: CI installs everything this test needs, so a gap there is an error."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


try:
    import gradio  # noqa: F401
except ImportError:
    unavailable("the web demo needs the [demo] extra (pip install -e '.[demo]')", module_level=True)
try:
    import playwright.sync_api as playwright_api
except ImportError:
    unavailable("playwright is not installed (test extra)", module_level=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCALE = 4
STEPS = 3
START_TIMEOUT_S = 180
RUN_TIMEOUT_MS = 180_000

if not os.path.exists(CHROMIUM):
    unavailable(f"{CHROMIUM} is missing (Debian: apt-get install chromium)", module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`sradm demo` on 127.0.0.1:<free port>, as a user starts it; yields its URL."""
    port = _free_port()
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")), PYTHONUNBUFFERED="1",
    )
    log = tmp_path_factory.mktemp("log") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sradm_diffusers.commands.cli", "demo", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while f"127.0.0.1:{port}" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sradm demo did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except playwright_api.Error as error:
            unavailable(f"cannot start {CHROMIUM}: {str(error).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh page of the demo; every request that leaves 127.0.0.1 is blocked and recorded in `page.outside`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.outside = []

    def only_local(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    # Not "networkidle": the page keeps a heartbeat stream open (Gradio's session tracking for gr.State).
    page.goto(server, wait_until="load")
    page.wait_for_selector("#upscale")
    yield page
    context.close()


def _record_progress(page) -> None:
    """Record every width of the progress bar and every progress text the page shows, from now on."""
    page.evaluate(
        """() => {
            window.progressSeen = {widths: [], texts: []};
            new MutationObserver(() => {
                for (const bar of document.querySelectorAll('.progress-bar'))
                    window.progressSeen.widths.push(parseFloat(bar.style.width));
                for (const text of document.querySelectorAll('.progress-text'))
                    window.progressSeen.texts.push(text.textContent.trim());
            }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def _upload(page, path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#input-image img")


def _natural_sizes(page, selector: str) -> list[tuple[int, int]]:
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].length > 0 && [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
    )
    return [tuple(size) for size in page.eval_on_selector_all(selector, "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")]


def _wait_until_done(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait for the summary line the page writes after a run ("32x24 → 128x96 with ..., in 1.2 s.")."""
    page.wait_for_function(
        "() => / in [0-9.]+ s\\.$/.test(document.querySelector('#status').innerText.trim())", timeout=timeout_ms
    )


def _error_text(page) -> str:
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=RUN_TIMEOUT_MS)
    return toast.inner_text()


def test_upload_upscale_progress_and_download(page, tmp_path):
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # 32 wide, 24 high: a swapped size would show
    source = tmp_path / "small.png"
    PIL.Image.fromarray(lr).save(source)
    before = source.read_bytes()

    _upload(page, source)
    _set_number(page, "steps", STEPS)
    _set_number(page, "strength", 1)  # all STEPS steps run (the page opens with the few-step default's 0.82)
    _set_number(page, "samples", 2)
    _record_progress(page)
    page.click("#upscale")
    _wait_until_done(page)

    hr = (32 * SCALE, 24 * SCALE)
    assert _natural_sizes(page, "#comparison img") == [hr, hr]  # bicubic | SR, the same size
    assert _natural_sizes(page, "#gallery img") == [hr, hr]
    assert _natural_sizes(page, "#uncertainty img") == [hr]
    shown = page.eval_on_selector_all("#comparison img, #gallery img, #uncertainty img", "imgs => imgs.map(i => i.src)")
    assert all(src.endswith(".png") for src in shown), shown  # lossless, not Gradio's default WebP

    # A click on the second sample puts it in the slider.
    first = page.eval_on_selector_all("#comparison img", "imgs => imgs.map(i => i.src)")
    page.locator("#gallery img").nth(1).click()
    page.wait_for_function(
        "old => { const s = [...document.querySelectorAll('#comparison img')].map(i => i.src);"
        " return s.length === 2 && s[0] === old[0] && s[1] !== old[1]; }",
        arg=first,
    )
    assert "sample 1" in page.locator("#comparison").inner_text()

    # The bar followed the denoising steps: it showed values strictly between empty and full, and "k/3 steps".
    seen = page.evaluate("window.progressSeen")
    assert any(0 < width < 100 for width in seen["widths"]), seen["widths"]
    assert any(re.search(rf"\b1/{STEPS} steps", text) for text in seen["texts"]), seen["texts"][-20:]

    links = page.eval_on_selector_all("#download a[href]", "links => links.map(a => a.href)")
    assert [os.path.basename(link) for link in links] == ["small_x4_0.png", "small_x4_1.png"]
    for link in links:
        response = page.request.get(link)
        assert response.ok
        with PIL.Image.open(io.BytesIO(response.body())) as png:
            assert png.format == "PNG" and png.size == hr

    assert source.read_bytes() == before
    assert page.outside == []  # nothing fetched from outside the machine


def test_corrupt_upload_shows_the_error(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG file" * 10)
    page.locator("#input-image input[type=file]").set_input_files(str(broken))
    page.wait_for_timeout(500)  # the upload request
    page.click("#upscale")
    assert "not an image file PIL can read" in _error_text(page)
    assert page.locator("#comparison img").count() == 0


def test_too_large_image_shows_the_error(page, tmp_path):
    large = tmp_path / "large.png"
    PIL.Image.new("RGB", (300, 300), (90, 120, 150)).save(large)
    _upload(page, large)
    page.click("#upscale")
    message = _error_text(page)
    assert "300x300" in message and "fewer samples" in message


@pytest.mark.skipif(not os.environ.get("SRADM_DEMO_SCREENSHOT"), reason="set SRADM_DEMO_SCREENSHOT=PATH to save one")
def test_screenshot(page):
    page.locator("#input-image").scroll_into_view_if_needed()
    page.get_by_text("Sample (click to use)").locator("xpath=..").locator("img").first.click()
    page.wait_for_selector("#input-image img")
    _set_number(page, "samples", 2)
    page.click("#upscale")
    _wait_until_done(page, timeout_ms=600_000)
    _natural_sizes(page, "#gallery img")
    page.screenshot(path=os.environ["SRADM_DEMO_SCREENSHOT"], full_page=True)
