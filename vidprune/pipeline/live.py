"""Live frame sources: a camera, a network stream, a video file played in real time, a Python iterator.

One front door, :func:`open_live_source`, returns a :class:`LiveSource`: an iterator
of :class:`~vidprune.pipeline.decode.Frame` (``index``, ``time_s``, ``rgb`` ``(H, W, 3)``
uint8, upright) sampled at a target rate, with ``.close()`` (also a context manager)::

    with open_live_source("rtsp://camera.local/stream", fps=2.0, timeout_s=10, reconnects=3) as source:
        for frame in source:
            ...

``spec``: ``"/dev/video0"`` or ``"device:NAME"`` (a camera through FFmpeg's device
input), a URL (``rtsp://``, ``http(s)://``, ``udp://``, ...), a path to a video file
(played in real time, through the decode package's one frame reader,
:class:`~vidprune.pipeline.decode.SampledFrames`), or any other iterable of
``(H, W, 3)`` uint8 arrays or ``(rgb, time_s)`` pairs. Semantics (indices, times, rate
sampling, time-outs and reconnects, closing from another thread): ``docs/decoding.md``,
"Live sources".

Attributes: ``kind`` (``"device"``, ``"url"``, ``"file"``, ``"iterator"``), ``spec``,
``fps``, ``warnings`` (one-line notes, e.g. each reconnect), ``stats`` (``received``,
``yielded``, ``dropped``, ``reconnects``).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import av
import numpy as np

from vidprune.errors import ConfigError, VideoDecodeError
from vidprune.validators import check_non_negative_int, check_positive_number
from vidprune.pipeline.decode import Frame, FrameSampling, SampledFrames, VideoReader, frame_to_rgb

__all__ = [
    "DEFAULT_RECONNECTS",
    "DEFAULT_TIMEOUT_S",
    "SOURCE_KINDS",
    "LiveSource",
    "open_live_source",
    "source_kind",
]

SOURCE_KINDS: tuple[str, ...] = ("device", "url", "file", "iterator")

#: Seconds without a frame before a camera or stream counts as lost (a slow network stream stalls for seconds).
DEFAULT_TIMEOUT_S = 10.0
#: Reconnects in a row before giving up (rides out a camera or server restart).
DEFAULT_RECONNECTS = 3
# Back-off before reconnect k (k = 1, 2, ...): _BACKOFF_S * 2**(k-1), at most _BACKOFF_MAX_S.
_BACKOFF_S = 0.5
_BACKOFF_MAX_S = 4.0
# A frame counts for its rate slot if it is at most this fraction of a slot early (jitter).
_RATE_SLACK = 0.25
# FFmpeg probes 5 s of a stream before it returns from open; 1 s is enough to find a video stream.
_LIVE_PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}
# FFmpeg's camera input per platform.
_CAMERA_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}
# Iterator sources hand frames over through a queue this long (the producer waits when it is full).
_ITERATOR_QUEUE = 2
# How often a thread waiting for an iterator's frame looks whether the source was closed (seconds).
_CLOSE_POLL_S = 0.1


def has_input_format(name: str) -> bool:
    """Whether the FFmpeg inside PyAV has the input format ``name``.

    FFmpeg lists a demuxer under all its names joined by commas (``"video4linux2,v4l2"``),
    so a plain ``name in av.formats_available`` misses aliases.
    """
    import av

    return any(name in entry.split(",") for entry in av.formats_available)


def source_kind(spec: object) -> str:
    """``"device"``, ``"url"``, ``"file"`` or ``"iterator"`` for a source spec (see the module docstring).

    Raises ConfigError for a directory or a value that is none of them (e.g. an int),
    VideoDecodeError for a path that does not exist.
    """
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.startswith("device:"):
            return "device"
        if "://" in text:
            return "url"
        if text.startswith("/dev/video"):
            return "device"
        if os.path.isdir(text):
            raise ConfigError(f"source {text!r} is a directory; pass a video file, a camera or a stream URL")
        if os.path.exists(text):
            return "file"
        raise VideoDecodeError(
            f"cannot open source {text!r}: it is not an existing file, a camera (/dev/videoN, device:NAME) or a "
            "stream URL (rtsp://, http://, udp://, ...); check the path or URL"
        )
    if isinstance(spec, (bytes, bytearray)) or not isinstance(spec, Iterable):
        raise ConfigError(
            f"source must be a path, a camera, a URL or an iterable of frames, got {type(spec).__name__}"
        )
    return "iterator"


def open_live_source(
    spec: str | os.PathLike[str] | Iterable[Any],
    fps: float,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    reconnects: int = DEFAULT_RECONNECTS,
    *,
    loop: bool = False,
    options: dict[str, str] | None = None,
) -> LiveSource:
    """Open ``spec`` as a :class:`LiveSource` of frames at (at most) ``fps`` per second.

    ``timeout_s``: seconds without a frame before reconnecting (> 0). ``reconnects``:
    reconnects in a row before giving up (>= 0). ``loop``: replay a file source.
    ``options``: FFmpeg options for cameras and streams (e.g. ``{"rtsp_transport":
    "tcp"}``, ``{"video_size": "640x480"}``), added to the defaults. Raises
    ConfigError for bad arguments and VideoDecodeError when the source cannot be opened.
    """
    fps, timeout_s = check_positive_number("fps", fps), check_positive_number("timeout_s", timeout_s)
    reconnects = check_non_negative_int("reconnects", reconnects)
    kind = source_kind(spec)
    if kind == "iterator":
        return _IteratorSource(spec, float(fps), float(timeout_s))  # type: ignore[arg-type]
    text = os.fspath(spec)  # type: ignore[arg-type]
    if kind == "file":
        return _RealTimeFile(text, float(fps), loop)
    return _StreamSource(text, kind, float(fps), float(timeout_s), reconnects, dict(options or {}))


class LiveSource(Iterator[Frame]):
    """Frames from a live source at a target rate; see the module docstring. Use :func:`open_live_source`."""

    kind: str = ""

    def __init__(self, spec: str, fps: float) -> None:
        self.spec = spec
        self.fps = fps
        self.warnings: list[str] = []
        self.stats = {"received": 0, "yielded": 0, "dropped": 0, "reconnects": 0}
        self._period = 1.0 / fps
        self._next_slot: float | None = None
        self._prev_t: float | None = None  # time of the previous frame delivered
        self._last_time = 0.0
        self._closed = threading.Event()
        self._iter_lock = threading.Lock()
        self._frames: Iterator[Frame] | None = None

    # ---------------------------------------------------------------- for subclasses

    def _raw(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        """Every frame the source delivers: (time_s, a callable that makes its RGB)."""
        raise NotImplementedError

    def _keep(self, t: float) -> bool:
        """Rate sampling: the first frame at or after each slot; a little early counts as on time
        (a quarter slot, at most half the source's own frame interval, so it is the nearest frame)."""
        step, self._prev_t = (t - self._prev_t if self._prev_t is not None else None), t
        slack = _RATE_SLACK * self._period
        if step is not None and step > 0:
            slack = min(slack, 0.5 * step)
        if self._next_slot is None or t + slack >= self._next_slot:
            slot = t if self._next_slot is None else self._next_slot
            self._next_slot = slot + self._period
            if self._next_slot <= t:  # far behind (a gap in the stream): no burst to catch up
                self._next_slot = t + self._period
            return True
        return False

    def _sampled(self) -> Iterator[Frame]:
        index = -1
        for t, make_rgb in self._raw():
            index += 1
            self.stats["received"] += 1
            t = max(t, self._last_time)  # never decreasing
            self._last_time = t
            if not self._keep(t):
                self.stats["dropped"] += 1
                continue
            frame = Frame(index=index, time_s=t, rgb=make_rgb())
            self.stats["yielded"] += 1
            yield frame
            if self._closed.is_set():
                return

    # ---------------------------------------------------------------- iterator protocol

    def __iter__(self) -> LiveSource:
        return self

    def __next__(self) -> Frame:
        with self._iter_lock:
            if self._closed.is_set():
                self._finish()
                raise StopIteration
            if self._frames is None:
                self._frames = self._sampled()
            try:
                return next(self._frames)
            except BaseException:  # the end, an error, or close() from another thread: release now
                self._finish()
                raise

    def close(self) -> None:
        """Stop the source and release it (from another thread: at its next frame or time-out)."""
        self._closed.set()
        if self._iter_lock.acquire(blocking=False):
            try:
                self._finish()
            finally:
                self._iter_lock.release()

    def _finish(self) -> None:
        frames, self._frames = self._frames, None
        if frames is not None:
            frames.close()  # runs the generators' cleanup (closes containers) in this thread
        self._release()

    def _release(self) -> None:
        """Free what the source holds outside its frame generator."""

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, kind={self.kind!r}, fps={self.fps:g})"


