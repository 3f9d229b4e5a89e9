"""What the decoder hands out: one :class:`Frame`, a :class:`FramePlan`, a :class:`DecodedClip`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DecodedClip", "Frame", "FramePlan"]


@dataclass(frozen=True, eq=False)  # eq/hash by identity: fields hold an array
class Frame:
    """One decoded frame.

    ``index``: position of the frame among all decoded frames of the stream, in
    presentation order (0-based). ``time_s``: its presentation time in seconds
    relative to the stream's first frame (first frame = 0.0). ``rgb``: ``(H, W, 3)``
    ``uint8`` RGB, upright (display rotation applied), C-contiguous.
    """

    index: int
    time_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class FramePlan:
    """Which frames of a file are sampled, known before decoding pixels.

    Attributes:
        indices: (T,) frame indices in presentation order, increasing.
        times_s: (T,) their presentation times, seconds from the first frame.
        num_stream_frames: frames in the stream (from the frame table).
        backend: the decoder backend that will produce the pixels (after any fallback at open).
        notes: sampling notes ``read_video`` adds to the clip's warnings (fewer frames than asked, ...).
        reader_warnings: what the reader said while building the table (backend fallback, ...).
    """

    indices: list[int]
    times_s: list[float]
    num_stream_frames: int
    backend: str = "pyav"
    notes: list[str] = field(default_factory=list)
    reader_warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(eq=False)
class DecodedClip:
    """Frames sampled from one video.

    ``frames``: ``(T, H, W, 3)`` ``uint8`` RGB, upright, in increasing index order.
    ``indices`` / ``times_s``: length ``T``, index and presentation time (seconds,
    first stream frame = 0.0) of each frame. ``num_stream_frames``: number of
    frames in the stream, counted from demuxed packets checked against decoding
    (never from headers). ``backend``: ``"pyav"`` or ``"decord"``, the one that
    produced the pixels. ``warnings``: one-line notes (fewer frames than asked,
    backend fallback, corrected frame table, ...). ``stats``: what decoding cost
    (``frame_table``: ``"index"`` / ``"demux"`` / ``"decode"``, where the frame table
    came from; ``bytes_read`` of ``file_bytes``; ``packets_demuxed``; ``packets_skipped``
    (unwanted non-reference frames not decoded); ``decoded_frames``; ``seeks``); empty for
    clips that were not decoded from a file.
    """

    frames: np.ndarray
    indices: list[int]
    times_s: list[float]
    num_stream_frames: int
    backend: str
    warnings: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
