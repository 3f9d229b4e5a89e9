"""``VideoReader``: random access to the frames of one video file, streamed.

The reader ties the package's parts together: the checked file (:mod:`.media`), its
frame table (:mod:`.frame_table`), PyAV decoding with seeks (:mod:`.pyav_backend`),
the guarded decord backend (:mod:`.decord_backend`) and pixel conversion
(:mod:`.pixels`). Design and measurements: ``docs/decoding.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vidprune.errors import ConfigError
from vidprune.validators import check_non_negative_int, check_positive_int

from . import decord_backend
from .byte_source import is_remote
from .frame_table import FrameTable, header_duration_note, table_by_decoding, table_by_demuxing, table_from_index
from .frames import Frame
from .media import MediaFile
from .messages import Notes
from .pixels import PixelConverter
from .pyav_backend import iter_pyav

__all__ = ["BACKENDS", "VideoReader"]

#: Backends a caller may ask for, in order of preference.
BACKENDS: tuple[str, ...] = ("pyav", "decord")

# Default for VideoReader(seek_threshold=...): seek when it skips at least this many frames.
_DEFAULT_SEEK_THRESHOLD = 32


class VideoReader:
    """Random access to the frames of one video file, streamed.

    ``VideoReader(path, backend="pyav", *, threads=0, seek_threshold=32)``.
    ``backend``: ``"pyav"`` or ``"decord"`` (decord is checked against PyAV and
    falls back to it, see ``docs/decoding.md``). ``threads``: decoder threads, 0 =
    FFmpeg's choice (``thread_type="AUTO"`` is always set). ``seek_threshold``:
    seek to a keyframe when that skips at least this many frames; ``None`` never seeks.
    ``use_index``: build the frame table from the container's index where it can be
    trusted (an MP4 / MOV sample table, or a Matroska / WebM file's cues and constant frame
    duration; checked against the packets at both ends of the file and against every
    decoded frame; :func:`~.frame_table.table_from_index`)
    instead of a demux pass over every packet. ``read_video`` and the frame reader
    (:class:`~.clip.SampledFrames` users) ask for it; ``index_unused`` says why it was
    not used. Without it (the default) the table is always built from the stream.

    Opening checks the file at once (exists, regular, non-empty, a media file with
    a video stream that is not a cover picture, a decoder for it) and raises
    ``VideoDecodeError`` otherwise. With ``backend="pyav"`` the frame table
    (``frame_times``, ``len``) is built on first use; with ``"decord"`` opening
    also builds it and runs the decord checks, so ``backend`` is final unless
    decord later fails mid-decode. Use as a context manager or call ``close()``.
    Not thread-safe.

    Attributes: ``path``; ``backend`` (the backend that runs now; may change from
    ``"decord"`` to ``"pyav"`` on fallback); ``warnings`` (list of one-line notes);
    ``notes`` (the :class:`~.messages.Notes` behind ``warnings``: checkpoints, and
    retracting the notes of a pass that is redone); ``table_revision`` (bumped when
    decoding corrected the frame table); ``stats`` (counters: ``demux_passes``,
    ``decode_passes``, ``decoded_frames``, ``converted_frames``, ``seeks``, ``bad_packets``,
    ``bytes_read`` (bytes FFmpeg and the index reader read from the file),
    ``packets_demuxed`` (packets with data read from the video stream), ``packets_skipped``
    (of those, non-reference frames nobody wanted, not decoded)).
    """

    def __init__(
        self,
        path: str | bytes | os.PathLike[str],
        backend: str = "pyav",
        *,
        threads: int = 0,
        seek_threshold: int | None = _DEFAULT_SEEK_THRESHOLD,
        use_index: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown video backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        threads = check_non_negative_int("threads", threads)  # 0 = FFmpeg's choice
        if seek_threshold is not None:  # None: never seek
            seek_threshold = check_positive_int("seek_threshold", seek_threshold)
        if not isinstance(use_index, bool):
            raise ConfigError(f"use_index must be True or False, got {use_index!r}")
        self.path = os.fsdecode(path)  # str, bytes or PathLike -> str
        self.use_index = use_index
        self.index_unused = ""  # why the container's index was not used (empty: used, or not asked for)
        self.backend = backend
        self.seek_threshold = seek_threshold
        self.notes = Notes()
        self.table_revision = 0
        self.stats = {
            "demux_passes": 0,
            "decode_passes": 0,
            "decoded_frames": 0,
            "converted_frames": 0,
            "seeks": 0,
            "bad_packets": 0,
            "bytes_read": 0,
            "packets_demuxed": 0,
            "packets_skipped": 0,
        }
        self.decord_vr: Any = None  # the decord reader in the guarded process, while decord is used
        self._table: FrameTable | None = None
        self._header_note: str | None = None  # the warning about a header claiming a longer video, if any
        self.media = MediaFile(self.path, threads, self.notes, self.stats)
        self.pixels = PixelConverter(self.path, self.notes, self.stats)
        if backend == "decord" and is_remote(self.path):  # decord opens local files only
            self.backend = "pyav"
            self.notes.add("decord reads local files only: a remote video is decoded with PyAV", "decord-remote")
        elif backend == "decord":
            decord_backend.setup_decord(self)

    @property
    def warnings(self) -> list[str]:
        """One-line notes about this video (fallbacks, corrections, truncation), in order."""
        return self.notes.items

    # ------------------------------------------------------------------ frame table

    def table(self) -> FrameTable:
        """The frame table, built on first use: from the container's index where asked for and trusted, else by
        a demux pass, or a decode pass where packets cannot define it."""
        if self._table is None:
            table = None
            if self.use_index:
                table, self.index_unused = table_from_index(self.media)
            if table is None:
                table = self._table_from_stream()
            self._set_table(table)
        return self._table  # type: ignore[return-value]

    def _table_from_stream(self) -> FrameTable:
        table = table_by_demuxing(self.media)
        return table if table is not None else table_by_decoding(self.media)

    def distrust_index(self, reason: str) -> None:
        """Replace a table from the container's index by one from the stream, after decoding disagreed (``reason``)."""
        previous = self._table
        self.use_index = False
        self.index_unused = f"decoding disagreed with it ({reason})"
        table = self._table_from_stream()
        self.table_revision += 1
        self.notes.add(
            f"the container's index does not match the decoded frames ({reason}): frame table rebuilt from the "
            f"stream ({len(table)} frames; the index listed {len(previous) if previous is not None else '?'})"
        )
        self._table = None
        self._set_table(table)

    def _set_table(self, table: FrameTable) -> None:
        self._table = table
        self.notes.remove(self._header_note)  # about an earlier table: replaced by this one's
        self._header_note = header_duration_note(table, self.media)
        if self._header_note is not None:
            self.notes.add(self._header_note)

    def rebuild_table(self, reason: str) -> None:
        """Replace the table by a full decode's, after decoding disagreed with it (``reason``)."""
        previous = self._table
        old = len(previous) if previous is not None else None
        table = table_by_decoding(self.media)
        self.table_revision += 1
        if previous is not None and sorted(p for p in previous.pts if p is not None) == sorted(
            p for p in table.pts if p is not None
        ) and len(previous) == len(table):
            # Same frames, same times: only the decoder's pts come out of order.
            self.notes.add(
                "the decoder's timestamps come out of order (e.g. H.264 with B-frames in AVI): frames are "
                "identified by decoding order, without seeking"
            )
        else:
            self.notes.add(
                f"frame table corrected by a full decode ({reason}): "
                f"the stream has {len(table)} decodable frames (demuxing counted {old})"
            )
        self._table = None
        self._set_table(table)

    @property
    def table_source(self) -> str:
        """Where the frame table came from: ``"index"``, ``"demux"`` or ``"decode"`` (builds it if needed)."""
        return self.table().source

    @property
    def frame_times(self) -> list[float]:
        """Presentation time (s, first frame = 0.0) of every frame, by index; built once, lazily."""
        return list(self.table().times)

    def __len__(self) -> int:
        """Number of frames in the stream (from the frame table, not headers)."""
        return len(self.table())

    # ------------------------------------------------------------------ frames

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
        self.pixels.reset()
        if self.backend == "decord" and self.decord_vr is not None:
            return decord_backend.iter_decord(self, wanted)
        return iter_pyav(self, wanted)

    def close(self) -> None:
        """Release the decord reader (PyAV containers are opened per pass and already closed)."""
        decord_backend.close_decord(self)
        self.media.closed = True

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n = len(self._table) if self._table is not None else "?"
        return f"VideoReader({self.path!r}, backend={self.backend!r}, frames={n})"
