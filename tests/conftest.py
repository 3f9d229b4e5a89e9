"""Shared fixtures: tiny checkpoints saved once per session, loaded like a user's checkpoint."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Demo checkpoints and sample videos go to a per-session cache, never the user's."""
    cache = tmp_path_factory.mktemp("vidprune-cache")
    old = os.environ.get("VIDPRUNE_CACHE")
    os.environ["VIDPRUNE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("VIDPRUNE_CACHE", None)
    else:
        os.environ["VIDPRUNE_CACHE"] = old


class _TinyCheckpoints(dict):
    """{family: checkpoint directory}; each family's checkpoint is built (offline, save_pretrained) on first use."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> str:
        from vidprune.video_models.tiny import build_tiny_checkpoint

        self[family] = str(build_tiny_checkpoint(family, self.root / family))
        return self[family]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{family: checkpoint directory} for every family of ``TINY_FAMILIES``, built when a test first asks."""
    return _TinyCheckpoints(tmp_path_factory.mktemp("tiny-checkpoints"))


@pytest.fixture(scope="session")
def video_llava_ckpt(tiny_checkpoints):
    return tiny_checkpoints["video_llava"]


@pytest.fixture(scope="session")
def llava_next_video_ckpt(tiny_checkpoints):
    return tiny_checkpoints["llava_next_video"]


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory):
    """A 4 s H.264 file: static background, a moving square (48 frames at 12 fps)."""
    from vidprune.samples import moving_square_frames, write_video

    path = tmp_path_factory.mktemp("videos") / "moving.mp4"
    return str(write_video(path, moving_square_frames()))


@pytest.fixture(scope="session")
def random_frames():
    def make(num_frames: int, seed: int = 0, height: int = 240, width: int = 320) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)

    return make
