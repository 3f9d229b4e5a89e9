"""Test helper (not a test module): generate small videos with PyAV whose frames can be identified.

Every frame made by :func:`make_video` carries its index as a *stamp*: two rows of
``block x block`` pixel cells along the top of the (upright) picture, read in
raster order: cell 0 white and cell 1 black (markers that also prove the picture
is upright), then the index in binary (most significant bit first), then an even
parity cell. Cells are pure black/white and aligned to the codec's 8x8 grid, so
:func:`read_stamp` recovers the index exactly under lossy compression (h264,
mpeg4, mjpeg, vp9 at default quality) by thresholding each cell's centre mean.

Below the stamp rows is a colourful texture (static, or scrolling with
``moving=True``) so that colour conversion and codecs have real work to do.

:func:`make_moving_square_video` makes a static background with one moving
square (for dedup tests) and returns the square's positions. :func:`make_noise_video`
makes stamped frames of fresh noise, so every frame costs as many bytes as a keyframe
(a long file that is still quick to encode, for measuring what a reader reads).
:func:`set_mp4_rotation` writes a display matrix into an mp4's ``tkhd`` box, as
phone cameras do (PyAV 15 cannot set rotation side data when muxing).

Damaged containers, made by editing the bytes of a written file:
:func:`set_avi_frame_counts` (header frame counts that lie), :func:`remove_avi_index`
(an AVI without its ``idx1`` index, like a recording that was cut before it was
finalized), :func:`scramble_avi_index` (an index whose offsets point anywhere),
:func:`scale_mp4_durations` (mp4 headers that report a wrong duration),
:func:`set_mkv_default_duration` (a Matroska frame duration that lies).
"""

from __future__ import annotations

import platform

import pytest

# pyproject installs decord only where it has wheels: platform_machine x86_64 or AMD64.
# Elsewhere (aarch64, arm64) the decord tests skip; vidprune decodes with PyAV there.
DECORD_PLATFORM = platform.machine() in ("x86_64", "AMD64")
needs_decord = pytest.mark.skipif(
    not DECORD_PLATFORM,
    reason=f"decord is installed only on x86_64/AMD64 (pyproject); this is {platform.machine()}: PyAV decodes here")
# the backends to run a both-backends test with, as pytest parameters
BACKENDS = ["pyav", pytest.param("decord", marks=needs_decord)]
# the same for loops inside a test
BACKENDS_HERE = ("pyav", "decord") if DECORD_PLATFORM else ("pyav",)

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "STAMP_BLOCK",
    "MovingSquareVideo",
    "draw_stamp",
    "make_audio_file",
    "make_moving_square_video",
    "make_noise_video",
    "make_resolution_change_ts",
    "make_vfr_video",
    "make_video",
    "read_stamp",
    "remove_avi_index",
    "scale_mp4_durations",
    "scramble_avi_index",
    "set_avi_frame_counts",
    "set_mkv_default_duration",
    "set_mp4_rotation",
    "stamp_capacity",
    "texture",
]

STAMP_BLOCK = 8


