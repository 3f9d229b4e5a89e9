"""The index of a Matroska / WebM file: the video track's timing header and its cue points.

Matroska (IETF RFC 9559) is EBML: elements of (ID, size, data), IDs and sizes as
variable-length integers. A ``Segment`` holds, at its top level, a ``SeekHead`` (where the
other top-level elements are), ``Info`` (``TimestampScale``: nanoseconds per timestamp tick;
``Duration`` in ticks), ``Tracks`` (per track: ``TrackNumber``, ``TrackType``, ``CodecID``,
``DefaultDuration``: nanoseconds per frame when every frame lasts the same), the
``Cluster`` elements with the frames, and ``Cues``: per cue point a ``CueTime`` (ticks) and,
per track, ``CueTrack`` / ``CueClusterPosition`` (segment-relative) / ``CueRelativePosition``.
FFmpeg's muxer writes one cue point per video keyframe and the ``Cues`` at the end of the
file, listed in the ``SeekHead`` (libavformat/matroskaenc.c).

:func:`read_cue_index` reads only the element headers of the segment's top level and the
bodies of ``SeekHead``, ``Info``, ``Tracks`` and ``Cues`` (jumping to them through the
``SeekHead``, else skipping from one top-level element to the next), never a ``Cluster``'s
frames. It raises :class:`~.mp4_index.IndexUnusable` with the reason (not Matroska, no cues,
a cut or damaged element). Cues list keyframes, not every frame: whether the frames between
them can be derived (a constant frame duration, checked against FFmpeg's packets) is decided
by the caller (:func:`vidprune.pipeline.decode.frame_table.table_from_index`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from .byte_source import open_bytes
from .mp4_index import IndexUnusable

__all__ = ["ClusterBlocks", "CueIndex", "read_cluster_blocks", "read_cue_index"]

# Element IDs (RFC 9559, with their marker bits, as written).
_EBML = 0x1A45DFA3
_DOCTYPE = 0x4282
_SEGMENT = 0x18538067
_SEEKHEAD, _SEEK, _SEEK_ID, _SEEK_POSITION = 0x114D9B74, 0x4DBB, 0x53AB, 0x53AC
_INFO, _TIMESTAMP_SCALE, _DURATION = 0x1549A966, 0x2AD7B1, 0x4489
_TRACKS, _TRACK_ENTRY = 0x1654AE6B, 0xAE
_TRACK_NUMBER, _TRACK_TYPE, _CODEC_ID, _DEFAULT_DURATION = 0xD7, 0x83, 0x86, 0x23E383
_CUES, _CUE_POINT, _CUE_TIME, _CUE_TRACK_POSITIONS = 0x1C53BB6B, 0xBB, 0xB3, 0xB7
_CUE_TRACK, _CUE_CLUSTER_POSITION, _CUE_RELATIVE_POSITION = 0xF7, 0xF1, 0xF0
_CLUSTER, _CLUSTER_TIMESTAMP = 0x1F43B675, 0xE7
_SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK, _REFERENCE_BLOCK = 0xA3, 0xA0, 0xA1, 0xFB
_SIMPLE_BLOCK_KEYFRAME, _BLOCK_LACING = 0x80, 0x06  # flag bits in a (Simple)Block header
_VIDEO_TRACK = 1  # TrackType of a video track
_NAMES = {_INFO: "'Info'", _TRACKS: "'Tracks'", _CUES: "the Cues"}

# Header elements larger than this are not read (Cues of a 10-hour file with a cue per second: ~1 MB).
_MAX_ELEMENT_BYTES = 64 * 1024 * 1024
# Top-level elements skipped over, at most, when the SeekHead does not say where the Cues are.
_MAX_TOP_LEVEL_STEPS = 100_000


@dataclass
class CueIndex:
    """What the header and the cues of one Matroska file say about its video track.

    ``timestamp_scale``: nanoseconds per tick (FFmpeg's stream time base is
    ``timestamp_scale / 1e9``). ``duration``: the segment's ``Duration`` in ticks (None if
    absent). ``track_number``; ``codec_id`` (e.g. ``"V_MPEG4/ISO/AVC"``, ``"V_VP9"``);
    ``default_duration_ns`` (None if absent). ``cue_times``: int64 ticks of the track's cue
    points, in file order; ``cue_clusters``: int64 absolute byte offset of each one's cluster;
    ``cue_relative``: int64 offset of its block inside the cluster (-1 if not written).
    ``segment_end``: absolute end of the Segment (or of the file). ``header_bytes``: bytes
    read to get all this.
    """

    timestamp_scale: int
    duration: float | None
    track_number: int
    codec_id: str
    default_duration_ns: int | None
    cue_times: np.ndarray
    cue_clusters: np.ndarray
    cue_relative: np.ndarray
    segment_end: int
    header_bytes: int


@dataclass
class ClusterBlocks:
    """The video track's blocks of the clusters from one position to the end, in file (decoding) order.

    ``times``: each block's timestamp in ticks (cluster Timestamp + the block's relative
    one); ``keyframes``: its keyframe flag. ``bytes_read``: only element and block headers.
    """

    times: list[int]
    keyframes: list[bool]
    bytes_read: int


def _vint(data: bytes | memoryview, pos: int, keep_marker: bool) -> tuple[int, int, bool]:
    """(value, next position, all value bits set) of the EBML variable-length integer at ``pos``."""
    first = data[pos]
    if first == 0:
        raise IndexUnusable("an EBML number is longer than 8 bytes")
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise IndexUnusable("an element header is cut")
    value = first if keep_marker else first & (0xFF >> length)
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    all_ones = not keep_marker and value == (1 << (7 * length)) - 1
    return value, pos + length, all_ones


def _children(data: bytes | memoryview, start: int, end: int):
    """(id, body start, body end) of the elements in ``data[start:end]``."""
    pos = start
    while pos < end:
        element, pos, _ = _vint(data, pos, keep_marker=True)
        size, pos, unknown = _vint(data, pos, keep_marker=False)
        if unknown or pos + size > end:
            raise IndexUnusable(f"element 0x{element:X} runs past its parent")
        yield element, pos, pos + size
        pos += size


def _uint(data: bytes | memoryview, start: int, end: int) -> int:
    return int.from_bytes(data[start:end], "big") if end > start else 0


def _float(data: bytes | memoryview, start: int, end: int) -> float:
    if end - start == 4:
        return struct.unpack(">f", data[start:end])[0]
    if end - start == 8:
        return struct.unpack(">d", data[start:end])[0]
    if end == start:
        return 0.0
    raise IndexUnusable("a float element has a bad size")


class _File:
    """The file, read in small pieces, with the bytes read counted."""

    def __init__(self, f, size: int) -> None:
        self.f, self.size, self.read_bytes = f, size, 0

    def read(self, pos: int, n: int) -> bytes:
        self.f.seek(pos)
        data = self.f.read(max(0, min(n, self.size - pos)))
        self.read_bytes += len(data)
        return data

    def header(self, pos: int) -> tuple[int, int, int | None]:
        """(id, body start, body size or None for unknown) of the element at ``pos``."""
        data = self.read(pos, 12)
        if len(data) < 2:
            raise IndexUnusable("an element header is cut")
        element, at, _ = _vint(data, 0, keep_marker=True)
        size, at, unknown = _vint(data, at, keep_marker=False)
        return element, pos + at, None if unknown else size

    def body(self, start: int, size: int | None, what: str) -> bytes:
        if size is None:
            raise IndexUnusable(f"the {what} element has an unknown size")
        if size > _MAX_ELEMENT_BYTES:
            raise IndexUnusable(f"the {what} element is {size} bytes, more than vidprune reads")
        if start + size > self.size:
            raise IndexUnusable(f"the {what} element is cut (the file ends inside it)")
        return self.read(start, size)


def _video_track(tracks: bytes) -> tuple[int, str, int | None]:
    """(TrackNumber, CodecID, DefaultDuration or None) of the one video track in the ``Tracks`` body.

    FFmpeg does not expose the track number (its ``stream.id`` is 0), so a file with several
    video tracks is not matched to a stream: IndexUnusable."""
    videos = []
    for element, b, e in _children(tracks, 0, len(tracks)):
        if element != _TRACK_ENTRY:
            continue
        fields = {child: (cb, ce) for child, cb, ce in _children(tracks, b, e)}
        if _TRACK_TYPE in fields and _uint(tracks, *fields[_TRACK_TYPE]) == _VIDEO_TRACK and _TRACK_NUMBER in fields:
            codec = bytes(tracks[slice(*fields[_CODEC_ID])]).decode("ascii", "replace") if _CODEC_ID in fields else ""
            default = _uint(tracks, *fields[_DEFAULT_DURATION]) if _DEFAULT_DURATION in fields else None
            videos.append((_uint(tracks, *fields[_TRACK_NUMBER]), codec, default or None))
    if len(videos) != 1:
        raise IndexUnusable(f"the file has {len(videos)} video tracks (the index is used for one)")
    return videos[0]


def _cue_points(cues: bytes, track_number: int, segment_start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times, clusters, relative = [], [], []
    for element, b, e in _children(cues, 0, len(cues)):
        if element != _CUE_POINT:
            continue
        time = None
        for child, cb, ce in _children(cues, b, e):
            if child == _CUE_TIME:
                time = _uint(cues, cb, ce)
            elif child == _CUE_TRACK_POSITIONS and time is not None:
                fields = {c: (pb, pe) for c, pb, pe in _children(cues, cb, ce)}
                if _CUE_TRACK in fields and _uint(cues, *fields[_CUE_TRACK]) == track_number:
                    if _CUE_CLUSTER_POSITION not in fields:
                        raise IndexUnusable("a cue point has no cluster position")
                    times.append(time)
                    clusters.append(segment_start + _uint(cues, *fields[_CUE_CLUSTER_POSITION]))
                    rel = fields.get(_CUE_RELATIVE_POSITION)
                    relative.append(_uint(cues, *rel) if rel is not None else -1)
    return (np.asarray(times, np.int64), np.asarray(clusters, np.int64), np.asarray(relative, np.int64))


def read_cue_index(path: str) -> CueIndex:
    """The header timing and the cue points of the file's video track.

    Raises IndexUnusable (with the reason) when the file has no such readable index.
    """
    with open_bytes(path) as f:
        file = _File(f, f.size)
        try:
            return _read(file)
        except (struct.error, ValueError, IndexError) as e:
            raise IndexUnusable(f"the Matroska header is damaged ({e})") from None


def _read(file: _File) -> CueIndex:
    element, body, size = file.header(0)
    if element != _EBML:
        raise IndexUnusable("not an EBML file")
    ebml = file.body(body, size, "EBML header")
    doctype = next((bytes(ebml[b:e]) for el, b, e in _children(ebml, 0, len(ebml)) if el == _DOCTYPE), b"")
    if doctype.rstrip(b"\0") not in (b"matroska", b"webm"):
        raise IndexUnusable(f"not a Matroska file (DocType {doctype!r})")
    element, segment, segment_size = file.header(body + (size or 0))
    if element != _SEGMENT:
        raise IndexUnusable("no Segment after the EBML header")
    segment_end = file.size if segment_size is None else min(file.size, segment + segment_size)

    found: dict[int, bytes] = {}
    wanted = (_INFO, _TRACKS, _CUES)
    seek_positions: dict[int, int] = {}
    # The top level up to the first Cluster: SeekHead, Info, Tracks (FFmpeg writes them there).
    pos, first_cluster = segment, None
    while pos < segment_end:
        element, at, size = file.header(pos)
        if element == _CLUSTER:
            first_cluster = pos
            break
        if element == _SEEKHEAD:
            seekhead = file.body(at, size, "SeekHead")
            for el, b, e in _children(seekhead, 0, len(seekhead)):
                if el != _SEEK:
                    continue
                fields = {c: (cb, ce) for c, cb, ce in _children(seekhead, b, e)}
                if _SEEK_ID in fields and _SEEK_POSITION in fields:
                    target = _uint(seekhead, *fields[_SEEK_ID])
                    seek_positions.setdefault(target, segment + _uint(seekhead, *fields[_SEEK_POSITION]))
        elif element in wanted and element not in found:
            found[element] = file.body(at, size, _NAMES.get(element, f"0x{element:X}"))
        if size is None:
            raise IndexUnusable(f"top-level element 0x{element:X} has an unknown size")
        pos = at + size
    # The rest through the SeekHead (the Cues are normally at the end).
    for element in wanted:
        if element not in found and element in seek_positions:
            if seek_positions[element] >= file.size:
                raise IndexUnusable(
                    f"the SeekHead lists {_NAMES[element]} past the end of the file (the file is cut)"
                )
            el, at, size = file.header(seek_positions[element])
            if el == element:
                found[element] = file.body(at, size, _NAMES.get(element, f"0x{element:X}"))
    if _CUES not in found and first_cluster is not None:
        # No SeekHead entry: step over the clusters by their headers alone.
        pos, steps = first_cluster, 0
        while pos < segment_end and steps < _MAX_TOP_LEVEL_STEPS:
            element, at, size = file.header(pos)
            if size is None:
                raise IndexUnusable("a Cluster has an unknown size (a live recording): no Cues")
            if element == _CUES:
                found[_CUES] = file.body(at, size, "Cues")
                break
            pos, steps = at + size, steps + 1
    if _INFO not in found or _TRACKS not in found:
        raise IndexUnusable("no 'Info' or 'Tracks' element")
    if _CUES not in found:
        raise IndexUnusable("the file has no Cues")

    info = found[_INFO]
    scale, duration = 1_000_000, None
    for el, b, e in _children(info, 0, len(info)):
        if el == _TIMESTAMP_SCALE:
            scale = _uint(info, b, e)
        elif el == _DURATION:
            duration = _float(info, b, e)
    if scale <= 0:
        raise IndexUnusable("TimestampScale is 0")
    track_number, codec, default_duration = _video_track(found[_TRACKS])
    times, clusters, relative = _cue_points(found[_CUES], track_number, segment)
    return CueIndex(
        timestamp_scale=scale, duration=duration, track_number=track_number, codec_id=codec,
        default_duration_ns=default_duration, cue_times=times, cue_clusters=clusters, cue_relative=relative,
        segment_end=segment_end, header_bytes=file.read_bytes,
    )


def read_cluster_blocks(path: str, start: int, end: int, track_number: int, max_blocks: int) -> ClusterBlocks:
    """The timestamps and keyframe flags of ``track_number``'s blocks in the clusters from byte ``start`` to ``end``.

    Reads only the headers of the elements and of each block (track, relative timestamp,
    flags: RFC 9559 10.1), not the frames: what FFmpeg's demuxer makes its packets' pts and
    keyframe flags from. Top-level elements other than clusters (Cues, Tags) are skipped.
    Raises IndexUnusable for a cluster of unknown size, laced blocks (several frames in
    one block) or more than ``max_blocks`` blocks.
    """
    with open_bytes(path) as f:
        file = _File(f, min(end, f.size))
        try:
            return _cluster_blocks(file, start, track_number, max_blocks)
        except (struct.error, ValueError, IndexError) as e:
            raise IndexUnusable(f"a Cluster is damaged ({e})") from None


def _block_header(file: _File, pos: int, size: int) -> tuple[int, int, int]:
    """(track number, relative timestamp, flags) of the (Simple)Block whose body is at ``pos``."""
    head = file.read(pos, min(size, 12))
    track, at, _ = _vint(head, 0, keep_marker=False)
    if at + 3 > len(head):
        raise IndexUnusable("a block header is cut")
    relative = struct.unpack_from(">h", head, at)[0]
    return track, relative, head[at + 2]


def _cluster_blocks(file: _File, pos: int, track_number: int, max_blocks: int) -> ClusterBlocks:
    times: list[int] = []
    keys: list[bool] = []
    while pos < file.size:
        element, at, size = file.header(pos)
        if size is None:
            raise IndexUnusable(f"element 0x{element:X} has an unknown size (a live recording)")
        if at + size > file.size:
            raise IndexUnusable("the last Cluster is cut (the file ends inside it)")
        if element == _CLUSTER:
            cluster_time, child, end = None, at, at + size
            while child < end:
                kind, body, length = file.header(child)
                if length is None or body + length > end:
                    raise IndexUnusable("a Cluster's element runs past it")
                block = None  # (track, relative timestamp, flags, keyframe)
                if kind == _CLUSTER_TIMESTAMP:
                    cluster_time = _uint(file.read(body, length), 0, length)
                elif kind == _SIMPLE_BLOCK:
                    track, relative, flags = _block_header(file, body, length)
                    block = (track, relative, flags, bool(flags & _SIMPLE_BLOCK_KEYFRAME))
                elif kind == _BLOCK_GROUP:  # a Block, and a ReferenceBlock unless it is a keyframe
                    inner, referenced = body, False
                    while inner < body + length:
                        k, b, n = file.header(inner)
                        if n is None or b + n > body + length:
                            raise IndexUnusable("a BlockGroup's element runs past it")
                        if k == _BLOCK:
                            block = _block_header(file, b, n) + (False,)
                        referenced |= k == _REFERENCE_BLOCK
                        inner = b + n
                    if block is not None:
                        block = block[:3] + (not referenced,)
                if block is not None and block[0] == track_number:
                    if cluster_time is None:
                        raise IndexUnusable("a block comes before its Cluster's Timestamp")
                    if block[2] & _BLOCK_LACING:
                        raise IndexUnusable("the track's blocks are laced (several frames per block)")
                    times.append(cluster_time + block[1])
                    keys.append(block[3])
                    if len(times) > max_blocks:
                        raise IndexUnusable(f"more than {max_blocks} blocks after the last cue point")
                child = body + length
        pos = at + size
    return ClusterBlocks(times=times, keyframes=keys, bytes_read=file.read_bytes)
