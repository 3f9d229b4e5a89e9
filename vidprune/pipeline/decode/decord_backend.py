"""The decord backend: decord decodes the pixels, in a guarded child process, where it provably agrees with PyAV.

PyAV still provides the frame table (and so the times). :func:`setup_decord` decides once,
at open, whether decord is used: it must import and open the file, the video must have no
rotation metadata (decord 0.6 mishandles it), the AVI index must be sound, decord must
count the same frames, report the same relative times where it reports sane ones, and
return the same pixels as PyAV (within ``_DECORD_MAX_DIFF`` levels) for the first frame
and for two frames it reaches by seeking. Otherwise, or when decord fails, hangs or
crashes later, PyAV takes over with a warning. See ``docs/decoding.md`` ("Backends").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from . import decord_guard
from .messages import decode_error, one_line
from .pyav_backend import iter_pyav
from .frames import Frame

if TYPE_CHECKING:
    from .reader import VideoReader

__all__ = ["available_backends", "close_decord", "fall_back", "import_decord", "iter_decord", "setup_decord"]

# decord is asked for this many frames per get_batch call while streaming.
_DECORD_CHUNK = 8
# decord is used only if its first frame is within this many levels of PyAV's (measured: 0).
_DECORD_MAX_DIFF = 2


def import_decord() -> Any | None:
    """The decord module, or None if it is missing or fails to import (e.g. no wheel)."""
    try:
        import decord
    except Exception:  # noqa: BLE001 - ImportError, or OSError from a broken native library
        return None
    return decord


def available_backends() -> list[str]:
    """Backends that can run here: always ``"pyav"``, plus ``"decord"`` if it imports."""
    return ["pyav"] + (["decord"] if import_decord() is not None else [])


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, and every value within ``_DECORD_MAX_DIFF`` levels."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= _DECORD_MAX_DIFF


def fall_back(reader: VideoReader, reason: str) -> None:
    """Stop using decord for this reader: PyAV decodes from now on, and a warning says why."""
    reader.backend = "pyav"
    close_decord(reader)
    reader.notes.add(f"decord backend not used for '{reader.path}': {reason}; decoded with PyAV instead")


def close_decord(reader: VideoReader) -> None:
    """Free the reader's decord reader in the guarded process, if it has one."""
    vr, reader.decord_vr = reader.decord_vr, None
    if vr is not None:
        vr.close()


def _probe_head(reader: VideoReader) -> tuple[int, Any, np.ndarray]:
    """Decode the first frame with PyAV: (its rotation, its pts, its RGB)."""
    with reader.media.open() as container:
        stream = reader.media.video_stream(container)
        for frame in reader.media.decoded_frames(container, stream):
            reader.pixels.reset()
            return int(frame.rotation or 0), frame.pts, reader.pixels(frame)
    raise decode_error(
        reader.path, "no video frame could be decoded", "the file is corrupt or not a video; re-encode it with ffmpeg"
    )


