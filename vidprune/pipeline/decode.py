"""Decode sampled video frames as upright RGB arrays, with frame-accurate indices and times.

Design
------
Indices and times come from the stream itself, never from container headers
(``stream.frames``, durations and average rates are often wrong or missing):

1. **Frame table (demux pass).** ``VideoReader.frame_times`` is computed once, on
   first use, by demuxing the video stream's packets *without decoding*: every
   packet that carries data and is not flagged "discard" (mp4 edit lists) is a
   frame; its pts (``stream.time_base`` units) is its presentation time. Sorting
   the pts gives presentation order, so frame ``i`` is the ``i``-th smallest pts
   and ``time_s = (pts_i - pts_0) * time_base`` (the first frame is 0.0 s).
   Packets flagged keyframe give the points where decoding may start after a seek.
   If any packet lacks a pts or two share one (raw elementary streams, some AVI /
   MPEG-PS files), the table is built by a **decode pass** instead: decode every
   frame (no RGB conversion) and take the decoder's output order and pts. Decoders
   output frames in presentation order, so pts that go backwards are misassigned
   (H.264 with B-frames in AVI, damaged data): frame k then gets the k-th smallest.

   AVI: FFmpeg trusts an AVI's ``idx1`` index; one with wrong offsets makes it skip
   most of the file. So an AVI is also demuxed as a plain byte stream (FFmpeg then
   walks the ``movi`` chunks); if that finds more frames, the index is damaged and
   the file is read that way from then on (no seeking, no decord; a warning).

   Headers are only cross-checked: when the header's duration (or frame count over
   frame rate) is clearly longer than the frames (by more than max(0.5 s, 2 %)), a
   warning says the file may be truncated; the frames that are there are used.

2. **Decoded frames are the truth.** Demuxed packets and decoded frames can
   disagree: a stream cut before its first keyframe (the decoder drops frames
   until it recovers), undecodable packets, codecs that pack two frames in one
   packet. So while decoding, the ``k``-th frame the decoder outputs must carry
   the ``k``-th pts of the table, and when the last frame is wanted the decoder
   must end exactly there. On any disagreement the table is rebuilt by a decode
   pass (``VideoReader.table_revision`` increments, a warning is recorded) and
   frames are identified by their decode-order position from then on.
   ``read_video`` then picks its indices again from the corrected table, so its
   indices, times and ``num_stream_frames`` always describe decoded frames.

3. **Decode only what is needed.** ``iter_frames`` decodes from the start up to
   the last wanted frame and converts to RGB only the wanted ones. When the next
   wanted frame lies at least ``seek_threshold`` frames beyond the current decode
   position *and* past a keyframe, it seeks to the last keyframe at or before it
   (after the first frame has been checked against the table) and identifies the
   frames that follow by their pts. A seek that lands after its target (MPEG-TS
   with B-frames lands a GOP late) or at the end is retried from keyframes 1, 2
   and 4 further back; a seek that gains nothing (an AVI without index lands at
   its start) turns seeking off for the pass. Anything else unexpected after a
   seek (an unknown pts, the target missing; MPEG-PS gives pts no frame has) falls
   back to plain sequential decoding from the start, where the checks of (2)
   apply. Limit: in seek mode, an undecodable packet inside a range that was
   skipped over is not noticed, so indices follow the demux table there.

   **Bounded.** Every loop is bounded by the file: a pass decodes at most
   ``_MAX_DECODE_FACTOR * (frames + _MAX_DECODE_SLACK)`` frames (then
   VideoDecodeError), seek retries are capped, a table is rebuilt at most once,
   ``read_video`` redoes a pass at most twice. A fuzz test (tests/
   test_decode_robust.py) reads hundreds of damaged files in a child process.

4. **Pixels.** Decoded frames become ``uint8`` RGB with FFmpeg's swscale, using
   the frame's own colour matrix (BT.601 / BT.709 / ...) and range (limited /
   full) instead of PyAV's default of "BT.601, limited" for everything; this is
   what players and decord do, and it makes the two backends agree pixel for
   pixel on ordinary files (measured: max abs difference 0 on h264/mpeg4/mjpeg/
   vp9, 4:2:0 and 4:4:4, limited and full range, BT.601 and BT.709 tags; PyAV's
   default conversion differs from decord by up to 30 levels on BT.709 or
   full-range video). Frames are rotated upright from the display matrix that the
   decoder attaches to each frame (``VideoFrame.rotation``, counter-clockwise
   degrees; multiples of 90 only, mirror flips in the matrix are ignored). If the
   resolution changes mid-stream, later frames are scaled to the first converted
   frame's size (with a warning) so a clip stacks into one array.

Backends
--------
``"pyav"`` (default, always available) does all of the above. ``"decord"``
decodes the pixels with decord while PyAV still provides the frame table (and so
the times). decord runs in a guarded child process
(:mod:`vidprune.pipeline.decord_guard`): it can hang forever in native code on
some files, and a call that overruns its time limit gets the process killed; a
crash there kills only that process. decord is used only if it imports and opens
the file, the video has no rotation metadata (decord 0.6 mishandles it: wrong
shapes or a crash), the AVI index is sound, decord counts as many frames as the
table (after PyAV checked the table against the first decoded frame), reports the
same relative timestamps wherever it reports sane ones (it reports garbage for
mpeg4 B-frames in AVI), and its first frame *and* the frames it returns after a
seek (just after the second keyframe, and the last frame) equal PyAV's within
``_DECORD_MAX_DIFF`` levels (decord's seeks in H.264-in-AVI return wrong frames).
Otherwise, or if decord fails, hangs or crashes while decoding, PyAV takes over;
the reader's ``backend`` then reads ``"pyav"`` and a warning says why. Limit: a
table error in the middle of the stream (an undecodable packet) is not checked
on the decord path.

Errors: anything that makes a file unusable raises
:class:`vidprune.errors.VideoDecodeError` with a one-line message naming the file,
the cause and what to do; PyAV/decord exceptions never escape. Bad arguments
raise :class:`vidprune.errors.ConfigError`.
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from vidprune.errors import ConfigError, VideoDecodeError
from vidprune.pipeline import decord_guard
from vidprune.pipeline.sampling import fps_indices, uniform_indices

__all__ = [
    "choose_indices",
    "BACKENDS",
    "DecodedClip",
    "Frame",
    "VideoReader",
    "available_backends",
    "fps_indices",
    "frame_to_rgb",
    "read_video",
    "uniform_indices",
]

#: Backends a caller may ask for, in order of preference.
BACKENDS: tuple[str, ...] = ("pyav", "decord")

# Default for VideoReader(seek_threshold=...): seek when it skips at least this many frames.
_DEFAULT_SEEK_THRESHOLD = 32
# Warn about a header duration longer than the frames by more than max(0.5 s, 2 %): less is rounding,
# audio that outlasts the video, or a last frame shown longer.
_DURATION_SLACK_S = 0.5
_DURATION_SLACK_FRACTION = 0.02
# A seek that lands after its target is retried from earlier keyframes (1, 2, 4 back) this many times.
_MAX_SEEK_MISSES = 3
# A pass may decode at most this many times (frames + slack): a seek-and-restart pass decodes each
# frame at most about twice; anything beyond means a loop that makes no progress.
_MAX_DECODE_FACTOR = 4
_MAX_DECODE_SLACK = 64
# decord is asked for this many frames per get_batch call while streaming.
_DECORD_CHUNK = 8
# decord is used only if its first frame is within this many levels of PyAV's (measured: 0).
_DECORD_MAX_DIFF = 2
# AVColorSpace values swscale has coefficients for (BT709, FCC, BT470BG, SMPTE170M, SMPTE240M, BT2020).
_KNOWN_COLORSPACES = frozenset({1, 4, 5, 6, 7, 9, 10})
_AVCOL_RANGE_JPEG = 2


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


@dataclass(eq=False)
class DecodedClip:
    """Frames sampled from one video.

    ``frames``: ``(T, H, W, 3)`` ``uint8`` RGB, upright, in increasing index order.
    ``indices`` / ``times_s``: length ``T``, index and presentation time (seconds,
    first stream frame = 0.0) of each frame. ``num_stream_frames``: number of
    frames in the stream, counted from demuxed packets checked against decoding
    (never from headers). ``backend``: ``"pyav"`` or ``"decord"``, the one that
    produced the pixels. ``warnings``: one-line notes (fewer frames than asked,
    backend fallback, corrected frame table, ...).
    """

    frames: np.ndarray
    indices: list[int]
    times_s: list[float]
    num_stream_frames: int
    backend: str
    warnings: list[str]


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


def available_backends() -> list[str]:
    """Backends that can run here: always ``"pyav"``, plus ``"decord"`` if it imports."""
    return ["pyav"] + (["decord"] if _import_decord() is not None else [])


def _import_decord() -> Any | None:
    """The decord module, or None if it is missing or fails to import (e.g. no wheel)."""
    try:
        import decord
    except Exception:  # noqa: BLE001 - ImportError, or OSError from a broken native library
        return None
    return decord


def _one_line(exc: BaseException) -> str:
    """A short single-line description of a (PyAV / decord / OS) exception."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:200]


