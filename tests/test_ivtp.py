"""IVTP inside the LLM, checked against independent references.

* keep ratio 1.0 → the stock model's generation, token for token;
* the kept set → the top tokens by scores from the *stock* model's eager attention
  probabilities at layer k (``output_attentions``), with the scores themselves equal;
* prefill logits, kept sets and every decode step (pruned KV cache) → an independent reference:
  a hand-written loop over the stock decoder layers of a fresh eager model
  (``tests/ivtp_reference.py``), single-stage and progressive, one prompt and a left-padded batch;
* a left-padded batch of two → the two prompts one at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

# tests/ivtp_reference.py (tests/ is on sys.path under pytest)
from ivtp_reference import IVTPReference
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vidprune import VideoQA
from vidprune.errors import ConfigError

# every registered family (qwen3_vl_moe: qwen3_vl's adapter, MoE MLPs in the decoder)
FAMILIES = [("video_llava", 8), ("llava_next_video", 4), ("llava_onevision", 4), ("qwen2_5_vl", 4), ("qwen3_vl", 4),
            ("qwen3_vl_moe", 4)]
QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please."]


def _qa(ckpt, num_frames, **ivtp):
    return VideoQA.from_pretrained(ckpt, budget=num_frames * 24, dedup=False, **ivtp)


def _allowed(ckpt, stages):
    """``stages`` ((layer, keep), ...) with every layer moved up to the family's first allowed one.

    That is 1, or past the DeepStack layers (Qwen3-VL adds its levels at every visual token after
    decoder layers 0..levels-1, and vidprune refuses IVTP inside them): the tiny Qwen3-VL checkpoints
    (2 levels, 4 decoder layers) run layer 1 at layer 2, the other families the stages as written.
    The shifted schedule must stay strictly increasing and inside the decoder.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ckpt)
    levels = len(getattr(getattr(config, "vision_config", None), "deepstack_visual_indexes", None) or [])
    shifted = [[max(layer, levels, 1), keep] for layer, keep in stages]
    layers = [layer for layer, _ in shifted]
    assert layers == sorted(set(layers)), f"{stages} shifted to {shifted} is not strictly increasing"
    depth = getattr(config, "text_config", config).num_hidden_layers
    assert layers[-1] < depth, f"{shifted} needs more than the checkpoint's {depth} decoder layers"
    return shifted


def _model_inputs(qa, inputs, visual, layouts):
    """What the stock forward takes besides the ids: the video's rows as ``mm_encoder_outputs`` (Qwen3-VL: with
    its DeepStack levels) and the positions (Qwen: the stock mRoPE positions of the kept tokens, checked in
    test_models_qwen.py / test_models_qwen3.py; else none, generate()'s own)."""
    positions = qa.llm.position_inputs(inputs, layouts)
    return {"mm_encoder_outputs": {"video": qa.llm.video_encoder_output(visual)}, **positions}


def _text_positions(inputs):
    return (inputs["attention_mask"].cumsum(-1) - 1).masked_fill(inputs["attention_mask"] == 0, 0)


def _eager_scores(ckpt, qa, pruned, question, layers):
    """Instruction→visual attention scores from the stock model run with eager attention."""
    from transformers import AutoModelForImageTextToText

    eager = AutoModelForImageTextToText.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float32)
    prompt = qa.llm.build_prompt(question)
    visual = qa.llm.project(pruned.tokens)
    inputs = qa.llm.tokenize([prompt], [visual.shape[0]], [pruned.layout])
    with torch.no_grad():
        out = eager(**inputs, **_model_inputs(qa, inputs, [visual], [pruned.layout]), output_attentions=True,
                    use_cache=False)
    ids = inputs["input_ids"][0]
    vis_pos = torch.nonzero(ids == qa.llm.video_token_id).flatten()
    rows = torch.arange(int(vis_pos.max()) + 1, len(ids))  # instruction tokens: after the last visual token
    per_layer = {k: out.attentions[k][0][:, rows][:, :, vis_pos].mean(dim=0).mean(dim=0) for k in layers}
    return per_layer


@pytest.mark.parametrize("family,num_frames", FAMILIES)
def test_keep_ratio_one_generates_exactly_the_stock_model(tiny_checkpoints, random_frames, family, num_frames):
    ckpt = tiny_checkpoints[family]
    frames = random_frames(num_frames, seed=1)
    stock = _qa(ckpt, num_frames).ask(frames, QUESTIONS[0], max_new_tokens=12)
    ivtp = _qa(ckpt, num_frames, ivtp_layer=2, ivtp_keep=1.0).ask(frames, QUESTIONS[0], max_new_tokens=12)
    assert ivtp.token_ids == stock.token_ids
    assert len(ivtp.report["ivtp"]["kept"]) == num_frames * 24