# ------------------------------------------------------------------------ cameras and streams


class _StreamSource(LiveSource):
    """A camera or a network stream through PyAV, with read time-outs and reconnects."""

    def __init__(
        self, spec: str, kind: str, fps: float, timeout_s: float, reconnects: int, options: dict[str, str]
    ) -> None:
        super().__init__(spec, fps)
        self.kind = kind
        self.timeout_s = timeout_s
        self.reconnects = reconnects
        self._options = options
        self._target, self._format = self._resolve()
        self._failures = 0  # failed connections in a row
        self._container: Any = None
        self._anchor = 0.0  # time_s of the first frame of the current connection
        self._clock0: float | None = None  # time.monotonic() at the source's first frame
        self._container = self._connect()  # fail now, not at the first next()

    def _resolve(self) -> tuple[str, str | None]:
        """(what to open, FFmpeg input format or None)."""
        if self.kind == "url":
            return self.spec, None
        name = self.spec.removeprefix("device:")
        fmt = _CAMERA_FORMATS.get(sys.platform, "v4l2")
        if fmt == "v4l2":
            target = f"/dev/video{name}" if name.isdigit() else name
            if not os.path.exists(target):
                raise VideoDecodeError(
                    f"cannot open camera {self.spec!r}: no such device {target}; list the cameras with "
                    "`ls /dev/video*` (or `v4l2-ctl --list-devices`)"
                )
        elif fmt == "dshow":
            target = name if name.startswith("video=") else f"video={name}"
        else:
            target = name
        if not has_input_format(fmt):
            raise VideoDecodeError(
                f"cannot open camera {self.spec!r}: the FFmpeg inside this PyAV build has no '{fmt}' camera input; "
                "install PyAV built on a system FFmpeg (`pip install av --no-binary av`), or stream the camera "
                "with ffmpeg to a URL (e.g. udp://127.0.0.1:5000) and open that"
            )
        return target, fmt

    def _open_once(self) -> Any:
        options = dict(_LIVE_PROBE_OPTIONS) if self.kind == "url" else {}
        options.update(self._options)
        return av.open(
            self._target,
            mode="r",
            format=self._format,
            options=options,
            timeout=(self.timeout_s, self.timeout_s),
            metadata_errors="replace",
        )

    def _connect(self) -> Any:
        """Open the source, retrying with back-off; VideoDecodeError after too many failures in a row."""
        while True:
            if self._closed.is_set():
                return None
            try:
                container = self._open_once()
            except av.ExitError:
                cause = f"it did not answer within {self.timeout_s:g} s"
            except (av.FFmpegError, OSError) as e:
                cause = _one_line(e)
            else:
                if not container.streams.video:
                    container.close()
                    raise VideoDecodeError(
                        f"cannot read {self._what()}: it has no video stream; pass a source that carries video"
                    )
                return container
            self._lost(f"cannot open it ({cause})")

    def _lost(self, cause: str) -> None:
        """Count a failure; raise if there were too many in a row, else wait the back-off."""
        if self._closed.is_set():
            return
        self._failures += 1
        if self._failures > self.reconnects:
            tried = f"after {self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}" if self.reconnects else ""
            raise VideoDecodeError(
                f"cannot read {self._what()}: {cause}{', ' + tried if tried else ''}; check that it is running and "
                "reachable, or allow more time (timeout_s) and reconnects"
            )
        self.stats["reconnects"] += 1
        delay = min(_BACKOFF_MAX_S, _BACKOFF_S * 2 ** (self._failures - 1))
        self.warnings.append(f"{self._what()}: {cause}; reconnecting in {delay:g} s")
        self._closed.wait(delay)

    def _what(self) -> str:
        return f"camera {self.spec!r}" if self.kind == "device" else f"stream {self.spec!r}"

    def _convert(self, frame: Any) -> np.ndarray:
        try:
            return frame_to_rgb(frame)
        except (av.FFmpegError, ValueError) as e:
            raise VideoDecodeError(
                f"cannot read {self._what()}: a frame cannot be converted to RGB ({_one_line(e)}); "
                "check the camera's or stream's pixel format"
            ) from None

    def _release(self) -> None:
        container, self._container = self._container, None  # opened but never read
        if container is not None:
            container.close()

    def _raw(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        try:
            while not self._closed.is_set():
                container = self._container if self._container is not None else self._connect()
                self._container = None
                if container is None:
                    return
                try:
                    cause = yield from self._read(container)
                finally:
                    container.close()
                if self._closed.is_set():
                    return
                self._lost(cause)
        finally:
            if self._container is not None:
                self._container.close()
                self._container = None

    def _read(self, container: Any) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        """Frames of one connection; returns why it ended."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base
        first_pts: int | None = None
        first_frame = True
        last_frame_at = time.monotonic()
        demuxer = container.demux(stream)
        while not self._closed.is_set():
            try:
                packet = next(demuxer)
            except StopIteration:
                return "the stream ended"
            except av.ExitError:
                return f"no data within {self.timeout_s:g} s"
            except av.FFmpegError as e:
                return f"the stream broke off ({_one_line(e)})"
            try:
                frames = packet.decode()
            except av.FFmpegError:
                frames = []  # a damaged packet: the next keyframe recovers
            for frame in frames:
                now = time.monotonic()
                last_frame_at = now
                if self._clock0 is None:
                    self._clock0 = now
                if first_frame:  # anchor this connection's timestamps to the wall clock
                    self._anchor = now - self._clock0
                    first_pts = frame.pts
                    first_frame = False
                    self._failures = 0
                if frame.pts is not None and first_pts is not None and time_base is not None:
                    t = self._anchor + float((frame.pts - first_pts) * time_base)
                    if t < self._last_time:  # timestamps jumped back (a looping server, a pts wrap)
                        self._anchor, first_pts = max(now - self._clock0, self._last_time), frame.pts
                        t = self._anchor
                else:
                    t = now - self._clock0
                yield t, (lambda f=frame: self._convert(f))
            if time.monotonic() - last_frame_at > self.timeout_s:
                return f"no frame within {self.timeout_s:g} s"
        return "closed"


# ------------------------------------------------------------------------ files in real time


class _RealTimeFile(LiveSource):
    """A video file played in real time: sampled frames handed on at their presentation times."""

    kind = "file"

    def __init__(self, path: str, fps: float, loop: bool) -> None:
        super().__init__(path, fps)
        self.loop = loop
        self._reader = VideoReader(path, use_index=True)  # VideoDecodeError now for a file that is not a video
        self._selection = FrameSampling(fps=fps)  # nearest frame to each slot, no cap
        times = self._reader.frame_times
        step = float(np.median(np.diff(times))) if len(times) > 1 else self._period
        self._duration = times[-1] + step  # one pass, including the last frame's display time
        self.warnings = self._reader.warnings  # the reader's notes are the source's

    def _keep(self, t: float) -> bool:
        return True  # already sampled by fps_indices

    def _sampled(self) -> Iterator[Frame]:
        n = len(self._reader)
        start = time.monotonic()
        passes = 0
        while not self._closed.is_set():
            offset = passes * self._duration
            frames = SampledFrames(self._reader, self._selection)
            try:
                for frame in frames:
                    t = offset + frame.time_s
                    if self._closed.wait(max(0.0, start + t - time.monotonic())):
                        return
                    self.stats["received"] += 1
                    self.stats["yielded"] += 1
                    yield Frame(index=passes * n + frame.index, time_s=t, rgb=frame.rgb)
            finally:
                frames.close()
            if not self.loop:
                return
            passes += 1

    def _release(self) -> None:
        self._reader.close()


# ------------------------------------------------------------------------ Python iterators


class _IteratorSource(LiveSource):
    """Frames from a Python iterable, pulled by a helper thread so that a stall can time out."""

    kind = "iterator"

    def __init__(self, frames: Iterable[Any], fps: float, timeout_s: float) -> None:
        super().__init__(f"<{type(frames).__name__}>", fps)
        self.timeout_s = timeout_s
        self._items: queue.Queue[tuple[str, Any, float]] = queue.Queue(maxsize=_ITERATOR_QUEUE)
        self._thread = threading.Thread(
            target=self._pull, args=(iter(frames),), name="vidprune-live-iterator", daemon=True
        )
        self._thread.start()

    def _pull(self, it: Iterator[Any]) -> None:
        try:
            for item in it:
                if not self._put(("item", item, time.monotonic())):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread
            self._put(("error", e, time.monotonic()))
            return
        self._put(("end", None, time.monotonic()))

    def _put(self, entry: tuple[str, Any, float]) -> bool:
        while not self._closed.is_set():
            try:
                self._items.put(entry, timeout=_CLOSE_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _raw(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        clock0: float | None = None
        count = 0
        while True:
            deadline = time.monotonic() + self.timeout_s
            while True:  # wait in short slices, so that close() from another thread is seen
                if self._closed.is_set():
                    return
                try:
                    kind, item, arrived = self._items.get(timeout=min(_CLOSE_POLL_S, self.timeout_s))
                    break
                except queue.Empty:
                    if time.monotonic() >= deadline:
                        raise VideoDecodeError(
                            f"the frame iterator gave no frame within {self.timeout_s:g} s; make it yield frames "
                            "faster, or allow more time (timeout_s)"
                        ) from None
            if kind == "end":
                return
            if kind == "error":
                raise VideoDecodeError(
                    f"the frame iterator failed after {count} frames ({type(item).__name__}: {item}); "
                    "fix the code that produces the frames"
                ) from item
            if clock0 is None:
                clock0 = arrived
            rgb, t = _iterator_item(item, count, arrived - clock0)
            count += 1
            yield t, (lambda rgb=rgb: rgb)


def _iterator_item(item: Any, position: int, clock_s: float) -> tuple[np.ndarray, float]:
    """(rgb, time_s) of one item from a frame iterator: an array, or an (array, time_s) pair."""
    t = clock_s
    if isinstance(item, tuple) and len(item) == 2:
        item, t = item
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not np.isfinite(t):
            raise ConfigError(f"frame {position} from the iterator has time {t!r}; give seconds as a finite number")
        t = float(t)
    rgb = np.asarray(item)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ConfigError(
            f"frame {position} from the iterator is a {rgb.dtype} array of shape {rgb.shape}; "
            "yield (H, W, 3) uint8 RGB arrays, or (array, time_s) pairs"
        )
    return np.ascontiguousarray(rgb), t


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]
