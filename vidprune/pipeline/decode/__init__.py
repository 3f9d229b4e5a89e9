"""Decode sampled video frames as upright RGB arrays, with frame-accurate indices and times.

    from vidprune.pipeline.decode import read_video, VideoReader
    clip = read_video("clip.mp4", num_frames=32)            # DecodedClip: frames (T, H, W, 3) uint8
    clip = read_video("clip.mp4", fps=1.0, start_s=10, end_s=20)
    with VideoReader("clip.mp4") as reader:                 # streamed, one frame held at a time
        for frame in reader.iter_frames([0, 100, 200]):     # Frame(index, time_s, rgb)
            ...

Modules, one concept each: :mod:`.frames` (what is handed out), :mod:`.sampling` (which
indices), :mod:`.clip` (the one frame reader: :class:`FrameSampling`,
:class:`SampledFrames`, :func:`read_video`), :mod:`.reader` (:class:`VideoReader`),
:mod:`.media` (the file opened with PyAV, bytes read counted), :mod:`.frame_table` (times
and keyframes: from the container's index where it can be trusted, else from the stream),
:mod:`.mp4_index` (the MP4 / MOV sample table), :mod:`.mkv_index` (Matroska / WebM header and
cues), :mod:`.pyav_backend` (decoding with seeks), :mod:`.decord_backend` +
:mod:`.decord_guard` (decord in a guarded child process), :mod:`.pixels` (colour
matrices, rotation, RGB). Design, guarantees and measurements: ``docs/decoding.md``.

Errors: anything that makes a file unusable raises
:class:`vidprune.errors.VideoDecodeError` with a one-line message naming the file, the
cause and what to do; PyAV/decord exceptions never escape. Bad arguments raise
:class:`vidprune.errors.ConfigError`.
"""

from .clip import FrameSampling, SampledFrames, read_video
from .decord_backend import available_backends
from .frames import DecodedClip, Frame, FramePlan
from .pixels import frame_to_rgb
from .reader import BACKENDS, VideoReader
from .sampling import choose_indices, fps_indices, uniform_indices

__all__ = [
    "BACKENDS",
    "DecodedClip",
    "Frame",
    "FramePlan",
    "FrameSampling",
    "SampledFrames",
    "VideoReader",
    "available_backends",
    "choose_indices",
    "fps_indices",
    "frame_to_rgb",
    "read_video",
    "uniform_indices",
]
