"""Reading frames with PyAV: forward decoding, keyframe seeks where they pay, every frame checked.

:func:`iter_pyav` decodes from the start up to the last wanted frame and converts to RGB
only the wanted ones. When the next wanted frame lies at least ``seek_threshold``
frames ahead and past a keyframe, it seeks to the keyframe before it and identifies the
frames that follow by their pts; seeks that land late are retried from earlier
keyframes, seeks that gain nothing turn seeking off, anything else unexpected restarts
the pass sequentially. In sequential mode the k-th decoded frame must carry the k-th
pts of the frame table, else :class:`~.frame_table.TableMismatch` and the reader
corrects its table. See ``docs/decoding.md`` ("Cost follows the frames asked for").
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import av

from .frame_table import FrameTable, TableMismatch
from .messages import decode_error, one_line
from .frames import Frame

if TYPE_CHECKING:
    from .reader import VideoReader

__all__ = ["SeekTrouble", "iter_pyav"]

# A seek that lands after its target is retried from earlier keyframes (1, 2, 4 back) this many times.
_MAX_SEEK_MISSES = 3
# A pass may decode at most this many times (frames + slack): a seek-and-restart pass decodes each
# frame at most about twice; anything beyond means a loop that makes no progress.
_MAX_DECODE_FACTOR = 4
_MAX_DECODE_SLACK = 64


class SeekTrouble(Exception):
    """Frames after a seek were not what the table predicts (the pass goes on sequentially)."""


def iter_pyav(reader: VideoReader, wanted: list[int]) -> Iterator[Frame]:
    """Decode the frames at ``wanted`` (sorted, unique) with PyAV; corrects the reader's table on a mismatch."""
    done_upto = -1
    while True:
        table = reader.table()
        todo = [i for i in wanted if done_upto < i < len(table)]
        dropped = [i for i in wanted if i > done_upto and i >= len(table)]
        if dropped:
            reader.notes.add(
                f"{len(dropped)} requested frame(s) (from index {dropped[0]}) do not exist in the decoded "
                f"stream of {len(table)} frames and were not returned",
                per_pass=True,
            )
        wanted = todo
        try:
            for fr in _pyav_pass(reader, table, todo):
                done_upto = fr.index
                yield fr
            return
        except TableMismatch as e:
            if table.source == "index":  # the container's index is proven wrong: build the table from packets
                reader.distrust_index(str(e))
            elif table.source == "demux":
                reader.rebuild_table(str(e))
            else:  # cannot happen: a decode table is defined by this very decoder
                raise decode_error(
                    reader.path, f"decoding is not repeatable ({e})", "re-encode the video with ffmpeg"
                ) from None


def _pyav_pass(reader: VideoReader, table: FrameTable, wanted: list[int]) -> Iterator[Frame]:
    """Decode ``wanted`` (sorted, unique, in range). Raises TableMismatch if the table is wrong."""
    if not wanted:
        return
    n = len(table)
    check = table.source != "decode"  # tables from packets or the index are checked against the decoder
    from_index = table.source == "index"
    may_seek = (
        reader.seek_threshold is not None
        and not reader.media.unindexed
        and len(table.keyframes) > 1
        and bool(table.pts_to_index)
    )
    # After a seek on a trusted index, H.264 frames that no other frame refers to (nal_ref_idc 0)
    # and that are not wanted are not decoded at all: the other frames decode bit for bit the same.
    skip = _nonref_skipper(reader, table, wanted) if from_index else None
    dropped: set[int] = set() if skip is None else skip.dropped
    container = None
    pass_frames = 0  # frames decoded by this call, over restarts: bounded, so no loop can spin forever
    frame_cap = _MAX_DECODE_FACTOR * (n + _MAX_DECODE_SLACK)
    try:
        while True:  # restarts (sequential, no seeking) after trouble with a seek
            if container is not None:
                container.close()
            container = reader.media.open()
            stream = reader.media.video_stream(container)
            frames = reader.media.decoded_frames(container, stream)
            sequential = True
            k = -1  # decode-order index in sequential mode
            cur = -1  # index of the last frame seen
            head_ok = False
            just_sought = False
            sought_kf = 0  # keyframe the last seek aimed at
            before_seek = -1  # index of the last frame seen before that seek
            misses = 0  # seeks in a row that landed after their target
            wi = 0
            try:
                while wi < len(wanted):
                    target = wanted[wi]
                    if may_seek and head_ok and not just_sought:
                        kf = table.keyframes[bisect.bisect_right(table.keyframes, target) - 1]
                        if kf - (cur + 1) >= reader.seek_threshold:
                            frames = _seek(reader, container, stream, table, kf, skip, target)
                            sequential, just_sought, sought_kf, before_seek = False, True, kf, cur
                    av_frame = next(frames, None)
                    found = None
                    if not sequential and av_frame is not None:
                        found = table.pts_to_index.get(av_frame.pts) if av_frame.pts is not None else None
                        if found is None:
                            raise SeekTrouble(f"unknown pts {av_frame.pts} after a seek")
                    if just_sought and (av_frame is None or found > target):
                        # Timestamp seeks in MPEG-TS/PS land a GOP late (or at the end): aim at
                        # earlier keyframes, 1, 2, 4 back, then give up seeking.
                        misses += 1
                        ki = bisect.bisect_left(table.keyframes, sought_kf)
                        earlier = table.keyframes[max(0, ki - 2 ** (misses - 1))]
                        if misses > _MAX_SEEK_MISSES or earlier == sought_kf:
                            raise SeekTrouble("the seek landed after the target")
                        frames = _seek(reader, container, stream, table, earlier, skip, target)
                        sought_kf = earlier
                        continue
                    if av_frame is None:
                        if not sequential:
                            raise SeekTrouble("the stream ended before the target after a seek")
                        if check:
                            raise TableMismatch(f"the decoder output {k + 1} frames, expected {n}")
                        reader.notes.add(f"the stream ended after {k + 1} frames")
                        return
                    reader.stats["decoded_frames"] += 1
                    pass_frames += 1
                    if pass_frames > frame_cap:
                        raise decode_error(
                            reader.path,
                            f"decoding made no progress ({pass_frames} frames decoded for a {n}-frame stream)",
                            "the file is damaged; re-encode it with ffmpeg",
                        )
                    if sequential:
                        k += 1
                        idx = k
                        if check and (idx >= n or (av_frame.pts is not None and av_frame.pts != table.pts[idx])):
                            raise TableMismatch(
                                f"decoded frame {idx} has pts {av_frame.pts}, expected "
                                f"{table.pts[idx] if idx < n else 'no more frames'}"
                            )
                        if idx >= n:  # decode table: cannot happen, but never index past it
                            return
                        head_ok = True
                    else:
                        assert found is not None  # set above for every frame after a seek
                        if just_sought and misses == 0 and found <= before_seek + 1:
                            # The seek gained nothing: the demuxer cannot seek in this file (e.g. an
                            # AVI without index lands at its start). Decode on from here, without seeks.
                            may_seek = False
                            reader.notes.add(
                                "seeking did not move forward in this file (no usable index): frames were "
                                "decoded on from where it landed",
                                "seek-imprecise",
                            )
                        if from_index and not just_sought and cur >= sought_kf and (
                            found <= cur or any(i not in dropped for i in range(cur + 1, found))
                        ):
                            # From the keyframe a seek landed on, frames must follow the index one by one
                            # (less the unwanted non-reference frames that were not decoded).
                            raise TableMismatch(f"after a seek, frame {found} came after frame {cur}")
                        just_sought = False
                        misses = 0
                        idx = found
                    cur = idx
                    if idx == target:
                        yield Frame(index=idx, time_s=table.times[idx], rgb=reader.pixels(av_frame))
                        wi += 1
                    elif idx > target:
                        raise SeekTrouble(f"frame {target} was skipped after a seek")
                # All wanted frames yielded. If the last frame was wanted, the decoder must end there.
                if sequential and check and wanted[-1] == n - 1:
                    extra = next(frames, None)
                    if extra is not None:
                        raise TableMismatch(f"the decoder output more than the {n} frames demuxing counted")
                return
            except SeekTrouble as e:
                may_seek = False
                reader.notes.add(f"seeking was unreliable ({e}): decoded sequentially instead", "seek-trouble")
                wanted = wanted[wi:]
                continue
    finally:
        if container is not None:
            container.close()


