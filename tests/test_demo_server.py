"""The demo server over real WebSockets (aiohttp client) with the tiny Video-LLaVA checkpoint:
protocol, refusals that keep the session alive, session limits, load, the frame rate, clients
that do not read or sit idle, the Host allowlist and the token, and server-side sources.
(tests/test_demo_abuse.py runs the same hostile inputs against a `vidprune demo` process.)"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import threading
import time

import aiohttp
import numpy as np
import pytest
from PIL import Image

from vidprune.cli import main as cli_main
from vidprune.demo.limits import (MAX_FRAME_ASPECT, MAX_FRAME_BYTES, MAX_FRAME_PIXELS, MAX_MESSAGE_BYTES,
                                  MAX_TEXT_MESSAGE_CHARS, MIN_FRAME_SIDE)
from vidprune.demo.feed import PendingFrame
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
FRAME_SIZE = moving_square_frames(num_frames=1)[0].shape[:2]  # (H, W)


class ServerThread:
    """A DemoServer on its own event loop thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, llm, settings: DemoSettings | None = None, **overrides):
        if settings is None:
            height, width = FRAME_SIZE  # Qwen2.5-VL's grid comes from the frame size: plan for the frames sent
            geometry = llm.frame_geometry(llm.geometry, llm.processor.video_processor, height, width)
            plan = plan_memory(geometry, budget=BUDGET, window_s=overrides.pop("window_s", 10.0),
                               frame_rate=overrides.pop("frame_rate", 4.0),
                               frame_tokens=overrides.pop("frame_tokens", None))
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
    # 20 fps: the tests send frames 50-150 ms apart and none of them is thinned by the frame rate.
    with ServerThread(tiny_llm, max_sessions=2, frame_rate=20.0, frame_tokens=16) as s:
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


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_pairs_the_pages_frames_into_temporal_patches_and_answers_from_them(tiny_checkpoints, family):
    from vidprune.video_models import load_video_llm

    llm = load_video_llm(tiny_checkpoints[family])
    with ServerThread(llm, max_sessions=1, frame_rate=20.0) as server:
        async def scenario():
            async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
                hello = (await receive(ws, is_type("hello")))[-1]
                assert hello["family"] == family and hello["grid"] is None
                assert hello["plan"]["frames_per_unit"] == 2 and hello["plan"]["dynamic"]
                sent = 0
                for data in FRAMES[:8]:  # one at a time: each pair is encoded before the next frame comes
                    await ws.send_bytes(data)
                    sent += 1
                    await asyncio.sleep(0.1)  # within the 20 fps the server takes
                    if sent % 2 == 0:
                        await receive(ws, is_type("frame", seq=sent - 1))
                load = (await status(http, server.url))["feeds"][0]["load"]
                assert load["encoded"] == 8 and load["pairing"] == 0 and load["dropped"] == 0
                answer = await ask(ws, "What is moving?")
                start, end = next(m for m in answer if is_type("answer_start")(m)), answer[-1]
                assert end["type"] == "answer_end", end
                assert start["stats"]["frames"] == 4, "four temporal patches of two frames"
                assert end["visual_tokens"] == start["stats"]["tokens"] <= BUDGET and end["new_tokens"] >= 1
                await ws.send_bytes(FRAMES[8])  # the first of a pair waits for the next frame: no message yet
                await asyncio.sleep(0.5)
                load = (await status(http, server.url))["feeds"][0]["load"]
                assert load["pairing"] == 1 and load["received"] == 9

        run(scenario())


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose header (SOF0) claims ``width`` x ``height``: a decompression bomb."""
    data = bytearray(jpeg(np.zeros((16, 16, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png_bomb() -> bytes:
    """A PNG of a few hundred bytes whose header claims 40000 x 40000 pixels (Pillow refuses to open it)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


