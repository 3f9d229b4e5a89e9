"""Load and abuse against a real `vidprune demo` process (tiny checkpoint, loopback, bounded loops).

Every hostile input of issue 14 goes to one server started as a user starts it (with
``--token``, so the token rules are exercised too): malformed HTTP, a 20 kB header, a
5,000-character path, foreign Host names (DNS rebinding), missing and wrong tokens, hostile
frames (thin, tiny, stretched, decompression bombs, not JPEG), hostile text messages
(nested JSON, huge integers, non-objects), hostile questions (non-strings, lone surrogates,
4,000 emoji), a message over the socket limit, a client that never reads, and tabs that ask
constantly while streaming. Then: the server still serves, and its log holds no traceback.
Nothing here measures speed (benchmarks/bench_demo.py does).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from demo_process import running_demo
from test_demo_server import FRAMES, HOSTILE_QUESTIONS, HOSTILE_TEXTS, hostile_frames, is_type, read_for, receive
from vidprune.demo.limits import MAX_MESSAGE_BYTES
from vidprune.qa import MAX_QUESTION_CHARS

START_TIMEOUT_S = 120.0  # the machine is shared: generous
TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 8.0  # short enough to wait for, long enough for a loaded 2-core machine
TABS = 3  # --max-sessions: the load phase fills every place


@pytest.fixture(scope="module")
def demo(video_llava_ckpt, tmp_path_factory):
    """`vidprune demo --token` on 127.0.0.1 (a free port): (page URL with token, base URL, log path, process)."""
    log = tmp_path_factory.mktemp("demo_abuse") / "server.log"
    flags = ["--fps", "10", "--window", "10", "--budget", "1600", "--max-new-tokens", "6",
             "--max-sessions", str(TABS), "--client-timeout", str(CLIENT_TIMEOUT_S)]
    with running_demo(video_llava_ckpt, log, *flags, start_timeout_s=START_TIMEOUT_S) as (url, proc):
        yield url, url.split("?")[0], log, proc
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _raw_http(base: str, request: bytes) -> bytes:
    host, port = base.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as conn:
        conn.sendall(request)
        return conn.recv(4096)


def _log_has_no_traceback(log) -> None:
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def test_malformed_http_is_answered_400_in_one_log_line(demo):
    url, base, log, proc = demo
    host = base.split("//")[1].strip("/")
    big = _raw_http(base, b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.") and b" 400 " in big.split(b"\r\n")[0]
    junk = _raw_http(base, b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    assert b" 400 " in junk.split(b"\r\n")[0]
    time.sleep(0.2)
    _log_has_no_traceback(log)
    assert "refused a malformed request" in log.read_text()


def test_paths_hosts_and_tokens(demo):
    url, base, log, proc = demo
    token = url.split("token=")[1]
    port = base.rsplit(":", 1)[1].strip("/")

    async def scenario():
        async with aiohttp.ClientSession() as http:
            async def code(path, **kw):
                async with http.get(base + path, **kw) as r:
                    return r.status

            auth = {"token": token}
            assert await code("static/" + "a" * 5000, params=auth) == 414
            assert await code("static/../../etc/passwd", params=auth) == 404
            assert await code("", params=auth) == 200
            for path in ["", "static/app.js", "api/status", "ws"]:
                assert await code(path) == 403, path  # no token
                assert await code(path, params={"token": token + "x"}) == 403, path
                assert await code(path, params=auth, headers={"Host": f"rebound.example:{port}"}) == 403, path
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(base.replace("http", "ws") + "ws")

    asyncio.run(scenario())
    _log_has_no_traceback(log)


def test_hostile_messages_leave_the_session_alive(demo):
    url, base, log, proc = demo
    ws_url = url.replace("http://", "ws://").replace("/?", "/ws?")

    async def scenario():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
            await receive(ws, is_type("hello"))
            for data, expected in hostile_frames():
                await ws.send_bytes(data)
                assert (await receive(ws, is_type("error")))[-1]["code"] == expected
            for text in HOSTILE_TEXTS:
                await ws.send_str(text)
                assert (await receive(ws, is_type("error")))[-1]["code"] == "bad_message", text[:20]
            for question, words in HOSTILE_QUESTIONS:
                await ws.send_str(json.dumps({"type": "ask", "question": question}))
                err = (await receive(ws, is_type("error")))[-1]
                assert err["code"] == "question_refused" and words in err["message"]
            await ws.send_bytes(FRAMES[0])
            assert (await receive(ws, is_type("frame")))[-1]["seq"] == len(hostile_frames())
            await ws.send_str(json.dumps({"type": "ask", "question": "\U0001F600" * MAX_QUESTION_CHARS}))
            assert (await receive(ws, lambda m: is_type("answer_end")(m) or is_type("error")(m)))[-1]["type"] \
                == "answer_end", "the longest question fits the text message cap"
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:  # invalid UTF-8 as text: 1007
            await receive(ws, is_type("hello"))
            # (aiohttp's client has no public call that sends bytes as a text message; its frame writer does)
            await ws._writer.send_frame(b"\xff\xfe not UTF-8", aiohttp.WSMsgType.TEXT)
            assert not await read_for(ws, TIMEOUT_S) and ws.close_code == 1007
        async with aiohttp.ClientSession() as http:  # over the socket limit: that one socket closes, with 1009
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                await receive(ws, is_type("hello"))
                try:
                    await ws.send_bytes(b"\0" * (MAX_MESSAGE_BYTES + 1))
                except ConnectionError:
                    pass
                assert not await read_for(ws, TIMEOUT_S) and ws.close_code in (1009, 1006)

    asyncio.run(scenario())
    _log_has_no_traceback(log)


def test_a_client_that_never_reads_is_dropped(demo):
    url, base, log, proc = demo
    ws_url = url.replace("http://", "ws://").replace("/?", "/ws?")

    async def scenario():
        async with aiohttp.ClientSession() as http:
            deaf = await http.ws_connect(ws_url, autoping=False)
            dropped = False
            for i in range(int(5 * CLIENT_TIMEOUT_S / 0.1)):  # keeps sending for at most 5 client timeouts
                try:
                    await deaf.send_bytes(FRAMES[i % len(FRAMES)])
                except ConnectionError:
                    dropped = True
                    break
                await asyncio.sleep(0.1)
                async with http.get(base + "api/status", params={"token": url.split("token=")[1]}) as r:
                    if (await r.json())["sessions"] == 0:
                        dropped = True
                        break
            assert dropped
            await deaf.close()

    asyncio.run(scenario())
    _log_has_no_traceback(log)
    assert "answered no ping" in log.read_text()


def test_tabs_asking_constantly_while_streaming_all_get_frames(demo):
    """Every place taken: each tab streams at 10 fps and asks again as soon as an answer ends (bounded: 12 answers)."""
    url, base, log, proc = demo
    ws_url = url.replace("http://", "ws://").replace("/?", "/ws?")
    answers_total = 12

    async def tab(http, index: int, done: dict) -> dict:
        async with http.ws_connect(ws_url) as ws:
            await receive(ws, is_type("hello"))
            got = {"frames": 0, "answers": 0, "frames_during_load": 0}
            stop = asyncio.Event()

            async def stream():
                i = 0
                while not stop.is_set():
                    await ws.send_bytes(FRAMES[(i + index) % len(FRAMES)])
                    i += 1
                    await asyncio.sleep(0.1)

            streamer = asyncio.ensure_future(stream())
            await receive(ws, is_type("frame"))
            await ws.send_str(json.dumps({"type": "ask", "question": f"tab {index}: what moves?"}))
            while done["answers"] < answers_total:
                msg = (await receive(ws, lambda m: isinstance(m, dict) and m["type"] in ("frame", "answer_end",
                                                                                          "error")))[-1]
                if msg["type"] == "frame":
                    got["frames_during_load"] += 1
                elif msg["type"] == "answer_end":
                    got["answers"] += 1
                    done["answers"] += 1
                    await ws.send_str(json.dumps({"type": "ask", "question": f"tab {index}: and now?"}))
                elif msg["code"] not in ("busy", "frames_over_rate"):
                    raise AssertionError(msg)
            stop.set()
            await streamer
            return got

    async def scenario():
        done = {"answers": 0}
        async with aiohttp.ClientSession() as http:
            return await asyncio.gather(*(tab(http, i, done) for i in range(TABS)))

    results = asyncio.run(scenario())
    assert sum(r["answers"] for r in results) >= answers_total
    for r in results:  # questions and frames take turns: no tab starves while the others keep asking
        assert r["answers"] >= 1 and r["frames_during_load"] >= 2, results
    _log_has_no_traceback(log)
    assert proc.poll() is None
