"""A feed: one live stream's way into a rolling token memory.

Frames are offered to the feed's :class:`~vidprune.pipeline.latest_frame.LatestFrameSlot`
(newest wins, drops counted) by whoever receives them (a browser tab's socket, a
server-side source); the model thread calls :meth:`Feed.encode_next` whenever it is free,
which decodes, encodes, prunes, dedups and stores the newest pending frame and returns
the message that tells the page what happened. Frames are JPEG bytes (from a browser) or
RGB arrays (from a server-side source). Every frame is checked for what it will cost
before it is decoded or preprocessed (:func:`check_frame_size`: pixels, short side, aspect
ratio; JPEG bytes also for their size, format and decompression bombs, from the header
only), with the limits in :mod:`.limits`.

A model that pairs frames into temporal patches (Qwen2.5-VL, ``frames_per_unit = 2``) gets
them in pairs: the first frame of a pair waits in the feed (``load()["pairing"]``) until the
next one arrives, then both are encoded as one unit at the feed's frame rate. Its token
grid comes from the frame size, and every frame the memory holds must have the same grid,
so the feed keeps the size of the first frame it stored and resizes frames of another
size to it (until the memory is empty again).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..pipeline.frame_reuse import LastEncodedUnit
from ..pipeline.latest_frame import LatestFrameSlot
from ..pipeline.memory import RollingTokenMemory
from ..pipeline.stages import EncodeStage
from .limits import FRAME_RATE_TOLERANCE, MAX_FRAME_ASPECT, MAX_FRAME_BYTES, MAX_FRAME_PIXELS, MIN_FRAME_SIDE

__all__ = ["FrameRefused", "PendingFrame", "Feed", "RateGate", "check_frame_size", "check_jpeg",
           "decode_jpeg", "encode_jpeg", "patch_region"]

_feed_ids = itertools.count(1)


class FrameRefused(ValueError):
    """A frame the server will not take (too large, not a JPEG, unreadable). ``code`` names the reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_frame_size(width: int, height: int) -> None:
    """Refuse a ``width`` x ``height`` frame that would cost too much to decode or preprocess.

    The processor scales the short side to the tower's size, so besides the pixel count the
    short side and the aspect ratio bound what a frame costs after resizing.
    """
    if width * height > MAX_FRAME_PIXELS:
        raise FrameRefused("frame_too_many_pixels", f"frame is {width}x{height} pixels, more than "
                                                    f"{MAX_FRAME_PIXELS}; scale it down before sending")
    if min(width, height) < MIN_FRAME_SIDE:
        raise FrameRefused("frame_too_small", f"frame is {width}x{height} pixels; its short side must be at least "
                                              f"{MIN_FRAME_SIDE} px")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_FRAME_ASPECT:
        raise FrameRefused("frame_bad_aspect", f"frame is {width}x{height} pixels, an aspect ratio of {aspect:.1f}:1, "
                                               f"more than {MAX_FRAME_ASPECT:g}:1 (the model scales the short side up "
                                               "to its input size); crop it before sending")


def check_jpeg(data: bytes) -> tuple[int, int]:
    """(width, height) of a JPEG, from its header only; raise :class:`FrameRefused` if it is not acceptable."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameRefused("frame_too_large", f"frame has {len(data)} bytes, more than {MAX_FRAME_BYTES}; "
                                              "send smaller JPEGs (lower the resolution or quality)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard: the header claims a gigantic image
        raise FrameRefused("frame_decompression_bomb", f"frame is a decompression bomb ({exc}); "
                                                       f"send frames of at most {MAX_FRAME_PIXELS} pixels") from None
    except Exception:
        raise FrameRefused("frame_not_jpeg", "frame is not an image; send each frame as one JPEG") from None
    if fmt != "JPEG":
        raise FrameRefused("frame_not_jpeg", f"frame is a {fmt} image; send JPEG frames")
    check_frame_size(width, height)
    return width, height


_JPEG_END = b"\xff\xd9"  # the EOI marker (ITU-T T.81, B.1.1.3)


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → (H, W, 3) uint8 RGB (checked with :func:`check_jpeg` first).

    A JPEG ends with its EOI marker (``FF D9``; only zero padding may follow). Data cut off
    before it is refused here, not left to Pillow: Pillow pads a cut image silently whenever
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set, a process-wide flag that other libraries
    set on import (lmms-eval's ``lmms_eval/api/task.py`` does).
    """
    width, height = check_jpeg(data)
    if not data.rstrip(b"\x00").endswith(_JPEG_END):
        raise FrameRefused("frame_unreadable", "frame is a JPEG cut off before its end marker; "
                                               "send complete JPEG frames")
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.array(img.convert("RGB"))  # a writable copy
    except Exception as exc:
        raise FrameRefused("frame_unreadable", f"frame is a damaged JPEG ({type(exc).__name__}); "
                                               "send complete JPEG frames") from None
    if rgb.shape[:2] != (height, width):  # the decoder must not make more than the header promised
        raise FrameRefused("frame_unreadable", f"frame decoded to {rgb.shape[1]}x{rgb.shape[0]} pixels, not the "
                                               f"{width}x{height} its header says; send complete JPEG frames")
    return rgb


