"""The demo's web server: one page, one WebSocket per browser tab, one model thread behind them.

Every tab is a *session* with its own :class:`~vidprune.pipeline.memory.RollingTokenMemory`
(up to ``max_sessions`` at once; a closed tab frees its memory). With ``--source`` the
frames come from the server instead, into one shared memory that every tab reads.

Protocol (WebSocket ``/ws``; JSON text messages, frames as binary messages):

page → server
    binary                  one frame as a JPEG. Frames are numbered by their order on the
                            socket from 0 (every binary message counts, refused ones too), so
                            the page knows which of its frames a reply is about.
    {"type": "ask", "question": "..."}  answer from the memory as it is at this moment.
    {"type": "reset"}       empty this tab's memory.

server → page
    {"type": "hello", ...}  settings: model, memory plan, capture rate and size, limits; ``grid``
                            is null where it comes from each frame's size (Qwen2.5-VL).
    binary                  (``--source`` only) a JPEG preview of the frame in the next message.
    {"type": "frame", "seq", "size", "grid", "region", "kept", "duplicates", "stats", "load"}
                            a frame was stored: which of its patches were kept / dropped as
                            duplicates, ``region`` = the part of the frame the patch grid covers.
                            A model that pairs frames (Qwen2.5-VL) stores two at a time: the
                            message comes for the second (``seq``), its patches cover both.
    {"type": "stats", "stats", "load", "sessions"}   once a second (memory ageing shows).
    {"type": "answer_start", "id", "question", "visual_tokens", "stats"}
    {"type": "token", "id", "text"}                   the answer, token by token.
    {"type": "answer_end", "id", "text", "ttft_s", "generate_s", "new_tokens", "visual_tokens"}
    {"type": "error", "code", "message"[, "seq"]}     something was refused; the session goes on.

A session ends with a WebSocket close whose reason says why (not reading, idle and
replaced, server stopping, a message too big).

``stats`` is :meth:`~vidprune.pipeline.memory.MemoryStats.to_dict`; ``load`` counts the
frames received, encoded, dropped (the encoder was busy and a newer frame replaced it),
over_rate (sooner than ``--fps`` allows), refused, pending and pairing (waiting for the
frame that completes its temporal patch, Qwen2.5-VL). ``GET /api/status`` returns the
sessions, their memories and load as JSON.

Every route (the page, its files, ``/ws``, ``/api/status``) first checks the ``Host``
header and the access token (:mod:`.access`); only the page's own files are served (no
file-system lookup of request paths).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import ConfigError
from ..pipeline.memory import MemoryPlan, MemorySnapshot, RollingTokenMemory, build_memory
from ..pipeline.stages import AnswerStage, EncodeStage
from ..qa import MAX_QUESTION_CHARS, check_question
from ..video_models.base import VideoLLM
from .access import AccessPolicy, browser_urls
from .feed import Feed, FrameRefused, PendingFrame, check_jpeg
from .limits import (CAPTURE_JPEG_QUALITY, CAPTURE_MAX_SIDE, CLOSE_TIMEOUT_S, DEFAULT_CLIENT_TIMEOUT_S,
                     DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_SESSIONS, DEFAULT_PORT, MAX_FRAME_ASPECT, MAX_FRAME_BYTES,
                     MAX_FRAME_PIXELS, MAX_MESSAGE_BYTES, MAX_PATH_CHARS, MAX_TEXT_MESSAGE_CHARS, MIN_FRAME_SIDE,
                     OUTBOX_LIMIT, PREVIEW_JPEG_QUALITY, STATS_INTERVAL_S)
from .source import ServerSource
from .answer_text import TokenStreamer, answer_streaming
from .worker import ModelWorker

__all__ = ["DemoSettings", "DemoServer"]

_STATIC = "static"
# The page's files, by URL path: nothing else is served (no request path reaches the file system).
_PAGE_FILES = {"/": ("index.html", "text/html"), "/static/app.js": ("app.js", "text/javascript"),
               "/static/style.css": ("style.css", "text/css")}
_SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                     "Referrer-Policy": "no-referrer", "Content-Security-Policy": "frame-ancestors 'none'"}


class _OneLineBadRequests(logging.Filter):
    """aiohttp logs every malformed request (a 20 kB header, a broken request line) with a
    traceback (``RequestHandler.handle_error``, aiohttp 3.9–3.14); those are the client's
    mistakes, answered with a 400: log them as one line. Anything else keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            detail = " ".join(str(exc).split())[:200]
            record.msg, record.args = f"vidprune demo: refused a malformed request ({record.getMessage()}): {detail}", ()
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