def _codec_name(stream: Any) -> str:
    """The codec name of a PyAV stream, or '?' (damaged streams may have no codec at all)."""
    try:
        return str(stream.codec.name)
    except Exception:  # noqa: BLE001 - AttributeError / ValueError from a stream without codec
        return "?"


def _mp4_index_cut_off(path: str) -> bool:
    """True for an ISO-BMFF file (``ftyp`` first) whose ``moov`` box (the index) is missing or runs past the end."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos, first = 0, True
            while pos + 8 <= size:
                f.seek(pos)
                header = f.read(16)
                box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if first and kind != b"ftyp":
                    return False
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:
                    box_size = size - pos  # runs to the end of the file
                if kind == b"moov":
                    return pos + box_size > size
                if box_size < 8:
                    break
                pos += box_size
                first = False
            return not first
    except OSError:
        return False


def _error(path: str, cause: str, hint: str) -> VideoDecodeError:
    return VideoDecodeError(f"cannot decode video '{path}': {cause}; {hint}")


class _SequentialFile(io.RawIOBase):
    """A file that can only be read front to back: FFmpeg then cannot jump to (or trust) an index."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


class _TableMismatch(Exception):
    """Internal: decoded frames disagree with the demux-based frame table."""


class _SeekTrouble(Exception):
    """Internal: frames after a seek were not what the table predicts."""


@dataclass
class _FrameTable:
    pts: list[int | None]  # per frame, stream time_base units (None: unknown)
    times: list[float]  # per frame, seconds relative to the first frame
    keyframes: list[int]  # sorted frame indices decoding may start from (for seeking)
    pts_to_index: dict[int, int]
    source: str  # "demux" or "decode"

    def __len__(self) -> int:
        return len(self.times)


