"""End to end: `vidprune demo --token` (a subprocess, tiny checkpoint) and the page in a real headless Chromium
(Debian's package, driven by Playwright) with a fake camera. The page is opened with the URL the server
printed (it carries the access token); the page's files and its WebSocket then pass on the cookie.

Set VIDPRUNE_DEMO_SCREENSHOT=path.png to also save the page's screenshot there (docs/images/demo.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request

import pytest

from demo_process import running_demo

CHROMIUM = os.environ.get("VIDPRUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",  # a fake webcam, no permission prompt
]
START_TIMEOUT_S = 120.0  # the machine is shared: generous, and nothing here measures speed
WAIT_MS = 60_000


def _status(url: str) -> dict:
    base, _, query = url.partition("?")
    with urllib.request.urlopen(base + "api/status?" + query, timeout=10) as r:
        return json.load(r)


def _wait_status(url: str, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = _status(url)
        if predicate(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


@pytest.fixture(scope="module")
def demo_url(video_llava_ckpt, tmp_path_factory):
    """`vidprune demo` serving the tiny checkpoint on 127.0.0.1 (a free port), as a user starts it."""
    log = tmp_path_factory.mktemp("demo") / "server.log"
    flags = ["--fps", "4", "--window", "10", "--budget", "1600", "--max-new-tokens", "12", "--max-sessions", "2"]
    with running_demo(video_llava_ckpt, log, *flags, start_timeout_s=START_TIMEOUT_S) as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def fake_camera_video(tmp_path_factory) -> str:
    """What the fake webcam films: a textured static background and a white square moving across (Y4M, 640x480)."""
    import av

    from vidprune.samples import moving_square_frames

    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=12)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for rgb in moving_square_frames(num_frames=36, height=480, width=640, square=96):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def browser(fake_camera_video):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (see .ci/run)")
    with sync_playwright() as p:
        args = CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={fake_camera_video}"]
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


def _open_page(context, url: str):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    tokens: list[str] = []
    traffic = {"sent": [], "stats_frames": []}  # text messages the page sent; "frames" of each stats message

    def on_socket(ws):
        def on_frame(payload):
            if isinstance(payload, str) and '"type": "token"' in payload:
                tokens.append(json.loads(payload)["text"])
            if isinstance(payload, str) and '"type": "stats"' in payload:
                traffic["stats_frames"].append(json.loads(payload)["stats"]["frames"])

        ws.on("framereceived", on_frame)
        ws.on("framesent", lambda payload: traffic["sent"].append(payload) if isinstance(payload, str) else None)

    page.on("websocket", on_socket)
    page.goto(url)
    return page, errors, tokens, traffic


def test_page_streams_the_camera_and_answers_from_memory(demo_url, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page, errors, tokens, traffic = _open_page(context, demo_url)
    page.wait_for_function("document.body.dataset.state === 'streaming'", timeout=WAIT_MS)
    assert page.is_visible("#tiny-warning"), "a tiny checkpoint is announced as answering nonsense"
    rates = page.eval_on_selector_all("#rate option", "els => els.map(e => Number(e.value))")
    assert max(rates) == 4, f"the page offers no rate above the server's --fps 4: {rates}"
    # Frames flow: the overlay shows a frame the page sent, with kept / duplicate / pruned patches.
    page.wait_for_function("Number(document.getElementById('overlay').dataset.seq || -1) >= 4", timeout=WAIT_MS)
    caption = page.inner_text("#overlay-seq")
    kept, dups, pruned = map(int, re.search(r"(\d+) kept, (\d+) duplicates, (\d+) pruned", caption).groups())
    assert kept + dups + pruned == 256 and kept >= 1 and pruned >= 1
    painted = page.evaluate("""() => {
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
        return [c.width, c.height, lit];
    }""")
    assert painted[0] == 640 and painted[1] == 480 and painted[2] > 1000, painted
    # Live stats.
    frames_text = page.inner_text("#stat-frames")
    assert int(frames_text.split()[0]) >= 1 and "of 10 s" in frames_text
    held, seen = map(int, re.match(r"(\d+) / (\d+)", page.inner_text("#stat-tokens")).groups())
    assert 0 < held <= 1600 and seen >= held
    assert re.match(r"\d+\.\d% of VisPruner's picks", page.inner_text("#stat-dups"))
    # A question, typed and submitted with Enter; the answer streams in and the stats show the time to first token.
    page.fill("#question", "What has the camera seen?")
    page.press("#question", "Enter")
    page.wait_for_selector(".answer[data-done='1']", timeout=WAIT_MS)
    answer = page.locator(".answer").first
    assert answer.locator(".q").inner_text() == "What has the camera seen?"
    meta = answer.locator(".meta").inner_text()
    assert re.search(r"first token after \d+\.\d+ s · \d+ tokens in", meta) and "the stock model" in meta
    assert re.fullmatch(r"\d+\.\d+ s", page.inner_text("#stat-ttft"))
    assert len(tokens) >= 2, "the answer arrived token by token"
    assert page.is_enabled("#ask")
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("VIDPRUNE_DEMO_SCREENSHOT"):
        shutil.copy(shot, os.environ["VIDPRUNE_DEMO_SCREENSHOT"])
    # Reset: the page asks for it and the server answers with the emptied memory's stats.
    before = len(traffic["stats_frames"])
    page.click("#reset")
    deadline = time.monotonic() + WAIT_MS / 1000
    while not any('"reset"' in m for m in traffic["sent"]) or 0 not in traffic["stats_frames"][before:]:
        assert time.monotonic() < deadline, (traffic["sent"][-3:], traffic["stats_frames"][-5:])
        page.wait_for_timeout(100)
    assert errors == []
    context.close()


def test_each_tab_gets_its_own_memory_and_a_closed_tab_frees_it(demo_url, browser):
    context = browser.new_context()
    first, errors, _, _ = _open_page(context, demo_url)
    second, _, _, _ = _open_page(context, demo_url)
    for page in (first, second):
        page.wait_for_function("Number(document.getElementById('overlay').dataset.seq || -1) >= 1", timeout=WAIT_MS)
    st = _status(demo_url)
    assert st["sessions"] == 2 and len(st["feeds"]) == 2
    assert all(f["memory"]["frames"] >= 1 and not f["shared"] for f in st["feeds"])
    third, _, _, _ = _open_page(context, demo_url)  # over --max-sessions 2
    third.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
    assert "too_many_sessions" in third.inner_text("#error")
    assert third.evaluate("document.body.dataset.state") == "closed"
    second.close()
    st = _wait_status(demo_url, lambda s: s["sessions"] == 1)
    assert st["sessions"] == 1 and len(st["feeds"]) == 1, "closing the tab freed its memory"
    assert errors == []
    context.close()


def test_qwen_pages_frames_are_paired_drawn_on_its_own_grid_and_answered(tiny_checkpoints, browser, tmp_path):
    """Qwen2.5-VL behind the same page: frames paired into temporal patches, the overlay on the grid of
    the camera's 640x480 frames (from the frame message; the hello has none), an answer from the memory."""
    flags = ["--fps", "4", "--window", "10", "--max-new-tokens", "6", "--max-sessions", "1"]
    with running_demo(tiny_checkpoints["qwen2_5_vl"], tmp_path / "qwen.log", *flags,
                      start_timeout_s=START_TIMEOUT_S) as (url, _proc):
        context = browser.new_context()
        page, errors, tokens, _ = _open_page(context, url)
        page.wait_for_function("Number(document.getElementById('overlay').dataset.seq || -1) >= 3", timeout=WAIT_MS)
        feed = _status(url)["feeds"][0]
        assert feed["memory"]["frames"] >= 2 and feed["load"]["pairing"] in (0, 1)
        added = feed["memory"]["frames_added"]  # read apart from "load": a unit may be stored in between
        assert feed["load"]["encoded"] in (2 * added - 2, 2 * added, 2 * added + 2), "two frames per temporal patch"
        kept, dups, pruned = map(int, re.search(r"(\d+) kept, (\d+) duplicates, (\d+) pruned",
                                                page.inner_text("#overlay-seq")).groups())
        per_unit = feed["memory"]["tokens_seen"] // feed["memory"]["frames"]  # the unit's grid, as the processor made it
        assert kept + dups + pruned == per_unit and kept >= 1
        page.fill("#question", "What moves?")
        page.press("#question", "Enter")
        page.wait_for_selector(".answer[data-done='1']", timeout=WAIT_MS)
        assert "the stock model" in page.locator(".answer").first.locator(".meta").inner_text()
        assert errors == []
        context.close()
