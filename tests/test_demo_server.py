"""The demo server over real WebSockets (aiohttp client) with the tiny Video-LLaVA checkpoint:
protocol, refusals that keep the session alive, session limits, load, and a server-side file source."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import aiohttp
import numpy as np
import pytest
from PIL import Image

from vidprune.cli import main as cli_main
from vidprune.demo.limits import MAX_FRAME_BYTES, MAX_FRAME_PIXELS, MAX_MESSAGE_BYTES, MAX_TEXT_MESSAGE_CHARS
from vidprune.demo.server import DemoServer, DemoSettings
from vidprune.pipeline.memory import plan_memory
from vidprune.qa import MAX_QUESTION_CHARS
from vidprune.samples import moving_square_frames

TIMEOUT_S = 60.0  # generous: the machine is shared; nothing here measures speed
BUDGET = 300


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


FRAMES = [jpeg(f) for f in moving_square_frames(num_frames=24)]


class ServerThread:
    """A DemoServer on its own event loop thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, llm, **overrides):
        plan = plan_memory(llm.geometry, budget=BUDGET, window_s=overrides.pop("window_s", 10.0),
                           frame_rate=overrides.pop("frame_rate", 4.0))
        settings = DemoSettings(plan=plan, generate_kwargs={"max_new_tokens": 12, "do_sample": False}, port=0,
                                model_name="tiny", tiny=True, **overrides)
        self.server = DemoServer(llm, settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(TIMEOUT_S)
        self.ws_url = self.url.replace("http://", "ws://") + "ws"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT_S)


@pytest.fixture(scope="module")
def tiny_llm(video_llava_ckpt):
    from vidprune.video_models import load_video_llm

    return load_video_llm(video_llava_ckpt)


@pytest.fixture(scope="module")
def server(tiny_llm):
    with ServerThread(tiny_llm, max_sessions=2) as s:
        yield s