# Frames a hostile client sends, with the code each is refused with (shared with test_demo_abuse.py).
def hostile_frames() -> list[tuple[bytes, str]]:
    png = io.BytesIO()
    Image.fromarray(moving_square_frames(1)[0]).save(png, format="PNG")
    return [
        (b"\xff\xd8" + b"\0" * MAX_FRAME_BYTES, "frame_too_large"),
        (jpeg(np.zeros((1200, 2000, 3), np.uint8)), "frame_too_many_pixels"),  # 2.4 MP, a small file
        (jpeg(np.zeros((16, 4000, 3), np.uint8)), "frame_too_small"),  # thin: the processor would scale 16 px up
        (jpeg_claiming(65500, 16), "frame_too_small"),  # the 65500x16 (1 MP, ~1.5 GB once resized)
        (jpeg(np.zeros((100, int(100 * MAX_FRAME_ASPECT) + 20, 3), np.uint8)), "frame_bad_aspect"),
        (jpeg_claiming(60000, 60000), "frame_decompression_bomb"),
        (png_bomb(), "frame_decompression_bomb"),
        (png.getvalue(), "frame_not_jpeg"),
        (b"definitely not an image", "frame_not_jpeg"),
    ]


# Text messages a hostile client sends, each refused as a bad message.
HOSTILE_TEXTS = ["{not json", json.dumps([1, 2]), json.dumps({"type": "dance"}), "[" * 1000, "{\"a\":" * 5000,
                 "1" * 5000, "x" * (MAX_TEXT_MESSAGE_CHARS + 1), json.dumps({"type": None})]
# Questions refused (the code is question_refused), with a word of the message.
HOSTILE_QUESTIONS = [("", "empty"), ("   ", "empty"), (42, "must be a string"), (None, "must be a string"),
                     ([1], "must be a string"), ({"a": 1}, "must be a string"), ("a\ud800b", "lone surrogate"),
                     ("?" * (MAX_QUESTION_CHARS + 1), "more than")]


