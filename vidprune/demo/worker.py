"""The model thread: the one place the model runs, so the event loop never waits on it.

One :class:`ModelWorker` per server owns the model. Questions and frames take turns:
each time it is free, the worker

1. encodes the newest pending frame of the next feed (round robin) that has a frame
   pending and has not had one encoded since the last answer, else
2. runs the oldest submitted job (an answer to a question), if any, else
3. encodes the newest pending frame of the next feed with one pending, else
4. sleeps until a job is submitted or a frame offered (:meth:`ModelWorker.notify`).

So between two answers every feed with a pending frame gets one frame encoded: under
constant questions from every tab, a tab waits for its next frame at most one answer
(bounded by ``--max-new-tokens``) plus one frame encode per tab; a question waits at most
one frame encode per tab plus the answers queued before it (at most one per tab, oldest
first). The work waiting at any moment is bounded: one pending frame per feed (newest
wins) and at most one question per tab. Results go back through callbacks, which run on
this thread (the server hops them onto its event loop).
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
        self._served: set[int] = set()  # ids of the feeds that had a frame encoded since the last job
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
        """Run ``fn()`` on the model thread (after at most one frame per feed); its result or exception lands in the future."""
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
            feeds = list(self._feeds)
            has_job = bool(self._jobs)
        # With a question waiting, frames go first only for the feeds not yet served since the last answer.
        feed = self._next_pending(feeds, skip=self._served if has_job else ())
        if feed is not None:
            self._encode(feed)
            return True
        with self._lock:
            job = self._jobs.popleft() if self._jobs else None
        if job is not None:
            self._run_job(*job)
            return True
        return False

    def _next_pending(self, feeds: list[Feed], skip) -> Feed | None:
        """The next feed in round-robin order with a pending frame and not in ``skip`` (advances the cursor)."""
        for i in range(len(feeds)):
            feed = feeds[(self._cursor + i) % len(feeds)]
            if len(feed.slot) == 0 or id(feed) in skip:
                continue
            self._cursor = (self._cursor + i + 1) % len(feeds)
            return feed
        return None

    def _run_job(self, future: concurrent.futures.Future, fn: Callable[[], Any]) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)
        self.jobs_done += 1
        self._served.clear()

    def _encode(self, feed: Feed) -> None:
        self._served.add(id(feed))
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
