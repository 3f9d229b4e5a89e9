"""The sample table of an MP4 / MOV video track: every frame's timestamps, keyframe flag, offset and size.

ISO/IEC 14496-12 (ISO base media file format) stores, in the ``moov`` box, for every
track: ``stts`` (decoding-time deltas, run-length), ``ctts`` (composition offsets,
run-length), ``stss`` (sync samples = keyframes; absent means every sample is one),
``stsz`` / ``stz2`` (sample sizes), ``stsc`` + ``stco`` / ``co64`` (chunks, and so every
sample's byte offset) and, in ``edts``, an edit list ``elst``. Reading these needs only
the ``moov`` box, not the media data: this is the index a seek-based reader trusts.

:func:`read_sample_table` returns the table of one track in decoding order, or raises
:class:`IndexUnusable` with the reason (not ISO-BMFF, fragmented, no such track, a box
that is cut or inconsistent). Whether the table can be trusted for *this* file (edit
lists, truncated media data, agreement with FFmpeg's packets) is decided by the caller
(:func:`vidprune.pipeline.decode.frame_table.table_from_index`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from .byte_source import open_bytes

__all__ = ["IndexUnusable", "SampleTable", "read_sample_table"]

# A moov box larger than this is not read (a 10-hour 60 fps track's tables are ~20 MB).
_MAX_MOOV_BYTES = 256 * 1024 * 1024
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"})


class IndexUnusable(Exception):
    """The file has no sample table vidprune can read; ``str()`` says why (one line)."""


@dataclass
class SampleTable:
    """One track's samples in decoding order (arrays of length S), times in ``timescale`` units.

    ``dts`` / ``pts``: int64 decoding / presentation times (``pts = dts + ctts offset``,
    before any edit list). ``keyframe``: bool. ``offset`` / ``size``: int64 byte range of
    each sample in the file. ``edits``: the edit list as (segment duration in
    ``movie_timescale`` units, media time in ``timescale`` units, rate) triples.
    ``moov_bytes``: bytes read to get all this.
    """

    track_id: int
    timescale: int
    movie_timescale: int
    dts: np.ndarray
    pts: np.ndarray
    keyframe: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    edits: list[tuple[int, int, float]]
    moov_bytes: int

    def __len__(self) -> int:
        return int(self.dts.size)


def _boxes(data: bytes | memoryview, start: int, end: int):
    """(kind, body start, box end) of the boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise IndexUnusable(f"box '{kind.decode('latin-1')}' is cut")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise IndexUnusable(f"box '{kind.decode('latin-1')}' runs past its parent")
        yield kind, pos + header, pos + size
        pos += size


def _read_moov(path: str) -> tuple[bytes, int]:
    """The ``moov`` box's bytes (header included) and the bytes read to find it."""
    with open_bytes(path) as f:
        file_size = f.size
        pos, read, first = 0, 0, True
        while pos + 8 <= file_size:
            f.seek(pos)
            header = f.read(16)
            read += len(header)
            size, kind = struct.unpack_from(">I4s", header, 0)
            if first and kind != b"ftyp":
                raise IndexUnusable("not an ISO base media file (no 'ftyp' box first)")
            first = False
            if size == 1:
                size = struct.unpack_from(">Q", header, 8)[0]
            elif size == 0:
                size = file_size - pos
            if size < 8:
                raise IndexUnusable(f"box '{kind.decode('latin-1')}' has a bad size")
            if kind == b"moof":
                raise IndexUnusable("the file is fragmented (its samples are listed per fragment)")
            if kind == b"moov":
                if pos + size > file_size:
                    raise IndexUnusable("the 'moov' box is cut")
                if size > _MAX_MOOV_BYTES:
                    raise IndexUnusable(f"the 'moov' box is {size} bytes, more than vidprune reads")
                f.seek(pos)
                data = f.read(size)
                return data, read + len(data)
            pos += size
    raise IndexUnusable("no 'moov' box")


def _full_box(data: bytes, body: int) -> tuple[int, int]:
    """(version, body start after version/flags) of a full box."""
    return data[body], body + 4


