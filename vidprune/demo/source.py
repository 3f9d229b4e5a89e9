"""Server-side frame sources for the demo (``vidprune demo --source``): a file, a camera, a stream URL.

For machines where the camera is on the server, not in the browser. A minimal version,
to be unified with the pipeline's live sources later:

* a **video file** is decoded with :class:`~vidprune.pipeline.decode.VideoReader`
  (upright RGB, true frame times), sampled at the demo's frame rate and **played in
  real time**: each frame is handed on when the wall clock reaches its presentation
  time (``--loop`` starts it again at the end);
* a **camera device** (``/dev/videoN``, Linux V4L2) or a **stream URL** (``rtsp://``,
  ``http(s)://``, ``udp://``, ...) is opened with PyAV and read as fast as it delivers;
  frames closer than ``1 / frame_rate`` to the last one handed on are skipped.

Frames go to ``on_frame(rgb (H, W, 3) uint8, time_s)`` from the source's own thread,
with ``time_s`` on ``time.monotonic()``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable

import numpy as np

from ..errors import ConfigError, VideoDecodeError
from ..pipeline.decode import VideoReader
from ..pipeline.sampling import fps_indices

__all__ = ["SOURCE_KINDS", "source_kind", "ServerSource"]

SOURCE_KINDS = ("file", "device", "url")

# How long to wait before reopening a camera or stream that stopped delivering (seconds).
_REOPEN_DELAY_S = 2.0
# PyAV options for network streams: give up on a dead connection after this many microseconds.
_STREAM_TIMEOUT_US = "5000000"


def source_kind(spec: str) -> str:
    """``"file"``, ``"device"`` or ``"url"`` for a ``--source`` value; ConfigError if it is none of them."""
    if "://" in spec:
        return "url"
    if spec.startswith("/dev/video"):
        if not os.path.exists(spec):
            raise ConfigError(f"--source {spec!r}: no such camera device; list cameras with `ls /dev/video*`")
        return "device"
    if os.path.isfile(spec):
        return "file"
    if os.path.isdir(spec):
        raise ConfigError(f"--source {spec!r} is a directory; pass a video file, a /dev/videoN camera or a URL")
    raise ConfigError(f"--source {spec!r} is not a video file, a /dev/videoN camera or a stream URL "
                      "(rtsp://, http://, ...); check the path")


class ServerSource:
    """Reads frames from a file (real time), a camera device or a stream URL on a background thread.

    Args:
        spec: the ``--source`` value.
        frame_rate: frames per second handed on (at most).
        on_frame: called as ``on_frame(rgb, time_s)`` from the source thread.
        loop: replay a file from the start when it ends.

    Attributes:
        ended: the source has no more frames (a file played to its end without ``loop``).
        error: the one-line reason the source stopped, if it failed.
        frames: frames handed on so far.
    """

    def __init__(self, spec: str, frame_rate: float, on_frame: Callable[[np.ndarray, float], None],
                 loop: bool = False):
        self.spec, self.kind = spec, source_kind(spec)
        if self.kind == "file":
            VideoReader(spec).close()  # fail now (VideoDecodeError) on a file that is not a video
        self.frame_rate, self.on_frame, self.loop = float(frame_rate), on_frame, loop
        self.ended = False
        self.error: str | None = None
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vidprune-source", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def describe(self) -> str:
        return f"{self.kind} {self.spec}"

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        try:
            if self.kind == "file":
                self._play_file()
            else:
                self._read_live()
        except VideoDecodeError as exc:
            self.error = str(exc)
        except Exception as exc:  # keep the server up; the pages show the reason
            self.error = f"source {self.spec!r} failed: {type(exc).__name__}: {exc}"
        if self.error:
            print(f"vidprune demo: {self.error}", file=sys.stderr)
        self.ended = True

    def _emit(self, rgb: np.ndarray) -> None:
        self.frames += 1
        self.on_frame(np.ascontiguousarray(rgb), time.monotonic())

    def _play_file(self) -> None:
        with VideoReader(self.spec) as reader:
            indices = fps_indices(reader.frame_times, self.frame_rate)
            while not self._stop.is_set():
                start = time.monotonic()
                for frame in reader.iter_frames(indices):
                    # Wait until the frame's presentation time (relative to the start of this pass).
                    if self._stop.wait(max(0.0, start + frame.time_s - time.monotonic())):
                        return
                    self._emit(frame.rgb)
                if not self.loop:
                    return
                self._stop.wait(1.0 / self.frame_rate)  # the gap between the last frame and the first

    def _read_live(self) -> None:
        import av

        options = {"rw_timeout": _STREAM_TIMEOUT_US} if self.kind == "url" else {}
        fmt = "v4l2" if self.kind == "device" else None
        period, last = 1.0 / self.frame_rate, -float("inf")
        while not self._stop.is_set():
            try:
                with av.open(self.spec, format=fmt, options=options) as container:
                    for frame in container.decode(video=0):
                        if self._stop.is_set():
                            return
                        now = time.monotonic()
                        if now - last < period:
                            continue
                        last = now
                        self._emit(frame.to_ndarray(format="rgb24"))
            except av.error.FFmpegError as exc:
                print(f"vidprune demo: source {self.spec!r}: {exc}; retrying in {_REOPEN_DELAY_S:g} s",
                      file=sys.stderr)
            self._stop.wait(_REOPEN_DELAY_S)
