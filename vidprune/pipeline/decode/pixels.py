"""Decoded PyAV frames to upright ``uint8`` RGB with the frame's own colour matrix and range.

Measured against decord (PyAV 15.1 / FFmpeg 7.1): max abs difference 0 on h264 / mpeg4 /
mjpeg / vp9, 4:2:0 and 4:4:4, limited and full range, BT.601 and BT.709 tags; PyAV's
default conversion ("BT.601, limited" for everything) differs by up to 30 levels on
BT.709 or full-range video. See ``docs/decoding.md``.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from .messages import Notes, decode_error, one_line

__all__ = ["PixelConverter", "frame_to_rgb"]

# AVColorSpace values swscale has coefficients for (BT709, FCC, BT470BG, SMPTE170M, SMPTE240M, BT2020).
_KNOWN_COLORSPACES = frozenset({1, 4, 5, 6, 7, 9, 10})
_AVCOL_RANGE_JPEG = 2


def frame_to_rgb(frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB, C-contiguous, of a decoded PyAV ``VideoFrame``, upright.

    Uses the frame's own colour matrix (BT.601 / BT.709 / ...) and range (limited /
    full) with FFmpeg's swscale, and turns it upright from its display matrix
    (multiples of 90 degrees; others are rounded). ``size``: ``(width, height)`` to
    scale to before rotation (None: keep). Raises PyAV errors / ValueError.
    """
    kwargs: dict[str, Any] = {"format": "rgb24"}
    cs = int(frame.colorspace)
    src_cs = cs if cs in _KNOWN_COLORSPACES else 5  # unspecified -> BT.601 (swscale default)
    full = int(frame.color_range) == _AVCOL_RANGE_JPEG or frame.format.name.startswith("yuvj")
    fmt = frame.format
    if not fmt.is_rgb and not fmt.has_palette:  # YUV or gray: matrix and range matter
        # PyAV applies colour details only when src != dst; the dst matrix only matters for YUV output.
        kwargs.update(
            src_colorspace=src_cs,
            dst_colorspace=1 if src_cs != 1 else 5,
            src_color_range="JPEG" if full else "MPEG",
            dst_color_range="JPEG",
        )
    if size is not None:
        kwargs.update(width=size[0], height=size[1])
    rgb = frame.to_ndarray(**kwargs)
    rotation = frame.rotation or 0
    if rotation:
        rgb = np.rot90(rgb, round(rotation / 90.0) % 4)
    return np.ascontiguousarray(rgb)


class PixelConverter:
    """Converts the frames of one reading pass; later frames keep the first frame's size.

    ``converter(av_frame)`` -> ``(H, W, 3)`` uint8 RGB. If the resolution changes
    mid-stream, later frames are scaled to the first converted frame's size (with a
    warning) so a clip stacks into one array. :meth:`reset` starts a new pass.
    Counts ``converted_frames`` in ``stats``.
    """

    def __init__(self, path: str, notes: Notes, stats: dict[str, int]) -> None:
        self.path, self.notes, self.stats = path, notes, stats
        self._size: tuple[int, int] | None = None  # (width, height) before rotation

    def reset(self) -> None:
        self._size = None

    def __call__(self, frame: Any) -> np.ndarray:
        size = None
        if self._size is None:
            self._size = (frame.width, frame.height)
        elif (frame.width, frame.height) != self._size:
            size = self._size
            self.notes.add(
                f"the resolution changes mid-stream: frames are scaled to the first one's "
                f"{self._size[0]}x{self._size[1]}",
                "resize",
            )
        rotation = frame.rotation or 0
        if rotation and round(rotation / 90.0) * 90 != rotation:
            self.notes.add(f"rotation of {rotation} degrees is not a multiple of 90: rounded", "rot")
        try:
            rgb = frame_to_rgb(frame, size)
        except (av.FFmpegError, ValueError) as e:
            raise decode_error(
                self.path, f"a frame cannot be converted to RGB ({one_line(e)})", "re-encode the video with ffmpeg"
            ) from None
        self.stats["converted_frames"] += 1
        return rgb