def _seek(
    reader: VideoReader, container: Any, stream: Any, table: FrameTable, kf: int, skip: Any = None,
    target: int | None = None,
) -> Iterator[Any]:
    """Seek to keyframe ``kf`` of ``table``; the decoded frames from there (``skip``: packets not to decode).

    Where the index gives byte ranges, the file is told first which bytes decoding up to
    ``target`` reads (read-ahead off, those ranges fetched: :mod:`.byte_source`).
    """
    if table.byte_spans is not None and target is not None:
        reader.media.need(table.byte_spans.spans(kf, target))
    try:
        container.seek(table.pts[kf], stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as e:
        raise SeekTrouble(f"seek failed ({one_line(e)})") from None
    reader.stats["seeks"] += 1
    return reader.media.decoded_frames(container, stream, skip)


class _NonRefSkipper:
    """``skipper(packet)``: True for an H.264 packet (AVCC, as in MP4) of a non-reference picture that is not wanted.

    A picture whose slices have ``nal_ref_idc == 0`` (ITU-T H.264 7.4.1) is never used to
    predict another, so not decoding it changes no other frame. ``dropped``: table indices
    of the pictures skipped.
    """

    def __init__(self, table: FrameTable, wanted: list[int], length_size: int) -> None:
        self.table = table
        self.wanted_pts = {table.pts[i] for i in wanted}
        self.length_size = length_size
        self.dropped: set[int] = set()

    def __call__(self, packet: Any) -> bool:
        pts = packet.pts
        if pts is None or pts in self.wanted_pts:
            return False
        index = self.table.pts_to_index.get(pts)
        if index is None or not _h264_nonref(memoryview(packet), self.length_size):
            return False
        self.dropped.add(index)
        return True


def _h264_nonref(data: memoryview, length_size: int) -> bool:
    """Whether an AVCC H.264 access unit's first slice NAL unit has ``nal_ref_idc == 0``."""
    pos = 0
    while pos + length_size < len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        header = data[pos + length_size]
        if 1 <= header & 0x1F <= 5:  # a coded slice (5: IDR)
            return (header >> 5) & 3 == 0
        pos += length_size + size
    return False


def _nonref_skipper(reader: VideoReader, table: FrameTable, wanted: list[int]) -> _NonRefSkipper | None:
    """A skipper for an H.264-in-MP4 stream (avcC extradata gives the NAL length size), else None."""
    name, extradata = reader.media.codec, reader.media.extradata
    if name != "h264" or len(extradata) < 7 or extradata[0] != 1:  # not avcC (Annex B streams have no lengths)
        return None
    return _NonRefSkipper(table, wanted, (extradata[4] & 0x3) + 1)