def _table(data: bytes, found: dict, name: bytes) -> tuple[int, int, int, int]:
    """(version, offset of the first entry, entry count, box end) of a sample-table full box."""
    body, stop = found[name]
    version, at = _full_box(data, body)
    return version, at + 4, struct.unpack_from(">I", data, at)[0], stop


def _u32_array(data: bytes, at: int, count: int, stop: int, per: int = 1) -> np.ndarray:
    n = count * per
    if at + 4 * n > stop:
        raise IndexUnusable("a sample table box is shorter than its entry count")
    return np.frombuffer(data, dtype=">u4", count=n, offset=at).astype(np.int64)


def _expand_runs(counts: np.ndarray, values: np.ndarray, total: int, what: str) -> np.ndarray:
    if counts.size and (counts.min() < 0 or int(counts.sum()) < total):
        raise IndexUnusable(f"'{what}' covers fewer samples than the track has")
    return np.repeat(values, counts)[:total]


def _track_table(data: bytes, trak: tuple[int, int], movie_timescale: int, moov_bytes: int) -> SampleTable | None:
    """The sample table of a video ``trak`` box, or None for a track that is not video."""
    found: dict[bytes, tuple[int, int]] = {}

    def walk(start: int, end: int) -> None:
        for kind, body, stop in _boxes(data, start, end):
            if kind in _CONTAINERS:
                walk(body, stop)
            elif kind not in found:
                found[kind] = (body, stop)

    walk(*trak)
    if "hdlr".encode() not in found or data[found[b"hdlr"][0] + 8 : found[b"hdlr"][0] + 12] != b"vide":
        return None
    for needed in (b"tkhd", b"mdhd", b"stts", b"stsc"):
        if needed not in found:
            raise IndexUnusable(f"the video track has no '{needed.decode()}' box")
    version, at = _full_box(data, found[b"tkhd"][0])
    track_id = struct.unpack_from(">I", data, at + (16 if version == 1 else 8))[0]
    version, at = _full_box(data, found[b"mdhd"][0])
    timescale = struct.unpack_from(">I", data, at + (16 if version == 1 else 8))[0]
    if timescale <= 0:
        raise IndexUnusable("the video track's timescale is 0")

    # sizes -> number of samples
    if b"stsz" in found:
        body, stop = found[b"stsz"]
        _, at = _full_box(data, body)
        uniform, count = struct.unpack_from(">II", data, at)
        sizes = np.full(count, uniform, np.int64) if uniform else _u32_array(data, at + 8, count, stop)
    elif b"stz2" in found:
        raise IndexUnusable("compact sample sizes ('stz2') are not read")
    else:
        raise IndexUnusable("the video track has no sample sizes")
    n = int(sizes.size)
    if n == 0:
        raise IndexUnusable("the video track lists no samples")

    # decoding times
    _, at, entries, stop = _table(data, found, b"stts")
    runs = _u32_array(data, at, entries, stop, per=2).reshape(-1, 2)
    deltas = _expand_runs(runs[:, 0], runs[:, 1], n, "stts")
    dts = np.concatenate([[0], np.cumsum(deltas[:-1])]).astype(np.int64)

    # composition offsets (version 1: signed)
    pts = dts.copy()
    if b"ctts" in found:
        version, at, entries, stop = _table(data, found, b"ctts")
        if at + 8 * entries > stop:
            raise IndexUnusable("'ctts' is shorter than its entry count")
        raw = np.frombuffer(data, dtype=">u4" if version == 0 else ">i4", count=2 * entries, offset=at)
        runs = raw.astype(np.int64).reshape(-1, 2)
        if version == 0:  # many muxers write negative offsets in version 0: read them as signed
            runs[:, 1] = np.where(runs[:, 1] >= 2**31, runs[:, 1] - 2**32, runs[:, 1])
        pts = dts + _expand_runs(runs[:, 0], runs[:, 1], n, "ctts")

    # keyframes
    keyframe = np.ones(n, dtype=bool)
    if b"stss" in found:
        _, at, entries, stop = _table(data, found, b"stss")
        sync = _u32_array(data, at, entries, stop) - 1
        if sync.size and (sync.min() < 0 or sync.max() >= n):
            raise IndexUnusable("'stss' names a sample the track does not have")
        keyframe[:] = False
        keyframe[sync] = True

    # byte offsets: chunks (stco / co64), samples per chunk (stsc)
    if b"stco" in found:
        _, at, entries, stop = _table(data, found, b"stco")
        chunk_offsets = _u32_array(data, at, entries, stop)
    elif b"co64" in found:
        _, at, entries, stop = _table(data, found, b"co64")
        if at + 8 * entries > stop:
            raise IndexUnusable("'co64' is shorter than its entry count")
        chunk_offsets = np.frombuffer(data, dtype=">u8", count=entries, offset=at).astype(np.int64)
    else:
        raise IndexUnusable("the video track has no chunk offsets")
    _, at, entries, stop = _table(data, found, b"stsc")
    stsc = _u32_array(data, at, entries, stop, per=3).reshape(-1, 3)  # first chunk (1-based), samples, desc
    num_chunks = int(chunk_offsets.size)
    if entries == 0 or stsc[0, 0] != 1 or np.any(np.diff(stsc[:, 0]) <= 0) or stsc[:, 1].min() <= 0:
        raise IndexUnusable("'stsc' is inconsistent")
    firsts = np.append(stsc[:, 0] - 1, num_chunks)
    chunk_counts = np.diff(firsts)
    if chunk_counts.min() < 0:
        raise IndexUnusable("'stsc' names chunks the track does not have")
    per_chunk = np.repeat(stsc[:, 1], chunk_counts)  # samples in each chunk
    if int(per_chunk.sum()) < n:
        raise IndexUnusable("the chunks hold fewer samples than the track lists")
    chunk_of = np.repeat(np.arange(num_chunks), per_chunk)[:n]
    first_sample_of_chunk = np.concatenate([[0], np.cumsum(per_chunk)[:-1]])
    # offset = chunk offset + sizes of the earlier samples of the same chunk
    csum = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offset = chunk_offsets[chunk_of] + csum - csum[first_sample_of_chunk[chunk_of]]

    edits: list[tuple[int, int, float]] = []
    if b"elst" in found:
        version, at, entries, stop = _table(data, found, b"elst")
        for _ in range(entries):
            if version == 1:
                if at + 20 > stop:
                    raise IndexUnusable("'elst' is cut")
                seg, media = struct.unpack_from(">Qq", data, at)
                at += 16
            else:
                if at + 12 > stop:
                    raise IndexUnusable("'elst' is cut")
                seg, media = struct.unpack_from(">Ii", data, at)
                at += 8
            rate_int, rate_frac = struct.unpack_from(">hH", data, at)
            at += 4
            edits.append((int(seg), int(media), rate_int + rate_frac / 65536.0))
    return SampleTable(
        track_id=int(track_id), timescale=int(timescale), movie_timescale=movie_timescale, dts=dts, pts=pts,
        keyframe=keyframe, offset=offset.astype(np.int64), size=sizes, edits=edits, moov_bytes=moov_bytes,
    )


def read_sample_table(path: str, track_id: int) -> SampleTable:
    """The sample table of the video track ``track_id`` (``tkhd`` track id; PyAV's ``stream.id``).

    Raises IndexUnusable (with the reason) when the file has no such readable table.
    """
    data, moov_bytes = _read_moov(path)
    try:
        _, body, stop = next(_boxes(data, 0, len(data)))
        movie_timescale = 0
        for kind, b, s in _boxes(data, body, stop):
            if kind == b"mvhd":
                version, at = _full_box(data, b)
                movie_timescale = struct.unpack_from(">I", data, at + (16 if version == 1 else 8))[0]
            elif kind == b"mvex":
                raise IndexUnusable("the file is fragmented (its samples are listed per fragment)")
        for kind, b, s in _boxes(data, body, stop):
            if kind == b"trak":
                table = _track_table(data, (b, s), movie_timescale, moov_bytes)
                if table is not None and table.track_id == track_id:
                    return table
    except (struct.error, ValueError, IndexError) as e:
        raise IndexUnusable(f"the 'moov' box is damaged ({e})") from None
    raise IndexUnusable(f"no video track with id {track_id} in the 'moov' box")
