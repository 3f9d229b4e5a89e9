"""Frames that repeat skip the vision tower (vidprune.pipeline.frame_reuse, EncodeStage).

References: the stock HF model's ids on the same frames (pruning off), and vidprune with
frame reuse off (pruning on): exact reuse must give the same ids and kept sets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models import _stock_generate

from vidprune import VideoQA
from vidprune.pipeline.frame_reuse import CARRIED, FrameReuse, LastEncodedUnit


def _doubled(frames: np.ndarray, times: int = 2) -> np.ndarray:
    """Every frame ``times`` times in a row: a 12 fps cartoon stored at 24 fps."""
    return np.repeat(frames, times, axis=0)


def test_sources_point_at_the_last_encoded_unit():
    a, b = np.zeros((1, 4, 4, 3), np.uint8), np.full((1, 4, 4, 3), 9, np.uint8)
    near = a.copy()
    near[0, 0, 0, 0] = 3  # mean difference 3/48 levels
    exact = FrameReuse(exact=True)
    assert exact.sources([a, a, b, b, a], LastEncodedUnit()) == [0, 0, 2, 2, 4]
    assert exact.sources([a, near], LastEncodedUnit()) == [0, 1]
    assert exact.sources([a, b], LastEncodedUnit(pixels=a.copy())) == [CARRIED, 1]
    assert FrameReuse(exact=False).sources([a, a], LastEncodedUnit()) == [0, 1]
    thresholded = FrameReuse(exact=True, threshold=0.1)
    assert thresholded.sources([a, near, b], LastEncodedUnit()) == [0, 0, 2]
    # the reference is the last *encoded* unit: a drift is re-encoded once it adds up past the threshold
    drift = [np.full((1, 4, 4, 3), v, np.uint8) for v in (0, 0, 0)]
    drift[1][0, 0, 0, :2] = 3  # 6/48 = 0.125 from unit 0
    drift[2][0, 0, 0, :2] = 6  # 0.25 from unit 0 (0.125 from unit 1, which was not encoded)
    assert FrameReuse(threshold=0.2).sources(drift, LastEncodedUnit()) == [0, 0, 2]


def test_the_default_threshold_is_declared_once():
    from vidprune import config
    from vidprune.pipeline import frame_reuse

    assert frame_reuse.DEFAULT_SKIP_STATIC_THRESHOLD is config.DEFAULT_SKIP_STATIC_THRESHOLD
    assert config.VidpruneConfig().skip_static is False and config.VidpruneConfig().reuse_frames is True


@pytest.mark.parametrize("family,num_frames", [("video_llava", 8), ("llava_next_video", 4)])
def test_exact_reuse_gives_the_stock_ids_on_doubled_frames(tiny_checkpoints, random_frames, family, num_frames):
    qa = VideoQA.from_pretrained(tiny_checkpoints[family], budget=None, dedup=False, frames=num_frames)
    frames = _doubled(random_frames(num_frames // 2, seed=3))
    answer = qa.ask(frames, "What happens?", max_new_tokens=10)
    assert answer.report["encoder"] == {"units": num_frames, "encoded": num_frames // 2, "reused": num_frames // 2,
                                        "frames_per_unit": 1}
    assert [f["reused"] for f in answer.report["frames"]] == [False, True] * (num_frames // 2)
    assert answer.token_ids == _stock_generate(qa.llm.name_or_path, frames, "What happens?", 10)


@pytest.mark.parametrize("family,num_frames", [("video_llava", 8), ("llava_next_video", 8), ("qwen2_5_vl", 8)])
def test_exact_reuse_gives_the_same_ids_and_kept_sets_as_encoding_every_frame(tiny_checkpoints, random_frames,
                                                                               family, num_frames):
    ckpt = tiny_checkpoints[family]
    per_unit = 2 if family == "qwen2_5_vl" else 1
    frames = _doubled(random_frames(num_frames // 2, seed=4, height=112, width=140), 2 * per_unit)
    frames = frames[: num_frames]
    full = VideoQA.from_pretrained(ckpt, budget=40 if per_unit == 1 else 12, reuse_frames=False, frames=num_frames)
    reuse = VideoQA(full.llm, full.config.replace(reuse_frames=True), full.checkpoint_info)
    off, on = full.ask(frames, "What happens?", max_new_tokens=8), reuse.ask(frames, "What happens?", max_new_tokens=8)
    units = num_frames // per_unit
    assert off.report["encoder"]["encoded"] == units
    assert on.report["encoder"]["encoded"] == units // 2 and on.report["encoder"]["reused"] == units // 2
    assert [f["kept"] for f in on.report["frames"]] == [f["kept"] for f in off.report["frames"]]
    assert [f["duplicates"] for f in on.report["frames"]] == [f["duplicates"] for f in off.report["frames"]]
    assert on.token_ids == off.token_ids


def test_encoded_features_of_a_repeat_are_those_of_encoding_it(video_llava_ckpt, random_frames):
    from vidprune.pipeline.stages import EncodeStage

    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=None, dedup=False)
    frames = random_frames(3, seed=8, height=112, width=140)[[0, 0, 1, 2, 2, 0]]
    every = EncodeStage(qa.llm, reuse_frames=False).process(frames)
    reused = EncodeStage(qa.llm).process(frames)
    assert reused.reused == [False, True, False, False, True, False]  # the last frame is compared with frame 4
    assert every.reused is None
    torch.testing.assert_close(reused.features, every.features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reused.cls_attn, every.cls_attn, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reused.extra, every.extra, rtol=1e-5, atol=1e-5)
    assert torch.equal(reused.features[1], reused.features[0])


def test_a_stream_fed_in_calls_carries_its_last_encoded_unit(video_llava_ckpt, random_frames):
    from vidprune.pipeline.stages import EncodeStage

    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=None, dedup=False)
    frames = random_frames(2, seed=9, height=112, width=140)[[0, 0, 0, 1, 1]]
    stage, last = EncodeStage(qa.llm), LastEncodedUnit()
    parts = [stage.process(frames[i : i + 1], last=last) for i in range(len(frames))]
    assert [p.reused[0] for p in parts] == [False, True, True, False, True]
    whole = EncodeStage(qa.llm, reuse_frames=False).process(frames)
    for i, part in enumerate(parts):
        torch.testing.assert_close(part.features[0], whole.features[i], rtol=1e-5, atol=1e-5)


def test_skip_static_encodes_a_fraction_of_a_static_clip_and_says_so(video_llava_ckpt, tmp_path):
    from vidprune.samples import moving_square_frames, write_video

    still = np.repeat(moving_square_frames(1, 112, 144)[:1], 48, axis=0)
    path = write_video(tmp_path / "static.mp4", still)
    exact = VideoQA.from_pretrained(video_llava_ckpt, budget=64, frames=16)
    static = VideoQA(exact.llm, exact.config.replace(skip_static=True), exact.checkpoint_info)
    a, b = exact.ask(str(path), "What moves?", max_new_tokens=6), static.ask(str(path), "What moves?", max_new_tokens=6)
    assert b.report["encoder"]["encoded"] <= 2, b.report["encoder"]
    assert b.report["encoder"]["reused"] == 16 - b.report["encoder"]["encoded"]
    assert a.report["encoder"]["encoded"] >= b.report["encoder"]["encoded"]
    assert b.report["options"]["skip_static"] is True
    from vidprune.qa import summarize

    assert f"ran on {b.report['encoder']['encoded']} of 16 frames" in summarize(b.report)


def test_a_static_camera_leaves_the_demo_encoder_mostly_idle(video_llava_ckpt, random_frames):
    from vidprune.demo.feed import Feed, PendingFrame
    from vidprune.pipeline.memory import build_memory, plan_memory
    from vidprune.pipeline.stages import EncodeStage

    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=None, dedup=False)
    still = random_frames(1, seed=12, height=112, width=140)[0]
    plan = plan_memory(qa.llm.geometry, budget=200, window_s=10.0, frame_rate=1.0)
    feed = Feed(build_memory(plan, dedup=True), frame_rate=1.0)
    encoder = EncodeStage(qa.llm)
    for i in range(6):
        feed.offer(PendingFrame(seq=i, time_s=float(i), rgb=still))
        feed.encode_next(encoder)
    assert feed.load()["encoded"] == 6 and feed.load()["reused"] == 5
    feed.reset()
    feed.offer(PendingFrame(seq=6, time_s=6.0, rgb=still))
    feed.encode_next(encoder)
    assert feed.load()["reused"] == 5  # a reset memory starts a new stream: its first frame runs the tower


def test_bad_threshold_is_one_line(video_llava_ckpt):
    from vidprune.config import resolve_config
    from vidprune.errors import ConfigError

    with pytest.raises(ConfigError, match="skip_static_threshold"):
        resolve_config(video_llava_ckpt, skip_static=True, skip_static_threshold=-1.0)