@pytest.mark.parametrize("family,num_frames", FAMILIES)
@pytest.mark.parametrize("layer,keep", [(1, 0.5), (2, 0.25), (3, 0.1)])
def test_kept_set_is_the_top_by_eager_attention_of_the_stock_model(tiny_checkpoints, random_frames, family,
                                                                    num_frames, layer, keep):
    ckpt = tiny_checkpoints[family]
    [[layer, keep]] = _allowed(ckpt, [[layer, keep]])  # Qwen3-VL: layer 1 is inside DeepStack, run at 2
    qa = _qa(ckpt, num_frames, ivtp_layer=layer, ivtp_keep=keep)
    for seed, question in enumerate(QUESTIONS):
        pruned = qa.prepare(random_frames(num_frames, seed=seed + 20))
        answer = qa.answer(pruned, [question], max_new_tokens=2)[0]
        scores = _eager_scores(ckpt, qa, pruned, question, [layer])[layer]
        n_visual = pruned.tokens.shape[0]
        expected = sorted(torch.argsort(scores, descending=True, stable=True)[: math.ceil(keep * n_visual)].tolist())
        assert answer.report["ivtp"]["kept"] == expected
        assert len(expected) == math.ceil(keep * n_visual)
        # the recomputed scores equal eager attention's, to float rounding
        session_scores = _recomputed_scores(qa, pruned, question)
        torch.testing.assert_close(session_scores[layer], scores, rtol=1e-4, atol=1e-7)


def _recomputed_scores(qa, pruned, question):
    prompt = qa.llm.build_prompt(question)
    visual = qa.llm.project(pruned.tokens)
    inputs = qa.llm.tokenize([prompt], [visual.shape[0]], [pruned.layout])
    extra = _model_inputs(qa, inputs, [visual], [pruned.layout])
    with qa.llm.ivtp.session(inputs["input_ids"], inputs["attention_mask"], qa.llm.video_token_id) as s, torch.no_grad():
        qa.llm.model(**inputs, **extra, use_cache=False)
    return {k: v[0] for k, v in s.stage_scores.items()}


@pytest.mark.parametrize("family,num_frames", FAMILIES)
def test_multi_layer_fusion_matches_eager_scores_averaged_over_layers(tiny_checkpoints, random_frames, family,
                                                                     num_frames):
    ckpt = tiny_checkpoints[family]
    weights = [0.5, 0.0, 2.0]  # layers 0, 1, 2
    qa = _qa(ckpt, num_frames, ivtp_layer=2, ivtp_keep=0.3, ivtp_fusion=weights)
    pruned = qa.prepare(random_frames(num_frames, seed=7))
    answer = qa.answer(pruned, [QUESTIONS[1]], max_new_tokens=2)[0]
    per_layer = _eager_scores(ckpt, qa, pruned, QUESTIONS[1], [0, 1, 2])
    fused = sum(w * per_layer[k] for k, w in enumerate(weights)) / sum(weights)
    expected = sorted(torch.argsort(fused, descending=True, stable=True)[: math.ceil(0.3 * len(fused))].tolist())
    assert answer.report["ivtp"]["kept"] == expected
    mean_qa = _qa(ckpt, num_frames, ivtp_layer=2, ivtp_keep=0.3, ivtp_fusion="mean")
    mean_answer = mean_qa.answer(pruned, [QUESTIONS[1]], max_new_tokens=2)[0]
    mean = sum(per_layer.values()) / 3
    assert mean_answer.report["ivtp"]["kept"] == sorted(
        torch.argsort(mean, descending=True, stable=True)[: math.ceil(0.3 * len(mean))].tolist())


SCHEDULES = {"single": [[2, 0.3]], "progressive": [[1, 0.6], [3, 0.5]]}


def _items(qa, random_frames, num_frames, batch):
    """One prompt, or a left-padded batch of two (different visual counts and prompt lengths)."""
    a = qa.prepare(random_frames(num_frames, seed=4))
    if batch == 1:
        return [(a, QUESTIONS[0])]
    qa.select_stage.budget = num_frames * 10
    return [(a, QUESTIONS[0]), (qa.prepare(random_frames(num_frames, seed=5)), QUESTIONS[1])]