class RateGate:
    """Holds a stream to ``frame_rate`` frames per second: :meth:`admit` says whether a frame arriving now may enter.

    A credit of one frame accrues every ``1 / frame_rate`` seconds (at most two are saved
    up, so a frame delayed on the way and the one right behind it both pass); a frame is
    admitted when the credit is at least ``1 - FRAME_RATE_TOLERANCE`` and spends one. So a
    page that sends at ``frame_rate`` with a jittery timer loses no frames, a faster one is
    thinned to ``frame_rate``, and over any ``T`` seconds at most ``frame_rate * T + 2 +
    FRAME_RATE_TOLERANCE`` frames enter (the two saved credits; tests/test_demo_server.py checks it).
    """

    _MAX_CREDIT = 2.0

    def __init__(self, frame_rate: float):
        self.interval_s = 1.0 / frame_rate
        self._credit = 1.0
        self._last_s: float | None = None

    def admit(self, now_s: float) -> bool:
        if self._last_s is not None:
            self._credit = min(self._MAX_CREDIT, self._credit + (now_s - self._last_s) / self.interval_s)
        self._last_s = now_s
        if self._credit < 1.0 - FRAME_RATE_TOLERANCE:
            return False
        self._credit -= 1.0
        return True


def encode_jpeg(rgb: np.ndarray, max_side: int, quality: int) -> bytes:
    """(H, W, 3) uint8 → JPEG bytes, scaled so the longer side is at most ``max_side``."""
    img = Image.fromarray(rgb)
    img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def patch_region(video_processor: Any, width: int, height: int) -> list[float]:
    """The part of a ``width`` x ``height`` frame the patch grid covers, as [x0, y0, x1, y1] in [0, 1].

    The model's processor resizes the shortest edge and center-crops (CLIP style); the grid
    covers that center crop. Without a center crop it covers the whole frame.
    """
    size = getattr(video_processor, "size", None)
    crop = getattr(video_processor, "crop_size", None)
    shortest = getattr(size, "shortest_edge", None) if size is not None else None
    if not getattr(video_processor, "do_center_crop", False) or crop is None or not shortest:
        return [0.0, 0.0, 1.0, 1.0]
    scale = shortest / min(width, height)
    resized_w, resized_h = width * scale, height * scale
    crop_w, crop_h = min(crop.width, resized_w), min(crop.height, resized_h)
    x0, y0 = (resized_w - crop_w) / 2 / resized_w, (resized_h - crop_h) / 2 / resized_h
    return [round(x0, 6), round(y0, 6), round(1 - x0, 6), round(1 - y0, 6)]


@dataclass
class PendingFrame:
    """A frame waiting for the encoder: JPEG bytes (browser) or an RGB array (server source)."""

    seq: int  # the sender's frame number (a browser tab counts its binary messages from 0)
    time_s: float  # time.monotonic() when it arrived
    jpeg: bytes | None = None
    rgb: np.ndarray | None = None  # (H, W, 3) uint8


