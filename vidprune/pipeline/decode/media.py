"""One video file opened with PyAV: checks before FFmpeg runs, the video stream, decoded frames.

A :class:`MediaFile` opens a fresh PyAV container per pass (``open()``) and maps every
failure to a one-line :class:`~vidprune.errors.VideoDecodeError`. It also knows the
stream's time base and rate and what the header claims about the length (only ever
cross-checked, see ``docs/decoding.md``).
"""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import av

from vidprune.errors import VideoDecodeError

from .byte_source import RangeFile, Span, check_source, is_remote, open_bytes
from .messages import Notes, decode_error, one_line

__all__ = ["MediaFile", "mp4_index_cut_off"]

# FFmpeg's read buffer for the file (PyAV's default is 32 KiB). Every seek refills it, so it is
# read-ahead paid per seek; reads larger than it (most packets of HD video) bypass it.
_IO_BUFFER_BYTES = 8192
# The first bytes of an EBML file (Matroska, WebM): the EBML header's element ID.
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def _is_ebml(path: str) -> bool:
    try:
        with open_bytes(path) as f:
            return f.read(4) == _EBML_MAGIC
    except (OSError, VideoDecodeError):
        return False


def codec_name(stream: Any) -> str:
    """The codec name of a PyAV stream, or '?' (damaged streams may have no codec at all)."""
    try:
        return str(stream.codec.name)
    except Exception:  # noqa: BLE001 - AttributeError / ValueError from a stream without codec
        return "?"


def mp4_index_cut_off(path: str) -> bool:
    """True for an ISO-BMFF file (``ftyp`` first) whose ``moov`` box (the index) is missing or runs past the end."""
    try:
        with open_bytes(path) as f:
            size = f.size
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
    except (OSError, VideoDecodeError):
        return False


class CountingFile(io.RawIOBase):
    """A file handed to FFmpeg through PyAV that counts the bytes read from it into ``stats["bytes_read"]``.

    ``seekable=False``: a file that can only be read front to back, so FFmpeg cannot
    jump to (or trust) an index (how a damaged AVI index is bypassed).
    """

    def __init__(self, path: str, stats: dict[str, int], seekable: bool = True) -> None:
        super().__init__()
        self._file: RangeFile = open_bytes(path, stats)  # local or remote (byte_source); closed in close()
        self._stats = stats
        self._seekable = seekable

    def need(self, spans: list[Span]) -> None:
        """Decoding is about to read ``spans``: tell the source (read-ahead off, those spans fetched)."""
        self._file.need(spans)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        self._stats["bytes_read"] += n or 0
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _duration_tag(stream: Any) -> float | None:
    """A Matroska track's ``DURATION`` tag in seconds (``"00:00:24.000000000"``; FFmpeg and mkvmerge write it), or None."""
    try:
        hours, minutes, seconds = str(stream.metadata.get("DURATION", "")).split(":")
        value = 3600 * int(hours) + 60 * int(minutes) + float(seconds)
    except (ValueError, AttributeError):
        return None
    return value if value > 0 and math.isfinite(value) else None