class VideoReader:
    """Random access to the frames of one video file, streamed.

    ``VideoReader(path, backend="pyav", *, threads=0, seek_threshold=32)``.
    ``backend``: ``"pyav"`` or ``"decord"`` (see module docstring for the decord
    checks and the fallback to PyAV). ``threads``: decoder threads, 0 = FFmpeg's
    choice (``thread_type="AUTO"`` is always set). ``seek_threshold``: seek to a
    keyframe when that skips at least this many frames; ``None`` never seeks.

    Opening checks the file at once (exists, regular, non-empty, a media file with
    a video stream that is not a cover picture, a decoder for it) and raises
    ``VideoDecodeError`` otherwise. With ``backend="pyav"`` the frame table
    (``frame_times``, ``len``) is built on first use; with ``"decord"`` opening
    also builds it and runs the decord checks, so ``backend`` is final unless
    decord later fails mid-decode. Use as a context manager or call ``close()``.
    Not thread-safe.

    Attributes: ``path``; ``backend`` (the backend that runs now; may change from
    ``"decord"`` to ``"pyav"`` on fallback); ``warnings`` (list of one-line notes);
    ``table_revision`` (bumped when decoding corrected the frame table);
    ``stats`` (counters: ``demux_passes``, ``decode_passes``, ``decoded_frames``,
    ``converted_frames``, ``seeks``, ``bad_packets``).
    """

    def __init__(
        self,
        path: str | bytes | os.PathLike[str],
        backend: str = "pyav",
        *,
        threads: int = 0,
        seek_threshold: int | None = _DEFAULT_SEEK_THRESHOLD,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown video backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads must be an int >= 0 (0 = auto), got {threads!r}")
        if seek_threshold is not None and (
            isinstance(seek_threshold, bool) or not isinstance(seek_threshold, int) or seek_threshold < 1
        ):
            raise ConfigError(f"seek_threshold must be an int >= 1 or None (never seek), got {seek_threshold!r}")
        self.path = os.fsdecode(path)  # str, bytes or PathLike -> str
        self.backend = backend
        self.warnings: list[str] = []
        self.table_revision = 0
        self.stats = {
            "demux_passes": 0,
            "decode_passes": 0,
            "decoded_frames": 0,
            "converted_frames": 0,
            "seeks": 0,
            "bad_packets": 0,
        }
        self._threads = threads
        self._seek_threshold = seek_threshold
        self._table: _FrameTable | None = None
        self._time_base: Fraction | None = None
        self._rate: Fraction | None = None
        self._stream_index = -1
        self._decord_vr: Any = None
        self._closed = False
        self._warned_once: set[str] = set()
        self._transient: list[str] = []
        self._out_size: tuple[int, int] | None = None  # (width, height) before rotation
        self._format = ""  # FFmpeg's demuxer name ("avi", "mov,mp4,m4a,3gp,3g2,mj2", ...)
        self._unindexed = False  # read as a byte stream, so FFmpeg cannot use a (damaged) index
        self._header_duration_s: float | None = None  # what the container claims; only cross-checked
        self._header_note: str | None = None  # the warning about it, if any

        self._check_file()
        with self._open_av() as container:
            self._format = container.format.name
            stream = self._pick_stream(container)
            self._stream_index = stream.index
            self._time_base = stream.time_base
            self._rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            # Header claims, kept only to warn about a cut file: the stream's duration (the
            # container's if it has none, e.g. Matroska), and its frame count over its rate
            # (FFmpeg recomputes a cut AVI's duration but keeps its header frame count).
            claims = []
            if stream.duration is not None and stream.duration > 0:
                claims.append(float(stream.duration * stream.time_base))
            elif container.duration is not None and container.duration > 0:
                claims.append(container.duration / av.time_base)
            if stream.frames and stream.average_rate:
                claims.append(float(stream.frames / stream.average_rate))
            self._header_duration_s = max(claims) if claims else None
        if backend == "decord":
            self._setup_decord()

    # ------------------------------------------------------------------ opening

    def _check_file(self) -> None:
        p = self.path
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise _error(p, "the file does not exist", "check the path") from None
        except OSError as e:
            raise _error(
                p, f"the file cannot be accessed ({_one_line(e)})", "check the path and its permissions"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise _error(p, "it is a directory", "pass the path of a video file")
        if not stat.S_ISREG(st.st_mode):
            raise _error(p, "it is not a regular file", "pass the path of a video file on disk")
        if st.st_size == 0:
            raise _error(p, "the file is empty (0 bytes)", "re-download or re-export the video")
        if not os.access(p, os.R_OK):
            raise _error(p, "the file is not readable (permission denied)", "fix its permissions")

    def _open_av(self) -> Any:
        """A fresh PyAV input container; maps every failure to VideoDecodeError."""
        if self._closed:
            raise ValueError("I/O operation on a closed VideoReader")
        try:
            if self._unindexed:
                return av.open(_SequentialFile(self.path), mode="r", metadata_errors="replace")
            return av.open(self.path, mode="r", metadata_errors="replace")
        except av.FFmpegError as e:
            if _mp4_index_cut_off(self.path):
                raise self._cut_mp4_error() from None
            raise _error(
                self.path,
                f"FFmpeg cannot read it as a media file ({_one_line(e)})",
                "check that it is a complete video file, or re-encode it with ffmpeg",
            ) from None
        except (OSError, ValueError, UnicodeError) as e:
            raise _error(self.path, f"it cannot be opened ({_one_line(e)})", "check that it is a video file") from None

    def _cut_mp4_error(self) -> VideoDecodeError:
        return _error(
            self.path,
            "it is an mp4/mov file whose index (the 'moov' box) is missing or incomplete: the file was cut off, "
            "e.g. an interrupted download or a recording that was not finished",
            "get a complete copy of the file",
        )

    def _pick_stream(self, container: Any) -> Any:
        """The first video stream that is not a cover picture; configures its decoder."""
        candidates = []
        for s in container.streams.video:
            try:
                attached = bool(s.disposition & av.stream.Disposition.attached_pic)
            except (AttributeError, TypeError, ValueError):
                attached = False
            if not attached:
                candidates.append(s)
        if not candidates:
            if _mp4_index_cut_off(self.path):  # FFmpeg may still list a stream or two from what is left
                raise self._cut_mp4_error()
            # From PyAV's typed stream lists: ``Stream.type`` crashes (SIGSEGV) on a stream of
            # an unknown media type, which damaged files have.
            streams = container.streams
            typed = [
                ("audio", streams.audio),
                ("cover picture", streams.video),
                ("data", streams.data),
                ("subtitle", streams.subtitles),
                ("attachment", streams.attachments),
                ("unknown", streams.other),
            ]
            kinds = [name for name, found in typed if len(found)] or ["none"]
            raise _error(
                self.path,
                f"it has no video stream (streams found: {', '.join(kinds)})",
                "pass a file that contains video",
            )
        stream = candidates[0]
        if stream.codec_context is None:
            raise _error(
                self.path,
                f"FFmpeg has no decoder for its video codec ({_codec_name(stream)}), or the file is damaged",
                "re-encode the video to H.264 with ffmpeg",
            )
        if stream.time_base is None:
            raise _error(self.path, "its video stream has no time base", "re-mux it with ffmpeg")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self._threads
        return stream

    def _video_stream(self, container: Any) -> Any:
        stream = container.streams[self._stream_index]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self._threads
        return stream

    # ------------------------------------------------------------------ frame table

    def _warn(self, msg: str, once_key: str | None = None, transient: bool = False) -> None:
        """Record a warning. ``transient``: only about one iter_frames call (read_video drops
        those of a pass it redoes)."""
        if once_key is not None:
            if once_key in self._warned_once:
                return
            self._warned_once.add(once_key)
        self.warnings.append(msg)
        if transient:
            self._transient.append(msg)

    def _ensure_table(self) -> _FrameTable:
        if self._table is None:
            table = self._build_table_by_demuxing()
            if table is None:
                table = self._build_table_by_decoding()
            self._table = table
            self._check_header_duration()
        return self._table

    def _check_header_duration(self) -> None:
        """Warn when the header claims a clearly longer video than the frames that are there."""
        table, claimed = self._table, self._header_duration_s
        if table is None or claimed is None or not math.isfinite(claimed):
            return
        frame_s = 1.0 / float(self._rate) if self._rate else 0.0
        ends = table.times[-1] + frame_s
        if self._header_note in self.warnings:  # about an earlier table: replaced by this one's
            self.warnings.remove(self._header_note)
        self._header_note = None
        if claimed - ends > max(_DURATION_SLACK_S, _DURATION_SLACK_FRACTION * claimed):
            self._header_note = (
                f"the header says the video lasts {claimed:.2f} s but its frames end at {ends:.2f} s: the file "
                f"may be truncated (or its header is wrong); using the {len(table)} frames it has"
            )
            self._warn(self._header_note)

    def _times_from_pts(self, pts: list[int | None]) -> list[float]:
        """Seconds relative to the first frame; missing pts are extrapolated from the frame rate."""
        tb = self._time_base
        base = pts[0] if pts and pts[0] is not None else None
        step = 1.0 / float(self._rate) if self._rate else 1.0 / 25.0
        times: list[float] = []
        for i, p in enumerate(pts):
            if p is not None and base is not None:
                times.append(float((p - base) * tb))
            else:
                times.append(times[-1] + step if times else 0.0)
        return times

    def _demux_video_packets(self, quiet: bool = False) -> tuple[list[int], list[bool], int] | None:
        """(pts, keyframe flags, packets without pts) of the video stream's packets; None if demuxing fails.

        ``quiet``: record no warning (a trial read whose result may be discarded)."""
        pts: list[int] = []
        keys: list[bool] = []
        missing_pts = 0
        with self._open_av() as container:
            stream = container.streams[self._stream_index]
            demuxer = container.demux(stream)
            while True:
                try:
                    packet = next(demuxer)
                except StopIteration:
                    break
                except av.FFmpegError as e:
                    # Truncated / corrupt file: let decoding define what is there.
                    if not quiet:
                        msg = f"demuxing stopped early ({_one_line(e)}): the file may be truncated"
                        self._warn(msg, "demux-stop")
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
        self, indexed: tuple[list[int], list[bool], int] | None
    ) -> tuple[list[int], list[bool], int] | None:
        """Read an AVI without its index too; if that finds more frames, the index is damaged: stop using it.

        FFmpeg trusts an AVI's ``idx1`` index when it has one; one whose offsets are wrong
        makes it skip most of the file (measured: 1 of 40 frames). Read as a byte stream,
        FFmpeg walks the ``movi`` chunks instead. Returns the packets to build the table from.
        """
        n_indexed = len(indexed[0]) + indexed[2] if indexed is not None else 0
        self._unindexed = True
        try:
            sequential = self._demux_video_packets(quiet=True)
        except VideoDecodeError:
            sequential = None
        n_sequential = len(sequential[0]) + sequential[2] if sequential is not None else 0
        if n_sequential > n_indexed:
            self._warn(
                f"the AVI index is damaged (reading by it gives {n_indexed} of the {n_sequential} frames in the file): "
                "the file is read without it, and without seeking"
            )
            return sequential
        self._unindexed = False
        return indexed

    def _build_table_by_demuxing(self) -> _FrameTable | None:
        """Frame table from packets alone, or None when packets cannot define it."""
        self.stats["demux_passes"] += 1
        packets = self._demux_video_packets()
        if self._format == "avi" and not self._unindexed:
            packets = self._check_avi_index(packets)
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
        return _FrameTable(
            pts=list(spts),
            times=self._times_from_pts(list(spts)),
            keyframes=keyframes,
            pts_to_index={p: i for i, p in enumerate(spts)},
            source="demux",
        )

    def _build_table_by_decoding(self) -> _FrameTable:
        """Frame table from a full decode (no RGB conversion): the decoder's output is the truth."""
        self.stats["decode_passes"] += 1
        pts: list[int | None] = []
        keys: list[bool] = []
        with self._open_av() as container:
            stream = self._video_stream(container)
            for frame in self._decoded_frames(container, stream):
                pts.append(frame.pts)
                keys.append(bool(frame.key_frame))
        if not pts:
            raise _error(
                self.path,
                "no video frame could be decoded",
                "the file is corrupt or not a video; re-encode it with ffmpeg",
            )
        known = [p for p in pts if p is not None]
        strictly_increasing = len(known) == len(pts) and all(a < b for a, b in itertools.pairwise(known))
        if len(known) != len(pts):
            self._warn("some decoded frames have no timestamp: their times are extrapolated from the frame rate")
        keyframes = [i for i, k in enumerate(keys) if k] if strictly_increasing else []
        if not keyframes or keyframes[0] != 0:
            keyframes = [0] + keyframes
        times = self._times_from_pts(pts)
        if any(b < a for a, b in itertools.pairwise(times)):
            # Decoders output frames in presentation order, so pts that go backwards are
            # misassigned. Unique ones are a permutation (H.264 with B-frames in AVI, which
            # stores no pts: the decoder's reordered guesses): frame k gets the k-th smallest.
            # Repeated ones mean damaged data: the same, with a warning.
            if len(set(known)) != len(known):
                self._warn("decoded frame timestamps repeat and go backwards (damaged data): times were sorted")
            times = sorted(times)
        return _FrameTable(
            pts=pts,
            times=times,
            keyframes=keyframes if strictly_increasing else [0],
            pts_to_index={p: i for i, p in enumerate(pts) if p is not None} if strictly_increasing else {},
            source="decode",
        )

    def _rebuild_table(self, reason: str) -> None:
        previous = self._table
        old = len(previous) if previous is not None else None
        self._table = self._build_table_by_decoding()
        self.table_revision += 1
        if previous is not None and sorted(p for p in previous.pts if p is not None) == sorted(
            p for p in self._table.pts if p is not None
        ) and len(previous) == len(self._table):
            # Same frames, same times: only the decoder's pts come out of order.
            self._warn(
                "the decoder's timestamps come out of order (e.g. H.264 with B-frames in AVI): frames are "
                "identified by decoding order, without seeking"
            )
        else:
            self._warn(
                f"frame table corrected by a full decode ({reason}): "
                f"the stream has {len(self._table)} decodable frames (demuxing counted {old})"
            )
        self._check_header_duration()

    @property
    def frame_times(self) -> list[float]:
        """Presentation time (s, first frame = 0.0) of every frame, by index; built once, lazily."""
        return list(self._ensure_table().times)

    def __len__(self) -> int:
        """Number of frames in the stream (from the frame table, not headers)."""
        return len(self._ensure_table())

    # ------------------------------------------------------------------ decoding (PyAV)

    def _decoded_frames(self, container: Any, stream: Any) -> Iterator[Any]:
        """PyAV frames of ``stream`` in output order; undecodable packets are skipped and counted."""
        demuxer = container.demux(stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self._warn(f"demuxing stopped early ({_one_line(e)}): the file may be truncated", "demux-stop")
                try:
                    frames = stream.codec_context.decode(None)  # drain the decoder
                except av.FFmpegError:
                    return
                yield from frames
                return
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.stats["bad_packets"] += 1
                self._warn("some packets could not be decoded and were skipped", "bad-packets")
                continue
            yield from frames

    def _to_rgb(self, frame: Any) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB of a PyAV frame: its own colour matrix/range, rotated upright."""
        size = None
        if self._out_size is None:
            self._out_size = (frame.width, frame.height)
        elif (frame.width, frame.height) != self._out_size:
            size = self._out_size
            self._warn(
                f"the resolution changes mid-stream: frames are scaled to the first one's "
                f"{self._out_size[0]}x{self._out_size[1]}",
                "resize",
            )
        rotation = frame.rotation or 0
        if rotation and round(rotation / 90.0) * 90 != rotation:
            self._warn(f"rotation of {rotation} degrees is not a multiple of 90: rounded", "rot")
        try:
            rgb = frame_to_rgb(frame, size)
        except (av.FFmpegError, ValueError) as e:
            raise _error(
                self.path, f"a frame cannot be converted to RGB ({_one_line(e)})", "re-encode the video with ffmpeg"
            ) from None
        self.stats["converted_frames"] += 1
        return rgb

    def _make_frame(self, av_frame: Any, index: int, table: _FrameTable) -> Frame:
        # The table's time: the frame's pts (checked against the table while decoding), or the
        # extrapolated / sorted time where the stream's pts are missing or out of order.
        return Frame(index=index, time_s=table.times[index], rgb=self._to_rgb(av_frame))

    def _iter_pyav(self, wanted: list[int]) -> Iterator[Frame]:
        done_upto = -1
        while True:
            table = self._ensure_table()
            todo = [i for i in wanted if done_upto < i < len(table)]
            dropped = [i for i in wanted if i > done_upto and i >= len(table)]
            if dropped:
                self._warn(
                    f"{len(dropped)} requested frame(s) (from index {dropped[0]}) do not exist in the decoded "
                    f"stream of {len(table)} frames and were not returned",
                    transient=True,
                )
            wanted = todo
            try:
                for fr in self._pyav_pass(table, todo):
                    done_upto = fr.index
                    yield fr
                return
            except _TableMismatch as e:
                if table.source != "demux":  # cannot happen: a decode table is defined by this very decoder
                    raise _error(
                        self.path, f"decoding is not repeatable ({e})", "re-encode the video with ffmpeg"
                    ) from None
                self._rebuild_table(str(e))

    def _pyav_pass(self, table: _FrameTable, wanted: list[int]) -> Iterator[Frame]:
        """Decode ``wanted`` (sorted, unique, in range). Raises _TableMismatch if the table is wrong."""
        if not wanted:
            return
        n = len(table)
        check = table.source == "demux"
        may_seek = (
            self._seek_threshold is not None
            and not self._unindexed
            and len(table.keyframes) > 1
            and bool(table.pts_to_index)
        )
        container = None
        pass_frames = 0  # frames decoded by this call, over restarts: bounded, so no loop can spin forever
        frame_cap = _MAX_DECODE_FACTOR * (n + _MAX_DECODE_SLACK)
        try:
            while True:  # restarts (sequential, no seeking) after trouble with a seek
                if container is not None:
                    container.close()
                container = self._open_av()
                stream = self._video_stream(container)
                frames = self._decoded_frames(container, stream)
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
                            if kf - (cur + 1) >= self._seek_threshold:
                                frames = self._seek(container, stream, table, kf)
                                sequential, just_sought, sought_kf, before_seek = False, True, kf, cur
                        av_frame = next(frames, None)
                        found = None
                        if not sequential and av_frame is not None:
                            found = table.pts_to_index.get(av_frame.pts) if av_frame.pts is not None else None
                            if found is None:
                                raise _SeekTrouble(f"unknown pts {av_frame.pts} after a seek")
                        if just_sought and (av_frame is None or found > target):
                            # Timestamp seeks in MPEG-TS/PS land a GOP late (or at the end): aim at
                            # earlier keyframes, 1, 2, 4 back, then give up seeking.
                            misses += 1
                            ki = bisect.bisect_left(table.keyframes, sought_kf)
                            earlier = table.keyframes[max(0, ki - 2 ** (misses - 1))]
                            if misses > _MAX_SEEK_MISSES or earlier == sought_kf:
                                raise _SeekTrouble("the seek landed after the target")
                            frames = self._seek(container, stream, table, earlier)
                            sought_kf = earlier
                            continue
                        if av_frame is None:
                            if not sequential:
                                raise _SeekTrouble("the stream ended before the target after a seek")
                            if check:
                                raise _TableMismatch(f"the decoder output {k + 1} frames, expected {n}")
                            self._warn(f"the stream ended after {k + 1} frames")
                            return
                        self.stats["decoded_frames"] += 1
                        pass_frames += 1
                        if pass_frames > frame_cap:
                            raise _error(
                                self.path,
                                f"decoding made no progress ({pass_frames} frames decoded for a {n}-frame stream)",
                                "the file is damaged; re-encode it with ffmpeg",
                            )
                        if sequential:
                            k += 1
                            idx = k
                            if check and (idx >= n or (av_frame.pts is not None and av_frame.pts != table.pts[idx])):
                                raise _TableMismatch(
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
                                self._warn(
                                    "seeking did not move forward in this file (no usable index): frames were "
                                    "decoded on from where it landed",
                                    "seek-imprecise",
                                )
                            just_sought = False
                            misses = 0
                            idx = found
                        cur = idx
                        if idx == target:
                            yield self._make_frame(av_frame, idx, table)
                            wi += 1
                        elif idx > target:
                            raise _SeekTrouble(f"frame {target} was skipped after a seek")
                    # All wanted frames yielded. If the last frame was wanted, the decoder must end there.
                    if sequential and check and wanted[-1] == n - 1:
                        extra = next(frames, None)
                        if extra is not None:
                            raise _TableMismatch(f"the decoder output more than the {n} frames demuxing counted")
                    return
                except _SeekTrouble as e:
                    may_seek = False
                    self._warn(f"seeking was unreliable ({e}): decoded sequentially instead", "seek-trouble")
                    wanted = wanted[wi:]
                    continue
        finally:
            if container is not None:
                container.close()

    def _seek(self, container: Any, stream: Any, table: _FrameTable, kf: int) -> Iterator[Any]:
        """Seek to keyframe ``kf`` of ``table``; the decoded frames from there."""
        try:
            container.seek(table.pts[kf], stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as e:
            raise _SeekTrouble(f"seek failed ({_one_line(e)})") from None
        self.stats["seeks"] += 1
        return self._decoded_frames(container, stream)

    # ------------------------------------------------------------------ decord

    def _fallback(self, reason: str) -> None:
        self.backend = "pyav"
        self._close_decord()
        self._warn(f"decord backend not used for '{self.path}': {reason}; decoded with PyAV instead")

    def _close_decord(self) -> None:
        vr, self._decord_vr = self._decord_vr, None
        if vr is not None:
            vr.close()

    def _probe_head(self) -> tuple[int, Any, np.ndarray]:
        """Decode the first frame with PyAV: (its rotation, its pts, its RGB)."""
        with self._open_av() as container:
            stream = self._video_stream(container)
            for frame in self._decoded_frames(container, stream):
                self._out_size = None
                return int(frame.rotation or 0), frame.pts, self._to_rgb(frame)
        raise _error(
            self.path, "no video frame could be decoded", "the file is corrupt or not a video; re-encode it with ffmpeg"
        )

    def _setup_decord(self) -> None:
        """Use decord only if it provably sees the same frames as the decoded stream.

        decord runs in a guarded child process (:mod:`vidprune.pipeline.decord_guard`):
        a hang or a crash there becomes a fallback to PyAV, with a warning.
        """
        if _import_decord() is None:
            self._fallback("decord is not installed or fails to import")
            return
        table = self._ensure_table()
        rotation, head_pts, head_rgb = self._probe_head()
        if table.source == "demux" and head_pts is not None and head_pts != table.pts[0]:
            self._rebuild_table(f"the first decoded frame has pts {head_pts}, demuxing expected {table.pts[0]}")
            table = self._ensure_table()
        if rotation:
            self._fallback(
                f"the video has rotation metadata ({rotation} degrees), which decord 0.6 does not apply correctly"
            )
            return
        if self._unindexed:
            self._fallback("the file's index is damaged and decord cannot read the file without it")
            return
        try:
            vr = decord_guard.shared_process().open(self.path, self._threads)
        except decord_guard.DecordFailure as e:
            self._fallback(f"decord cannot open it ({_one_line(e)})")
            return
        self._decord_vr = vr
        n_decord = len(vr)
        if n_decord != len(table):
            self._fallback(f"decord counts {n_decord} frames but the decoded stream has {len(table)}")
            return
        try:
            ts = np.asarray(vr.timestamps(), dtype=np.float64)[:, 0]
        except (decord_guard.DecordFailure, IndexError, ValueError) as e:
            self._fallback(f"decord cannot report frame times ({_one_line(e)})")
            return
        sane = np.isfinite(ts) & (ts > -1e6)  # decord reports AV_NOPTS_VALUE as about -9.2e17
        if sane.any():
            ours = np.asarray(table.times)
            first = int(np.argmax(sane))
            rel = ts - ts[first] + ours[first]
            frame_dt = 1.0 / float(self._rate) if self._rate else 0.04
            tol = max(1e-3, 0.25 * frame_dt)
            if np.any(np.abs(rel[sane] - ours[sane]) > tol):
                self._fallback("decord reports frame times that differ from the decoded stream's")
                return
        first_frames = list(self._iter_decord([0], fallback_ok=False))
        if self._decord_vr is None or not first_frames:
            return  # _iter_decord already fell back
        if not _same_pixels(first_frames[0].rgb, head_rgb):
            self._fallback("decord's first frame differs from PyAV's (size, orientation or colours)")
            return
        # decord's seeks can be wrong where its sequential reads are right (measured: H.264 in AVI
        # returns frame 1 for frame 11). Check frames that need a seek: just after the second
        # keyframe, and the last frame.
        after_second_keyframe = table.keyframes[1] + 1 if len(table.keyframes) > 1 else 0
        probes = sorted({i for i in (after_second_keyframe, len(table) - 1) if i > 0})
        if not probes:
            return
        # Notes about how PyAV found the probe frames (e.g. seeking was slow) are not about this read.
        notes_before, once_before, revision = len(self.warnings), set(self._warned_once), self.table_revision
        ours = list(self._iter_pyav(probes))
        if self.table_revision != revision or [f.index for f in ours] != probes:
            self._fallback("the frame table changed while checking decord")
            return
        del self.warnings[notes_before:]
        self._warned_once = once_before
        theirs = list(self._iter_decord(probes, fallback_ok=False))
        if self._decord_vr is None:
            return
        if len(theirs) != len(ours) or not all(_same_pixels(a.rgb, b.rgb) for a, b in zip(theirs, ours)):
            self._fallback(
                f"decord's frames after a seek differ from PyAV's (checked frames {', '.join(map(str, probes))})"
            )

    def _iter_decord(self, wanted: list[int], fallback_ok: bool = True) -> Iterator[Frame]:
        table = self._ensure_table()
        for start in range(0, len(wanted), _DECORD_CHUNK):
            chunk = wanted[start : start + _DECORD_CHUNK]
            try:
                batch = np.asarray(self._decord_vr.get_batch(chunk))
                if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[0] != len(chunk) or batch.shape[-1] != 3:
                    raise ValueError(f"unexpected batch {batch.dtype} {batch.shape}")
            except (decord_guard.DecordFailure, ValueError) as e:
                self._fallback(f"decord failed while decoding ({_one_line(e)})")
                if fallback_ok:
                    yield from self._iter_pyav(wanted[start:])
                return
            for idx, img in zip(chunk, batch):
                self.stats["decoded_frames"] += 1
                self.stats["converted_frames"] += 1
                yield Frame(index=idx, time_s=table.times[idx], rgb=np.ascontiguousarray(img))

    # ------------------------------------------------------------------ public

    def iter_frames(self, indices: Sequence[int]) -> Iterator[Frame]:
        """Yield the frames at ``indices`` in increasing index order, one at a time.

        Duplicates are yielded once. Indices must be ints in ``[0, len(self))``
        (``IndexError`` otherwise). Only one decoded frame is held at a time. If
        decoding shows the frame table was wrong, the table is corrected (see
        ``table_revision``) and frames keep their true decode-order index; requested
        indices past the true end are skipped with a warning.
        """
        n = len(self)
        wanted: list[int] = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise IndexError(f"frame index must be an int, got {i!r}")
            if not 0 <= int(i) < n:
                raise IndexError(f"frame index {int(i)} out of range: '{self.path}' has {n} frames")
            wanted.append(int(i))
        wanted = sorted(set(wanted))
        self._out_size = None
        if self.backend == "decord" and self._decord_vr is not None:
            return self._iter_decord(wanted)
        return self._iter_pyav(wanted)

    def close(self) -> None:
        """Release the decord reader (PyAV containers are opened per pass and already closed)."""
        self._close_decord()
        self._closed = True

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n = len(self._table) if self._table is not None else "?"
        return f"VideoReader({self.path!r}, backend={self.backend!r}, frames={n})"


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, and every value within ``_DECORD_MAX_DIFF`` levels."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= _DECORD_MAX_DIFF


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be an integer > 0, got {value!r}")
    return int(value)


def choose_indices(times_s: Sequence[float], *, num_frames: int | None = None, fps: float | None = None,
                   max_frames: int | None = None) -> tuple[list[int], list[str]]:
    """The frames :func:`read_video` samples from a stream with these presentation times, and its notes.

    Uniform sampling with ``num_frames`` (all frames, and a note, when the stream has fewer),
    otherwise rate sampling at ``fps`` capped by ``max_frames`` (a note when the stream's own
    rate gives fewer distinct frames). Used by every path that plans frames before decoding.
    """
    n = len(times_s)
    notes: list[str] = []
    if num_frames is not None:
        indices = uniform_indices(n, num_frames)
        if n < num_frames:
            notes.append(
                f"video has {n} frame{'s' if n != 1 else ''}, fewer than the {num_frames} asked for: "
                f"using {'all ' + str(n) if n != 1 else 'it'}"
            )
    else:
        indices = fps_indices(times_s, float(fps), max_frames)
        span = times_s[-1] - times_s[0] if n else 0.0
        n_targets = math.floor(span * float(fps) + 1e-9) + 1
        if len(indices) < min(n_targets, max_frames or n_targets):
            notes.append(
                f"sampling at {float(fps):g} fps asks for {n_targets} frames but the video's {n} frames "
                f"give only {len(indices)} distinct ones: its frame rate is lower"
            )
    return list(indices), notes


def read_video(
    path: str | bytes | os.PathLike[str],
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    backend: str = "pyav",
    *,
    threads: int = 0,
) -> DecodedClip:
    """Decode a sampled clip from ``path``.

    Exactly one of ``num_frames`` (uniform sampling, :func:`uniform_indices`) or
    ``fps`` (rate sampling, :func:`fps_indices`, optionally capped by
    ``max_frames``) must be given. Returns a :class:`DecodedClip` whose ``frames``
    is ``(T, H, W, 3)`` uint8 RGB. Raises ``ConfigError`` for bad arguments and
    ``VideoDecodeError`` for unusable files.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown video backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if num_frames is not None and fps is not None:
        raise ConfigError("give either num_frames or fps, not both")
    if num_frames is None and fps is None:
        raise ConfigError("give num_frames (uniform sampling) or fps (rate sampling)")
    if num_frames is not None:
        num_frames = _check_positive_int("num_frames", num_frames)
        if max_frames is not None:
            raise ConfigError("max_frames only applies with fps; with num_frames it is already the count")
    else:
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
            raise ConfigError(f"fps must be a number > 0, got {fps!r}")
        if not math.isfinite(float(fps)) or float(fps) <= 0:
            raise ConfigError(f"fps must be a finite number > 0, got {fps!r}")
        if max_frames is not None:
            max_frames = _check_positive_int("max_frames", max_frames)

    with VideoReader(path, backend, threads=threads) as reader:
        for _attempt in range(3):
            transient_before = len(reader._transient)
            revision = reader.table_revision
            backend_before = reader.backend
            times = reader.frame_times
            indices, notes = choose_indices(times, num_frames=num_frames, fps=fps, max_frames=max_frames)
            frames: np.ndarray | None = None
            got_idx: list[int] = []
            got_t: list[float] = []
            for fr in reader.iter_frames(indices):
                if frames is None:
                    frames = np.empty((len(indices),) + fr.rgb.shape, dtype=np.uint8)
                if fr.rgb.shape != frames.shape[1:]:
                    raise _error(reader.path, "frame sizes differ within the clip", "re-encode the video with ffmpeg")
                frames[len(got_idx)] = fr.rgb
                got_idx.append(fr.index)
                got_t.append(fr.time_s)
            if reader.table_revision == revision and reader.backend == backend_before and len(got_idx) == len(indices):
                break
            for msg in reader._transient[transient_before:]:  # about a pass that is redone
                if msg in reader.warnings:
                    reader.warnings.remove(msg)
        else:
            raise _error(
                reader.path, "the decoded frames keep changing between passes", "re-encode the video with ffmpeg"
            )
        if frames is None:  # pragma: no cover - a table always has >= 1 frame
            raise _error(reader.path, "no video frame could be decoded", "re-encode the video with ffmpeg")
        if len(got_idx) < len(frames):  # pragma: no cover - only if decoding is not repeatable
            frames = frames[: len(got_idx)]
        return DecodedClip(
            frames=frames,
            indices=got_idx,
            times_s=got_t,
            num_stream_frames=len(times),
            backend=reader.backend,
            warnings=list(reader.warnings) + notes,
        )