_HTTP_LOG = logging.getLogger("vidprune.demo.http")
_HTTP_LOG.addFilter(_OneLineBadRequests())


@dataclass
class DemoSettings:
    """Everything the server needs besides the model (built and validated by ``vidprune demo``)."""

    plan: MemoryPlan
    memory_options: dict[str, Any] = field(default_factory=dict)  # build_memory keywords (pruner, dedup, ...)
    generate_kwargs: dict[str, Any] = field(default_factory=dict)  # the generate section: max_new_tokens, seed, ...
    ivtp: Any = None  # the IVTPSchedule every answer runs with (VidpruneConfig.ivtp()), None: off
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    model_name: str = ""
    tiny: bool = False  # a random-weight test checkpoint: the page says its answers are nonsense
    source: str | None = None  # --source: frames from the server (file, device, URL) instead of the browser
    loop_source: bool = False
    allow_hosts: tuple[str, ...] = ()  # --allow-host: Host names served besides the bound address and loopback
    token: str | None = None  # the access token every request must carry; None: no token
    client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S  # a tab that answers no ping for this long is dropped
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S  # a tab silent this long yields its place to a new one


class _Client:
    """One browser tab: its socket, its feed, a queue of outgoing messages and its running answer."""

    _ids = itertools.count(1)

    def __init__(self, ws: web.WebSocketResponse, feed: Feed, transport: Any = None):
        self.id = next(self._ids)
        self.ws, self.feed, self.transport = ws, feed, transport
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self.frames_received = 0  # binary messages so far (= the next frame's seq)
        self.messages_dropped = 0
        self.answer_task: asyncio.Task | None = None
        self.cancel = threading.Event()  # set when the tab goes away: stops its generation
        self.last_pong_s = self.last_input_s = time.monotonic()
        self.told_over_rate = False
        self.closing = False

    def post(self, message: dict[str, Any] | bytes) -> None:
        """Queue a message for the tab (event loop thread only)."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.messages_dropped += 1

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.post({"type": "error", "code": code, "message": message, **extra})

    def idle_s(self, now_s: float) -> float:
        return now_s - self.last_input_s

    async def send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            try:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):  # the tab closed while we were sending
                return


class DemoServer:
    """Serves the page and the WebSocket; owns the model thread and the memories.

    Use ``url = await server.start()`` and ``await server.stop()`` inside an event loop
    (or :meth:`serve_forever` from the command line).
    """

    def __init__(self, llm: VideoLLM, settings: DemoSettings):
        self.llm, self.settings = llm, settings
        # the one answer stage of every tab: its sampling stream goes on from answer to answer
        self.answer_stage = AnswerStage(llm, ivtp=settings.ivtp, **settings.generate_kwargs)
        self.encoder = EncodeStage(llm, batch_size=1)
        self.worker = ModelWorker(self.encoder, on_frame=self._frame_done, on_error=self._frame_error)
        self.clients: dict[int, _Client] = {}
        self.shared_feed: Feed | None = None
        self.source: ServerSource | None = None
        self.url: str | None = None
        self.urls: list[str] = []
        self.access: AccessPolicy | None = None  # set by start(), once the port is known
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self._answer_ids = itertools.count(1)
        self._source_seq = itertools.count()
        self._background: set[asyncio.Future] = set()

    # ------------------------------------------------------------ lifecycle
    def new_memory(self) -> RollingTokenMemory:
        return build_memory(self.settings.plan, prune_grid=self.llm.geometry.prune_grid,
                            **self.settings.memory_options)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        static = resources.files(__package__) / _STATIC
        self._files = {path: ((static / name).read_bytes(), ctype) for path, (name, ctype) in _PAGE_FILES.items()}
        for path in _PAGE_FILES:
            app.router.add_get(path, self._page_file)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/api/status", self._status)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Every route: a sane path, an allowed Host, the token; then a cookie with the token for the next requests."""
        if len(request.raw_path) > MAX_PATH_CHARS:
            return web.Response(status=414, text=f"the request path has {len(request.raw_path)} characters, "
                                                 f"more than {MAX_PATH_CHARS}\n")
        access = self.access
        problem = access.host_problem(request.headers.get("Host"))
        if problem is not None:
            return web.Response(status=403, text=problem + "\n")
        if not access.token_ok(request.query, request.cookies, request.headers.get("Authorization")):
            return web.Response(status=403, text=access.token_problem() + "\n")
        response = await handler(request)
        if access.token is not None and not response.prepared \
                and request.cookies.get(access.cookie_name) != access.token:
            response.set_cookie(access.cookie_name, access.token, httponly=True, samesite="Strict", path="/")
        return response

    async def start(self) -> str:
        """Start the model thread, the source (if any) and the HTTP server; return the page's URL."""
        self._loop = asyncio.get_running_loop()
        self.worker.start()
        s = self.settings
        if s.source is not None:
            self.shared_feed = Feed(self.new_memory(), preview=(CAPTURE_MAX_SIDE, PREVIEW_JPEG_QUALITY), shared=True,
                                    frame_rate=s.plan.frame_rate, hold_to_rate=False)  # the source samples itself
            self.worker.add_feed(self.shared_feed)
            self.source = ServerSource(s.source, s.plan.frame_rate, self._source_frame, loop=s.loop_source)
            self.source.start()
        self._runner = web.AppRunner(self.build_app(), access_log=None, logger=_HTTP_LOG)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.access = AccessPolicy(s.host, port, s.allow_hosts, s.token)
        self.urls = browser_urls(s.host, port, s.token)
        self.url = self.urls[0]
        self._ticker = asyncio.create_task(self._tick())
        return self.url

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await asyncio.gather(*(self._drop(c, 1001, "the server is stopping") for c in list(self.clients.values())))
        if self._runner is not None:
            await self._runner.cleanup()
        if self.source is not None:
            self.source.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)

    async def serve_forever(self, announce=print) -> None:
        url = await self.start()
        announce(url)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------- HTTP
    async def _page_file(self, request: web.Request) -> web.Response:
        body, content_type = self._files[request.path]
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_SECURITY_HEADERS)

    async def _status(self, request: web.Request) -> web.Response:
        feeds = {id(c.feed): c.feed for c in self.clients.values()}
        if self.shared_feed is not None:
            feeds[id(self.shared_feed)] = self.shared_feed
        body = {
            "sessions": len(self.clients),
            "max_sessions": self.settings.max_sessions,
            "feeds": [{"id": f.id, "shared": f.shared, "subscribers": len(f.subscribers),
                       "memory": f.memory.stats().to_dict(), "load": f.load()} for f in feeds.values()],
            "worker": {"frames_encoded": self.worker.frames_encoded, "jobs_done": self.worker.jobs_done,
                       "pending_jobs": self.worker.pending_jobs},
            "source": None if self.source is None else {
                "spec": self.source.spec, "kind": self.source.kind, "frames": self.source.frames,
                "ended": self.source.ended, "error": self.source.error},
        }
        return web.json_response(body)

    def _hello(self, client: _Client) -> dict[str, Any]:
        s, geometry = self.settings, self.llm.geometry
        return {
            "type": "hello",
            "session": client.id,
            "model": s.model_name,
            "family": self.llm.model_type,
            "tiny": s.tiny,
            "source": "browser" if self.shared_feed is None else "server",
            "source_name": None if self.source is None else self.source.describe(),
            "grid": None if geometry.dynamic else list(geometry.prune_grid),  # dynamic: each frame message has its own
            "plan": s.plan.to_dict(),
            "capture": {"frame_rate": s.plan.frame_rate, "max_side": CAPTURE_MAX_SIDE,
                        "quality": CAPTURE_JPEG_QUALITY},
            "limits": {"max_frame_bytes": MAX_FRAME_BYTES, "max_frame_pixels": MAX_FRAME_PIXELS,
                       "min_frame_side": MIN_FRAME_SIDE, "max_frame_aspect": MAX_FRAME_ASPECT,
                       "max_question_chars": MAX_QUESTION_CHARS, "max_sessions": s.max_sessions,
                       "client_timeout_s": s.client_timeout_s, "idle_timeout_s": s.idle_timeout_s},
        }

    # -------------------------------------------------------- WebSocket
    def _origin_ok(self, request: web.Request) -> bool:
        """Browsers send Origin: refuse pages from other sites (any web page could open ws://127.0.0.1).

        The Host itself was checked against the allowlist (:meth:`_guard`), so a page rebound
        to 127.0.0.1 under a foreign name, whose Origin matches its Host, never gets here.
        """
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        try:
            return urlsplit(origin).netloc.lower() == request.host.lower()
        except ValueError:
            return False

    async def _refuse_socket(self, ws: web.WebSocketResponse, transport: Any, code: str, message: str,
                             close_code: int) -> None:
        try:
            await asyncio.wait_for(ws.send_str(json.dumps({"type": "error", "code": code, "message": message})),
                                   CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        await self._close_socket(ws, transport, close_code, message)

    async def _close_socket(self, ws: web.WebSocketResponse, transport: Any, close_code: int, reason: str) -> None:
        """Close with a reason (cut to the 123 bytes a close frame holds); abort if the peer does not answer."""
        data = reason.encode()[:123]
        while True:
            try:
                data.decode()
                break
            except UnicodeDecodeError:  # a multi-byte character cut in half
                data = data[:-1]
        try:
            await asyncio.wait_for(ws.close(code=close_code, message=data), CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        if transport is not None and not ws.closed:
            transport.abort()

    def _make_room(self) -> bool:
        """Whether a new session fits: below the limit, or the longest-idle session was idle long enough to evict."""
        if len(self.clients) < self.settings.max_sessions:
            return True
        now = time.monotonic()
        idle = [c for c in self.clients.values() if not c.closing and c.idle_s(now) >= self.settings.idle_timeout_s]
        if not idle:
            return False
        victim = max(idle, key=lambda c: c.idle_s(now))
        self._close_client(victim)
        reason = (f"this tab sent nothing for {victim.idle_s(now):.0f} s and another tab took its place "
                  f"(the server holds {self.settings.max_sessions}); reload to reconnect")
        victim.post({"type": "error", "code": "evicted_idle", "message": reason})
        self._drop_soon(victim, 1000, reason)
        return True

    async def _drop(self, client: _Client, close_code: int, reason: str) -> None:
        """End a session from the server's side: forget it, then close its socket with ``reason``."""
        client.closing = True
        self._close_client(client)
        await asyncio.sleep(0)  # let the sender put out what is queued (an error saying why)
        await self._close_socket(client.ws, client.transport, close_code, reason)

    def _drop_soon(self, client: _Client, close_code: int, reason: str) -> None:
        """:meth:`_drop` in a task of its own (it must outlive the session's tasks, which it ends)."""
        client.closing = True
        task = asyncio.ensure_future(self._drop(client, close_code, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch(self, client: _Client) -> None:
        """Ping the tab; drop it if it has not answered a ping for ``client_timeout_s`` (incoming data does not count)."""
        timeout = self.settings.client_timeout_s
        interval = timeout / 3
        payload = itertools.count()
        while not client.closing:
            await asyncio.sleep(interval)
            if time.monotonic() - client.last_pong_s > timeout:
                print(f"vidprune demo: session {client.id} dropped: it answered no ping for {timeout:g} s",
                      file=sys.stderr)
                self._drop_soon(client, 1008, f"no answer to the server's pings for {timeout:g} s: "
                                              "the page is not reading; reload it")
                return
            try:
                await asyncio.wait_for(client.ws.ping(str(next(payload)).encode()), interval)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                pass

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # No aiohttp heartbeat: it counts any incoming data as a sign of life; _watch counts pongs only.
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=False, compress=False,
                                   timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        if not self._origin_ok(request):
            await self._refuse_socket(ws, request.transport, "bad_origin",
                                      "this demo only accepts its own page; open it from the server's URL", 1008)
            return ws
        if not self._make_room():
            await self._refuse_socket(
                ws, request.transport, "too_many_sessions",
                f"the server already has {len(self.clients)} sessions open (limit {self.settings.max_sessions}); "
                "close another tab and reload, or start it with a higher --max-sessions", 1013)  # "try again later"
            return ws
        shared = self.shared_feed
        feed = shared or Feed(self.new_memory(), frame_rate=self.settings.plan.frame_rate)
        client = _Client(ws, feed, request.transport)
        self.clients[client.id] = client
        feed.subscribers.add(client)
        if not feed.shared:
            self.worker.add_feed(feed)
        sender = asyncio.create_task(client.send_loop())
        watcher = asyncio.create_task(self._watch(client))
        client.post(self._hello(client))
        for message in feed.last_messages:  # a late tab sees the last frame (a --source clip may have ended)
            client.post(message)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    client.last_input_s = time.monotonic()
                    self._on_frame(client, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    client.last_input_s = time.monotonic()
                    self._on_text(client, msg.data)
                elif msg.type == WSMsgType.PONG:
                    client.last_pong_s = time.monotonic()
                elif msg.type == WSMsgType.PING:
                    try:
                        await asyncio.wait_for(ws.pong(msg.data), CLOSE_TIMEOUT_S)
                    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                        pass
                elif msg.type == WSMsgType.ERROR:
                    break
            # (a session the server drops ends here too: its close handshake, or the abort after it, ends the loop)
        finally:
            self._close_client(client)
            watcher.cancel()
            sender.cancel()  # the socket is closed: what is still queued has nowhere to go
        return ws

    def _close_client(self, client: _Client) -> None:
        """Forget the tab: stop its answer, and free its memory unless the memory is shared."""
        self.clients.pop(client.id, None)
        client.cancel.set()
        if client.answer_task is not None:
            client.answer_task.cancel()
        feed = client.feed
        feed.subscribers.discard(client)
        if not feed.shared:
            self.worker.remove_feed(feed)
            feed.close()

    def _on_frame(self, client: _Client, data: bytes) -> None:
        seq = client.frames_received
        client.frames_received += 1
        feed = client.feed
        if feed.shared:
            client.error("frames_not_accepted", "this server reads its frames from --source; the page cannot send "
                                                "its own", seq=seq)
            return
        try:
            check_jpeg(data)  # header only: what the frame will cost, before it uses up the frame rate
        except FrameRefused as exc:
            feed.refuse()
            client.error(exc.code, str(exc), seq=seq)
            return
        now = time.monotonic()
        if not feed.admit(now):  # sooner than --fps allows: counted, and the tab is told once
            if not client.told_over_rate:
                client.told_over_rate = True
                client.error("frames_over_rate", f"frames come faster than the server's {self.settings.plan.frame_rate:g} "
                                                 "per second (--fps); it keeps that many and counts the rest as "
                                                 "over_rate", seq=seq)
            return
        feed.offer(PendingFrame(seq=seq, time_s=now, jpeg=bytes(data)))
        self.worker.notify()

    def _on_text(self, client: _Client, text: str) -> None:
        if len(text) > MAX_TEXT_MESSAGE_CHARS:
            client.error("bad_message", f"message has {len(text)} characters, more than {MAX_TEXT_MESSAGE_CHARS}")
            return
        try:
            message = json.loads(text)
        except RecursionError:  # "[" * 1000: the decoder recurses once per level
            client.error("bad_message", "message is nested too deeply; send {\"type\": \"ask\", \"question\": \"...\"}")
            return
        except ValueError:  # not JSON (also: an integer of more than 4300 digits)
            client.error("bad_message", "message is not JSON; send {\"type\": \"ask\", \"question\": \"...\"}")
            return
        if not isinstance(message, dict):
            client.error("bad_message", "message must be a JSON object; send {\"type\": \"ask\", \"question\": \"...\"}")
            return
        kind = message.get("type")
        if kind == "ask":
            self._ask(client, message.get("question"))
        elif kind == "reset":
            if client.feed.shared:
                client.error("bad_message", "the memory is shared by every tab (--source); it cannot be reset")
            else:
                client.feed.reset()
                client.post(self._stats_message(client.feed))
        else:
            client.error("bad_message", f"unknown message type {str(kind)[:40]!r}; send 'ask' or 'reset'")

    # ------------------------------------------------------------ answers
    def _ask(self, client: _Client, question: Any) -> None:
        received = time.perf_counter()
        problem = _question_problem(question)
        if problem is None:
            try:
                question = check_question(question)
            except ConfigError as exc:
                problem = str(exc)
        if problem is not None:
            client.error("question_refused", problem)
            return
        if client.answer_task is not None and not client.answer_task.done():
            client.error("busy", "the previous question is still being answered; wait for it to finish")
            return
        snapshot = client.feed.memory.snapshot(now_s=time.monotonic())  # this moment, a copy
        if snapshot.tokens.shape[0] == 0:
            client.error("memory_empty", "the memory holds no frames yet; wait until the camera has sent a few")
            return
        client.answer_task = asyncio.create_task(self._answer(client, question, snapshot, received))

    async def _answer(self, client: _Client, question: str, snapshot: MemorySnapshot, received: float) -> None:
        tokens, stats = snapshot.tokens, snapshot.stats  # (K, Dc), MemoryStats
        answer_id = next(self._answer_ids)
        client.post({"type": "answer_start", "id": answer_id, "question": question,
                     "visual_tokens": int(tokens.shape[0]), "stats": stats.to_dict()})
        streamer = TokenStreamer(self.llm.processor.tokenizer)
        future = self.worker.submit(
            lambda: answer_streaming(self.llm, question, tokens, streamer, layout=snapshot.layout,
                                     cancel=client.cancel, stage=self.answer_stage))
        try:
            async for text in streamer:
                if text:
                    client.post({"type": "token", "id": answer_id, "text": text})
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # generation failed: tell the tab, keep serving
            print(f"vidprune demo: answering failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            client.error("internal", f"answering failed: {type(exc).__name__}: {exc}")
            return
        ttft = None if streamer.first_token_s is None else streamer.first_token_s - received
        client.post({"type": "answer_end", "id": answer_id, "text": result["text"],
                     "ttft_s": None if ttft is None else round(ttft, 4),
                     "generate_s": round(result["generate_s"], 4), "new_tokens": len(result["token_ids"]),
                     "visual_tokens": result["visual_tokens"], "stock_tokens": stats.stock_tokens,
                     "ivtp": _ivtp_event(self.settings.ivtp, result)})

    # ------------------------------------------------ from other threads
    def _source_frame(self, rgb: np.ndarray, time_s: float) -> None:
        """Source thread: a server-side frame arrived."""
        self.shared_feed.offer(PendingFrame(seq=next(self._source_seq), time_s=time_s, rgb=rgb))
        self.worker.notify()

    def _frame_done(self, feed: Feed, messages: list[Any], frame: PendingFrame) -> None:
        """Model thread: a frame is in the memory; tell the tabs that read the feed."""
        self._loop.call_soon_threadsafe(self._publish, feed, messages)

    def _frame_error(self, feed: Feed, code: str, message: str) -> None:
        self._loop.call_soon_threadsafe(self._publish, feed, [{"type": "error", "code": code, "message": message}])

    def _publish(self, feed: Feed, messages: list[Any]) -> None:
        for client in list(feed.subscribers):
            for message in messages:
                client.post(message)

    # --------------------------------------------------------------- stats
    def _stats_message(self, feed: Feed) -> dict[str, Any]:
        return {"type": "stats", "stats": feed.memory.stats().to_dict(), "load": feed.load(),
                "sessions": len(self.clients),
                "source": None if self.source is None else {"frames": self.source.frames, "ended": self.source.ended,
                                                            "error": self.source.error}}

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            now = time.monotonic()
            feeds = {id(c.feed): c.feed for c in self.clients.values()}
            for feed in feeds.values():
                feed.memory.expire(now)
                self._publish(feed, [self._stats_message(feed)])


def _ivtp_event(schedule: Any, result: dict[str, Any]) -> dict[str, Any] | None:
    """What IVTP did to one answer, for its ``answer_end`` event (None without IVTP)."""
    info = result.get("ivtp")
    if schedule is None or info is None:
        return None
    return {"schedule": [list(st) for st in schedule.stages], "visual_tokens_in": result["visual_tokens"],
            "visual_tokens_kept": len(info["kept"]), "tokens_per_layer": info["tokens_per_layer"]}


_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
               type(None): "null"}


def _question_problem(question: Any) -> str | None:
    """What is wrong with a question from the network that :func:`~vidprune.qa.check_question` does not say."""
    if not isinstance(question, str):
        return (f"the question must be a string, not {_JSON_TYPES.get(type(question), type(question).__name__)}; "
                "send {\"type\": \"ask\", \"question\": \"...\"}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON allows "\ud800" alone; no tokenizer takes it
        return (f"the question has a lone surrogate (U+{ord(question[exc.start]):04X} at character {exc.start}), "
                "which is not text; send valid Unicode")
    return None
