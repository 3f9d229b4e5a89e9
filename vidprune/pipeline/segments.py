"""A video cut into time segments for the Ray pipeline; everything here runs without Ray.

The Ray pipeline (:mod:`vidprune.pipeline.ray`) moves these plain objects between
actors:

* :func:`plan_frames` — which frames a :class:`~vidprune.pipeline.stages.DecodeStage`
  samples from a file (a :class:`~vidprune.pipeline.decode.FramePlan`), from the frame
  table, before any pixel is decoded. Same choice as ``read_video``.
* :func:`split_segments` — the sampled frames cut into consecutive **time segments**
  of ``segment_frames`` frames; one segment is one encoder call.
* :class:`SegmentDecoder` — decodes any segment of a planned video. Segments go to
  decoder *lanes* round-robin (segment ``s`` to lane ``s % lanes``); a decoder keeps
  each lane's frames open between calls (one
  :class:`~vidprune.pipeline.decode.SampledFrames` over the lane's indices), so a lane
  decodes its segments in one forward pass, seeking past the other lanes' segments.

The select side (``VideoSelection`` in ``stages.py``) takes the segments in temporal
order. Shapes: B frames in a segment.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validators import check_positive_int
from ..video_models.datatypes import EncodedFrames
from .decode import DecodedClip, FramePlan, FrameSampling, SampledFrames, VideoReader
from .stages import DecodeStage

__all__ = [
    "FramePlan",
    "FrameBatch",
    "PlanChanged",
    "plan_frames",
    "split_segments",
    "batches_from_clip",
    "SegmentDecoder",
]

# Open frame streams one decoder keeps between calls (one per video lane in flight);
# the least recently used is closed beyond this.
MAX_OPEN_STREAMS = 8


class PlanChanged(RuntimeError):
    """Decoding found the demuxed frame table wrong (or the frame size changing): decode the video whole."""


@dataclass
class FrameBatch:
    """One time segment of one video on its way through the stages.

    Attributes:
        seq: segment number within the video (temporal order, from 0).
        indices / times_s: (B,) the frames' indices and times.
        frames: (B, H, W, 3) uint8 RGB after decoding; dropped (None) once encoded.
        encoded: the vision side's output for the B frames after encoding, else None.
        backend: decoder backend that produced the pixels.
        warnings: decoder warnings seen while decoding this segment.
        timings_s: seconds spent per stage on this segment ("decode", "encode").
    """

    seq: int
    indices: list[int]
    times_s: list[float]
    frames: np.ndarray | None = None
    encoded: EncodedFrames | None = None
    backend: str = "pyav"
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def _selection(stage: DecodeStage, indices: list[int] | None = None) -> FrameSampling:
    if indices is not None:
        return FrameSampling(indices=tuple(indices))
    return FrameSampling(num_frames=stage.num_frames if stage.fps is None else None, fps=stage.fps,
                          max_frames=stage.max_frames)


def plan_frames(stage: DecodeStage, video: Any) -> FramePlan:
    """The frames ``stage`` samples from the file ``video`` (``read_video``'s choice), from the frame table.

    Raises:
        VideoDecodeError: the file cannot be opened or has no video stream.
    """
    with VideoReader(video, stage.backend, use_index=True) as reader:
        return _selection(stage).plan(reader)


def split_segments(num_frames: int, segment_frames: int) -> list[range]:
    """Positions ``0 .. num_frames - 1`` cut into consecutive segments of ``segment_frames`` (the last may be shorter)."""
    segment_frames = check_positive_int("segment_frames", segment_frames)
    return [range(s, min(s + segment_frames, num_frames)) for s in range(0, num_frames, segment_frames)]


def batches_from_clip(clip: DecodedClip, segment_frames: int) -> list[FrameBatch]:
    """A decoded clip cut into time segments (for arrays, and videos decoded whole)."""
    return [
        FrameBatch(seq=s, indices=[clip.indices[i] for i in seg], times_s=[clip.times_s[i] for i in seg],
                   frames=clip.frames[seg.start : seg.stop], backend=clip.backend)
        for s, seg in enumerate(split_segments(len(clip.indices), segment_frames))
    ]


@dataclass
class _Lane:
    """The open frames of one video lane: one forward pass over all of the lane's segments."""

    frames: SampledFrames
    next_seq: int
    warnings_seen: int


class SegmentDecoder:
    """Decodes time segments of planned videos with a :class:`DecodeStage`'s backend.

    ``decode(video, plan, seq, segment_frames, lanes, stream_key)`` returns segment ``seq``.
    Segments of one lane (``seq % lanes``) are expected in increasing order; the lane's
    stream stays open between calls (keyed by ``stream_key``) and is reopened at the
    asked segment when it is missing (a restarted actor) or elsewhere. Holds one decoded
    frame at a time besides the segment it returns.
    """

    def __init__(self, stage: DecodeStage, max_open_streams: int = MAX_OPEN_STREAMS):
        self.stage = stage
        self.max_open_streams = max_open_streams
        self._streams: OrderedDict[tuple, _Lane] = OrderedDict()  # open lanes, least recently used first

    def plan(self, video: Any) -> FramePlan:
        return plan_frames(self.stage, video)

    def decode_whole(self, video: Any) -> DecodedClip:
        """The whole sampled clip, through ``DecodeStage.process`` (the in-process path, with its corrections)."""
        return self.stage.process(video)

    def decode(self, video: Any, plan: FramePlan, seq: int, segment_frames: int, lanes: int,
               stream_key: Any) -> FrameBatch:
        """Decode segment ``seq`` of ``plan``: a :class:`FrameBatch` with ``frames`` (B, H, W, 3) uint8.

        Raises:
            PlanChanged: decoding disagreed with the demuxed table (corrupt stream, resolution
                change); decode the video with :meth:`decode_whole` instead.
        """
        start = time.perf_counter()
        segments = split_segments(len(plan), segment_frames)
        lane = seq % lanes
        key = (stream_key, lane)
        stream = self._streams.get(key)
        if stream is None or stream.next_seq != seq:
            if stream is not None:
                self._close(key)
            stream = self._open(video, plan, [segments[s] for s in range(seq, len(segments), lanes)])
            self._streams[key] = stream
        self._streams.move_to_end(key)
        wanted = segments[seq]
        frames: np.ndarray | None = None
        for k, pos in enumerate(wanted):
            frame = next(stream.frames, None)
            if frame is None or frame.index != plan.indices[pos] or stream.frames.stale:
                self._close(key)
                raise PlanChanged(f"frame {plan.indices[pos]} of {video!r} did not decode as the demuxed table says")
            if frames is None:
                frames = np.empty((len(wanted),) + frame.rgb.shape, dtype=np.uint8)
            elif frame.rgb.shape != frames.shape[1:]:
                self._close(key)
                raise PlanChanged(f"the frame size of {video!r} changes within the clip")
            frames[k] = frame.rgb
        stream.next_seq = seq + lanes
        last = stream.next_seq >= len(segments)
        if last and next(stream.frames, None) is not None:  # run the reader's end-of-stream checks too
            self._close(key)
            raise PlanChanged(f"{video!r} decoded more frames than its lane asked for")
        reader = stream.frames.reader
        new_warnings = reader.warnings[stream.warnings_seen :]
        if new_warnings or stream.frames.stale:
            # a fallback or a correction happened mid-stream: the in-process reader handles those
            self._close(key)
            raise PlanChanged(f"decoding {video!r} changed course: {(new_warnings or ['frame table corrected'])[0]}")
        if last:
            self._close(key)
        self._evict()
        return FrameBatch(seq=seq, indices=[plan.indices[p] for p in wanted], times_s=[plan.times_s[p] for p in wanted],
                          frames=frames, backend=reader.backend,
                          timings_s={"decode": time.perf_counter() - start})

    def _open(self, video: Any, plan: FramePlan, lane_segments: list[range]) -> _Lane:
        reader = VideoReader(video, self.stage.backend, use_index=True)
        indices = [plan.indices[p] for seg in lane_segments for p in seg]
        frames = SampledFrames(reader, _selection(self.stage, indices))  # builds the table: its notes are not mid-stream
        return _Lane(frames=frames, next_seq=-1, warnings_seen=len(reader.warnings))

    def _close(self, key: tuple) -> None:
        stream = self._streams.pop(key, None)
        if stream is not None:
            stream.frames.close()
            stream.frames.reader.close()

    def _evict(self) -> None:
        while len(self._streams) > self.max_open_streams:
            self._close(next(iter(self._streams)))

    def close(self) -> None:
        for key in list(self._streams):
            self._close(key)