def _never_generated(qa) -> tuple[int, ...]:
    """EOS and padding: suppressed on both sides, so that every decode step is compared.

    A random-weight model may pick EOS at the first step on one host and not on another
    (float rounding of the tower differs between CPUs); with EOS allowed the decode steps
    after it would go unchecked there.
    """
    eos = qa.llm.model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    pad = qa.llm.processor.tokenizer.pad_token_id
    return tuple(sorted(set(eos) | ({pad} if pad is not None else set())))


def _vidprune_ivtp(qa, items, steps, never: tuple[int, ...]):
    """vidprune's IVTP: full prefill logits of one forward, then generate() with the pruned KV cache."""
    prompts = [qa.llm.build_prompt(q) for _, q in items]
    visual = [qa.llm.project(p.tokens.to(qa.llm.dtype)) for p, _ in items]
    layouts = [p.layout for p, _ in items]
    inputs = qa.llm.tokenize(prompts, [v.shape[0] for v in visual], layouts)
    extra = _model_inputs(qa, inputs, visual, layouts)
    positions = extra.pop("position_ids", _text_positions(inputs))
    ivtp = qa.llm.ivtp
    with ivtp.session(inputs["input_ids"], inputs["attention_mask"], qa.llm.video_token_id) as s, torch.no_grad():
        logits = qa.llm.model(**inputs, position_ids=positions, **extra, use_cache=False).logits
    prefill = {"logits": logits, "kept": s.kept, "tokens_per_layer": s.tokens_per_layer}
    step_logits = []  # the lm_head's last row of every forward generate() makes (its own output_logits are float32)
    hook = qa.llm.model.lm_head.register_forward_hook(lambda _m, _a, out: step_logits.append(out[:, -1].clone()))
    try:
        gen_positions = {} if positions.dim() == 2 else {"position_ids": positions}  # Llama: generate()'s own
        with ivtp.session(inputs["input_ids"], inputs["attention_mask"], qa.llm.video_token_id), torch.no_grad():
            sequences = qa.llm.model.generate(**inputs, **extra, **gen_positions, max_new_tokens=steps,
                                              do_sample=False, suppress_tokens=list(never))
    finally:
        hook.remove()
    generated = sequences[:, inputs["input_ids"].shape[1]:]
    public = qa.llm.generate(prompts, visual, layouts, max_new_tokens=steps, do_sample=False,
                             suppress_tokens=list(never)).answer_ids
    return inputs, prefill, step_logits, generated, public, (positions[1:] if positions.dim() == 3 else None)


@pytest.mark.parametrize("family,num_frames", FAMILIES)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("batch", [1, 2])
def test_ivtp_equals_a_hand_written_loop_over_the_stock_layers(tiny_checkpoints, random_frames, family, num_frames,
                                                               schedule, batch):
    """Prefill logits, kept sets and every decode step equal the independent reference (tests/ivtp_reference.py).

    The reference is a fresh eager model: the stock forward up to layer k1, eager attention
    probabilities to choose the kept rows, then the stock decoder layers one by one on the
    kept rows with the stock rotary embedding at their original positions and a causal mask
    built by hand over the kept layout; decode steps recompute the whole sequence without a cache.
    """
    ckpt = tiny_checkpoints[family]
    allowed = _allowed(ckpt, SCHEDULES[schedule])  # Qwen3-VL: progressive from layer 2 (DeepStack in 0-1)
    stages = [tuple(s) for s in allowed]
    qa = _qa(ckpt, num_frames, ivtp_schedule=allowed)
    items = _items(qa, random_frames, num_frames, batch)
    qa.llm.model.to(torch.float64)  # both sides in float64: float32 rounding of eager vs SDPA would hide small bugs
    qa.llm.model.set_experts_implementation("eager")  # MoE (as the reference): torch's grouped_mm has no float64
    steps = 8
    never = _never_generated(qa)
    inputs, prefill, step_logits, generated, public, rope = _vidprune_ivtp(qa, items, steps, never)

    ref = IVTPReference(ckpt, dtype=torch.float64)
    rows = ref.project(torch.cat([p.tokens for p, _ in items]).double())
    run, ref_steps, ref_ids = ref.greedy(inputs["input_ids"], inputs["attention_mask"], rows, stages, steps,
                                         suppress=never, rope_positions=rope)

    # the kept sets and the layout sizes of every layer
    assert prefill["kept"] == run.kept_stream
    assert prefill["tokens_per_layer"] == run.tokens_per_layer
    for b, (pruned, _) in enumerate(items):
        expected = pruned.tokens.shape[0]
        for _, ratio in stages:
            expected = math.ceil(ratio * expected)
        assert len(run.kept_stream[b]) == expected
    # prefill logits at every token of the final (pruned) layout, right-aligned per sample
    assert prefill["logits"].shape == run.logits.shape
    for b in range(batch):
        n = run.tokens_per_layer[b][-1]
        torch.testing.assert_close(prefill["logits"][b, -n:], run.logits[b, -n:], rtol=1e-9, atol=1e-9)
    # every decode step with the pruned KV cache: raw logits and greedy ids (EOS and padding suppressed on both sides)
    assert len(step_logits) == steps and generated.shape[1] == steps
    for b in range(batch):
        ids = ref_ids[b].tolist()
        assert generated[b].tolist() == ids
        for t in range(steps):
            torch.testing.assert_close(step_logits[t][b], ref_steps[t][b], rtol=1e-9, atol=1e-9)
        assert public[b] == ids


