"""Prefix reuse: several questions about one video prefill the video once (VideoLLM.generate_about_one_video).

The reference is each question prefilled whole by the stock ``generate`` path (one at a time, and
as one left-padded batch, ``reuse_prefix=False``): the generated ids must be identical, for every
family, with pruning on. Where reuse cannot hold the ids (IVTP prunes inside the prefix by each
question's attention; sampling; beams) it is not used.
"""

from __future__ import annotations

import pytest

from vidprune import VideoQA
from vidprune.pipeline.build import build_stages
from vidprune.video_models.hf_internals import check_prefix_cache_internals, model_cache_keyword

FAMILIES = ["video_llava", "llava_next_video", "llava_onevision", "qwen2_5_vl"]
BUDGETS = {"video_llava": 60, "llava_next_video": 120, "llava_onevision": 160, "qwen2_5_vl": 96}
# differing lengths, so the batch pads between the shared prefix and each question
QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please.", "Why?",
             "What happens after the square stops moving, and where does it end up?", "Colour?"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_qa(request, tiny_checkpoints):
    qa = VideoQA.from_pretrained(tiny_checkpoints[request.param], budget=BUDGETS[request.param], max_new_tokens=10)
    return request.param, qa


def _ids(answers):
    return [a.token_ids for a in answers]


def test_prefix_reuse_generates_the_ids_of_prefilling_each_question(family_qa, random_frames):
    family, qa = family_qa
    pruned = qa.prepare(random_frames(qa.config.frames, seed=3))
    one_at_a_time = [qa.answer(pruned, [q])[0].token_ids for q in QUESTIONS]
    from_scratch = VideoQA(qa.llm, qa.config.replace(reuse_prefix=False), qa.checkpoint_info)
    assert _ids(from_scratch.answer(pruned, QUESTIONS)) == one_at_a_time
    reused = qa.answer(pruned, QUESTIONS)
    assert _ids(reused) == one_at_a_time
    assert [a.text for a in reused] == [a.text for a in from_scratch.answer(pruned, QUESTIONS)]
    # the reports are those of answering each question alone (prompt length, tokens, FLOPs)
    alone = [qa.answer(pruned, [q])[0].report for q in QUESTIONS]
    for got, want in zip(reused, alone):
        assert got.report["tokens"] == want["tokens"] and got.report["flops"] == want["flops"]

    outs = qa.answer_stage.process_batch([(pruned, q) for q in QUESTIONS])
    visual = pruned.tokens_count["to_llm"]
    assert all(o["prefix_tokens"] is not None and o["prefix_tokens"] > visual for o in outs), (family, outs[0])


def test_mixed_batch_of_videos_equals_the_batch_prefilled_whole(family_qa, random_frames):
    """Two videos with two questions each and a third with one, interleaved: same ids, same order."""
    _, qa = family_qa
    a, b, c = (qa.prepare(random_frames(qa.config.frames, seed=s)) for s in (4, 5, 6))
    items = [(a, QUESTIONS[0]), (b, QUESTIONS[1]), (a, QUESTIONS[2]), (c, QUESTIONS[3]), (b, QUESTIONS[4])]
    stock = build_stages(qa.config.replace(reuse_prefix=False), qa.checkpoint_info, qa.llm).answer
    want = [o["token_ids"] for o in stock.process_batch(items)]
    got = qa.answer_stage.process_batch(items)
    assert [o["token_ids"] for o in got] == want
    assert [o["prefix_tokens"] is not None for o in got] == [True, True, True, False, True]


def test_no_reuse_where_it_would_change_the_ids(tiny_checkpoints, random_frames):
    """IVTP (pruned by each question inside the prefix), sampling and beams prefill every question whole."""
    ivtp = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], budget=60, ivtp_layer=1, ivtp_keep=0.5,
                                   max_new_tokens=6)
    pruned = ivtp.prepare(random_frames(8, seed=7))
    outs = ivtp.answer_stage.process_batch([(pruned, q) for q in QUESTIONS[:3]])
    assert all(o["prefix_tokens"] is None and o["ivtp"] is not None for o in outs)
    assert [o["token_ids"] for o in outs] == [ivtp.answer(pruned, [q])[0].token_ids for q in QUESTIONS[:3]]

    qa = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], budget=60, max_new_tokens=6)
    for overrides in ({"do_sample": True}, {"num_beams": 2}):
        assert not qa.llm.reuses_prefix(3, None, overrides)
        outs = qa.answer_stage.process_batch([(pruned, q) for q in QUESTIONS[:3]], **overrides)
        assert all(o["prefix_tokens"] is None for o in outs)


def test_prefix_cache_internals_are_named():
    """The internals prefix reuse mirrors (docs/internals.md): DynamicCache.batch_repeat_interleave,
    DynamicCache(config=...) and the forward's cache keyword."""
    import inspect

    from transformers import VideoLlavaForConditionalGeneration
    from transformers.cache_utils import DynamicCache

    assert callable(getattr(DynamicCache, "batch_repeat_interleave", None)), \
        "transformers changed cache_utils.DynamicCache.batch_repeat_interleave"
    assert "config" in inspect.signature(DynamicCache.__init__).parameters, \
        "transformers changed cache_utils.DynamicCache.__init__ (config)"
    keyword = model_cache_keyword(VideoLlavaForConditionalGeneration)
    assert keyword in inspect.signature(VideoLlavaForConditionalGeneration.forward).parameters
    check_prefix_cache_internals(VideoLlavaForConditionalGeneration)


def test_the_cli_flag_turns_reuse_off():
    import argparse

    from vidprune.config import add_option_flags, options_from_args

    parser = argparse.ArgumentParser()
    add_option_flags(parser)
    assert options_from_args(parser.parse_args(["--no-prefix-reuse"]))["reuse_prefix"] is False
    assert "reuse_prefix" not in options_from_args(parser.parse_args([]))


def test_reuse_over_a_model_that_also_serves_an_ivtp_arm(tiny_checkpoints, random_frames):
    """As in an eval sweep: the model was loaded with IVTP (its layers wrapped), another arm answers without."""
    import dataclasses

    ivtp = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], budget=60, ivtp_layer=1, ivtp_keep=0.5,
                                   max_new_tokens=8)
    plain_cfg = dataclasses.replace(ivtp.config, ivtp_layer=None, ivtp_keep=None)
    plain = VideoQA(ivtp.llm, plain_cfg, ivtp.checkpoint_info)
    whole = VideoQA(ivtp.llm, dataclasses.replace(plain_cfg, reuse_prefix=False), ivtp.checkpoint_info)
    pruned = plain.prepare(random_frames(8, seed=8))
    questions = QUESTIONS[:3]
    outs = plain.answer_stage.process_batch([(pruned, q) for q in questions])
    assert all(o["prefix_tokens"] is not None and o["ivtp"] is None for o in outs)
    assert [o["token_ids"] for o in outs] == _ids(whole.answer(pruned, questions)) \
        == [plain.answer(pruned, [q])[0].token_ids for q in questions]