def setup_decord(reader: VideoReader) -> None:
    """Use decord only if it provably sees the same frames as the decoded stream.

    decord runs in a guarded child process (:mod:`vidprune.pipeline.decode.decord_guard`):
    a hang or a crash there becomes a fallback to PyAV, with a warning.
    """
    if import_decord() is None:
        fall_back(reader, "decord is not installed or fails to import")
        return
    table = reader.table()
    rotation, head_pts, head_rgb = _probe_head(reader)
    if table.source != "decode" and head_pts is not None and head_pts != table.pts[0]:
        expected_by = "the container's index" if table.source == "index" else "demuxing"
        reason = f"the first decoded frame has pts {head_pts}, {expected_by} expected {table.pts[0]}"
        if table.source == "index":
            reader.distrust_index(reason)
        else:
            reader.rebuild_table(reason)
        table = reader.table()
    if rotation:
        fall_back(
            reader, f"the video has rotation metadata ({rotation} degrees), which decord 0.6 does not apply correctly"
        )
        return
    if reader.media.unindexed:
        fall_back(reader, "the file's index is damaged and decord cannot read the file without it")
        return
    try:
        vr = decord_guard.shared_process().open(reader.path, reader.media.threads)
    except decord_guard.DecordFailure as e:
        fall_back(reader, f"decord cannot open it ({one_line(e)})")
        return
    reader.decord_vr = vr
    n_decord = len(vr)
    if n_decord != len(table):
        fall_back(reader, f"decord counts {n_decord} frames but the decoded stream has {len(table)}")
        return
    try:
        ts = np.asarray(vr.timestamps(), dtype=np.float64)[:, 0]
    except (decord_guard.DecordFailure, IndexError, ValueError) as e:
        fall_back(reader, f"decord cannot report frame times ({one_line(e)})")
        return
    sane = np.isfinite(ts) & (ts > -1e6)  # decord reports AV_NOPTS_VALUE as about -9.2e17
    if sane.any():
        ours = np.asarray(table.times)
        first = int(np.argmax(sane))
        rel = ts - ts[first] + ours[first]
        frame_dt = 1.0 / float(reader.media.rate) if reader.media.rate else 0.04
        tol = max(1e-3, 0.25 * frame_dt)
        if np.any(np.abs(rel[sane] - ours[sane]) > tol):
            fall_back(reader, "decord reports frame times that differ from the decoded stream's")
            return
    first_frames = list(iter_decord(reader, [0], fallback_ok=False))
    if reader.decord_vr is None or not first_frames:
        return  # _iter_decord already fell back
    if not same_pixels(first_frames[0].rgb, head_rgb):
        fall_back(reader, "decord's first frame differs from PyAV's (size, orientation or colours)")
        return
    # decord's seeks can be wrong where its sequential reads are right (measured: H.264 in AVI
    # returns frame 1 for frame 11). Check frames that need a seek: just after the second
    # keyframe, and the last frame.
    after_second_keyframe = table.keyframes[1] + 1 if len(table.keyframes) > 1 else 0
    probes = sorted({i for i in (after_second_keyframe, len(table) - 1) if i > 0})
    if not probes:
        return
    # Notes about how PyAV found the probe frames (e.g. seeking was slow) are not about this read.
    mark, revision = reader.notes.checkpoint(), reader.table_revision
    ours = list(iter_pyav(reader, probes))
    if reader.table_revision != revision or [f.index for f in ours] != probes:
        fall_back(reader, "the frame table changed while checking decord")
        return
    reader.notes.rollback(mark)
    theirs = list(iter_decord(reader, probes, fallback_ok=False))
    if reader.decord_vr is None:
        return
    if len(theirs) != len(ours) or not all(same_pixels(a.rgb, b.rgb) for a, b in zip(theirs, ours)):
        fall_back(
            reader, f"decord's frames after a seek differ from PyAV's (checked frames {', '.join(map(str, probes))})"
        )


def iter_decord(reader: VideoReader, wanted: list[int], fallback_ok: bool = True) -> Iterator[Frame]:
    """The frames at ``wanted`` (sorted, unique) from decord; PyAV takes over if decord fails (``fallback_ok``)."""
    table = reader.table()
    for start in range(0, len(wanted), _DECORD_CHUNK):
        chunk = wanted[start : start + _DECORD_CHUNK]
        try:
            batch = np.asarray(reader.decord_vr.get_batch(chunk))
            if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[0] != len(chunk) or batch.shape[-1] != 3:
                raise ValueError(f"unexpected batch {batch.dtype} {batch.shape}")
        except (decord_guard.DecordFailure, ValueError) as e:
            fall_back(reader, f"decord failed while decoding ({one_line(e)})")
            if fallback_ok:
                yield from iter_pyav(reader, wanted[start:])
            return
        for idx, img in zip(chunk, batch):
            reader.stats["decoded_frames"] += 1
            reader.stats["converted_frames"] += 1
            yield Frame(index=idx, time_s=table.times[idx], rgb=np.ascontiguousarray(img))