@pytest.mark.parametrize("family,num_frames", FAMILIES)
def test_the_reference_loop_with_everything_kept_is_the_stock_model(tiny_checkpoints, random_frames, family,
                                                                    num_frames):
    """Checks the reference itself: its hand-built mask and rotary reproduce the stock forward."""
    ckpt = tiny_checkpoints[family]
    qa = _qa(ckpt, num_frames)
    items = _items(qa, random_frames, num_frames, 2)
    ref = IVTPReference(ckpt)
    inputs = qa.llm.tokenize([qa.llm.build_prompt(q) for _, q in items], [p.tokens.shape[0] for p, _ in items],
                             [p.layout for p, _ in items])
    rows = ref.project(torch.cat([p.tokens for p, _ in items]))
    extra = _model_inputs(qa, inputs, [qa.llm.project(p.tokens) for p, _ in items], [p.layout for p, _ in items])
    positions = extra.pop("position_ids", _text_positions(inputs))
    rope = positions[1:] if positions.dim() == 3 else None
    with torch.no_grad():
        stock = ref.model(**inputs, position_ids=positions, use_cache=False, **extra)
    loop = ref.forward(inputs["input_ids"], inputs["attention_mask"], rows, [], rope_positions=rope)
    kept_all = ref.forward(inputs["input_ids"], inputs["attention_mask"], rows, [(1, 1.0)], rope_positions=rope)
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(kept_all.logits, loop.logits, rtol=0, atol=0)
    torch.testing.assert_close(loop.logits[valid], stock.logits[valid], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family,num_frames", FAMILIES)
@pytest.mark.parametrize("ivtp", [{"ivtp_layer": 2, "ivtp_keep": 0.3}, {"ivtp_schedule": [[1, 0.6], [3, 0.5]]}])
def test_left_padded_batch_equals_one_at_a_time(tiny_checkpoints, random_frames, family, num_frames, ivtp):
    ckpt = tiny_checkpoints[family]
    if "ivtp_schedule" in ivtp:  # Qwen3-VL: from layer 2 (DeepStack in 0-1)
        ivtp = {"ivtp_schedule": _allowed(ckpt, ivtp["ivtp_schedule"])}
    else:
        [[layer, keep]] = _allowed(ckpt, [[ivtp["ivtp_layer"], ivtp["ivtp_keep"]]])
        ivtp = {"ivtp_layer": layer, "ivtp_keep": keep}
    qa = _qa(ckpt, num_frames, **ivtp)
    a = qa.prepare(random_frames(num_frames, seed=4))
    qa.select_stage.budget = num_frames * 10
    b = qa.prepare(random_frames(num_frames, seed=5))
    items = [(a, QUESTIONS[0]), (b, QUESTIONS[1])]  # different visual counts and prompt lengths: left padding
    batched = qa.answer_batch(items, max_new_tokens=8)
    single = [qa.answer_batch([item], max_new_tokens=8)[0] for item in items]
    assert [x.token_ids for x in batched] == [x.token_ids for x in single]
    assert [x.report["ivtp"]["kept"] for x in batched] == [x.report["ivtp"]["kept"] for x in single]
    assert [x.report["ivtp"]["tokens_per_layer"] for x in batched] == [x.report["ivtp"]["tokens_per_layer"] for x in single]


def test_progressive_schedule_counts_and_report(video_llava_ckpt, random_frames):
    qa = _qa(video_llava_ckpt, 8, ivtp_schedule=[[1, 0.5], [3, 0.5]])
    answer = qa.ask(random_frames(8, seed=9), QUESTIONS[0], max_new_tokens=4)
    r = answer.report["ivtp"]
    n_visual = answer.report["tokens"]["to_llm"]
    kept_1 = math.ceil(0.5 * n_visual)
    assert len(r["kept"]) == math.ceil(0.5 * kept_1)
    assert r["kept"] == sorted(set(r["kept"])) and max(r["kept"]) < n_visual
    full = r["tokens_per_layer"][0]
    assert r["tokens_per_layer"] == [full, full - n_visual + kept_1, full - n_visual + kept_1, full - n_visual + len(r["kept"])]
    assert r["flops_per_layer"][0] > r["flops_per_layer"][1] > r["flops_per_layer"][3]
    assert answer.report["flops"]["llm_prefill_pruned"] == sum(r["flops_per_layer"])
    assert qa.llm.config.text_config._attn_implementation == "sdpa"  # no layer switched to eager


@pytest.mark.parametrize("options,message", [
    ({"ivtp_layer": 0, "ivtp_keep": 0.5}, "ivtp layer must be >= 1"),
    ({"ivtp_layer": 4, "ivtp_keep": 0.5}, "out of range: it must be in 1..3 for a 4-layer LLM"),
    ({"ivtp_layer": 2, "ivtp_keep": 0.0}, r"keep ratio 0.0 must be in \(0, 1\]"),
    ({"ivtp_layer": 2, "ivtp_keep": 1.5}, r"keep ratio 1.5 must be in \(0, 1\]"),
    ({"ivtp_layer": 2}, "needs both ivtp_layer"),
    ({"ivtp_schedule": [[2, 0.5], [1, 0.5]]}, "strictly increasing"),
])
def test_bad_ivtp_options_fail_before_the_model_loads(video_llava_ckpt, monkeypatch, options, message):
    from vidprune.video_models.base import VideoLLM

    monkeypatch.setattr(VideoLLM, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    with pytest.raises(ConfigError, match=message):
        VideoQA.from_pretrained(video_llava_ckpt, budget=100, **options)


def test_ivtp_wrappers_leave_other_models_alone(video_llava_ckpt, random_frames):
    """Instance-local: a second model of the same class in the process keeps the stock forward."""
    plain = _qa(video_llava_ckpt, 8)
    ivtp = _qa(video_llava_ckpt, 8, ivtp_layer=1, ivtp_keep=0.2)
    frames = random_frames(8, seed=6)
    before = plain.ask(frames, QUESTIONS[0], max_new_tokens=6).token_ids
    ivtp.ask(frames, QUESTIONS[0], max_new_tokens=6)
    assert plain.ask(frames, QUESTIONS[0], max_new_tokens=6).token_ids == before
    assert "forward" not in vars(plain.llm.language_model.layers[1])
    assert np.all([("forward" in vars(layer)) for layer in ivtp.llm.language_model.layers[1:]])


def test_beam_search_works_with_the_pruned_cache(video_llava_ckpt, random_frames):
    """generate() expands prompts for beams and reorders each layer's cache: the session follows it."""
    stock = _qa(video_llava_ckpt, 8)
    frames = random_frames(8, seed=8)
    pruned = stock.prepare(frames)
    visual = stock.llm.project(pruned.tokens)
    prompt = stock.llm.build_prompt(QUESTIONS[0])
    ref = stock.llm.generate([prompt], [visual], max_new_tokens=6, num_beams=2, do_sample=False).answer_ids
    same = _qa(video_llava_ckpt, 8, ivtp_layer=2, ivtp_keep=1.0)
    out = same.llm.generate([prompt], [visual], max_new_tokens=6, num_beams=2, do_sample=False)
    assert out.answer_ids == ref
    pruning = _qa(video_llava_ckpt, 8, ivtp_layer=2, ivtp_keep=0.3)
    out = pruning.llm.generate([prompt], [visual], max_new_tokens=6, num_beams=2, do_sample=False)
    assert len(out.answer_ids) == 1 and len(out.answer_ids[0]) > 0
    assert len(out.ivtp[0]["kept"]) == math.ceil(0.3 * visual.shape[0])