async def receive(ws, until, timeout: float = TIMEOUT_S) -> list:
    """Messages (JSON as dicts, binary as bytes) up to and including the first one ``until(msg)`` accepts."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            item = json.loads(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            item = msg.data
        else:
            raise AssertionError(f"socket closed ({msg.type}, {msg.data}) while waiting; got {got[-5:]}")
        got.append(item)
        if until(item):
            return got


def is_type(kind: str, **fields):
    return lambda m: isinstance(m, dict) and m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


async def status(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "api/status") as r:
        assert r.status == 200
        return await r.json()


async def send_frames(ws, frames, gap_s: float = 0.05) -> None:
    for data in frames:
        await ws.send_bytes(data)
        await asyncio.sleep(gap_s)


async def ask(ws, question: str) -> list:
    await ws.send_str(json.dumps({"type": "ask", "question": question}))
    return await receive(ws, lambda m: is_type("answer_end")(m) or is_type("error")(m))


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------------


def test_frames_go_into_memory_and_answers_stream_token_by_token(server):
    async def scenario():
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            hello = (await receive(ws, is_type("hello")))[-1]
            assert hello["source"] == "browser" and hello["grid"] == [16, 16]
            assert hello["plan"]["budget"] == BUDGET and hello["limits"]["max_frame_bytes"] == MAX_FRAME_BYTES
            await send_frames(ws, FRAMES[:6], gap_s=0.15)
            msgs = await receive(ws, is_type("frame", seq=5))
            frames = [m for m in msgs if is_type("frame")(m)]
            assert [f["seq"] for f in frames] == sorted(f["seq"] for f in frames)
            last = frames[-1]
            assert last["size"] == [320, 240] and last["grid"] == [16, 16]
            x0, y0, x1, y1 = last["region"]  # the processor's center crop of a 4:3 frame: full height
            assert (y0, y1) == (0.0, 1.0) and x0 == pytest.approx(0.125) and x1 == pytest.approx(0.875)
            assert set(last["kept"]).isdisjoint(last["duplicates"])
            assert all(0 <= i < 256 for i in last["kept"] + last["duplicates"])
            stats = last["stats"]
            assert 1 <= stats["frames"] <= 6 and stats["tokens"] <= BUDGET
            assert stats["duplicates_total"] > 0, "the static background repeats"
            before = await status(http, server.url)
            answer = await ask(ws, "What is moving?")
            start = next(m for m in answer if is_type("answer_start")(m))
            tokens = [m for m in answer if is_type("token")(m)]
            end = answer[-1]
            assert end["type"] == "answer_end", end
            assert start["visual_tokens"] == end["visual_tokens"] == start["stats"]["tokens"] <= BUDGET
            assert end["new_tokens"] >= 2 and len(tokens) >= 2, "the answer streams in pieces"
            assert 0 < end["ttft_s"] and end["stock_tokens"] == start["stats"]["frames"] * 257
            after = await status(http, server.url)
            assert after["worker"]["frames_encoded"] == before["worker"]["frames_encoded"], \
                "a question is answered from the memory, without encoding anything"

    run(scenario())


def test_bad_input_is_refused_with_a_message_and_the_session_goes_on(server):
    big_rgb = np.zeros((1200, 2000, 3), np.uint8)  # 2.4 MP, a small file
    png = io.BytesIO()
    Image.fromarray(moving_square_frames(1)[0]).save(png, format="PNG")

    async def scenario():
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await receive(ws, is_type("hello"))
            await ws.send_str(json.dumps({"type": "ask", "question": "anything?"}))
            assert (await receive(ws, is_type("error")))[-1]["code"] == "memory_empty"
            refusals = [
                (b"\xff\xd8" + b"\0" * MAX_FRAME_BYTES, "frame_too_large"),
                (jpeg(big_rgb), "frame_too_many_pixels"),
                (png.getvalue(), "frame_not_jpeg"),
                (b"definitely not an image", "frame_not_jpeg"),
            ]
            for seq, (data, code) in enumerate(refusals):
                await ws.send_bytes(data)
                err = (await receive(ws, is_type("error")))[-1]
                assert (err["code"], err["seq"]) == (code, seq), err
            truncated = FRAMES[0][: len(FRAMES[0]) // 2]  # header fine, data cut: found when decoding
            await ws.send_bytes(truncated)
            assert (await receive(ws, is_type("error")))[-1]["code"] == "frame_unreadable"
            texts = ["{not json", json.dumps([1, 2]), json.dumps({"type": "dance"}), "x" * (MAX_TEXT_MESSAGE_CHARS + 1)]
            for text in texts:
                await ws.send_str(text)
                assert (await receive(ws, is_type("error")))[-1]["code"] == "bad_message"
            for question in ["", "   ", 42, None, "?" * (MAX_QUESTION_CHARS + 1)]:
                await ws.send_str(json.dumps({"type": "ask", "question": question}))
                err = (await receive(ws, is_type("error")))[-1]
                assert err["code"] == "question_refused", (question, err)
            # Still alive: a good frame is stored (its seq counts the refused ones) and a question is answered.
            await ws.send_bytes(FRAMES[1])
            frame = (await receive(ws, is_type("frame")))[-1]
            assert frame["seq"] == len(refusals) + 1 and frame["load"]["refused"] == len(refusals) + 1
            assert (await ask(ws, "And now?"))[-1]["type"] == "answer_end"
            await ws.send_str(json.dumps({"type": "reset"}))
            reset = (await receive(ws, is_type("stats")))[-1]
            assert reset["stats"]["frames"] == 0

    run(scenario())


def test_a_message_beyond_the_socket_limit_closes_only_that_session(server):
    async def scenario():
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.ws_url, max_msg_size=0) as ws:
                await receive(ws, is_type("hello"))
                try:
                    await ws.send_bytes(b"\0" * (MAX_MESSAGE_BYTES + 1))
                except ConnectionError:  # the server may hang up before the client has sent it all
                    pass
                msg = await ws.receive(timeout=TIMEOUT_S)
                while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    msg = await ws.receive(timeout=TIMEOUT_S)
                # aiohttp answers with 1009 "message too big"; a client still sending sees the connection drop (1006).
                assert ws.close_code in (1009, 1006)
            async with http.ws_connect(server.ws_url) as ws2:  # the server goes on
                assert (await receive(ws2, is_type("hello")))[-1]["type"] == "hello"

    run(scenario())


def test_pages_from_other_sites_are_refused(server):
    async def scenario():
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(server.ws_url, headers={"Origin": "http://evil.example"}) as ws:
            assert (await receive(ws, is_type("error")))[-1]["code"] == "bad_origin"

    run(scenario())


def test_each_tab_has_its_own_memory_up_to_the_limit_and_closing_frees_it(server):
    async def scenario():
        async with aiohttp.ClientSession() as http:
            a = await http.ws_connect(server.ws_url)
            b = await http.ws_connect(server.ws_url)
            for ws in (a, b):
                await receive(ws, is_type("hello"))
            await send_frames(a, FRAMES[:3], gap_s=0.2)
            await receive(a, is_type("frame", seq=2))
            await send_frames(b, FRAMES[:1])
            await receive(b, is_type("frame", seq=0))
            st = await status(http, server.url)
            assert st["sessions"] == 2 == st["max_sessions"]
            assert sorted(f["memory"]["frames_added"] for f in st["feeds"]) == [1, 3], "separate memories"
            c = await http.ws_connect(server.ws_url)  # one too many
            refused = (await receive(c, is_type("error")))[-1]
            assert refused["code"] == "too_many_sessions" and "--max-sessions" in refused["message"]
            assert (await c.receive(timeout=TIMEOUT_S)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert c.close_code == 1013
            await a.close()
            for _ in range(100):
                st = await status(http, server.url)
                if st["sessions"] == 1:
                    break
                await asyncio.sleep(0.05)
            assert st["sessions"] == 1 and [f["memory"]["frames_added"] for f in st["feeds"]] == [1]
            d = await http.ws_connect(server.ws_url)  # room again
            assert (await receive(d, is_type("hello")))[-1]["type"] == "hello"
            await d.close()
            await b.close()

    run(scenario())


def test_frames_faster_than_the_encoder_are_dropped_newest_first_and_counted(server):
    total = 150

    async def scenario():
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await receive(ws, is_type("hello"))
            for i in range(total):
                await ws.send_bytes(FRAMES[i % len(FRAMES)])
            msgs = await receive(ws, is_type("frame", seq=total - 1))  # the newest frame always gets encoded
            seqs = [m["seq"] for m in msgs if is_type("frame")(m)]
            assert seqs == sorted(seqs) and len(seqs) < total
            load = msgs[-1]["load"]
            assert load["received"] == total == load["encoded"] + load["dropped"] + load["refused"] + load["pending"]
            assert load["dropped"] >= total // 2 and load["refused"] == 0
            stats = msgs[-1]["stats"]
            assert stats["frames"] <= stats["max_frames"] and stats["tokens"] <= BUDGET
            assert (await ask(ws, "Still there?"))[-1]["type"] == "answer_end"

    run(scenario())


def test_a_file_source_is_played_in_real_time_into_a_shared_memory(tiny_llm, sample_video):
    async def scenario(url: str):
        ws_url = url.replace("http://", "ws://") + "ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
            hello = (await receive(ws, is_type("hello")))[-1]
            assert hello["source"] == "server" and "moving.mp4" in hello["source_name"]
            msgs = await receive(ws, is_type("frame"))
            first_seq, first_at = msgs[-1]["seq"], time.monotonic()
            assert isinstance(msgs[-2], bytes) and msgs[-2][:2] == b"\xff\xd8", "a JPEG preview before each frame"
            # Source frames are numbered as the source plays them (a frame the busy encoder skipped keeps its number).
            msgs = await receive(ws, lambda m: is_type("frame")(m) and m["seq"] >= first_seq + 4)
            assert time.monotonic() - first_at >= 4 / 4.0 - 0.25, "4 frames at 4 fps cannot come faster than ~1 s"
            assert Image.open(io.BytesIO(msgs[-2])).size == (320, 240)
            await ws.send_bytes(FRAMES[0])
            assert (await receive(ws, is_type("error")))[-1]["code"] == "frames_not_accepted"
            assert (await ask(ws, "What moves?"))[-1]["type"] == "answer_end"
            st = await status(http, url)
            assert st["source"]["kind"] == "file" and st["source"]["frames"] >= 5 and st["source"]["error"] is None
            assert st["feeds"][0]["shared"]

    with ServerThread(tiny_llm, source=sample_video, loop_source=True, frame_rate=4.0) as s:
        run(scenario(s.url))


def test_a_stream_url_source_feeds_the_shared_memory(tiny_llm, sample_video):
    """The live-source path (what a camera or rtsp:// URL takes), here with FFmpeg's file:// protocol."""
    async def scenario(url: str):
        ws_url = url.replace("http://", "ws://") + "ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
            hello = (await receive(ws, is_type("hello")))[-1]
            assert hello["source_name"].startswith("url file://")
            frame = (await receive(ws, is_type("frame")))[-1]
            assert frame["size"] == [320, 240] and frame["stats"]["frames"] >= 1
            assert (await ask(ws, "What moves?"))[-1]["type"] == "answer_end"
            assert (await status(http, url))["source"]["kind"] == "url"

    with ServerThread(tiny_llm, source="file://" + sample_video, frame_rate=4.0) as s:
        run(scenario(s.url))


# ------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv, words", [
    (["--frames", "8"], "--frames do not apply to the demo"),
    (["--port", "70000"], "not a port number"),
    (["--max-sessions", "0"], "at least 1"),
    (["--window", "0"], "--window 0 must be a positive"),
    (["--budget", "1"], "cannot hold one frame"),
    (["--frame-tokens", "999"], "more than the 256"),
    (["--dedup-reference", "previous"], "previous"),
    (["--loop"], "--loop needs a --source"),
])
def test_bad_options_fail_in_one_line_before_the_model_loads(video_llava_ckpt, capsys, argv, words):
    code = cli_main(["demo", "--model", video_llava_ckpt, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("argv, words", [
    (["--source", "/no/such/video.mp4"], "not an existing file"),
    (["--source", "/dev/video99"], "/dev/video99"),
])
def test_an_unusable_source_fails_in_one_line_before_the_model_loads(video_llava_ckpt, capsys, argv, words):
    """Like ``vidprune ask`` with an unreadable video: VideoDecodeError, exit code 1."""
    code = cli_main(["demo", "--model", video_llava_ckpt, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and words in err and len(err.splitlines()) == 1, err


def test_a_busy_port_is_reported(video_llava_ckpt, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = cli_main(["demo", "--model", video_llava_ckpt, "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and "is in use" in err


def test_limits_are_consistent():
    assert MAX_TEXT_MESSAGE_CHARS >= 6 * MAX_QUESTION_CHARS
    assert MAX_MESSAGE_BYTES > MAX_FRAME_BYTES and MAX_FRAME_PIXELS >= 640 * 480
