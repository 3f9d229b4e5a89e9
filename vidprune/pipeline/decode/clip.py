"""The one frame reader: a selection of frames (count, rate, explicit indices, clip bounds) read from a file.

:class:`FrameSampling` says which frames; :class:`SampledFrames` plans them on a
:class:`~.reader.VideoReader`'s frame table and streams them one at a time;
:func:`read_video` collects them into a :class:`~.frames.DecodedClip`, redoing the
pass if decoding corrected the table. Every path that reads frames of a file uses
these: ``read_video`` and the decode stage, eval's clips (``start_s`` / ``end_s``),
Ray segments (explicit indices, :class:`~vidprune.pipeline.segments.SegmentDecoder`)
and files played in real time (:mod:`vidprune.pipeline.live`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from vidprune.errors import ConfigError
from vidprune.validators import check_positive_int

from .frames import DecodedClip, Frame, FramePlan
from .messages import decode_error
from .reader import BACKENDS, VideoReader
from .sampling import choose_indices, fps_indices, uniform_indices

__all__ = ["FrameSampling", "SampledFrames", "read_video"]

# read_video redoes a pass whose frame table was corrected at most this many times.
_MAX_PASSES = 3


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video to read; validated whole when made (``ConfigError``).

    Exactly one of ``num_frames`` (uniform sampling, :func:`~.sampling.uniform_indices`),
    ``fps`` (rate sampling, :func:`~.sampling.fps_indices`, optionally capped by
    ``max_frames``) or ``indices`` (explicit frame indices) must be given.
    ``start_s`` / ``end_s``: sample only among the frames whose time lies in
    ``[start_s, end_s]`` (seconds from the first frame; either may be omitted); when
    no frame lies inside, the whole video is used.
    """

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    indices: tuple[int, ...] | None = None
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("num_frames", "fps", "indices") if getattr(self, name) is not None]
        if given == ["num_frames", "fps"]:
            raise ConfigError("give either num_frames or fps, not both")
        if len(given) > 1:
            raise ConfigError(f"give one of num_frames, fps or indices, not {' and '.join(given)}")
        if not given:
            raise ConfigError("give num_frames (uniform sampling) or fps (rate sampling)")
        if self.num_frames is not None:
            object.__setattr__(self, "num_frames", check_positive_int("num_frames", self.num_frames))
            if self.max_frames is not None:
                raise ConfigError("max_frames only applies with fps; with num_frames it is already the count")
        elif self.fps is not None:
            fps = self.fps
            if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
                raise ConfigError(f"fps must be a number > 0, got {fps!r}")
            if not math.isfinite(float(fps)) or float(fps) <= 0:
                raise ConfigError(f"fps must be a finite number > 0, got {fps!r}")
            if self.max_frames is not None:
                object.__setattr__(self, "max_frames", check_positive_int("max_frames", self.max_frames))
        else:
            if self.max_frames is not None or self.start_s is not None or self.end_s is not None:
                raise ConfigError("explicit indices take no max_frames, start_s or end_s; pass the indices you want")
            indices = tuple(self.indices)  # type: ignore[arg-type]
            for i in indices:
                if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
                    raise ConfigError(f"frame indices must be ints >= 0, got {i!r}")
            if not indices:
                raise ConfigError("indices is empty; pass at least one frame index")
            object.__setattr__(self, "indices", tuple(int(i) for i in indices))
        for name in ("start_s", "end_s"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _seconds(name, getattr(self, name)))

    @property
    def bounded(self) -> bool:
        return self.start_s is not None or self.end_s is not None

    def choose(self, times_s: Sequence[float]) -> tuple[list[int], list[str]]:
        """(indices, sampling notes) of this selection on a stream whose frames have these times."""
        if self.indices is not None:
            n = len(times_s)
            if max(self.indices) >= n:
                raise ConfigError(f"frame index {max(self.indices)} is out of range: the video has {n} frames")
            return sorted(set(self.indices)), []
        if not self.bounded:
            return choose_indices(times_s, num_frames=self.num_frames, fps=self.fps, max_frames=self.max_frames)
        lo = self.start_s if self.start_s is not None else -math.inf
        hi = self.end_s if self.end_s is not None else math.inf
        inside = [i for i, t in enumerate(times_s) if lo <= t <= hi] or list(range(len(times_s)))
        if self.num_frames is not None:
            picked = uniform_indices(len(inside), self.num_frames)
        else:
            picked = fps_indices([times_s[i] for i in inside], float(self.fps), self.max_frames)  # type: ignore[arg-type]
        return [inside[i] for i in picked], []

    def plan(self, reader: VideoReader) -> FramePlan:
        """The frames this selection takes from ``reader``'s video, from its frame table (no pixels decoded)."""
        times = reader.frame_times
        indices, notes = self.choose(times)
        return FramePlan(indices=indices, times_s=[times[i] for i in indices], num_stream_frames=len(times),
                         backend=reader.backend, notes=notes, reader_warnings=list(reader.warnings))


