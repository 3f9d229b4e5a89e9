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
    {"type": "hello", ...}  settings: model, memory plan, capture rate and size, limits.
    binary                  (``--source`` only) a JPEG preview of the frame in the next message.
    {"type": "frame", "seq", "size", "grid", "region", "kept", "duplicates", "stats", "load"}
                            a frame was stored: which of its patches were kept / dropped as
                            duplicates, ``region`` = the part of the frame the patch grid covers.
    {"type": "stats", "stats", "load", "sessions"}   once a second (memory ageing shows).
    {"type": "answer_start", "id", "question", "visual_tokens", "stats"}
    {"type": "token", "id", "text"}                   the answer, token by token.
    {"type": "answer_end", "id", "text", "ttft_s", "generate_s", "new_tokens", "visual_tokens"}
    {"type": "error", "code", "message"[, "seq"]}     something was refused; the session goes on.

``stats`` is :meth:`~vidprune.pipeline.memory.MemoryStats.to_dict`; ``load`` counts the
frames received, encoded, dropped (the encoder was busy and a newer frame replaced it) and
refused. ``GET /api/status`` returns the sessions, their memories and load as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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

from ..errors import ConfigError
from ..pipeline.memory import MemoryPlan, MemoryStats, RollingTokenMemory, build_memory
from ..pipeline.stages import EncodeStage
from ..qa import MAX_QUESTION_CHARS, check_question
from ..video_models.base import VideoLLM
from .feed import Feed, FrameRefused, PendingFrame, check_jpeg
from .limits import (CAPTURE_JPEG_QUALITY, CAPTURE_MAX_SIDE, DEFAULT_MAX_SESSIONS, DEFAULT_PORT, HEARTBEAT_S,
                     MAX_FRAME_BYTES, MAX_FRAME_PIXELS, MAX_MESSAGE_BYTES, MAX_TEXT_MESSAGE_CHARS, OUTBOX_LIMIT,
                     PREVIEW_JPEG_QUALITY, STATS_INTERVAL_S)
from .source import ServerSource
from .streaming import TokenStreamer, answer_streaming
from .worker import ModelWorker

__all__ = ["DemoSettings", "DemoServer"]

_STATIC = "static"


@dataclass
class DemoSettings:
    """Everything the server needs besides the model (built and validated by ``vidprune demo``)."""

    plan: MemoryPlan
    memory_options: dict[str, Any] = field(default_factory=dict)  # build_memory keywords (pruner, dedup, ...)
    generate_kwargs: dict[str, Any] = field(default_factory=dict)  # max_new_tokens, do_sample, ...
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    model_name: str = ""
    tiny: bool = False  # a random-weight test checkpoint: the page says its answers are nonsense
    source: str | None = None  # --source: frames from the server (file, device, URL) instead of the browser
    loop_source: bool = False


