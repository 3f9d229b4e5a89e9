"""The model thread: the one place the model runs, so the event loop never waits on it.

One :class:`ModelWorker` per server owns the model. Its loop, each time it is free:

1. runs the oldest submitted job (an answer to a question), if any, else
2. encodes the newest pending frame of the next feed in round-robin order, else
3. sleeps until a job is submitted or a frame offered (:meth:`ModelWorker.notify`).

So questions go before frames, every feed gets its turn, and the work waiting at any
moment is bounded: one pending frame per feed (newest wins) and at most one question per
tab. Results go back through callbacks, which run on this thread (the server hops them
onto its event loop).
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import traceback
from collections import deque
from typing import Any, Callable

from ..pipeline.stages import EncodeStage
from .feed import Feed, FrameRefused, PendingFrame

__all__ = ["ModelWorker"]

FrameCallback = Callable[[Feed, list[Any], PendingFrame], None]
ErrorCallback = Callable[[Feed, str, str], None]


class ModelWorker:
    """Runs encode and generate on one thread.

    Args:
        encoder: the model's :class:`EncodeStage` (one frame per call).
        on_frame: ``(feed, messages, frame)`` after a frame was stored in its feed's memory.
        on_error: ``(feed, code, message)`` when a frame could not be used.
    """

    def __init__(self, encoder: EncodeStage, on_frame: FrameCallback, on_error: ErrorCallback):
        self.encoder = encoder
        self._on_frame, self._on_error = on_frame, on_error
        self._feeds: list[Feed] = []
        self._cursor = 0
        self._jobs: deque[tuple[concurrent.futures.Future, Callable[[], Any]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vidprune-model", daemon=True)
        self.frames_encoded = 0
        self.jobs_done = 0

    # ------------------------------------------------------------- control
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the current item, cancel queued jobs, and end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            jobs, self._jobs = list(self._jobs), deque()
        for future, _ in jobs:
            future.cancel()

    def add_feed(self, feed: Feed) -> None:
        with self._lock:
            self._feeds.append(feed)
        self._wake.set()

    def remove_feed(self, feed: Feed) -> None:
        with self._lock:
            if feed in self._feeds:
                self._feeds.remove(feed)

    def notify(self) -> None:
        """A frame was offered to some feed: wake the thread if it sleeps."""
        self._wake.set()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn()`` on the model thread before any further frame; its result or exception lands in the future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("the model worker is stopping")
            self._jobs.append((future, fn))
        self._wake.set()
        return future

    @property
    def pending_jobs(self) -> int:
        with self._lock:
            return len(self._jobs)

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()  # cleared before looking, so a notify during the pass is not lost
            while not self._stopping and self._step():
                pass

    def _step(self) -> bool:
        """Do one item of work; False if there was none."""
        with self._lock:
            job = self._jobs.popleft() if self._jobs else None
            feeds = list(self._feeds)
        if job is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
            self.jobs_done += 1
            return True
        for i in range(len(feeds)):
            feed = feeds[(self._cursor + i) % len(feeds)]
            if len(feed.slot) == 0:
                continue
            self._cursor = (self._cursor + i + 1) % len(feeds)
            self._encode(feed)
            return True
        return False

    def _encode(self, feed: Feed) -> None:
        try:
            result = feed.encode_next(self.encoder)
        except FrameRefused as exc:
            self._on_error(feed, exc.code, str(exc))
            return
        except Exception as exc:  # a bug or a device error: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self._on_error(feed, "internal", f"encoding a frame failed: {type(exc).__name__}: {exc}")
            return
        if result is not None:
            self.frames_encoded += 1
            self._on_frame(feed, *result)