class Feed:
    """One stream: a newest-wins slot of pending frames and the rolling memory they end up in.

    Args:
        memory: the stream's :class:`RollingTokenMemory`.
        preview: (max_side, quality) to send each encoded frame back as a JPEG preview
            (server-side sources, whose frames the page has not seen); None for browser tabs.
        shared: True if several tabs read this feed (it outlives them).
        frame_rate: frames per second the stream is sampled at: a temporal patch (Qwen2.5-VL)
            spans ``frames_per_unit / frame_rate`` seconds in the rotary positions. None: the
            frames' own arrival times.
        hold_to_rate: hold the frames offered to ``frame_rate`` (:class:`RateGate`; frames beyond
            it are counted as ``over_rate``); False for a source that samples itself.
    """

    def __init__(self, memory: RollingTokenMemory, *, preview: tuple[int, int] | None = None, shared: bool = False,
                 frame_rate: float | None = None, hold_to_rate: bool = True):
        self.id = next(_feed_ids)
        self.memory = memory
        self.slot: LatestFrameSlot[PendingFrame] = LatestFrameSlot(capacity=1)
        self.preview = preview
        self.shared = shared
        self.subscribers: set[Any] = set()  # the tabs that read this feed (touched on the event loop only)
        self.gate = RateGate(frame_rate) if frame_rate is not None and hold_to_rate else None
        self.refused = 0  # frames refused (too large, not JPEG, unreadable), before or after the slot
        self._refused_at_door = 0  # of those, refused before they entered the slot
        self.over_rate = 0  # frames that came sooner than the frame rate allows
        self.encoded = 0
        self.reused = 0  # of the encoded frames, those whose unit repeated the last one run and skipped the tower
        self.last_unit = LastEncodedUnit()  # the feed's last unit through the tower (frame reuse across calls)
        self.last_messages: list[Any] = []  # what the last encoded frame told the subscribers (for late tabs)
        self.closed = False
        self.frame_rate = frame_rate
        self._pairing: list[tuple[PendingFrame, np.ndarray]] = []  # frames waiting for the rest of their unit
        self._frame_size: tuple[int, int] | None = None  # (H, W) the memory's frames have (grid from the frame size)

    def admit(self, now_s: float) -> bool:
        """Whether a frame arriving now fits the feed's frame rate (counted as ``over_rate`` if not)."""
        if self.gate is None or self.gate.admit(now_s):
            return True
        self.over_rate += 1
        return False

    def refuse(self) -> None:
        """Count a frame refused before it was offered (too large, not a JPEG, ...)."""
        self.refused += 1
        self._refused_at_door += 1

    def offer(self, frame: PendingFrame) -> None:
        """Queue a frame for the encoder (an older pending frame is dropped and counted)."""
        if not self.closed:
            self.slot.put(frame)

    def close(self) -> None:
        self.closed = True
        self.slot.close()
        self.reset()

    def reset(self) -> None:
        """Empty the memory (and drop a frame waiting for its pair)."""
        self.memory.clear()
        self._pairing.clear()
        self._frame_size = None
        self.last_unit = LastEncodedUnit()

    def load(self) -> dict[str, int]:
        """Frame counters: ``received == encoded + dropped + refused + over_rate + pending + pairing``.

        dropped: the encoder was busy and a newer frame replaced it; over_rate: it came sooner
        than the frame rate allows; refused: too large, not a JPEG, unreadable; pairing:
        waiting for the next frame to make a temporal patch with (Qwen2.5-VL); reused: of the
        encoded frames, those that repeated the last frame through the tower and took its features.
        """
        counts = self.slot.counts()
        return {"received": counts.received + self._refused_at_door + self.over_rate, "encoded": self.encoded,
                "reused": self.reused,
                "dropped": counts.dropped, "refused": self.refused, "over_rate": self.over_rate,
                "pending": counts.pending, "pairing": len(self._pairing)}

    def encode_next(self, encoder: EncodeStage) -> tuple[list[Any], PendingFrame] | None:
        """Encode the newest pending frame into the memory (model thread). None if nothing is pending.

        Returns the messages for the subscribers (a JPEG preview as bytes, if enabled, then
        the ``frame`` message) and the frame; no messages for a frame that waits for its pair
        (the ``frame`` message of a temporal patch names its last frame). Raises
        :class:`FrameRefused` for an unreadable JPEG.
        """
        pending = self.slot.take()
        if pending is None or self.closed:
            return None
        try:
            if pending.rgb is not None:
                check_frame_size(pending.rgb.shape[1], pending.rgb.shape[0])
                rgb = pending.rgb
            else:
                rgb = decode_jpeg(pending.jpeg)
        except FrameRefused:
            self.refused += 1
            raise
        geometry = encoder.llm.geometry
        per_unit = geometry.frames_per_unit
        if geometry.dynamic:
            rgb = self._to_frame_size(rgb)
        self._pairing.append((pending, rgb))
        if len(self._pairing) < per_unit:
            return [], pending  # the first frame of a temporal patch: it waits for the next one
        first, frames = self._pairing[0][0], np.stack([f for _, f in self._pairing])  # (U, H, W, 3)
        # a unit spans frames_per_unit frames at the stream's rate (what Qwen2.5-VL's temporal positions assume)
        times = ([first.time_s + i / self.frame_rate for i in range(per_unit)] if self.frame_rate
                 else [p.time_s for p, _ in self._pairing])
        self._pairing.clear()
        encoded = encoder.process(frames, times, last=self.last_unit)  # one unit; a repeat skips the tower
        stored = self.memory.add(encoded, first.time_s, seq=pending.seq, unit_time_s=(times[0] + times[-1]) / 2)
        self.encoded += per_unit
        self.reused += per_unit if encoded.reused and encoded.reused[0] else 0
        height, width = rgb.shape[:2]
        message = {
            "type": "frame",
            "feed": self.id,
            "seq": stored.seq,
            "size": [width, height],
            "grid": list(encoded.grid or geometry.prune_grid),
            "region": patch_region(encoder.llm.processor.video_processor, width, height),
            "kept": stored.kept.tolist(),
            "duplicates": stored.duplicates.tolist(),
            "candidates": stored.candidates,
            "stats": self.memory.stats().to_dict(),
            "load": self.load(),
        }
        out: list[Any] = []
        if self.preview is not None:
            out.append(encode_jpeg(rgb, *self.preview))
        out.append(message)
        self.last_messages = out
        return out, pending

    def _to_frame_size(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) at the size of the frames the memory holds (set by the first frame into an empty memory)."""
        if self._frame_size is None or (len(self.memory) == 0 and not self._pairing):
            self._frame_size = rgb.shape[:2]
        height, width = self._frame_size
        if rgb.shape[:2] == (height, width):
            return rgb
        return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