class MediaFile:
    """A checked video file and its video stream, opened with PyAV once per pass.

    ``MediaFile(path, threads, notes, stats)``: checks the file (exists, regular,
    non-empty, readable), opens it once to pick the video stream (the first that is
    not a cover picture, with a decoder) and reads its time base, rate and header
    claims. ``notes`` / ``stats``: the reader's warnings and counters
    (``bytes_read``, ``packets_demuxed`` and ``bad_packets`` are counted here).

    Attributes: ``path``, ``format`` (FFmpeg's demuxer name, e.g. ``"avi"``),
    ``stream_index``, ``time_base``, ``rate``, ``rate_from_header`` (FFmpeg had an average
    rate without estimating one), ``track_duration_s`` (a Matroska video track's ``DURATION``
    tag, or None), ``header_duration_s`` (what the
    container claims; only cross-checked), ``unindexed`` (read as a byte stream, so
    FFmpeg cannot use a damaged index; set by the AVI index check).
    """

    def __init__(self, path: str, threads: int, notes: Notes, stats: dict[str, int]) -> None:
        self.path = path
        self.threads = threads
        self.notes = notes
        self.stats = stats
        self.closed = False
        self.unindexed = False
        self.format = ""
        self.stream_index = -1
        self.stream_id = 0
        self.codec = "?"
        self.extradata = b""
        self.time_base: Fraction | None = None
        self.rate: Fraction | None = None
        self.rate_from_header = False
        self.track_duration_s: float | None = None
        self.header_duration_s: float | None = None
        self._open_options: dict[str, str] = {}
        self.size = 0  # bytes in the file (set by the check)
        self.source: CountingFile | None = None  # the file of the container opened last (``need`` goes there)
        self._check_file()
        if _is_ebml(path):
            # FFmpeg's stream probing (avformat_find_stream_info) reads ~40 frames of a Matroska
            # file (fps_analyze_framecount, doubled for a 1 ms time base) only to estimate the
            # frame rate (r_frame_rate, which vidprune does not use): ``fpsprobesize=0`` skips that,
            # so an open reads the header and a few packets (measured on 128x96 H.264: 41 KB
            # instead of 221 KB). The average rate still comes from the track's DefaultDuration or
            # the packets probed; a file left without one is probed as usual.
            self._open_options = {"fpsprobesize": "0"}
        self._read_stream_info()
        if self._open_options and not self.rate_from_header:
            self._open_options = {}
            self._read_stream_info()

    def _read_stream_info(self) -> None:
        with self.open() as container:
            self.format = container.format.name
            stream = self._pick_stream(container)
            self.stream_index = stream.index
            self.stream_id = int(stream.id)  # the container's own id (an MP4 track id)
            self.codec = codec_name(stream)
            self.extradata = bytes(stream.codec_context.extradata or b"")  # e.g. H.264's avcC record
            self.time_base = stream.time_base
            self.rate_from_header = bool(stream.average_rate)
            self.rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            # Header claims, kept only to warn about a cut file: the stream's duration (the
            # container's if it has none, e.g. Matroska), and its frame count over its rate
            # (FFmpeg recomputes a cut AVI's duration but keeps its header frame count).
            claims = []
            self.track_duration_s = _duration_tag(stream)
            if stream.duration is not None and stream.duration > 0:
                claims.append(float(stream.duration * stream.time_base))
            elif self.track_duration_s is not None:  # the video track's own length, not the audio's
                claims.append(self.track_duration_s)
            elif container.duration is not None and container.duration > 0:
                claims.append(container.duration / av.time_base)
            if stream.frames and stream.average_rate:
                claims.append(float(stream.frames / stream.average_rate))
            self.header_duration_s = max(claims) if claims else None

    @property
    def frame_step_s(self) -> float | None:
        """One frame interval at the stream's rate (seconds), or None when it has no rate."""
        return 1.0 / float(self.rate) if self.rate else None

    def _check_file(self) -> None:
        p = self.path
        if is_remote(p):
            self.size = check_source(p)  # one line when it cannot be reached
            return
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise decode_error(p, "the file does not exist", "check the path") from None
        except OSError as e:
            raise decode_error(
                p, f"the file cannot be accessed ({one_line(e)})", "check the path and its permissions"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise decode_error(p, "it is a directory", "pass the path of a video file")
        if not stat.S_ISREG(st.st_mode):
            raise decode_error(p, "it is not a regular file", "pass the path of a video file on disk")
        if st.st_size == 0:
            raise decode_error(p, "the file is empty (0 bytes)", "re-download or re-export the video")
        if not os.access(p, os.R_OK):
            raise decode_error(p, "the file is not readable (permission denied)", "fix its permissions")
        self.size = st.st_size

    def open(self) -> Any:
        """A fresh PyAV input container; maps every failure to VideoDecodeError."""
        if self.closed:
            raise ValueError("I/O operation on a closed VideoReader")
        try:
            source = CountingFile(self.path, self.stats, seekable=not self.unindexed)
            self.source = source
            try:
                return av.open(
                    source, mode="r", metadata_errors="replace", buffer_size=_IO_BUFFER_BYTES, options=self._open_options
                )
            except BaseException:
                source.close()
                raise
        except av.FFmpegError as e:
            if mp4_index_cut_off(self.path):
                raise self.cut_mp4_error() from None
            raise decode_error(
                self.path,
                f"FFmpeg cannot read it as a media file ({one_line(e)})",
                "check that it is a complete video file, or re-encode it with ffmpeg",
            ) from None
        except (OSError, ValueError, UnicodeError) as e:
            raise decode_error(self.path, f"it cannot be opened ({one_line(e)})", "check that it is a video file") from None

    def need(self, spans: list[Span]) -> None:
        """The open container's decoding is about to read ``spans`` (:meth:`RangeFile.need`)."""
        if self.source is not None and not self.source.closed:
            self.source.need(spans)

    def cut_mp4_error(self) -> VideoDecodeError:
        return decode_error(
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
            if mp4_index_cut_off(self.path):  # FFmpeg may still list a stream or two from what is left
                raise self.cut_mp4_error()
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
            raise decode_error(
                self.path,
                f"it has no video stream (streams found: {', '.join(kinds)})",
                "pass a file that contains video",
            )
        stream = candidates[0]
        if stream.codec_context is None:
            raise decode_error(
                self.path,
                f"FFmpeg has no decoder for its video codec ({codec_name(stream)}), or the file is damaged",
                "re-encode the video to H.264 with ffmpeg",
            )
        if stream.time_base is None:
            raise decode_error(self.path, "its video stream has no time base", "re-mux it with ffmpeg")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        return stream

    def video_stream(self, container: Any) -> Any:
        """The video stream of a container from :meth:`open`, its decoder configured."""
        stream = container.streams[self.stream_index]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        return stream

    def decoded_frames(self, container: Any, stream: Any, skip: Callable[[Any], bool] | None = None) -> Iterator[Any]:
        """PyAV frames of ``stream`` in output order; undecodable packets are skipped and counted.

        ``skip(packet)``: True for a packet not to decode at all (a frame no other frame refers
        to and nobody wants; counted in ``stats["packets_skipped"]``)."""
        demuxer = container.demux(stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self.notes.add(f"demuxing stopped early ({one_line(e)}): the file may be truncated", "demux-stop")
                try:
                    frames = stream.codec_context.decode(None)  # drain the decoder
                except av.FFmpegError:
                    return
                yield from frames
                return
            if packet.size:
                self.stats["packets_demuxed"] += 1
                if skip is not None and skip(packet):
                    self.stats["packets_skipped"] += 1
                    continue
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.stats["bad_packets"] += 1
                self.notes.add("some packets could not be decoded and were skipped", "bad-packets")
                continue
            yield from frames