def test_bad_input_is_refused_with_a_message_and_the_session_goes_on(server):

    async def scenario():
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await receive(ws, is_type("hello"))
            await ws.send_str(json.dumps({"type": "ask", "question": "anything?"}))
            assert (await receive(ws, is_type("error")))[-1]["code"] == "memory_empty"
            refusals = hostile_frames()
            for seq, (data, code) in enumerate(refusals):
                await ws.send_bytes(data)
                err = (await receive(ws, is_type("error")))[-1]
                assert (err["code"], err["seq"]) == (code, seq), err
            truncated = FRAMES[0][: len(FRAMES[0]) // 2]  # header fine, data cut: found when decoding
            await ws.send_bytes(truncated)
            assert (await receive(ws, is_type("error")))[-1]["code"] == "frame_unreadable"
            for text in HOSTILE_TEXTS:
                await ws.send_str(text)
                err = (await receive(ws, is_type("error")))[-1]
                assert err["code"] == "bad_message", (text[:20], err)
            for question, words in HOSTILE_QUESTIONS:
                await ws.send_str(json.dumps({"type": "ask", "question": question}))
                err = (await receive(ws, is_type("error")))[-1]
                assert err["code"] == "question_refused" and words in err["message"], (question, err)
            # The longest question JSON can carry (every character an escaped surrogate pair) is not cut off.
            await ws.send_str(json.dumps({"type": "ask", "question": "\U0001F600" * MAX_QUESTION_CHARS}))
            assert (await receive(ws, is_type("error")))[-1]["code"] == "memory_empty"
            # Still alive: a good frame is stored (its seq counts the refused ones) and a question is answered.
            await asyncio.sleep(0.1)  # the damaged frame took the frame rate's credit (20 fps): wait for the next
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
            for seq in range(3):  # one at a time: none is replaced by a newer one, however slow the machine
                await a.send_bytes(FRAMES[seq])
                await receive(a, is_type("frame", seq=seq))
                await asyncio.sleep(0.05)  # the frame rate (20 fps)
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


def test_frames_faster_than_the_encoder_are_dropped_newest_first_and_counted(tiny_llm):
    total = 150

    async def scenario(server):
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await receive(ws, is_type("hello"))
            for i in range(total):
                await ws.send_bytes(FRAMES[i % len(FRAMES)])
            msgs = await receive(ws, is_type("frame", seq=total - 1))  # the newest frame always gets encoded
            seqs = [m["seq"] for m in msgs if is_type("frame")(m)]
            assert seqs == sorted(seqs) and len(seqs) < total
            load = msgs[-1]["load"]
            assert load["received"] == total == (load["encoded"] + load["dropped"] + load["refused"]
                                                 + load["over_rate"] + load["pending"])
            assert load["dropped"] >= total // 2 and load["refused"] == 0 == load["over_rate"]
            stats = msgs[-1]["stats"]
            assert stats["frames"] <= stats["max_frames"] and stats["tokens"] <= BUDGET
            assert (await ask(ws, "Still there?"))[-1]["type"] == "answer_end"

    # 10^6 fps: every frame of the burst gets to the newest-wins slot (the event loop handles one
    # frame in well over a microsecond, however the frames bunch up on the way)
    with ServerThread(tiny_llm, frame_rate=1e6, frame_tokens=16) as s:
        run(scenario(s))


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
            # a lower bound on real-time pacing (load only makes it later); everything else here is events and counts
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
    (["--client-timeout", "0"], "--client-timeout 0 must be a positive"),
    (["--idle-timeout", "-1"], "--idle-timeout -1 must be a positive"),
    (["--allow-host", "evil/path"], "is not a host name"),
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


def test_the_command_lines_pruning_options_reach_the_llm(tiny_llm, video_llava_ckpt):
    """`vidprune demo --ivtp-layer 2 --ivtp-keep 0.5 ...`: every answer runs IVTP (its token counts are in the
    answer event), and the memory prunes with the pruner / dedup options given; nothing is dropped silently."""
    import math

    from vidprune.cli import build_parser
    from vidprune.demo.command import settings_from_args

    args = build_parser().parse_args([
        "demo", "--model", video_llava_ckpt, "--port", "0", "--fps", "20", "--budget", "300", "--frame-tokens", "16",
        "--pruner", "random", "--seed", "5", "--sample-seed", "6", "--important-ratio", "0.25", "--dedup-threshold", "0.95",
        "--ivtp-layer", "2", "--ivtp-keep", "0.5", "--max-new-tokens", "3"])
    settings, _ = settings_from_args(args)
    assert settings.ivtp is not None and [list(st) for st in settings.ivtp.stages] == [[2, 0.5]]
    assert settings.generate_kwargs["max_new_tokens"] == 3 and settings.generate_kwargs["seed"] == 6
    assert {k: settings.memory_options[k] for k in ("pruner", "seed", "important_ratio", "dedup_threshold")} == \
        {"pruner": "random", "seed": 5, "important_ratio": 0.25, "dedup_threshold": 0.95}

    async def scenario(url):
        async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http://", "ws://") + "ws") as ws:
            await receive(ws, is_type("hello"))
            await send_frames(ws, FRAMES[:4], gap_s=0.1)
            await receive(ws, is_type("frame", seq=3))
            return await ask(ws, "What is moving?")

    with ServerThread(tiny_llm, settings) as s:
        answer = run(scenario(s.url))
    end = answer[-1]
    assert end["type"] == "answer_end", end
    assert end["new_tokens"] <= 3
    ivtp = end["ivtp"]
    assert ivtp is not None and ivtp["schedule"] == [[2, 0.5]] and ivtp["visual_tokens_in"] == end["visual_tokens"]
    assert ivtp["visual_tokens_kept"] == math.ceil(0.5 * end["visual_tokens"])
    per_layer = ivtp["tokens_per_layer"]  # layers >= 2 run on the kept visual tokens only
    assert per_layer[0] == per_layer[1] and per_layer[2] == per_layer[1] - (end["visual_tokens"] - ivtp["visual_tokens_kept"])


@pytest.mark.parametrize("flag", ["--no-prefix-reuse", "--prefix-reuse"])
def test_an_option_the_demo_cannot_use_is_refused(video_llava_ckpt, capsys, flag):
    code = cli_main(["demo", "--model", video_llava_ckpt, flag])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "do not apply to the demo" in err and len(err.splitlines()) == 1, err


def test_a_busy_port_is_reported(video_llava_ckpt, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = cli_main(["demo", "--model", video_llava_ckpt, "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and "is in use" in err


def test_limits_are_consistent():
    longest = json.dumps({"type": "ask", "question": "\U0001F600" * MAX_QUESTION_CHARS})  # 12 characters each
    assert len(longest) <= MAX_TEXT_MESSAGE_CHARS and len(longest.encode()) <= MAX_MESSAGE_BYTES
    assert MAX_MESSAGE_BYTES > MAX_FRAME_BYTES and MAX_FRAME_PIXELS >= 640 * 480
    assert MIN_FRAME_SIDE <= 240 and MAX_FRAME_ASPECT >= 32 / 9  # every camera format passes


# ------------------------------------------------------------- rate, liveness, access


def test_browser_frames_are_held_to_the_frame_rate(tiny_llm):
    """--fps 2 and a page sending 20 frames a second: about 2 a second enter the memory, the rest are counted."""
    sent, gap_s = 30, 0.05

    async def scenario(server):
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await receive(ws, is_type("hello"))
            await send_frames(ws, [FRAMES[i % len(FRAMES)] for i in range(sent)], gap_s=gap_s)
            for _ in range(200):
                load = (await status(http, server.url))["feeds"][0]["load"]
                if load["pending"] == 0 and load["received"] == sent:
                    break
                await asyncio.sleep(0.05)
            assert load["received"] == sent == (load["encoded"] + load["dropped"] + load["refused"]
                                                + load["over_rate"] + load["pending"])
            admitted = sent - load["over_rate"]
            # counts, not the clock: frames were thinned (30 sent 50 ms apart to a 2 fps gate) and some entered; the
            # gate's bound over T seconds is checked with explicit arrival times in test_the_rate_gate_admits_...
            assert 2 <= admitted < sent and load["over_rate"] >= 1, load
            notices = [m for m in await receive(ws, is_type("error")) if is_type("error")(m)]
            assert notices[0]["code"] == "frames_over_rate" and "--fps" in notices[0]["message"]

    with ServerThread(tiny_llm, frame_rate=2.0) as s:
        run(scenario(s))


@pytest.mark.parametrize("frame_rate", [2.0, 4.0, 20.0])
def test_the_rate_gate_admits_at_most_the_frame_rate(frame_rate):
    """RateGate on explicit arrival times (no clock): a page sending 20 frames a second for 3 s, with a stall and a
    burst. Over every window of T seconds at most frame_rate * T + 2 + FRAME_RATE_TOLERANCE frames enter, and a page
    sending at the frame rate itself loses none. (The bound counts the two credits the gate saves up.)"""
    from vidprune.demo.feed import RateGate
    from vidprune.demo.limits import FRAME_RATE_TOLERANCE

    arrivals = [i * 0.05 for i in range(60)] + [3.5 + i * 0.001 for i in range(10)]  # 20 fps, a stall, a burst
    gate = RateGate(frame_rate)
    admitted = [t for t in arrivals if gate.admit(t)]
    for i, start in enumerate(admitted):
        for end in admitted[i:]:
            inside = sum(start <= t <= end for t in admitted)
            assert inside <= frame_rate * (end - start) + RateGate._MAX_CREDIT + FRAME_RATE_TOLERANCE + 1e-9, \
                (start, end, inside)
    assert len(admitted) < len(arrivals) or frame_rate >= 20
    steady = RateGate(frame_rate)
    assert all(steady.admit(i / frame_rate) for i in range(50))  # at the frame rate: every frame enters


async def read_for(ws, seconds: float) -> bool:
    """Read (answering pings) for ``seconds``; True if the socket was still open at the end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=max(0.05, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            break
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return False
    return not ws.closed


def test_a_client_that_does_not_read_is_dropped_and_one_that_reads_stays(tiny_llm):
    """The never-reading client keeps sending frames (incoming data must not keep it alive)."""
    timeout_s = 1.5

    async def scenario(server):
        async with aiohttp.ClientSession() as http:
            reader = await http.ws_connect(server.ws_url)
            deaf = await http.ws_connect(server.ws_url, autoping=False)  # never reads until the end
            reading = asyncio.ensure_future(read_for(reader, 4 * timeout_s))
            dropped = False
            for i in range(int(4 * timeout_s / 0.05)):  # bounded: 4 timeouts at most
                try:
                    await deaf.send_bytes(FRAMES[i % len(FRAMES)])
                except ConnectionError:
                    pass
                await asyncio.sleep(0.05)
                if i % 5 == 0 and (await status(http, server.url))["sessions"] == 1:
                    dropped = True
                    break
            assert dropped, "the client that does not read was never dropped"
            msg = await deaf.receive(timeout=TIMEOUT_S)
            while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                msg = await deaf.receive(timeout=TIMEOUT_S)
            if msg.type == aiohttp.WSMsgType.CLOSE:  # the close frame made it before the socket was cut
                assert msg.data == 1008 and "not reading" in msg.extra, (msg.data, msg.extra)
            assert await reading, "the client that reads was dropped too"
            await reader.close()

    with ServerThread(tiny_llm, client_timeout_s=timeout_s) as s:
        run(scenario(s))


def test_an_idle_session_gives_its_place_to_a_new_tab_and_an_active_one_does_not(tiny_llm):
    async def scenario(server):
        async with aiohttp.ClientSession() as http:
            idle = await http.ws_connect(server.ws_url)
            await receive(idle, is_type("hello"))
            pinged = asyncio.ensure_future(receive(idle, is_type("error")))  # reads (answers pings), sends nothing
            await asyncio.sleep(1.5)
            newcomer = await http.ws_connect(server.ws_url)
            assert (await receive(newcomer, is_type("hello")))[-1]["type"] == "hello"
            evicted = (await pinged)[-1]
            assert evicted["code"] == "evicted_idle" and "another tab" in evicted["message"]
            msg = await idle.receive(timeout=TIMEOUT_S)
            while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                msg = await idle.receive(timeout=TIMEOUT_S)
            # 1000 with the reason; on a loaded machine the close handshake can miss CLOSE_TIMEOUT_S and the
            # socket is cut (1006) -- the evicted_idle message above has said why either way
            assert idle.close_code in (1000, 1006)
            await newcomer.send_bytes(FRAMES[0])  # active now: the next tab does not get its place
            await receive(newcomer, is_type("frame"))
            third = await http.ws_connect(server.ws_url)
            assert (await receive(third, is_type("error")))[-1]["code"] == "too_many_sessions"
            await newcomer.close()

    with ServerThread(tiny_llm, max_sessions=1, idle_timeout_s=1.0) as s:
        run(scenario(s))


async def _http_status(http, url, **kw) -> tuple[int, str]:
    async with http.get(url, **kw) as r:
        return r.status, await r.text()


def test_foreign_host_names_are_refused_on_every_route(server):
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host (and Origin) evil.example."""
    port = server.url.rsplit(":", 1)[1].strip("/")
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}

    async def scenario():
        async with aiohttp.ClientSession() as http:
            for path in ["", "static/app.js", "api/status"]:
                code, text = await _http_status(http, server.url + path, headers=evil)
                assert code == 403 and "--allow-host evil.example" in text, (path, code, text)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(server.ws_url, headers=evil)
            assert refused.value.status == 403
            for host in ["localhost", f"127.0.0.1:{port}", f"[::1]:{port}"]:
                assert (await _http_status(http, server.url + "api/status", headers={"Host": host}))[0] == 200

    run(scenario())


def test_only_the_pages_files_are_served(server):
    async def scenario():
        async with aiohttp.ClientSession() as http:
            assert (await _http_status(http, server.url + "static/" + "a" * 5000))[0] == 414
            for path in ["static/nothing.js", "static/../server.py", "static/%2e%2e/server.py", "static/"]:
                assert (await _http_status(http, server.url + path))[0] == 404, path
            async with http.get(server.url) as r:
                assert r.status == 200 and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]

    run(scenario())


def test_the_token_is_required_on_every_route_and_becomes_a_cookie(tiny_llm):
    token = "s3cret-token"

    async def scenario(server):
        base = server.url.split("?")[0]
        assert server.url == base + "?token=" + token, "the printed URL carries the token"
        async with aiohttp.ClientSession() as http:
            for path in ["", "static/app.js", "api/status"]:
                for params in [None, {"token": "wrong"}, {"token": token[:-1]}, {"token": "\ud800"}]:
                    code, text = await _http_status(http, base + path, params=params)
                    assert code == 403 and "access token" in text, (path, params, code)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(base.replace("http://", "ws://") + "ws")
            assert refused.value.status == 403
            auth = {"Authorization": f"token {token}"}
            assert (await _http_status(http, base + "api/status", headers=auth))[0] == 200
        # A browser: the URL with the token once, then the cookie on every request (the page, its files, the socket).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(server.url) as r:
                assert r.status == 200 and f"vidprune-demo-{base.rsplit(':', 1)[1].strip('/')}" in r.cookies
            assert (await _http_status(browser, base + "static/app.js"))[0] == 200
            assert (await _http_status(browser, base + "api/status"))[0] == 200
            async with browser.ws_connect(base.replace("http://", "ws://") + "ws") as ws:
                assert (await receive(ws, is_type("hello")))[-1]["type"] == "hello"

    with ServerThread(tiny_llm, token=token) as s:
        run(scenario(s))


def test_a_tab_opened_after_the_source_ended_sees_the_last_frame(tiny_llm, sample_video):
    async def scenario(url: str):
        ws_url = url.replace("http://", "ws://") + "ws"
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                st = await status(http, url)
                if st["source"]["ended"] and st["worker"]["frames_encoded"] >= 1 and st["feeds"][0]["load"]["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert st["source"]["ended"]
            async with http.ws_connect(ws_url) as ws:
                msgs = await receive(ws, is_type("frame"))
                assert isinstance(msgs[-2], bytes) and msgs[-2][:2] == b"\xff\xd8", "the last preview, then its frame"

    with ServerThread(tiny_llm, source=sample_video, frame_rate=8.0) as s:
        run(scenario(s.url))


def test_who_needs_a_token_and_which_url_is_printed():
    from vidprune.demo.access import AccessPolicy, browser_urls, is_loopback, needs_token

    assert needs_token("0.0.0.0", None) and needs_token("::", None) and needs_token("192.168.1.5", None)
    assert not needs_token("127.0.0.1", None) and needs_token("127.0.0.1", True) and not needs_token("0.0.0.0", False)
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("::")
    urls = browser_urls("0.0.0.0", 8765, "T")
    assert all("0.0.0.0" not in u and u.endswith(":8765/?token=T") for u in urls) and len(urls) == 2
    assert browser_urls("::1", 9, None) == ["http://[::1]:9/"]
    policy = AccessPolicy("192.168.1.5", 80, ["box.lan"], None)
    assert policy.host_problem("192.168.1.5:80") is None and policy.host_problem("BOX.lan") is None
    assert policy.host_problem("10.0.0.1") is not None, "a fixed bind address does not admit other IPs"
    assert AccessPolicy("0.0.0.0", 80).host_problem("10.0.0.1:80") is None, "an IP literal cannot be rebound"
    assert AccessPolicy("0.0.0.0", 80).host_problem("evil.example") is not None


@pytest.mark.parametrize("argv, token", [([], False), (["--token"], True), (["--host", "127.0.0.2"], False),
                                         (["--host", "127.0.0.2", "--token"], True)])
def test_the_command_line_turns_the_token_on_when_asked(video_llava_ckpt, argv, token):
    """(Beyond loopback it is on by default: test_who_needs_a_token...; tests bind loopback only.)"""
    from vidprune.cli import build_parser
    from vidprune.demo.command import settings_from_args

    args = build_parser().parse_args(["demo", "--model", video_llava_ckpt, "--port", "0", *argv])
    settings, _ = settings_from_args(args)
    assert (settings.token is not None) == token


def test_questions_and_frames_take_turns_on_the_model_thread(tiny_llm):
    """Three feeds with frames always pending and questions always queued: between two answers every feed
    gets one frame encoded (the order is recorded by the real worker with the real tiny encoder)."""
    from vidprune.demo.feed import Feed
    from vidprune.demo.worker import ModelWorker
    from vidprune.pipeline.memory import build_memory
    from vidprune.pipeline.stages import EncodeStage

    plan = plan_memory(tiny_llm.geometry, budget=BUDGET, window_s=10.0, frame_rate=4.0)
    events: list[str] = []
    feeds = [Feed(build_memory(plan, prune_grid=tiny_llm.geometry.prune_grid)) for _ in range(3)]
    names = {id(f): f"frame{i}" for i, f in enumerate(feeds)}
    rgb = moving_square_frames(num_frames=1)[0]
    clock = itertools.count()

    def refill(feed):  # the page has always sent a newer frame by the time one is encoded
        feed.offer(PendingFrame(seq=0, time_s=float(next(clock)), rgb=rgb))

    def on_frame(feed, messages, frame):
        events.append(names[id(feed)])
        if len(events) < 40:
            refill(feed)

    worker = ModelWorker(EncodeStage(tiny_llm, batch_size=1), on_frame=on_frame,
                         on_error=lambda feed, code, message: events.append(f"error {code}: {message}"))
    for feed in feeds:
        refill(feed)
        worker.add_feed(feed)

    last_answered = threading.Event()

    def answer(i):
        events.append("answer")
        if i < 6:
            futures.append(worker.submit(lambda: answer(i + 1)))
        else:
            last_answered.set()

    futures = [worker.submit(lambda: answer(0))]
    worker.start()
    assert last_answered.wait(TIMEOUT_S), events
    worker.stop()
    first, last = events.index("answer"), len(events) - 1 - events[::-1].index("answer")
    between = "".join("|" if e == "answer" else e[-1] for e in events[first:last + 1]).split("|")[1:-1]
    assert len(between) == 6 and all(sorted(chunk) == ["0", "1", "2"] for chunk in between), " ".join(events)


def test_a_cut_jpeg_is_refused_even_where_pillow_is_told_to_pad_it(monkeypatch):
    """lmms-eval sets PIL.ImageFile.LOAD_TRUNCATED_IMAGES on import (process-wide); the demo must not rely on it."""
    from PIL import ImageFile

    from vidprune.demo.feed import FrameRefused, decode_jpeg

    whole = FRAMES[0]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert decode_jpeg(whole).shape == (*FRAME_SIZE, 3)
    assert decode_jpeg(whole + b"\0" * 16).shape == (*FRAME_SIZE, 3)  # zero padding after the end marker
    with pytest.raises(FrameRefused, match="cut off before its end marker") as refused:
        decode_jpeg(whole[: len(whole) // 2])
    assert refused.value.code == "frame_unreadable"
