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
order. :func:`prune_in_segments` runs the same segments in-process, one after the other
(``VideoQA.prepare``): a long video is never held whole. Shapes: B frames in a segment.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validators import check_positive_int
from ..video_models.datatypes import EncodedFrames
from .decode import DecodedClip, FramePlan, FrameSampling, SampledFrames, VideoReader
from ..errors import VideoDecodeError
from .stages import DecodeStage, EncodeStage, PrunedVideo, SelectStage, VideoSelection

__all__ = [
    "FramePlan",
    "FrameBatch",
    "PlanChanged",
    "plan_frames",
    "split_segments",
    "batches_from_clip",
    "SegmentDecoder",
    "plan_video",
    "prune_in_segments",
    "IN_PROCESS_SEGMENT_FRAMES",
]

# Frames per segment of the in-process path: at most this many decoded frames (and their
# preprocessed pixels) are held at once. The families' default frame counts (8 to 32) fit in
# one segment, so a default run encodes exactly as one whole-clip call would.
IN_PROCESS_SEGMENT_FRAMES = 32
# Seconds of work before the in-process progress bar shows (on a terminal only).
PROGRESS_DELAY_S = 2.0

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


def plan_video(decode: DecodeStage, select: SelectStage, video: Any) -> FramePlan:
    """The frames ``decode`` samples from the file ``video`` and the token plan they give, checked.

    Reads the frame table only (no pixels, no model): a budget the sampled frames cannot
    hold (Video-LLaVA's one [CLS] per frame at ``--fps``) is refused before any decoding.

    Raises:
        VideoDecodeError: the file cannot be opened, has no video stream or no frames.
        ConfigError: the options cannot hold this video's frames (one line).
    """
    plan = plan_frames(decode, video)
    if not plan.indices:
        raise VideoDecodeError(f"cannot decode video {video!r}: it has no frames; re-encode it with ffmpeg")
    VideoSelection(select, len(plan))  # plan_tokens: the budget against the tokens kept outside pruning
    return plan


def prune_in_segments(decode: DecodeStage, encode: EncodeStage, select: SelectStage, video: Any, *,
                      segment_frames: int | None = IN_PROCESS_SEGMENT_FRAMES,
                      progress: bool | None = None) -> PrunedVideo:
    """Decode, encode and select a video file segment by segment, in temporal order (in-process).

    The same steps as the Ray pipeline's (``SegmentDecoder`` → ``EncodeStage`` →
    ``VideoSelection``), one segment after the other: memory holds one segment's frames and
    features plus the kept tokens, however long the video. ``segment_frames`` is rounded up
    to whole pruning units (Qwen2.5-VL: 2 frames); None: the whole video in one segment
    (a processor that sizes frames from the whole clip, Qwen3-VL). Where decoding disagrees with
    the frame table the clip is decoded whole (``DecodeStage.process``) and then encoded in segments.
    ``progress``: a tqdm bar over the frames (None: when stderr is a terminal; it shows after
    ``PROGRESS_DELAY_S``).

    Returns the :class:`PrunedVideo` with ``timings_s`` (decode, encode, select).
    """
    per_unit = select.geometry.frames_per_unit
    plan = plan_video(decode, select, video)
    segment_frames = -(-check_positive_int("segment_frames", segment_frames or len(plan)) // per_unit) * per_unit
    timings = {"decode": 0.0, "encode": 0.0}
    decoder = SegmentDecoder(decode)
    bar = _progress_bar(len(plan), progress)
    try:
        selection = VideoSelection(select, len(plan))
        key = uuid.uuid4().hex
        try:
            for seq in range(len(split_segments(len(plan), segment_frames))):
                batch = decoder.decode(video, plan, seq, segment_frames, 1, key)
                _encode_and_add(encode, selection, batch, timings, bar)
            decode_info = {"backend": plan.backend, "num_stream_frames": plan.num_stream_frames}
            warnings = list(plan.reader_warnings) + list(plan.notes)
        except PlanChanged:  # the frame table was wrong: decode the clip whole, as read_video corrects it
            decoder.close()
            start = time.perf_counter()
            clip = decode.process(video)
            timings = {"decode": time.perf_counter() - start, "encode": 0.0}
            bar.reset(total=len(clip.indices))
            selection = VideoSelection(select, len(clip.indices))
            whole = segment_frames >= len(plan)  # one segment asked for: keep the clip in one
            for batch in batches_from_clip(clip, len(clip.indices) if whole else segment_frames):
                _encode_and_add(encode, selection, batch, timings, bar)
            decode_info = {"backend": clip.backend, "num_stream_frames": clip.num_stream_frames}
            warnings = list(clip.warnings)
    finally:
        decoder.close()
        bar.close()
    pruned = selection.finish(decode_info, warnings)
    pruned.timings_s = {**timings, "select": selection.seconds}
    return pruned


def _encode_and_add(encode: EncodeStage, selection: VideoSelection, batch: FrameBatch, timings: dict[str, float],
                    bar) -> None:
    timings["decode"] += batch.timings_s.get("decode", 0.0)
    start = time.perf_counter()
    encoded = encode.process(batch.frames, batch.times_s)
    timings["encode"] += time.perf_counter() - start
    selection.add(encoded, batch.indices, batch.times_s)
    bar.update(len(batch))


def _progress_bar(total: int, enabled: bool | None):
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit="frame", desc="vidprune", file=sys.stderr, disable=not enabled,
                delay=PROGRESS_DELAY_S, dynamic_ncols=True, leave=False)
