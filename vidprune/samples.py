"""Sample videos generated on the fly (for ``vidprune ask --demo``, the docs and benchmarks).

A sample is a static textured background with a bright square moving across it: most
patches repeat from frame to frame (what cross-frame dedup removes), a few change.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["moving_square_frames", "write_video", "ensure_sample_video"]


def moving_square_frames(num_frames: int = 48, height: int = 240, width: int = 320, square: int = 48,
                         seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: a fixed random-block background and a white square moving left to right."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 200, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    background = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width]
    frames = np.repeat(background[None], num_frames, axis=0)
    top = (height - square) // 2
    for t in range(num_frames):
        left = int(round(t * (width - square) / max(1, num_frames - 1)))
        frames[t, top : top + square, left : left + square] = 255
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0, codec: str = "libx264",
                pix_fmt: str = "yuv420p") -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames to ``path`` with PyAV."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(round(fps)) if float(fps).is_integer() else fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ensure_sample_video(cache_dir: str | os.PathLike | None = None) -> Path:
    """The demo video (4 s, 12 fps, 320×240 H.264), generated on first use in the vidprune cache."""
    root = Path(cache_dir or os.environ.get("VIDPRUNE_CACHE") or Path.home() / ".cache" / "vidprune")
    path = root / "sample-moving-square.mp4"
    if not path.exists():
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
        write_video(tmp, moving_square_frames())
        os.replace(tmp, path)
    return path
