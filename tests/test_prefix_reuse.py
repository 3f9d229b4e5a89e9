"""Prefix reuse: several questions about one video prefill the video once (VideoLLM.generate_about_one_video).

The reference is each question prefilled whole by the stock ``generate`` path (one at a time, and
as one left-padded batch, ``reuse_prefix=False``): the generated ids must be identical, for every
family, with pruning on. With IVTP the prefix runs once through the layers below the first pruning
layer, and the reference is the IVTP path that prefills each question whole (itself checked against
a hand-written loop over the stock layers in test_ivtp.py): same ids, same kept sets, same tokens per
layer; forward hooks count the rows the layers ran on. Where reuse cannot hold the ids (sampling,
beams) it is not used.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vidprune import VideoQA
from vidprune.pipeline.build import build_stages
from vidprune.video_models.hf_internals import check_prefix_cache_internals, model_cache_keyword

# qwen3_vl_moe shares qwen3_vl's adapter and generation path (its own checks: tests/test_models_qwen3.py)
FAMILIES = ["video_llava", "llava_next_video", "llava_onevision", "qwen2_5_vl", "qwen3_vl"]
BUDGETS = {"video_llava": 60, "llava_next_video": 120, "llava_onevision": 160, "qwen2_5_vl": 96, "qwen3_vl": 96}
# differing lengths, so the batch pads between the shared prefix and each question
QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please.", "Why?",
             "What happens after the square stops moving, and where does it end up?", "Colour?"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_qa(request, tiny_checkpoints):
    qa = VideoQA.from_pretrained(tiny_checkpoints[request.param], budget=BUDGETS[request.param], max_new_tokens=10)
    return request.param, qa


def _ids(answers):
    return [a.token_ids for a in answers]


# IVTP arms over the tiny 4-layer LLMs: a single stage, a progressive schedule, everything kept
# (equals the stock model), and scores fused over layers 0..k (scoring layers below k see the prefix too)
IVTP_ARMS = {
    "single": {"ivtp_layer": 2, "ivtp_keep": 0.3},
    "progressive": {"ivtp_schedule": [[1, 0.6], [3, 0.5]]},
    "keep_all": {"ivtp_layer": 1, "ivtp_keep": 1.0},
    "fused": {"ivtp_layer": 2, "ivtp_keep": 0.4, "ivtp_fusion": "mean"},
}
# Qwen3-VL adds DeepStack levels after decoder layers 0 and 1 of the tiny checkpoints: pruning starts at 2
# (a layer inside is refused), scores may still come from the layers below.
DEEPSTACK_ARMS = {**IVTP_ARMS, "progressive": {"ivtp_schedule": [[2, 0.6], [3, 0.5]]},
                  "keep_all": {"ivtp_layer": 2, "ivtp_keep": 1.0}}


def _ivtp_arm(family: str, arm: str) -> dict:
    return (DEEPSTACK_ARMS if family.startswith("qwen3_vl") else IVTP_ARMS)[arm]


def _arm(qa, **options):
    """Another VideoQA over the same loaded model with other IVTP / generate options."""
    config = dataclasses.replace(qa.config, ivtp_layer=None, ivtp_keep=None, ivtp_schedule=None, ivtp_fusion=None)
    return VideoQA(qa.llm, dataclasses.replace(config, **options), qa.checkpoint_info)


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


@pytest.mark.parametrize("ivtp", [None, "progressive"])
def test_mixed_batch_of_videos_equals_the_batch_prefilled_whole(family_qa, random_frames, ivtp):
    """Two videos with two questions each and a third with one, interleaved: same ids, same order."""
    family, qa = family_qa
    if ivtp is not None:
        qa = _arm(qa, **_ivtp_arm(family, ivtp))
    a, b, c = (qa.prepare(random_frames(qa.config.frames, seed=s)) for s in (4, 5, 6))
    items = [(a, QUESTIONS[0]), (b, QUESTIONS[1]), (a, QUESTIONS[2]), (c, QUESTIONS[3]), (b, QUESTIONS[4])]
    stock = build_stages(qa.config.replace(reuse_prefix=False), qa.checkpoint_info, qa.llm).answer
    want = [o["token_ids"] for o in stock.process_batch(items)]
    got = qa.answer_stage.process_batch(items)
    assert [o["token_ids"] for o in got] == want
    assert [o["prefix_tokens"] is not None for o in got] == [True, True, True, False, True]
    if ivtp is not None:
        assert [o["ivtp"]["kept"] for o in got] == [o["ivtp"]["kept"] for o in stock.process_batch(items)]


@pytest.mark.parametrize("arm", sorted(IVTP_ARMS))
def test_ivtp_prefix_reuse_generates_the_ids_of_prefilling_each_question(family_qa, random_frames, arm):
    """IVTP over a prefix run once below k1: ids, kept sets and tokens per layer of each question prefilled whole."""
    family, plain = family_qa
    qa = _arm(plain, **_ivtp_arm(family, arm))
    pruned = qa.prepare(random_frames(qa.config.frames, seed=3))
    alone = [qa.answer(pruned, [q])[0] for q in QUESTIONS]  # one at a time: IVTP on the whole prompt
    whole = _arm(plain, reuse_prefix=False, **_ivtp_arm(family, arm)).answer(pruned, QUESTIONS)  # one left-padded batch
    assert _ids(whole) == _ids(alone)
    outs = qa.answer_stage.process_batch([(pruned, q) for q in QUESTIONS])
    visual = pruned.tokens_count["to_llm"]
    assert all(o["prefix_tokens"] is not None and o["prefix_tokens"] > visual for o in outs), (family, arm)
    assert [o["token_ids"] for o in outs] == _ids(alone), (family, arm)
    assert [o["ivtp"]["kept"] for o in outs] == [a.report["ivtp"]["kept"] for a in alone]
    assert [o["ivtp"]["tokens_per_layer"] for o in outs] == [a.report["ivtp"]["tokens_per_layer"] for a in alone]
    if arm == "keep_all":  # keep 1.0 is the stock model: also the ids of reuse without IVTP
        assert len(outs[0]["ivtp"]["kept"]) == visual
        assert [o["token_ids"] for o in outs] == _ids(plain.answer(pruned, QUESTIONS))
    reports = qa.answer(pruned, QUESTIONS)  # the reports are those of answering each question alone
    for got, want in zip(reports, alone):
        assert got.report["tokens"] == want.report["tokens"] and got.report["flops"] == want.report["flops"]


def _rows_through(layer: torch.nn.Module, calls: list):
    """A forward hook that records, for each call of ``layer`` that ran to its end, the (batch, tokens) it ran on."""
    def hook(_module, _args, _kwargs, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        calls.append(tuple(hidden.shape[:2]))

    return layer.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("arm", ["single", "progressive", "fused"])
def test_ivtp_runs_the_layers_below_k_on_the_prefix_once(tiny_checkpoints, random_frames, arm):
    """Layer 0 sees the prefix once (batch 1) and then only each question's own tokens; layer k1 never
    runs on the prefix alone, and runs every question whole (prefix rows put back, then pruned)."""
    qa = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], budget=60, max_new_tokens=6, **IVTP_ARMS[arm])
    first = qa.ivtp_schedule.prune_layers[0]
    pruned = qa.prepare(random_frames(8, seed=7))
    questions = QUESTIONS[:3]
    calls: dict[int, list] = {0: [], first: []}
    handles = [_rows_through(qa.llm.language_model.layers[i], calls[i]) for i in calls]
    try:
        outs = qa.answer_stage.process_batch([(pruned, q) for q in questions])
    finally:
        for handle in handles:
            handle.remove()
    prefix = outs[0]["prefix_tokens"]
    rest = max(o["prompt_tokens"] for o in outs) - prefix
    batch = len(questions)
    assert prefix > pruned.tokens_count["to_llm"]
    assert calls[0][:2] == [(1, prefix), (batch, rest)]  # the prefix once, then the questions' own tokens
    assert all(c == (batch, 1) for c in calls[0][2:]) and len(calls[0]) > 2  # decode steps
    assert (1, prefix) not in calls[first]  # the prefix prefill stopped before layer k1
    kept_len = max(o["ivtp"]["tokens_per_layer"][first] for o in outs)
    assert calls[first][0] == (batch, kept_len) and all(c == (batch, 1) for c in calls[first][1:])
    assert len(calls[first]) == len(calls[0]) - 1
    # the whole-prompt path, for contrast: layer 0 runs every question's prefix
    whole_calls: list = []
    handle = _rows_through(qa.llm.language_model.layers[0], whole_calls)
    try:
        whole = _arm(qa, reuse_prefix=False, **IVTP_ARMS[arm]).answer_stage.process_batch(
            [(pruned, q) for q in questions])
    finally:
        handle.remove()
    assert whole_calls[0] == (batch, prefix + rest)
    assert [o["token_ids"] for o in whole] == [o["token_ids"] for o in outs]


def test_no_reuse_where_it_would_change_the_ids(tiny_checkpoints, random_frames):
    """Sampling and beams prefill every question whole."""
    qa = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], budget=60, max_new_tokens=6)
    pruned = qa.prepare(random_frames(8, seed=7))
    for overrides in ({"do_sample": True}, {"num_beams": 2}):
        assert not qa.llm.reuses_prefix(3, overrides)
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
