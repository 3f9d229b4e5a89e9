"""Server-side frame sources for the demo (``vidprune demo --source``): a file, a camera, a stream URL.

For machines where the camera is on the server, not in the browser. The reading itself is
:func:`vidprune.pipeline.live.open_live_source` (files played in real time, cameras and
stream URLs through PyAV with a read time-out and reconnects, sampled at the demo's frame
rate); this module only runs it on a background thread and hands each frame to
``on_frame(rgb (H, W, 3) uint8, time_s)``, with ``time_s`` on ``time.monotonic()`` (the
server's clock, which the rolling memory ages frames by).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable

import numpy as np

from ..errors import ConfigError, VideoDecodeError
from ..pipeline.live import LiveSource, open_live_source
from ..pipeline.live import source_kind as _live_source_kind

__all__ = ["SOURCE_KINDS", "source_kind", "ServerSource"]

SOURCE_KINDS = ("file", "device", "url")


def source_kind(spec: str) -> str:
    """``"file"``, ``"device"`` or ``"url"`` for a ``--source`` value; a one-line error if it is none of them."""
    kind = _live_source_kind(spec)
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"--source {spec!r} must be a video file, a camera (/dev/videoN, device:NAME) or a URL")
    return kind


class ServerSource:
    """Reads frames from a file (real time), a camera device or a stream URL on a background thread.

    Args:
        spec: the ``--source`` value.
        frame_rate: frames per second handed on (at most).
        on_frame: called as ``on_frame(rgb, time_s)`` from the source thread.
        loop: replay a file from the start when it ends.

    The source is opened here (a wrong path, a missing camera or an unreachable URL raises
    :class:`VideoDecodeError` at once); reading starts with :meth:`start`.

    Attributes:
        ended: the source has no more frames (a file played to its end, or the source gave up).
        error: the one-line reason the source stopped, if it failed.
        frames: frames handed on so far.
    """

    def __init__(self, spec: str, frame_rate: float, on_frame: Callable[[np.ndarray, float], None],
                 loop: bool = False):
        self.spec, self.kind = spec, source_kind(spec)
        self.frame_rate, self.on_frame, self.loop = float(frame_rate), on_frame, loop
        self._live: LiveSource = open_live_source(spec, self.frame_rate, loop=loop)
        self.ended = False
        self.error: str | None = None
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="vidprune-source", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._live.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def describe(self) -> str:
        return f"{self.kind} {self.spec}"

    def _run(self) -> None:
        try:
            for frame in self._live:
                self.frames += 1
                self.on_frame(np.ascontiguousarray(frame.rgb), time.monotonic())
        except VideoDecodeError as exc:
            self.error = str(exc)
        except Exception as exc:  # keep the server up; the pages show the reason
            self.error = f"source {self.spec!r} failed: {type(exc).__name__}: {exc}"
        finally:
            self._live.close()
        if self.error:
            print(f"vidprune demo: {self.error}", file=sys.stderr)
        self.ended = True