class SampledFrames(Iterator[Frame]):
    """The frames of a :class:`FrameSampling`, read from a :class:`VideoReader` one at a time.

    ``plan`` is fixed when made (:meth:`FrameSampling.plan`). Frames come in increasing
    index order; only one decoded frame is held at a time. If decoding corrects the
    frame table or the backend falls back, ``stale`` turns True: the frames then keep
    their true indices but may differ from ``plan`` (``read_video`` plans again).
    """

    def __init__(self, reader: VideoReader, selection: FrameSampling) -> None:
        self.reader = reader
        self.selection = selection
        self.plan = selection.plan(reader)
        self._revision = reader.table_revision
        self._backend = reader.backend
        self._frames = reader.iter_frames(self.plan.indices)

    @property
    def stale(self) -> bool:
        """Whether the reader's table or backend changed since ``plan`` was made."""
        return self.reader.table_revision != self._revision or self.reader.backend != self._backend

    def __iter__(self) -> SampledFrames:
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop reading (closes the open PyAV container of the pass); the reader stays open."""
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


def read_video(
    path: str | bytes | os.PathLike[str],
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    backend: str = "pyav",
    *,
    indices: Sequence[int] | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    threads: int = 0,
) -> DecodedClip:
    """Decode a sampled clip from ``path``.

    Exactly one of ``num_frames`` (uniform sampling, :func:`uniform_indices`),
    ``fps`` (rate sampling, :func:`fps_indices`, optionally capped by
    ``max_frames``) or ``indices`` (explicit frame indices) must be given;
    ``start_s`` / ``end_s`` bound the clip (see :class:`FrameSampling`). Returns a
    :class:`DecodedClip` whose ``frames`` is ``(T, H, W, 3)`` uint8 RGB. Raises
    ``ConfigError`` for bad arguments and ``VideoDecodeError`` for unusable files.

    The frame table comes from the container's index where it can be trusted (MP4 /
    MOV; MKV / WebM at a constant frame rate), so only the packets from the keyframe
    before each wanted frame are read;
    ``clip.stats`` says what was read.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown video backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    selection = FrameSampling(num_frames=num_frames, fps=fps, max_frames=max_frames,
                               indices=tuple(indices) if indices is not None else None, start_s=start_s, end_s=end_s)
    with VideoReader(path, backend, threads=threads, use_index=True) as reader:
        return _collect(reader, selection)


def _collect(reader: VideoReader, selection: FrameSampling) -> DecodedClip:
    """Read ``selection`` from ``reader`` into one clip; a pass whose table was corrected is planned and read again."""
    for _attempt in range(_MAX_PASSES):
        mark = reader.notes.checkpoint()
        sampled = SampledFrames(reader, selection)
        plan = sampled.plan
        frames: np.ndarray | None = None
        got_idx: list[int] = []
        got_t: list[float] = []
        for fr in sampled:
            if frames is None:
                frames = np.empty((len(plan),) + fr.rgb.shape, dtype=np.uint8)
            if fr.rgb.shape != frames.shape[1:]:
                raise decode_error(reader.path, "frame sizes differ within the clip", "re-encode the video with ffmpeg")
            frames[len(got_idx)] = fr.rgb
            got_idx.append(fr.index)
            got_t.append(fr.time_s)
        if not sampled.stale and len(got_idx) == len(plan):
            break
        reader.notes.retract_pass_notes(mark)  # about a pass that is redone
    else:
        raise decode_error(reader.path, "the decoded frames keep changing between passes", "re-encode the video with ffmpeg")
    if frames is None:  # pragma: no cover - a table always has >= 1 frame
        raise decode_error(reader.path, "no video frame could be decoded", "re-encode the video with ffmpeg")
    if len(got_idx) < len(frames):  # pragma: no cover - only if decoding is not repeatable
        frames = frames[: len(got_idx)]
    return DecodedClip(
        frames=frames,
        indices=got_idx,
        times_s=got_t,
        num_stream_frames=plan.num_stream_frames,
        backend=reader.backend,
        warnings=list(reader.warnings) + plan.notes,
        stats=_cost(reader),
    )


def _cost(reader: VideoReader) -> dict[str, object]:
    """What reading cost, for :attr:`DecodedClip.stats`."""
    stats = reader.stats
    return {
        "frame_table": reader.table_source,
        "bytes_read": stats["bytes_read"],
        "file_bytes": reader.media.size,
        "packets_demuxed": stats["packets_demuxed"],
        "packets_skipped": stats["packets_skipped"],
        "decoded_frames": stats["decoded_frames"],
        "seeks": stats["seeks"],
    }
