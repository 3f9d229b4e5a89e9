"""The frame table: every frame's presentation time and the keyframes, from the stream itself.

Built from the container's index where it can be trusted (:func:`table_from_index`: an
MP4 / MOV sample table, or a Matroska / WebM file's cues and constant frame duration, read
without touching the media data), else by demuxing the
video stream's packets without decoding (:func:`table_by_demuxing`), or, where packets
cannot define it (no pts, repeated pts), by decoding every frame (:func:`table_by_decoding`). Headers are never used for counts or times; see
``docs/decoding.md`` ("Frame counts and times come from decoded frames").
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from vidprune.errors import VideoDecodeError

from .byte_source import Span
from .media import MediaFile
from .messages import decode_error, one_line

__all__ = [
    "FrameTable",
    "TableMismatch",
    "header_duration_note",
    "table_by_decoding",
    "table_by_demuxing",
    "table_from_index",
]

# Warn about a header duration longer than the frames by more than max(0.5 s, 2 %): less is rounding,
# audio that outlasts the video, or a last frame shown longer.
_DURATION_SLACK_S = 0.5
_DURATION_SLACK_FRACTION = 0.02


class TableMismatch(Exception):
    """Decoded frames disagree with the frame table (raised by a decoding pass, caught by the reader)."""


# Samples past the last one a target needs that FFmpeg's decoder reads before it outputs the target
# (its frame threads and B-frame delay): measured 4-5 on 2 cores with 2 B-frames. Announcing them costs
# their bytes where the decoder stops sooner; not announcing them reads them without read-ahead.
DECODER_LOOKAHEAD_SAMPLES = 4


@dataclass
class SampleSpans:
    """Where an MP4's frames lie in the file (its sample table), to say which bytes a seek will read.

    ``decode_pos``: (n,) each frame's (presentation order) position in decoding order;
    ``offset`` / ``size``: (n,) int64 byte range of each sample, in decoding order.
    """

    decode_pos: np.ndarray
    offset: np.ndarray
    size: np.ndarray

    def spans(self, keyframe: int, target: int) -> list[Span]:
        """The bytes decoding reads from ``keyframe`` to ``target`` (frame indices): the samples from the
        keyframe's to the last one that frames up to the target need, in decoding order, as runs of
        adjacent samples, and the ``DECODER_LOOKAHEAD_SAMPLES`` after them that a decoder with frame
        threads and B-frames reads before it outputs the target."""
        first = int(self.decode_pos[keyframe])
        last = min(int(self.decode_pos[keyframe : target + 1].max()) + DECODER_LOOKAHEAD_SAMPLES, len(self.offset) - 1)
        offset, end = self.offset[first : last + 1], self.offset[first : last + 1] + self.size[first : last + 1]
        breaks = np.flatnonzero(offset[1:] != end[:-1]) + 1  # a sample that does not start where the last ended
        starts, stops = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(offset)]])
        return [Span(int(offset[a]), int(end[b - 1])) for a, b in zip(starts, stops)]


@dataclass
class ClusterSpans:
    """Where a Matroska file's keyframes lie (its cues): a seek reads from the keyframe's cluster at most to
    the next cue's cluster (an upper bound: the blocks' positions are not read).

    ``keyframes``: sorted frame indices of the cue points; ``clusters``: their clusters' byte
    offsets, in the same order; ``end``: where the last cluster ends at most (the Segment's end).
    """

    keyframes: list[int]
    clusters: list[int]
    end: int

    def spans(self, keyframe: int, target: int) -> list[Span]:
        i = bisect.bisect_right(self.keyframes, keyframe) - 1
        if i < 0:
            return []
        start = self.clusters[i]
        later = [c for c in self.clusters[i + 1 :] if c > start]
        return [Span(start, min(later) if later else self.end, exact=False)]


@dataclass
class FrameTable:
    """Frames of one video stream in presentation order.

    ``pts``: per frame, in ``stream.time_base`` units (None: unknown). ``times``: per
    frame, seconds relative to the first frame. ``keyframes``: sorted frame indices
    decoding may start from (for seeking). ``pts_to_index``: frame index by pts.
    ``source``: ``"index"`` (the container's sample table, checked against FFmpeg's
    packets at both ends and against every decoded frame), ``"demux"`` (every packet,
    checked against decoded frames while decoding) or ``"decode"`` (the decoder's own output).
    """

    pts: list[int | None]
    times: list[float]
    keyframes: list[int]
    pts_to_index: dict[int, int]
    source: str
    byte_spans: SampleSpans | ClusterSpans | None = None  # from the index: the bytes a seek reads

    def __len__(self) -> int:
        return len(self.times)


def times_from_pts(pts: list[int | None], time_base: Fraction, rate: Fraction | None) -> list[float]:
    """Seconds relative to the first frame; missing pts are extrapolated from the frame rate."""
    base = pts[0] if pts and pts[0] is not None else None
    step = 1.0 / float(rate) if rate else 1.0 / 25.0
    num, den = time_base.numerator, time_base.denominator
    if base is not None and None not in pts:
        ticks = (np.asarray(pts, dtype=object) - base) * num
        if len(ticks) and max(abs(int(ticks.max())), abs(int(ticks.min()))) < 2**53:
            # exact in float64, and IEEE division is correctly rounded: the same floats as below
            return (ticks.astype(np.float64) / den).tolist()
    times: list[float] = []
    for p in pts:
        if p is not None and base is not None:
            # int / int is correctly rounded, so this equals float((p - base) * time_base) without a Fraction per frame
            times.append(((p - base) * num) / den)
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
            if packet.size == 0:
                continue
            media.stats["packets_demuxed"] += 1
            if packet.is_discard:
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
    return _sorted_pts_table([pts[i] for i in order], [rank for rank, i in enumerate(order) if keys[i]], media,
                             "demux")


def _sorted_pts_table(spts: list[int], keyframes: list[int], media: MediaFile, source: str) -> FrameTable:
    """The table of frames with the unique, sorted pts ``spts`` and keyframes at the sorted
    indices ``keyframes`` (frame 0 counts as one: decoding can always start there)."""
    if not keyframes or keyframes[0] != 0:
        keyframes = [0] + keyframes
    assert media.time_base is not None  # checked when the stream was picked
    return FrameTable(
        pts=spts,
        times=times_from_pts(spts, media.time_base, media.rate),
        keyframes=keyframes,
        pts_to_index={p: i for i, p in enumerate(spts)},
        source=source,
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


# ---------------------------------------------------------------------- from the container's index

# FFmpeg's demuxer names whose files carry an ISO-BMFF sample table.
_ISOBMFF_FORMATS = ("mov", "mp4")
# FFmpeg's demuxer names for Matroska / WebM files.
_MATROSKA_FORMATS = ("matroska", "webm")
# Packets compared with the sample table at the start and at the end of the file (in decoding order).
_HEAD_PACKETS = 8
_TAIL_PACKETS = 8


def _packets(container: object, stream: object, media: MediaFile, limit: int | None = None) -> list[tuple]:
    """(pts, dts, pos, size, keyframe, discard) of the stream's next packets with data."""
    out = []
    for packet in container.demux(stream):  # type: ignore[attr-defined]
        if not packet.size:
            continue
        media.stats["packets_demuxed"] += 1
        out.append((packet.pts, packet.dts, packet.pos, packet.size, bool(packet.is_keyframe), bool(packet.is_discard)))
        if limit is not None and len(out) >= limit:
            break
    return out


def _matches(packets: list[tuple], samples, first: int, offset: int) -> bool:
    """Whether ``packets`` are the samples ``first, first + 1, ...`` of the table, pts shifted by ``offset``."""
    if first + len(packets) > len(samples):
        return False
    for k, (pts, dts, pos, size, key, discard) in enumerate(packets):
        i = first + k
        if discard or pts is None or pts - offset != samples.pts[i] or size != samples.size[i]:
            return False
        if key != bool(samples.keyframe[i]) or (pos is not None and pos >= 0 and pos != samples.offset[i]):
            return False
        if dts is not None and dts - offset != samples.dts[i]:
            return False
    return True


def _sample_at(samples, pts: int) -> int | None:
    """The decoding-order number of the sample with presentation time ``pts``, or None."""
    hits = np.flatnonzero(samples.pts == pts)
    return int(hits[0]) if hits.size == 1 else None


def table_from_index(media: MediaFile) -> tuple[FrameTable | None, str]:
    """Frame table from the container's index, where it can be trusted; else (None, why not).

    MP4 / MOV: the sample table (:func:`table_from_sample_table`); Matroska / WebM: the cues
    and a constant frame duration (:func:`table_from_cues`). Other containers: (None, ...).
    """
    formats = media.format.split(",")
    if media.unindexed:
        return None, "the file is read without its index"
    if any(name in formats for name in _ISOBMFF_FORMATS):
        return table_from_sample_table(media)
    if any(name in formats for name in _MATROSKA_FORMATS):
        return table_from_cues(media)
    return None, f"the index of a '{media.format}' file is not read (only MP4/MOV and Matroska/WebM)"


def table_from_sample_table(media: MediaFile) -> tuple[FrameTable | None, str]:
    """Frame table from an MP4 / MOV sample table, where it can be trusted; else (None, why not).

    Trusted when: FFmpeg reads the file as ISO-BMFF through its index; the video track's
    table parses (:mod:`.mp4_index`), in the stream's time base, with unique timestamps
    and no empty samples; every sample lies inside the file (not cut); the edit list is
    absent or one plain edit that neither drops frames at the start nor cuts the end
    short; and FFmpeg's own packets agree with it, sample for sample (pts, dts, size,
    byte position, keyframe flag), at both ends of the file: the first packets, and the
    last ones, which must end where the table does. Reads only the ``moov`` box and those
    packets.
    Decoding then checks each frame's pts against the table; a disagreement makes the
    reader fall back to a demux pass (``VideoReader.distrust_index``).
    """
    from .mp4_index import IndexUnusable, read_sample_table

    try:
        samples = read_sample_table(media.path, media.stream_id)
    except IndexUnusable as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a damaged moov must never stop decoding: the stream decides
        return None, f"the index cannot be read ({type(e).__name__}: {one_line(e)})"
    media.stats["bytes_read"] += samples.moov_bytes
    n = len(samples)
    if media.time_base != Fraction(1, samples.timescale):
        return None, f"the track's timescale 1/{samples.timescale} is not the stream's time base {media.time_base}"
    if samples.size.min() <= 0:
        return None, "the table lists empty samples"
    order = np.argsort(samples.pts, kind="stable")
    sorted_pts = samples.pts[order]
    if n > 1 and not np.all(np.diff(sorted_pts) > 0):
        return None, "two samples share a presentation time"
    file_size = media.size
    if int((samples.offset + samples.size).max()) > file_size or samples.offset.min() < 0:
        return None, "the table lists samples past the end of the file (the media data is cut)"
    if samples.edits:
        if len(samples.edits) != 1:
            return None, f"the edit list has {len(samples.edits)} entries"
        seg, media_time, rate = samples.edits[0]
        if rate != 1.0 or media_time < 0 or media_time > int(samples.pts.min()):
            return None, "the edit list drops or delays frames"
        if samples.movie_timescale > 0 and seg > 0:
            end = media_time + seg * samples.timescale / samples.movie_timescale
            if int(samples.pts.max()) >= end:  # the last frame starts after the edit ends: FFmpeg drops it
                return None, "the edit list cuts the end of the track"

    # FFmpeg's packets must be the table's samples, shifted by one constant (the edit's media time).
    with media.open() as container:
        stream = container.streams[media.stream_index]
        head = _packets(container, stream, media, limit=min(n, _HEAD_PACKETS))
        if not head or head[0][0] is None:
            return None, "FFmpeg's first packet has no timestamp"
        shift = head[0][0] - int(samples.pts[0])
        if not _matches(head, samples, 0, shift):
            return None, "FFmpeg's first packets differ from the table"
        if n > len(head):  # the end: FFmpeg's last packets must be the table's last samples, and end with it
            tail_from = max(len(head), n - _TAIL_PACKETS)
            try:
                container.seek(int(samples.pts[tail_from]) + shift, stream=stream, backward=True, any_frame=True)
            except av.FFmpegError as e:
                return None, f"seeking near the end failed ({one_line(e)})"
            tail = _packets(container, stream, media)
            first = _sample_at(samples, tail[0][0] - shift) if tail and tail[0][0] is not None else None
            if first is None or first + len(tail) != n or not _matches(tail, samples, first, shift):
                return None, "FFmpeg's last packets differ from the table"

    key_rank = np.flatnonzero(samples.keyframe[order]).tolist()
    table = _sorted_pts_table((sorted_pts + shift).tolist(), key_rank, media, "index")
    table.byte_spans = SampleSpans(decode_pos=order, offset=samples.offset, size=samples.size)
    return table, ""


# ---------------------------------------------------------------------- from Matroska cues

# Packets read at the start of a Matroska file without DefaultDuration to find its frame duration:
# up to the second keyframe, at most this many (with one: _HEAD_PACKETS).
_MAX_HEAD_GOP_PACKETS = 1000
# Blocks from the last cue point to the end whose headers are read, at most (a longer last GOP: not trusted).
_MAX_TAIL_PACKETS = 5000


class _Grid:
    """Presentation times of a constant-rate track: frame k at ``first + round(k * step_ns / scale_ns)`` ticks.

    This is how FFmpeg's muxers write a constant frame rate into millisecond ticks (each pts
    rescaled with rounding to nearest: 0, 33, 67, 100 for 30 fps).
    """

    def __init__(self, first: int, step_ns: int, scale_ns: int) -> None:
        self.first, self.step_ns, self.scale_ns = first, step_ns, scale_ns

    def pts(self, k: np.ndarray | int) -> np.ndarray | int:
        return self.first + (2 * np.asarray(k, dtype=np.int64) * self.step_ns + self.scale_ns) // (2 * self.scale_ns)

    def index(self, pts: int) -> int | None:
        """The frame whose grid pts is ``pts``, or None when ``pts`` is not on the grid."""
        k = round((pts - self.first) * self.scale_ns / self.step_ns)
        return k if k >= 0 and int(self.pts(k)) == pts else None

    def indices(self, pts: list[int]) -> list[int] | None:
        """Grid indices of ``pts`` (each on the grid, all different), or None."""
        out = [self.index(p) for p in pts]
        if None in out or len(set(out)) != len(out):
            return None
        return out  # type: ignore[return-value]


def _contiguous(indices: list[int], start: int) -> bool:
    return sorted(indices) == list(range(start, start + len(indices)))


def table_from_cues(media: MediaFile) -> tuple[FrameTable | None, str]:
    """Frame table of a Matroska / WebM file from its cues and a constant frame duration; else (None, why not).

    Cues list the keyframes, not every frame, so the frames between them come from a grid:
    frame k at ``first + k * duration``. Trusted only when: the file has Cues for its one
    video track (:mod:`.mkv_index`), its ticks are the stream's time base, the track has a
    ``DefaultDuration`` (else the first GOP's packets must show one constant duration), FFmpeg's
    first packets are grid frames starting at the first cue, the blocks from the last cue
    point's cluster to the end (their headers: :func:`~.mkv_index.read_cluster_blocks`) are
    exactly the grid's frames there with a keyframe at the cue (so the last pts, and the count,
    are exact), every cue time is a grid frame, and the header's ``Duration`` ends with the
    grid (within one frame, or the slack of :func:`header_duration_note`). Reads the header,
    the Cues, the first packets and the last clusters' block headers. A frame missing in
    between shifts every later frame's index against the grid: decoding checks each frame's
    pts against it, and on a disagreement the reader falls back to a demux pass
    (``VideoReader.distrust_index``); a gap in a stretch nothing is decoded from is not seen
    (``docs/decoding.md``, "Limits").
    """
    from .mkv_index import read_cluster_blocks, read_cue_index
    from .mp4_index import IndexUnusable

    try:
        cues = read_cue_index(media.path)
    except IndexUnusable as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a damaged header must never stop decoding: the stream decides
        return None, f"the index cannot be read ({type(e).__name__}: {one_line(e)})"
    media.stats["bytes_read"] += cues.header_bytes
    scale = cues.timestamp_scale
    if media.time_base != Fraction(scale, 10**9):
        return None, f"the TimestampScale {scale} ns is not the stream's time base {media.time_base}"
    if not cues.cue_times.size:
        return None, "the Cues list no point for the video track"
    if cues.cue_times.size > 1 and not np.all(np.diff(cues.cue_times) > 0):
        return None, "the cue times do not increase"
    if cues.cue_clusters.min() < 0 or cues.cue_clusters.max() >= media.size:
        return None, "a cue points past the end of the file"
    if cues.duration is None or not math.isfinite(cues.duration) or cues.duration <= 0:
        return None, "the header has no Duration"

    with media.open() as container:
        stream = container.streams[media.stream_index]
        head: list[tuple] = []
        keyframes_seen = 0
        iter_head = (p for p in container.demux(stream) if p.size)
        for av_packet in iter_head:
            media.stats["packets_demuxed"] += 1
            packet = (av_packet.pts, av_packet.dts, av_packet.pos, av_packet.size, bool(av_packet.is_keyframe),
                      bool(av_packet.is_discard))
            keyframes_seen += packet[4]
            if keyframes_seen == 2:  # the second keyframe: the first GOP is complete
                break
            head.append(packet)
            # With a DefaultDuration the first packets are checked against it, as for MP4; without
            # one, the whole first GOP must show one constant duration.
            if len(head) >= (_HEAD_PACKETS if cues.default_duration_ns else _MAX_HEAD_GOP_PACKETS + 1):
                break
        whole_file = keyframes_seen < 2 and next(iter_head, None) is None  # the file ends within the head
        media.stats["packets_demuxed"] += not whole_file and keyframes_seen < 2  # the packet that showed it
        if not head or head[0][0] is None or not head[0][4] or any(p[0] is None or p[5] for p in head):
            return None, "FFmpeg's first packets are not a keyframe and frames with timestamps"
        head_pts = [p[0] for p in head]
        first = head_pts[0]
        if min(head_pts) != first or int(cues.cue_times[0]) != first:
            return None, "the first keyframe is not the first frame, or is not the first cue"
        if cues.default_duration_ns:
            step_ns = cues.default_duration_ns
        else:  # no DefaultDuration: the first frames must show one
            steps = set(np.diff(sorted(head_pts)).tolist())
            if len(head_pts) < 3 or len(steps) != 1:
                return None, "the track has no DefaultDuration and its first frames do not have one constant duration"
            step_ns = steps.pop() * scale
        grid = _Grid(first, step_ns, scale)
        head_k = grid.indices(head_pts)
        if head_k is None or (not cues.default_duration_ns and keyframes_seen == 2 and not _contiguous(head_k, 0)):
            return None, "FFmpeg's first packets are not on a constant frame-rate grid (variable frame rate)"
    if whole_file:
        if not _contiguous(head_k, 0):
            return None, "the frames are not on a constant frame-rate grid"
        n = len(head_k)
    else:
        # The end: the block headers of the clusters from the last cue point on (not their frames).
        last_cue = int(cues.cue_times[-1])
        try:
            tail = read_cluster_blocks(
                media.path, int(cues.cue_clusters[-1]), cues.segment_end, cues.track_number, _MAX_TAIL_PACKETS
            )
        except IndexUnusable as e:
            return None, str(e)
        media.stats["bytes_read"] += tail.bytes_read
        if not tail.times or last_cue not in tail.times or not tail.keyframes[tail.times.index(last_cue)]:
            return None, "the last cue point's cluster has no keyframe at the cue time"
        tail_k = grid.indices(tail.times)
        if tail_k is None or not _contiguous(tail_k, min(tail_k)):
            return None, "the frames after the last cue point are not on the constant frame-rate grid"
        n = max(tail_k) + 1
    cue_k = grid.indices(cues.cue_times.tolist())
    if cue_k is None or cue_k[-1] >= n:
        return None, "a cue time is not a frame of the constant frame-rate grid"
    # The length the header claims: the video track's DURATION tag, else the segment's (which
    # includes a longer audio track).
    ends = int(grid.pts(n))  # where the last frame ends, in ticks
    claimed = media.track_duration_s * 1e9 / scale if media.track_duration_s is not None else cues.duration
    frame_ticks = step_ns / scale
    slack = max(frame_ticks, _DURATION_SLACK_S * 1e9 / scale, _DURATION_SLACK_FRACTION * claimed)
    if not ends - frame_ticks - 1 <= claimed <= ends + slack:
        what = "video track's DURATION tag" if media.track_duration_s is not None else "header Duration"
        return None, (
            f"the {what} ({claimed * scale / 1e9:.3f} s) does not match the {n} frames of the "
            f"constant frame-rate grid (ending at {ends * scale / 1e9:.3f} s)"
        )
    table = _sorted_pts_table(grid.pts(np.arange(n)).tolist(), sorted(cue_k), media, "index")  # cue_k: unique
    by_frame = sorted(zip(cue_k, cues.cue_clusters.tolist()))
    table.byte_spans = ClusterSpans([k for k, _ in by_frame], [int(c) for _, c in by_frame], int(cues.segment_end))
    return table, ""