def stamp_capacity(width: int, block: int = STAMP_BLOCK) -> int:
    """How many index bits fit in a frame ``width`` pixels wide (2 rows of cells, 3 reserved)."""
    return 2 * (width // block) - 3


def draw_stamp(img: np.ndarray, index: int, block: int = STAMP_BLOCK) -> None:
    """Draw ``index`` into the top ``2 * block`` rows of ``img`` ((H, W, 3) uint8) in place."""
    h, w = img.shape[:2]
    per_row = w // block
    nbits = stamp_capacity(w, block)
    if h < 2 * block or nbits < 1:
        raise ValueError(f"frame {w}x{h} too small for a stamp with {block}px cells")
    if not 0 <= index < 2**nbits:
        raise ValueError(f"index {index} does not fit in {nbits} stamp bits (width {w})")
    bits = [(index >> (nbits - 1 - b)) & 1 for b in range(nbits)]
    cells = [1, 0] + bits + [sum(bits) % 2]
    img[: 2 * block, : per_row * block] = 0
    for c, bit in enumerate(cells):
        r, col = divmod(c, per_row)
        img[r * block : (r + 1) * block, col * block : (col + 1) * block] = 255 * bit


def read_stamp(frame_rgb: np.ndarray, block: int = STAMP_BLOCK) -> int:
    """The index stamped on an upright ``(H, W, 3)`` RGB frame; ``ValueError`` if there is no valid stamp."""
    frame_rgb = np.asarray(frame_rgb)
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame_rgb.shape}")
    h, w = frame_rgb.shape[:2]
    per_row = w // block
    nbits = stamp_capacity(w, block)
    if h < 2 * block or nbits < 1:
        raise ValueError(f"frame {w}x{h} too small to hold a stamp")
    q = max(1, block // 4)
    cells = []
    for c in range(nbits + 3):
        r, col = divmod(c, per_row)
        y0, x0 = r * block + q, col * block + q
        patch = frame_rgb[y0 : y0 + block - 2 * q, x0 : x0 + block - 2 * q].astype(np.float64)
        cells.append(1 if patch.mean() > 127.5 else 0)
    if cells[0] != 1 or cells[1] != 0:
        raise ValueError("no stamp markers at the top-left: frame not stamped, or not upright")
    bits = cells[2 : 2 + nbits]
    if sum(bits) % 2 != cells[-1]:
        raise ValueError("stamp parity check failed")
    value = 0
    for b in bits:
        value = (value << 1) | b
    return value


def texture(height: int, width: int, shift: int = 0) -> np.ndarray:
    """A smooth colourful ``(height, width, 3)`` uint8 pattern, scrolled right by ``shift`` pixels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x = x - shift
    r = 128 + 100 * np.sin(x / 7.0)
    g = 128 + 100 * np.cos(y / 5.0 + x / 11.0)
    b = 128 + 100 * np.sin((x + y) / 9.0)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _encode(
    path: Path,
    images: Sequence[np.ndarray] | np.ndarray,
    fps: float,
    codec: str,
    pix_fmt: str,
    options: dict[str, str] | None,
    codec_attrs: dict[str, object] | None,
    gop: int | None,
    bframes: int | None,
    colorspace: str | None = None,
    full_range: bool = False,
    drop_packets: Sequence[int] = (),
    container_options: dict[str, str] | None = None,
) -> None:
    h, w = images[0].shape[:2]
    cs = {None: None, "bt601": 5, "bt709": 1}[colorspace]
    opts = dict(options or {})
    if gop is not None:
        opts["g"] = str(gop)
        if codec == "libx264":
            opts.setdefault("x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0")
    if bframes is not None:
        opts["bf"] = str(bframes)
    with av.open(str(path), "w", options=dict(container_options or {})) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000), options=opts)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if cs is not None:
            stream.codec_context.colorspace = cs
            stream.codec_context.color_range = 2 if full_range else 1
        for key, value in (codec_attrs or {}).items():
            setattr(stream.codec_context, key, value)
        drop = set(drop_packets)
        count = 0

        def mux(packets: list) -> None:
            nonlocal count
            for packet in packets:
                if count not in drop:
                    container.mux(packet)
                count += 1

        for img in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if cs is not None:
                # Convert with the tagged matrix/range (PyAV applies them only when src != dst).
                frame = frame.reformat(
                    format=pix_fmt,
                    src_colorspace=1 if cs != 1 else 5,
                    dst_colorspace=cs,
                    src_color_range="JPEG",
                    dst_color_range="JPEG" if full_range else "MPEG",
                )
                frame.colorspace = cs
                frame.color_range = 2 if full_range else 1
            mux(stream.encode(frame))
        mux(stream.encode())


def make_video(
    path: str | Path,
    num_frames: int = 40,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    moving: bool = False,
    *,
    gop: int | None = None,
    bframes: int | None = None,
    rotation: int = 0,
    options: dict[str, str] | None = None,
    codec_attrs: dict[str, object] | None = None,
    colorspace: str | None = None,
    full_range: bool = False,
    drop_packets: Sequence[int] = (),
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write a video of ``num_frames`` stamped frames of ``size = (W, H)`` and return its path.

    The container follows the file extension (.mp4, .avi, .mkv, .webm, .mov, ...).
    ``gop``: keyframe interval; ``bframes``: max consecutive B-frames (codec
    defaults when None). ``rotation`` in {0, 90, 180, 270}: the clockwise
    rotation a player applies (mp4 only, like a phone's "rotate" tag); the stored
    pictures are turned the other way so that the *displayed* video is upright
    and ``read_stamp`` works only after the rotation is applied. ``colorspace``
    (``"bt601"`` / ``"bt709"``) and ``full_range`` convert RGB to YUV with that
    matrix and range *and* tag the stream so, i.e. a correctly made tagged video.
    ``codec_attrs`` are set on the encoder's codec context as they are (tags only).
    ``drop_packets``: packet numbers (in encoding order) not written; ``(0,)``
    removes the first keyframe, like a stream cut in the middle of a GOP.
    ``container_options``: muxer options, e.g. ``{"movflags": "+faststart"}`` (mp4 index first).
    """
    path = Path(path)
    w, h = size
    images = []
    for i in range(num_frames):
        img = texture(h, w, shift=2 * i if moving else 0)
        draw_stamp(img, i)
        if rotation:
            img = np.rot90(img, k=(rotation // 90) % 4)  # counter-clockwise, undone by the display matrix
        images.append(img)
    _encode(
        path, images, fps, codec, pix_fmt, options, codec_attrs, gop, bframes, colorspace, full_range, drop_packets,
        container_options,
    )
    if rotation:
        set_mp4_rotation(path, rotation)
    return path


def make_vfr_video(
    path: str | Path,
    times_s: Sequence[float],
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """A variable-frame-rate video: frame ``i`` (stamped ``i``) is shown at ``times_s[i]`` seconds.

    Timestamps are written in milliseconds (time base 1/1000), so times are kept to
    the millisecond; use a container that stores per-frame times (.mkv, .mp4).
    """
    path = Path(path)
    w, h = size
    tb = Fraction(1, 1000)
    pts = [round(t * 1000) for t in times_s]
    if any(b <= a for a, b in itertools.pairwise(pts)):
        raise ValueError("times_s must be strictly increasing (at millisecond resolution)")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.time_base = tb
        stream.time_base = tb
        for i, p in enumerate(pts):
            img = texture(h, w)
            draw_stamp(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = p
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_resolution_change_ts(
    path: str | Path,
    parts: Sequence[tuple[int, tuple[int, int]]] = ((20, (64, 48)), (20, (96, 64))),
    fps: int = 10,
) -> Path:
    """An MPEG-TS file whose resolution changes: ``parts`` = ((num_frames, (W, H)), ...).

    Each part is encoded separately (libx264) and the byte streams are
    concatenated, as ``cat a.ts b.ts`` would. Frames are stamped with their index
    over the whole file and timestamps continue across parts (part k starts at
    ``pts = frames before it``, plus a one-frame gap).
    """
    path = Path(path)
    tb = Fraction(1, fps)
    blobs = []
    first = 0
    for num_frames, (w, h) in parts:
        part = path.with_name(f"{path.stem}.part{len(blobs)}.ts")
        with av.open(str(part), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.time_base = tb
            for i in range(num_frames):
                img = texture(h, w)
                draw_stamp(img, first + i)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = first + len(blobs) + i
                frame.time_base = tb
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        blobs.append(part.read_bytes())
        part.unlink()
        first += num_frames
    path.write_bytes(b"".join(blobs))
    return path


def set_mp4_rotation(path: str | Path, rotation: int) -> None:
    """Write the display matrix of a clockwise ``rotation`` (0/90/180/270) into every ``tkhd`` box.

    Same matrices as FFmpeg's old ``-metadata:s:v rotate=N``; FFmpeg reports them
    as ``VideoFrame.rotation == -rotation`` (counter-clockwise degrees, mod 360).
    """
    one, fixed_w = 1 << 16, 1 << 30
    abcd = {0: (1, 0, 0, 1), 90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}
    if rotation % 360 not in abcd:
        raise ValueError(f"rotation must be one of 0, 90, 180, 270, got {rotation}")
    rotation %= 360
    a, b, c, d = abcd[rotation]
    data = bytearray(Path(path).read_bytes())

    def boxes(start: int, end: int):
        """(type, payload start, box end) of the ISO-BMFF boxes in data[start:end]."""
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            header = 8
            if size == 1:
                size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
                header = 16
            elif size == 0:
                size = end - pos
            if size < header:
                break
            yield kind, pos + header, pos + size
            pos += size

    found = 0
    for kind, body, end in boxes(0, len(data)):
        if kind != b"moov":
            continue
        for kind2, body2, end2 in boxes(body, end):
            if kind2 != b"trak":
                continue
            for kind3, body3, _ in boxes(body2, end2):
                if kind3 != b"tkhd":
                    continue
                version = data[body3]
                # version/flags 4, times + track id + reserved + duration (20, or 32 in version 1),
                # reserved 8, layer/alternate group/volume/reserved 8, then the 3x3 matrix.
                off = body3 + 4 + (32 if version == 1 else 20) + 16
                width = struct.unpack(">I", data[off + 36 : off + 40])[0]
                height = struct.unpack(">I", data[off + 40 : off + 44])[0]
                if width == 0 and height == 0:
                    continue  # not a visual track
                tx = {90: height, 180: width}.get(rotation, 0)
                ty = {180: height, 270: width}.get(rotation, 0)
                data[off : off + 36] = struct.pack(">9i", a * one, b * one, 0, c * one, d * one, 0, tx, ty, fixed_w)
                found += 1
    if not found:
        raise ValueError(f"{path}: no video track header (tkhd) found: not an mp4/mov file?")
    Path(path).write_bytes(bytes(data))


def _riff_chunks(data: bytes | bytearray, start: int, end: int):
    """(fourcc, header offset, payload size) of the RIFF chunks in data[start:end] (little-endian sizes)."""
    pos = start
    while pos + 8 <= end:
        fourcc, size = struct.unpack("<4sI", data[pos : pos + 8])
        yield fourcc, pos, size
        pos += 8 + size + (size & 1)


def _avi_chunk(data: bytes | bytearray, path: Sequence[bytes]) -> tuple[int, int]:
    """(header offset, payload size) of the chunk reached by ``path`` from the top of an AVI file.

    Each step names a chunk fourcc (``b"avih"``) or a LIST type (``b"hdrl"``); KeyError if absent.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"AVI ":
        raise ValueError("not an AVI file")
    start, end = 12, len(data)
    found = None
    for step in path:
        for fourcc, pos, size in _riff_chunks(data, start, end):
            if fourcc == b"LIST" and data[pos + 8 : pos + 12] == step:
                start, end, found = pos + 12, pos + 8 + size, (pos, size)
                break
            if fourcc == step:
                start, end, found = pos + 8, pos + 8 + size, (pos, size)
                break
        else:
            raise KeyError(f"no {step!r} chunk in the AVI file")
    assert found is not None
    return found


def set_avi_frame_counts(path: str | Path, count: int) -> None:
    """Make an AVI's headers claim ``count`` frames: ``avih.dwTotalFrames`` and the video ``strh.dwLength``."""
    data = bytearray(Path(path).read_bytes())
    avih, _ = _avi_chunk(data, [b"hdrl", b"avih"])
    struct.pack_into("<I", data, avih + 8 + 16, count)  # MainAVIHeader: dwTotalFrames at +16
    strh, _ = _avi_chunk(data, [b"hdrl", b"strl", b"strh"])
    if data[strh + 8 : strh + 12] != b"vids":
        raise ValueError("the first stream of the AVI is not video")
    struct.pack_into("<I", data, strh + 8 + 32, count)  # AVIStreamHeader: dwLength at +32
    Path(path).write_bytes(bytes(data))


def remove_avi_index(path: str | Path) -> None:
    """Cut an AVI's ``idx1`` index off the end (fixing the RIFF size), as if never written."""
    data = bytearray(Path(path).read_bytes())
    idx1, _ = _avi_chunk(data, [b"idx1"])
    del data[idx1:]
    struct.pack_into("<I", data, 4, len(data) - 8)
    Path(path).write_bytes(bytes(data))


def scramble_avi_index(path: str | Path, seed: int = 0) -> None:
    """Point every ``idx1`` entry of an AVI at a random offset in the file (sizes and flags kept)."""
    data = bytearray(Path(path).read_bytes())
    idx1, size = _avi_chunk(data, [b"idx1"])
    rng = np.random.default_rng(seed)
    for entry in range(idx1 + 8, idx1 + 8 + size, 16):  # ckid, dwFlags, dwChunkOffset, dwChunkLength
        struct.pack_into("<I", data, entry + 8, int(rng.integers(0, len(data))))
    Path(path).write_bytes(bytes(data))


def scale_mp4_durations(path: str | Path, factor: float) -> None:
    """Multiply the durations in an mp4's ``mvhd``, ``tkhd`` and ``mdhd`` boxes by ``factor`` (frames untouched)."""
    data = bytearray(Path(path).read_bytes())

    def boxes(start: int, end: int):
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if size < 8:
                break
            yield kind, pos + 8, pos + size
            pos += size

    # (offset of the duration field after version/flags, for version 0 / version 1)
    duration_at = {b"mvhd": (12, 20), b"tkhd": (16, 24), b"mdhd": (12, 20)}
    changed = 0

    def visit(start: int, end: int) -> None:
        nonlocal changed
        for kind, body, stop in boxes(start, end):
            if kind in (b"moov", b"trak", b"mdia"):
                visit(body, stop)
            elif kind in duration_at:
                version = data[body]
                off = body + 4 + duration_at[kind][version == 1]
                fmt = ">Q" if version == 1 else ">I"
                value = struct.unpack_from(fmt, data, off)[0]
                struct.pack_into(fmt, data, off, round(value * factor))
                changed += 1

    visit(0, len(data))
    if not changed:
        raise ValueError(f"{path}: no mvhd/tkhd/mdhd box found: not an mp4/mov file?")
    Path(path).write_bytes(bytes(data))


def set_mkv_default_duration(path: str | Path, nanoseconds: int | None) -> None:
    """Overwrite the ``DefaultDuration`` (element 0x23E383) of a Matroska file's tracks (frames untouched).

    The value keeps its width, so nothing else moves. ``None`` removes it: its ID becomes
    0x23E3FF, an element no reader knows (and so skips), as if the muxer had not written it."""
    data = bytearray(Path(path).read_bytes())
    at, changed = data.find(b"\x23\xe3\x83"), 0
    while at >= 0:
        size_byte = data[at + 3]
        width = size_byte & 0x7F if size_byte & 0x80 else 0  # a 1-byte EBML size (what muxers write here)
        if nanoseconds is None and 1 <= width <= 8:
            data[at + 2] = 0xFF
            changed += 1
        elif 1 <= width <= 8 and nanoseconds < 1 << (8 * width):
            data[at + 4 : at + 4 + width] = nanoseconds.to_bytes(width, "big")
            changed += 1
        at = data.find(b"\x23\xe3\x83", at + 1)
    if not changed:
        raise ValueError(f"{path}: no DefaultDuration element found")
    Path(path).write_bytes(bytes(data))


def make_audio_file(path: str | Path, seconds: float = 0.5, codec: str | None = None, cover: bool = False) -> Path:
    """An audio-only file; the codec follows the extension unless given.

    .wav -> PCM, .mp3 -> MP3, .flac -> FLAC, anything else (.m4a, .mp4) -> AAC.
    ``cover`` (mp3/flac) adds album art: a one-picture video stream flagged
    ``attached_pic``, which is not a video.
    """
    path = Path(path)
    default = {".wav": "pcm_s16le", ".mp3": "libmp3lame", ".flac": "flac"}.get(path.suffix, "aac")
    codec = codec or default
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=44100 if codec == "libmp3lame" else 16000)
        if cover:
            vcodec, pix = ("png", "rgb24") if path.suffix == ".flac" else ("mjpeg", "yuvj420p")
            pic = container.add_stream(vcodec, rate=1)
            pic.width, pic.height, pic.pix_fmt = 64, 48, pix
            pic.disposition = av.stream.Disposition.attached_pic.value
            art = av.VideoFrame.from_ndarray(texture(48, 64), format="rgb24")
            for packet in list(pic.encode(art)) + list(pic.encode()):
                container.mux(packet)
        rate = stream.codec_context.sample_rate
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        if codec in ("pcm_s16le", "flac"):
            frame = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16), format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass(frozen=True)
class MovingSquareVideo:
    """What :func:`make_moving_square_video` wrote.

    ``positions[i] = (x, y)``: top-left corner of the square in frame ``i``.
    ``background``: the ``(H, W, 3)`` uint8 picture behind the square (before encoding).
    """

    path: Path
    positions: list[tuple[int, int]]
    square: int
    size: tuple[int, int]
    fps: float
    background: np.ndarray


def make_moving_square_video(
    path: str | Path,
    num_frames: int = 30,
    fps: float = 10,
    size: tuple[int, int] = (96, 64),
    square: int = 16,
    step: tuple[int, int] = (4, 0),
    start: tuple[int, int] = (0, 24),
    color: tuple[int, int, int] = (255, 32, 32),
    background: str = "texture",
    codec: str = "libx264",
    pix_fmt: str = "yuv444p",
    lossless: bool = True,
    stamp: bool = False,
    static_frames: Sequence[int] = (),
) -> MovingSquareVideo:
    """A static background with one ``square``-pixel square moving by ``step`` (dx, dy) per frame.

    The square bounces off the frame edges. ``background``: ``"texture"`` (the
    colourful pattern) or ``"gray"`` (flat 128). ``lossless`` (libx264 only)
    encodes with ``qp=0`` in 4:4:4 so the background is bit-identical from frame
    to frame after decoding. ``stamp`` draws the frame index at the top (which
    then changes between frames). ``static_frames``: frame indices at which the
    square does not move (it keeps the previous position), to make exact
    duplicates.
    """
    path = Path(path)
    w, h = size
    if square > min(w, h):
        raise ValueError(f"square {square} does not fit in {w}x{h}")
    if background == "texture":
        bg = texture(h, w)
    elif background == "gray":
        bg = np.full((h, w, 3), 128, np.uint8)
    else:
        raise ValueError(f"background must be 'texture' or 'gray', got {background!r}")
    x, y = start
    dx, dy = step
    positions: list[tuple[int, int]] = []
    images = []
    static = set(static_frames)
    for i in range(num_frames):
        if i > 0 and i not in static:
            if not 0 <= x + dx <= w - square:
                dx = -dx
            if not 0 <= y + dy <= h - square:
                dy = -dy
            x, y = x + dx, y + dy
        positions.append((x, y))
        img = bg.copy()
        img[y : y + square, x : x + square] = color
        if stamp:
            draw_stamp(img, i)
        images.append(img)
    options = {"qp": "0"} if (lossless and codec == "libx264") else None
    _encode(path, images, fps, codec, pix_fmt, options, None, None, None)
    return MovingSquareVideo(path=path, positions=positions, square=square, size=(w, h), fps=fps, background=bg)


def _audio_packets(container, seconds: float, opus: bool) -> list:
    """The packets of a ``seconds``-long 440 Hz mono tone, encoded for a new audio stream of ``container``."""
    rate = 48000
    stream = container.add_stream("libopus" if opus else "aac", rate=rate)
    stream.layout = "mono"
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    packets, chunk = [], 960
    for start in range(0, tone.size, chunk):
        fmt = "flt" if opus else "fltp"
        frame = av.AudioFrame.from_ndarray(tone[None, start : start + chunk].copy(), format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        packets += stream.encode(frame)
    return packets + list(stream.encode())


def make_noise_video(
    path: str | Path, num_frames: int, fps: float, size: tuple[int, int] = (64, 48), *, gop: int = 50,
    bframes: int = 2, seed: int = 0, container_options: dict[str, str] | None = None, codec: str = "libx264",
    skip_frames: Sequence[int] = (),
    audio_s: float | None = None,
) -> Path:
    """A file of ``num_frames`` stamped frames of fresh random noise, a keyframe every ``gop`` frames.

    Noise does not compress, so every frame has about the same size (~2.3 KB at 64x48) and
    the bytes a reader reads follow the frames it touches. ``codec="libx264"``: x264's
    ``ultrafast`` preset plus ``bframes`` B-frames, ~2,500 frames per second here;
    ``"libvpx"`` (VP8) / ``"libvpx-vp9"``: libvpx's realtime mode, no B-frames.
    ``container_options``: muxer options, e.g. ``{"movflags": "+faststart"}``.
    ``skip_frames``: frame numbers never encoded, leaving a gap in the timestamps where they
    would be (a capture that dropped frames); the frames keep stamping their own number.
    ``audio_s``: also an audio track (a 440 Hz tone, AAC; Opus in .webm) lasting that many
    seconds, interleaved with the video as a recorder writes it.
    """
    path = Path(path)
    w, h = size
    rng = np.random.default_rng(seed)
    if codec == "libx264":
        opts = {"g": str(gop), "bf": str(bframes), "preset": "ultrafast",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"}
    else:
        opts = {"g": str(gop), "keyint_min": str(gop), "deadline": "realtime", "cpu-used": "8"}
    skipped = set(skip_frames)
    rate = Fraction(fps).limit_denominator(100000)
    with av.open(str(path), "w", options=dict(container_options or {})) as container:
        stream = container.add_stream(codec, rate=rate, options=opts)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        audio_packets = _audio_packets(container, audio_s, path.suffix == ".webm") if audio_s else []
        for i in range(num_frames):
            while audio_packets and audio_packets[0].pts * audio_packets[0].time_base <= i / rate:
                container.mux(audio_packets.pop(0))
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if i in skipped:
                continue
            draw_stamp(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in audio_packets:
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
