"""The frame table: every frame's presentation time and the keyframes, from the stream itself.

Built by demuxing the video stream's packets without decoding (:func:`table_by_demuxing`),
or, where packets cannot define it (no pts, repeated pts), by decoding every frame
(:func:`table_by_decoding`). Headers are never used for counts or times; see
``docs/decoding.md`` ("Frame counts and times come from decoded frames").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import av

from vidprune.errors import VideoDecodeError

from .media import MediaFile
from .messages import decode_error, one_line

__all__ = ["FrameTable", "TableMismatch", "header_duration_note", "table_by_decoding", "table_by_demuxing"]

# Warn about a header duration longer than the frames by more than max(0.5 s, 2 %): less is rounding,
# audio that outlasts the video, or a last frame shown longer.
_DURATION_SLACK_S = 0.5
_DURATION_SLACK_FRACTION = 0.02


class TableMismatch(Exception):
    """Decoded frames disagree with the frame table (raised by a decoding pass, caught by the reader)."""


@dataclass
class FrameTable:
    """Frames of one video stream in presentation order.

    ``pts``: per frame, in ``stream.time_base`` units (None: unknown). ``times``: per
    frame, seconds relative to the first frame. ``keyframes``: sorted frame indices
    decoding may start from (for seeking). ``pts_to_index``: frame index by pts.
    ``source``: ``"demux"`` (packets, checked against decoded frames while decoding) or
    ``"decode"`` (the decoder's own output).
    """

    pts: list[int | None]
    times: list[float]
    keyframes: list[int]
    pts_to_index: dict[int, int]
    source: str

    def __len__(self) -> int:
        return len(self.times)


def times_from_pts(pts: list[int | None], time_base: Fraction, rate: Fraction | None) -> list[float]:
    """Seconds relative to the first frame; missing pts are extrapolated from the frame rate."""
    base = pts[0] if pts and pts[0] is not None else None
    step = 1.0 / float(rate) if rate else 1.0 / 25.0
    times: list[float] = []
    for p in pts:
        if p is not None and base is not None:
            times.append(float((p - base) * time_base))
        else:
            times.append(times[-1] + step if times else 0.0)
    return times


def header_duration_note(table: FrameTable, media: MediaFile) -> str | None:
    """The warning for a header that claims a clearly longer video than the frames that are there, or None."""
    claimed = media.header_duration_s
    if claimed is None or not math.isfinite(claimed):
        return None
    ends = table.times[-1] + (media.frame_step_s or 0.0)
    if claimed - ends > max(_DURATION_SLACK_S, _DURATION_SLACK_FRACTION * claimed):
        return (
            f"the header says the video lasts {claimed:.2f} s but its frames end at {ends:.2f} s: the file "
            f"may be truncated (or its header is wrong); using the {len(table)} frames it has"
        )
    return None


def _demux_video_packets(media: MediaFile, quiet: bool = False) -> tuple[list[int], list[bool], int] | None:
    """(pts, keyframe flags, packets without pts) of the video stream's packets; None if demuxing fails.

    ``quiet``: record no warning (a trial read whose result may be discarded)."""
    pts: list[int] = []
    keys: list[bool] = []
    missing_pts = 0
    with media.open() as container:
        stream = container.streams[media.stream_index]
        demuxer = container.demux(stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                break
            except av.FFmpegError as e:
                # Truncated / corrupt file: let decoding define what is there.
                if not quiet:
                    msg = f"demuxing stopped early ({one_line(e)}): the file may be truncated"
                    media.notes.add(msg, "demux-stop")
                return None
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts is None:
                missing_pts += 1
                continue
            pts.append(packet.pts)
            keys.append(bool(packet.is_keyframe))
    return pts, keys, missing_pts


def _check_avi_index(
    media: MediaFile, indexed: tuple[list[int], list[bool], int] | None
) -> tuple[list[int], list[bool], int] | None:
    """Read an AVI without its index too; if that finds more frames, the index is damaged: stop using it.

    FFmpeg trusts an AVI's ``idx1`` index when it has one; one whose offsets are wrong
    makes it skip most of the file (measured: 1 of 40 frames). Read as a byte stream,
    FFmpeg walks the ``movi`` chunks instead. Returns the packets to build the table from.
    """
    n_indexed = len(indexed[0]) + indexed[2] if indexed is not None else 0
    media.unindexed = True
    try:
        sequential = _demux_video_packets(media, quiet=True)
    except VideoDecodeError:
        sequential = None
    n_sequential = len(sequential[0]) + sequential[2] if sequential is not None else 0
    if n_sequential > n_indexed:
        media.notes.add(
            f"the AVI index is damaged (reading by it gives {n_indexed} of the {n_sequential} frames in the file): "
            "the file is read without it, and without seeking"
        )
        return sequential
    media.unindexed = False
    return indexed


def table_by_demuxing(media: MediaFile) -> FrameTable | None:
    """Frame table from packets alone, or None when packets cannot define it."""
    media.stats["demux_passes"] += 1
    packets = _demux_video_packets(media)
    if media.format == "avi" and not media.unindexed:
        packets = _check_avi_index(media, packets)
    if packets is None:
        return None
    pts, keys, missing_pts = packets
    if missing_pts or not pts or len(set(pts)) != len(pts):
        return None
    order = sorted(range(len(pts)), key=pts.__getitem__)
    spts = [pts[i] for i in order]
    keyframes = [rank for rank, i in enumerate(order) if keys[i]]
    if not keyframes or keyframes[0] != 0:
        keyframes = [0] + keyframes
    assert media.time_base is not None  # checked when the stream was picked
    return FrameTable(
        pts=list(spts),
        times=times_from_pts(list(spts), media.time_base, media.rate),
        keyframes=keyframes,
        pts_to_index={p: i for i, p in enumerate(spts)},
        source="demux",
    )


def table_by_decoding(media: MediaFile) -> FrameTable:
    """Frame table from a full decode (no RGB conversion): the decoder's output is the truth."""
    media.stats["decode_passes"] += 1
    pts: list[int | None] = []
    keys: list[bool] = []
    with media.open() as container:
        stream = media.video_stream(container)
        for frame in media.decoded_frames(container, stream):
            pts.append(frame.pts)
            keys.append(bool(frame.key_frame))
    if not pts:
        raise decode_error(
            media.path,
            "no video frame could be decoded",
            "the file is corrupt or not a video; re-encode it with ffmpeg",
        )
    known = [p for p in pts if p is not None]
    strictly_increasing = len(known) == len(pts) and all(a < b for a, b in itertools.pairwise(known))
    if len(known) != len(pts):
        media.notes.add("some decoded frames have no timestamp: their times are extrapolated from the frame rate")
    keyframes = [i for i, k in enumerate(keys) if k] if strictly_increasing else []
    if not keyframes or keyframes[0] != 0:
        keyframes = [0] + keyframes
    assert media.time_base is not None
    times = times_from_pts(pts, media.time_base, media.rate)
    if any(b < a for a, b in itertools.pairwise(times)):
        # Decoders output frames in presentation order, so pts that go backwards are
        # misassigned. Unique ones are a permutation (H.264 with B-frames in AVI, which
        # stores no pts: the decoder's reordered guesses): frame k gets the k-th smallest.
        # Repeated ones mean damaged data: the same, with a warning.
        if len(set(known)) != len(known):
            media.notes.add("decoded frame timestamps repeat and go backwards (damaged data): times were sorted")
        times = sorted(times)
    return FrameTable(
        pts=pts,
        times=times,
        keyframes=keyframes if strictly_increasing else [0],
        pts_to_index={p: i for i, p in enumerate(pts) if p is not None} if strictly_increasing else {},
        source="decode",
    )
