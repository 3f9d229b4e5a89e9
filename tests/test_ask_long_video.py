"""``ask`` on a long video: the frame plan is checked before decoding or loading weights, and a file is
decoded, encoded and pruned in time segments, so memory does not grow with the video's length."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from vidprune.cli import main
from vidprune.samples import moving_square_frames, write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: the peak RSS (ru_maxrss) after a short video, then after a long one.
PEAK_PROBE = """
import resource, sys
from vidprune import VideoQA
ckpt, short, long_ = sys.argv[1:4]
qa = VideoQA.from_pretrained(ckpt, fps=12.0, budget=64, keep_cls=False, max_new_tokens=1)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
a = qa.ask(short, "What?")
after_short = peak()
b = qa.ask(long_, "What?")
print(len(a.report["frames"]), len(b.report["frames"]), after_short, peak(), b.report["tokens"]["to_llm"])
"""
# A 64-frame video already fills two segments; 300 frames at 224 px would hold ~340 MB of
# preprocessed pixels if the clip were encoded whole (measured: +340 MB before segmenting).
SHORT_FRAMES, LONG_FRAMES = 64, 300
ALLOWED_GROWTH_BYTES = 64 * 2**20


@pytest.fixture(scope="module")
def short_and_long(tmp_path_factory):
    root = tmp_path_factory.mktemp("long-videos")
    make = lambda n: moving_square_frames(n, height=64, width=64, square=16)  # noqa: E731 - small frames, quick to write
    return (str(write_video(root / "short.mp4", make(SHORT_FRAMES), fps=12)),
            str(write_video(root / "long.mp4", make(LONG_FRAMES), fps=12)))


def test_peak_memory_of_ask_does_not_grow_with_the_video(video_llava_ckpt, short_and_long):
    short, long_ = short_and_long
    proc = subprocess.run([sys.executable, "-c", PEAK_PROBE, video_llava_ckpt, short, long_], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    n_short, n_long, after_short, after_long, to_llm = map(int, proc.stdout.split())
    assert (n_short, n_long) == (SHORT_FRAMES, LONG_FRAMES)  # every frame sampled (--fps 12 of a 12 fps file)
    assert to_llm <= 64
    assert after_long - after_short < ALLOWED_GROWTH_BYTES, (after_short, after_long)


def test_segments_give_the_answer_of_the_whole_clip(video_llava_ckpt, short_and_long):
    from vidprune.qa import VideoQA

    qa = VideoQA.from_pretrained(video_llava_ckpt, fps=12.0, budget=64, keep_cls=False, max_new_tokens=3,
                                 encoder_batch_size=8)
    short, _ = short_and_long
    segmented = qa.prepare(short)  # 64 frames: two segments of 32
    whole = qa._prepare_whole(short)  # the clip decoded whole, encoded in batches of 8
    assert segmented.frames == whole.frames and segmented.tokens_count == whole.tokens_count
    assert segmented.decode == whole.decode and segmented.warnings == whole.warnings
    assert qa.answer(segmented, ["What?"])[0].token_ids == qa.answer(whole, ["What?"])[0].token_ids


def test_a_budget_the_sampled_frames_cannot_hold_is_refused_before_decoding_or_loading(video_llava_ckpt,
                                                                                      short_and_long, tmp_path, capsys):
    broken = tmp_path / "weights-broken"  # the checkpoint's config, weights that cannot load
    shutil.copytree(video_llava_ckpt, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    _, long_ = short_and_long
    code = main(["ask", long_, "What?", "--model", str(broken), "--fps", "12", "--budget", "227"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == ("vidprune: error: budget 227 is smaller than the 300 [CLS] tokens kept (one per frame for 300 "
                   "frames); raise the budget, sample fewer frames, or drop the [CLS] tokens (keep_cls=False / "
                   "--drop-cls)\n")