class _Client:
    """One browser tab: its socket, its feed, a queue of outgoing messages and its running answer."""

    _ids = itertools.count(1)

    def __init__(self, ws: web.WebSocketResponse, feed: Feed):
        self.id = next(self._ids)
        self.ws, self.feed = ws, feed
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self.frames_received = 0  # binary messages so far (= the next frame's seq)
        self.messages_dropped = 0
        self.answer_task: asyncio.Task | None = None
        self.cancel = threading.Event()  # set when the tab goes away: stops its generation

    def post(self, message: dict[str, Any] | bytes) -> None:
        """Queue a message for the tab (event loop thread only)."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.messages_dropped += 1

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.post({"type": "error", "code": code, "message": message, **extra})

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
        self.encoder = EncodeStage(llm, batch_size=1)
        self.worker = ModelWorker(self.encoder, on_frame=self._frame_done, on_error=self._frame_error)
        self.clients: dict[int, _Client] = {}
        self.shared_feed: Feed | None = None
        self.source: ServerSource | None = None
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self._answer_ids = itertools.count(1)
        self._source_seq = itertools.count()

    # ------------------------------------------------------------ lifecycle
    def new_memory(self) -> RollingTokenMemory:
        return build_memory(self.settings.plan, prune_grid=self.llm.geometry.prune_grid,
                            **self.settings.memory_options)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/api/status", self._status)
        app.router.add_static("/static/", str(resources.files(__package__) / _STATIC))
        return app

    async def start(self) -> str:
        """Start the model thread, the source (if any) and the HTTP server; return the page's URL."""
        self._loop = asyncio.get_running_loop()
        self.worker.start()
        s = self.settings
        if s.source is not None:
            self.shared_feed = Feed(self.new_memory(), preview=(CAPTURE_MAX_SIDE, PREVIEW_JPEG_QUALITY), shared=True)
            self.worker.add_feed(self.shared_feed)
            self.source = ServerSource(s.source, s.plan.frame_rate, self._source_frame, loop=s.loop_source)
            self.source.start()
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        self._ticker = asyncio.create_task(self._tick())
        return self.url

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for client in list(self.clients.values()):
            client.cancel.set()
            await client.ws.close()
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
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(str(resources.files(__package__) / _STATIC / "index.html"))

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
            "grid": list(geometry.prune_grid),
            "plan": s.plan.to_dict(),
            "capture": {"frame_rate": s.plan.frame_rate, "max_side": CAPTURE_MAX_SIDE,
                        "quality": CAPTURE_JPEG_QUALITY},
            "limits": {"max_frame_bytes": MAX_FRAME_BYTES, "max_frame_pixels": MAX_FRAME_PIXELS,
                       "max_question_chars": MAX_QUESTION_CHARS, "max_sessions": s.max_sessions},
        }

    # -------------------------------------------------------- WebSocket
    def _origin_ok(self, request: web.Request) -> bool:
        """Browsers send Origin: refuse pages from other sites (any web page could open ws://127.0.0.1)."""
        origin = request.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == request.host

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        if not self._origin_ok(request):
            await ws.send_str(json.dumps({"type": "error", "code": "bad_origin",
                                          "message": "this demo only accepts its own page; open it from the server's URL"}))
            await ws.close(code=1008)
            return ws
        if len(self.clients) >= self.settings.max_sessions:
            await ws.send_str(json.dumps({"type": "error", "code": "too_many_sessions",
                                          "message": f"the server already has {len(self.clients)} sessions open "
                                                     f"(limit {self.settings.max_sessions}); close another tab "
                                                     "and reload, or start it with a higher --max-sessions"}))
            await ws.close(code=1013)  # "try again later"
            return ws
        feed = self.shared_feed or Feed(self.new_memory())
        client = _Client(ws, feed)
        self.clients[client.id] = client
        feed.subscribers.add(client)
        if not feed.shared:
            self.worker.add_feed(feed)
        sender = asyncio.create_task(client.send_loop())
        client.post(self._hello(client))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self._on_frame(client, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_text(client, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._close_client(client)
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
            check_jpeg(data)
        except FrameRefused as exc:
            feed.refused += 1
            client.error(exc.code, str(exc), seq=seq)
            return
        feed.offer(PendingFrame(seq=seq, time_s=time.monotonic(), jpeg=bytes(data)))
        self.worker.notify()

    def _on_text(self, client: _Client, text: str) -> None:
        if len(text) > MAX_TEXT_MESSAGE_CHARS:
            client.error("bad_message", f"message has {len(text)} characters, more than {MAX_TEXT_MESSAGE_CHARS}")
            return
        try:
            message = json.loads(text)
        except ValueError:
            client.error("bad_message", "message is not JSON; send {\"type\": \"ask\", \"question\": \"...\"}")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ask":
            self._ask(client, message.get("question"))
        elif kind == "reset":
            if client.feed.shared:
                client.error("bad_message", "the memory is shared by every tab (--source); it cannot be reset")
            else:
                client.feed.memory.clear()
                client.post(self._stats_message(client.feed))
        else:
            client.error("bad_message", f"unknown message type {kind!r}; send 'ask' or 'reset'")

    # ------------------------------------------------------------ answers
    def _ask(self, client: _Client, question: Any) -> None:
        received = time.perf_counter()
        try:
            question = check_question(question)
        except ConfigError as exc:
            client.error("question_refused", str(exc))
            return
        if client.answer_task is not None and not client.answer_task.done():
            client.error("busy", "the previous question is still being answered; wait for it to finish")
            return
        tokens, stats = client.feed.memory.snapshot(now_s=time.monotonic())  # (K, Dv): this moment, a copy
        if tokens.shape[0] == 0:
            client.error("memory_empty", "the memory holds no frames yet; wait until the camera has sent a few")
            return
        client.answer_task = asyncio.create_task(self._answer(client, question, tokens, stats, received))

    async def _answer(self, client: _Client, question: str, tokens: torch.Tensor, stats: MemoryStats,
                      received: float) -> None:
        answer_id = next(self._answer_ids)
        client.post({"type": "answer_start", "id": answer_id, "question": question,
                     "visual_tokens": int(tokens.shape[0]), "stats": stats.to_dict()})
        streamer = TokenStreamer(self.llm.processor.tokenizer)
        gen = dict(self.settings.generate_kwargs)
        future = self.worker.submit(
            lambda: answer_streaming(self.llm, question, tokens, streamer, cancel=client.cancel, **gen))
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
                     "visual_tokens": result["visual_tokens"], "stock_tokens": stats.stock_tokens})

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
