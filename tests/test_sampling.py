"""Sampled answers draw from the answer stage's own random stream (issue 24, item 3).

``AnswerStage`` used to call ``torch.manual_seed(seed)`` before every sampled call: the caller's
global RNG was reset and every sampled ask repeated the same "sample". Checked here on the tiny
Video-LLaVA checkpoint, with real ``generate()`` sampling:

* two sampled asks in a row differ, and the caller's global torch RNG state is the same after them;
* a new ``VideoQA`` with the same ``sample_seed`` gives the same samples for the same calls, another
  ``sample_seed`` other samples;
* the random pruner's ``seed`` and the sampling ``sample_seed`` are separate: changing one leaves what the
  other decides unchanged.
"""

from __future__ import annotations

import torch

from vidprune.qa import VideoQA

QUESTION = "What is moving?"
OPTIONS = dict(frames=4, budget=60, pruner="random", seed=3, max_new_tokens=8)


def _two_samples(qa: VideoQA, video) -> list[list[int]]:
    pruned = qa.prepare(video)
    return [qa.answer(pruned, [QUESTION], do_sample=True, temperature=1.5)[0].token_ids for _ in range(2)]


def test_sampled_asks_differ_reproduce_with_the_seed_and_leave_the_global_rng_alone(video_llava_ckpt, sample_video):
    qa = VideoQA.from_pretrained(video_llava_ckpt, sample_seed=11, **OPTIONS)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first, second = _two_samples(qa, sample_video)
    assert torch.equal(torch.get_rng_state(), before), "a sampled answer changed the caller's global RNG state"
    assert first != second, "two sampled asks gave the same sample"
    again = VideoQA.from_pretrained(video_llava_ckpt, sample_seed=11, **OPTIONS)
    assert _two_samples(again, sample_video) == [first, second], "the same sample_seed did not reproduce the samples"
    other = VideoQA.from_pretrained(video_llava_ckpt, sample_seed=12, **OPTIONS)
    assert _two_samples(other, sample_video) != [first, second]
    # greedy answers draw nothing: the same before and after the sampled ones
    greedy = qa.ask(sample_video, QUESTION).token_ids
    assert qa.ask(sample_video, QUESTION).token_ids == greedy == other.ask(sample_video, QUESTION).token_ids


def test_the_pruning_seed_and_the_sampling_seed_are_separate(video_llava_ckpt, sample_video):
    kept = lambda qa: [f["kept"] for f in qa.prepare(sample_video).frames]  # noqa: E731
    a = VideoQA.from_pretrained(video_llava_ckpt, sample_seed=1, **OPTIONS)
    b = VideoQA.from_pretrained(video_llava_ckpt, sample_seed=2, **OPTIONS)
    c = VideoQA.from_pretrained(video_llava_ckpt, sample_seed=1, **{**OPTIONS, "seed": 4})
    assert kept(a) == kept(b) != kept(c)  # the pruner's draw follows seed, not sample_seed
    assert a.answer_stage.seed == c.answer_stage.seed == 1 and a.select_stage.pruner.seed == 3
