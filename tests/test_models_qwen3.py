"""Qwen3-VL (dense and MoE) against independent references: the stock model given the stock processor's
inputs for the same decoded frames and their times, its get_video_features (main rows and every DeepStack
level), its get_rope_index, and eager attention.

Frames given as an array are taken at 1 fps (``clip_from_array``: frame i at i s), so the stock calls get
``VideoMetadata(fps=1, frames_indices=0..T-1)``; frames decoded from a file get the stream's rate and the
decoded frames' indices, so the stock processor computes the same timestamps from index / fps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from vidprune import VideoQA
from vidprune.errors import ConfigError
from vidprune.video_models import load_video_llm

FAMILIES = ["qwen3_vl", "qwen3_vl_moe"]
QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please."]


def _metadata(indices, fps: float = 1.0):
    return [VideoMetadata(total_num_frames=max(indices) + 1, fps=fps, frames_indices=list(indices))]


def _stock_inputs(llm, frames, question, indices=None, fps=1.0):
    """The stock processor on the decoded frames with their metadata; it does not sample again."""
    indices = list(range(len(frames))) if indices is None else indices
    return llm.processor(text=llm.build_prompt(question), videos=[frames], return_tensors="pt",
                         video_metadata=_metadata(indices, fps), videos_kwargs={"do_sample_frames": False})


def _stock_generate(llm, frames, question, max_new_tokens, indices=None, fps=1.0) -> list[int]:
    inputs = _stock_inputs(llm, frames, question, indices, fps)
    out = llm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = llm.model.generation_config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.fixture(scope="module")
def qa_off(tiny_checkpoints):
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = VideoQA.from_pretrained(tiny_checkpoints[family], budget=None, dedup=False, frames=4)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tiny_checkpoints_answer_depends_on_the_video(qa_off, random_frames, family):
    """Otherwise the identity tests below would prove nothing (docs/models.md)."""
    llm = qa_off(family).llm
    answers = [_stock_generate(llm, random_frames(4, seed=s), QUESTIONS[0], 8) for s in range(3)]
    assert len({tuple(a) for a in answers}) > 1
    assert type(llm.model).__name__ == ("Qwen3VLMoeForConditionalGeneration" if family.endswith("moe")
                                        else "Qwen3VLForConditionalGeneration")
    assert len(llm.config.vision_config.deepstack_visual_indexes) == 2


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_off_generates_exactly_the_stock_model(qa_off, random_frames, family, seed):
    qa = qa_off(family)
    frames = random_frames(4, seed=seed)
    answer = qa.ask(frames, QUESTIONS[seed], max_new_tokens=12)
    assert len(answer.token_ids) > 0
    assert answer.token_ids == _stock_generate(qa.llm, frames, QUESTIONS[seed], 12)
    assert [f["time_s"] for f in answer.report["frames"]] == [0.0, 2.0]  # a unit's record: its first frame


def test_pruning_off_from_a_video_file_has_the_stock_timestamps_and_ids(qa_off, sample_video):
    """The decoded frames' real times give the prompt's timestamps, as index / fps does for the stock processor."""
    from vidprune.pipeline.decode import read_video

    qa = VideoQA.from_pretrained(qa_off("qwen3_vl").llm.name_or_path, budget=None, dedup=False, frames=6)
    clip = read_video(sample_video, num_frames=6)
    fps = 12.0  # the sample video's stream rate
    assert clip.times_s == pytest.approx([i / fps for i in clip.indices])
    answer = qa.ask(sample_video, "What moves?", max_new_tokens=8)
    stock = _stock_inputs(qa.llm, clip.frames, "What moves?", clip.indices, fps)
    pruned = qa.prepare(sample_video)
    ours = qa.llm.tokenize([qa.llm.build_prompt("What moves?")], [pruned.tokens.shape[0]], [pruned.layout])
    assert ours["input_ids"][0].tolist() == stock["input_ids"][0].tolist()
    text = qa.llm.processor.tokenizer.decode(stock["input_ids"][0])
    for t in pruned.layout["times_s"]:
        assert f"<{t:.1f} seconds>" in text
    assert answer.token_ids == _stock_generate(qa.llm, clip.frames, "What moves?", 8, clip.indices, fps)


def test_importance_equals_eager_attention_at_the_last_vit_block(qa_off, random_frames):
    """Reference: the stock eager kernel on the last block's q/k, one temporal patch at a time."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision, eager_attention_forward

    llm = qa_off("qwen3_vl").llm
    pixels = llm.preprocess(random_frames(4, seed=5), [0.0, 1.0, 2.0, 3.0])
    visual = llm.model.model.visual
    t, h, w = pixels.grid_thw
    block = visual.blocks[-1]
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, a, k: seen.update(k, x=a[0]), with_kwargs=True)
    with torch.no_grad():
        visual(pixels.pixel_values, grid_thw=torch.tensor([[t, h, w]]))
    handle.remove()
    x, (cos, sin) = seen["x"], seen["position_embeddings"]
    with torch.no_grad():
        qkv = block.attn.qkv(block.norm1(x)).reshape(x.shape[0], 3, block.attn.num_heads, -1).permute(1, 0, 2, 3)
        q, k = apply_rotary_pos_emb_vision(qkv[0], qkv[1], cos, sin)
        per_unit = h * w
        eager = []
        for u in range(t):
            span = slice(u * per_unit, (u + 1) * per_unit)
            qu, ku = q[span].transpose(0, 1)[None], k[span].transpose(0, 1)[None]
            _, probs = eager_attention_forward(block.attn, qu, ku, ku, None, scaling=block.attn.scaling)
            eager.append(probs[0].mean(dim=0).mean(dim=0))  # (h*w,): heads, then queries averaged
    eager = torch.cat(eager).view(t * per_unit // 4, 4).mean(dim=1).view(t, per_unit // 4)
    encoded = llm.encode(pixels)
    torch.testing.assert_close(encoded.cls_attn, eager, rtol=1e-5, atol=1e-8)
    assert encoded.features.shape == (t, per_unit // 4, visual.config.hidden_size)


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_rows_equal_the_stock_rows_in_the_main_stream_and_every_deepstack_level(tiny_checkpoints,
                                                                                     random_frames, family):
    qa = VideoQA.from_pretrained(tiny_checkpoints[family], budget=50, dedup=False, frames=4)
    frames = random_frames(4, seed=3)
    pruned = qa.prepare(frames)
    assert pruned.tokens.shape[0] == 50 == sum(len(f["kept"]) for f in pruned.frames)
    inputs = _stock_inputs(qa.llm, frames, "q")
    with torch.no_grad():
        stock = qa.llm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    per_unit = stock.pooler_output[0].shape[0] // len(pruned.frames)
    at_kept = torch.cat([u * per_unit + torch.tensor(f["kept"], dtype=torch.long) for u, f in enumerate(pruned.frames)])
    ours = qa.llm.video_encoder_output([qa.llm.project(pruned.tokens)])
    torch.testing.assert_close(ours.pooler_output[0], stock.pooler_output[0][at_kept], rtol=1e-5, atol=1e-6)
    assert len(ours.deepstack_features) == len(stock.deepstack_features) == 2
    for level_ours, level_stock in zip(ours.deepstack_features, stock.deepstack_features):
        torch.testing.assert_close(level_ours[0], level_stock[0][at_kept], rtol=1e-5, atol=1e-6)


def _stock_positions(llm, frames, question):
    stock_in = _stock_inputs(llm, frames, question)
    pos, _ = llm.model.model.get_rope_index(stock_in["input_ids"], mm_token_type_ids=stock_in["mm_token_type_ids"],
                                            video_grid_thw=stock_in["video_grid_thw"],
                                            attention_mask=stock_in["attention_mask"])
    return stock_in["input_ids"][0], pos


def _keep_mask(llm, stock_ids, pruned):
    video = torch.nonzero(stock_ids == llm.video_token_id).flatten()
    per_unit = len(video) // len(pruned.frames)
    kept_video = torch.cat([video[u * per_unit + torch.tensor(f["kept"], dtype=torch.long)]
                            for u, f in enumerate(pruned.frames)])
    keep = torch.ones(len(stock_ids), dtype=torch.bool)
    keep[video] = False
    keep[kept_video] = True
    return keep


@pytest.mark.parametrize("budget,dedup,static", [(37, False, False), (60, True, True)])
def test_kept_tokens_keep_the_stock_position_ids(tiny_checkpoints, random_frames, budget, dedup, static):
    """Also with a temporal patch whose every token dedup dropped (a static scene): its timestamp and
    empty vision start/end stay, and every other token keeps its stock position."""
    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen3_vl"], budget=budget, dedup=dedup, frames=4)
    frames = random_frames(4, seed=4)
    if static:
        frames[2:] = frames[:2]
    pruned = qa.prepare(frames)
    llm = qa.llm
    if static:
        assert len(pruned.frames[1]["kept"]) == 0 and len(pruned.layout["times_s"]) == 2
    stock_ids, stock_pos = _stock_positions(llm, frames, QUESTIONS[0])
    keep = _keep_mask(llm, stock_ids, pruned)
    inputs = llm.tokenize([llm.build_prompt(QUESTIONS[0])], [pruned.tokens.shape[0]], [pruned.layout])
    assert inputs["input_ids"][0].tolist() == stock_ids[keep].tolist()  # timestamps and start/end all kept
    positions = llm.position_inputs(inputs, [pruned.layout])["position_ids"]  # (4, 1, L')
    assert torch.equal(positions[1:, 0], stock_pos[:, 0, keep])
    assert int(llm.model.model.rope_deltas[0, 0]) == int(stock_pos.max()) + 1 - inputs["input_ids"].shape[1]


def _greedy_without_cache(llm, pruned, question, steps):
    """Reference: the whole sequence every step (no KV cache), positions = the stock ones + one per new token."""
    inputs = llm.tokenize([llm.build_prompt(question)], [pruned.tokens.shape[0]], [pruned.layout])
    positions = llm.position_inputs(inputs, [pruned.layout])["position_ids"][1:]  # (3, 1, L)
    ids, generated = inputs["input_ids"], []
    encoded = llm.video_encoder_output([llm.project(pruned.tokens)])
    eos = llm.model.generation_config.eos_token_id
    for _ in range(steps):
        with torch.no_grad():
            logits = llm.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions,
                               use_cache=False, mm_encoder_outputs={"video": encoded}).logits
        nxt = int(logits[0, -1].argmax())
        if nxt == eos:
            break
        generated.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return generated


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("static", [False, True])
def test_generation_with_the_pruned_stream_equals_a_cache_free_recomputation(tiny_checkpoints, random_frames,
                                                                              family, static):
    qa = VideoQA.from_pretrained(tiny_checkpoints[family], budget=60, dedup=static, frames=4)
    frames = random_frames(4, seed=6)
    if static:
        frames[2:] = frames[:2]
    pruned = qa.prepare(frames)
    if static:
        assert min(len(f["kept"]) for f in pruned.frames) == 0
    answer = qa.answer(pruned, [QUESTIONS[0]], max_new_tokens=10)[0]
    reference = _greedy_without_cache(qa.llm, pruned, QUESTIONS[0], 10)
    assert len(reference) > 3
    assert answer.token_ids == reference


def test_batch_with_different_kept_counts_equals_one_at_a_time(tiny_checkpoints, random_frames):
    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen3_vl"], budget=70, dedup=False, frames=4)
    a = qa.prepare(random_frames(4, seed=11))
    qa.select_stage.budget = 30
    b = qa.prepare(random_frames(4, seed=12, height=200, width=360))  # another grid too
    assert a.tokens.shape[0] != b.tokens.shape[0] and a.layout["grid"] != b.layout["grid"]
    items = [(a, QUESTIONS[0]), (b, "Why?")]
    batched = qa.answer_batch(items, max_new_tokens=8)
    single = [qa.answer_batch([item], max_new_tokens=8)[0] for item in items]
    assert [x.token_ids for x in batched] == [x.token_ids for x in single]


def test_moe_flops_count_the_active_experts(tiny_checkpoints, random_frames):
    from vidprune.flops import layer_flops

    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen3_vl_moe"], budget=40, dedup=False, frames=4)
    r = qa.ask(random_frames(4, seed=2), "Why?", max_new_tokens=2).report
    tc = qa.llm.config.text_config
    n = r["tokens"]["text"] + r["tokens"]["to_llm"]
    active = tc.num_experts_per_tok * tc.moe_intermediate_size  # 2 of 4 experts
    per_layer = layer_flops(n, tc.hidden_size, active, mlp_matrices=3) + 2 * n * tc.hidden_size * tc.num_experts
    assert r["flops"]["llm_prefill_pruned"] == tc.num_hidden_layers * per_layer
    assert r["tokens"]["full"] == 160 and 0 < r["flops"]["llm_ratio"] < 1


# --------------------------------------------------------------------------- IVTP with DeepStack
def test_ivtp_inside_the_deepstack_layers_is_refused_in_one_line_before_loading(tiny_checkpoints, sample_video,
                                                                               monkeypatch, capsys):
    from vidprune.cli import main
    from vidprune.config import resolve_config
    from vidprune.video_models.base import VideoLLM

    ckpt = tiny_checkpoints["qwen3_vl"]
    monkeypatch.setattr(VideoLLM, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    with pytest.raises(ConfigError, match="ivtp layer 1 is inside qwen3_vl's DeepStack layers.*use an ivtp layer >= 2"):
        resolve_config(ckpt, ivtp_layer=1, ivtp_keep=0.5)
    assert main(["ask", sample_video, "What?", "--model", ckpt, "--ivtp-layer", "1", "--ivtp-keep", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DeepStack" in err
    assert resolve_config(ckpt, ivtp_layer=2, ivtp_keep=0.5)[0].ivtp_layer == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_ivtp_keep_one_generates_the_stock_ids(tiny_checkpoints, random_frames, family):
    frames = random_frames(4, seed=1)
    ckpt = tiny_checkpoints[family]
    plain = VideoQA.from_pretrained(ckpt, budget=60, dedup=False, frames=4).ask(frames, QUESTIONS[0], max_new_tokens=10)
    ivtp = VideoQA.from_pretrained(ckpt, budget=60, dedup=False, frames=4, ivtp_layer=2, ivtp_keep=1.0)
    answer = ivtp.ask(frames, QUESTIONS[0], max_new_tokens=10)
    assert answer.token_ids == plain.token_ids and len(answer.report["ivtp"]["kept"]) == 60


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer,keep", [(2, 0.5), (3, 0.2)])
def test_ivtp_kept_set_is_the_top_by_eager_attention_of_the_stock_model(tiny_checkpoints, random_frames, family,
                                                                       layer, keep):
    from transformers import AutoModelForImageTextToText

    ckpt = tiny_checkpoints[family]
    qa = VideoQA.from_pretrained(ckpt, budget=60, dedup=False, frames=4, ivtp_layer=layer, ivtp_keep=keep)
    pruned = qa.prepare(random_frames(4, seed=21))
    answer = qa.answer(pruned, [QUESTIONS[1]], max_new_tokens=2)[0]
    eager = AutoModelForImageTextToText.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float32)
    inputs = qa.llm.tokenize([qa.llm.build_prompt(QUESTIONS[1])], [pruned.tokens.shape[0]], [pruned.layout])
    positions = qa.llm.position_inputs(inputs, [pruned.layout])["position_ids"]
    with torch.no_grad():
        out = eager(**inputs, position_ids=positions, output_attentions=True, use_cache=False,
                    mm_encoder_outputs={"video": qa.llm.video_encoder_output([pruned.tokens])})
    ids = inputs["input_ids"][0]
    vis = torch.nonzero(ids == qa.llm.video_token_id).flatten()
    rows = torch.arange(int(vis.max()) + 1, len(ids))
    scores = out.attentions[layer][0][:, rows][:, :, vis].mean(dim=0).mean(dim=0)
    expected = sorted(torch.argsort(scores, descending=True, stable=True)[: math.ceil(keep * len(vis))].tolist())
    assert answer.report["ivtp"]["kept"] == expected


def test_segment_by_segment_selection_equals_the_whole_video(tiny_checkpoints, random_frames):
    """The Ray path's shape (segments encoded and selected one by one) on the in-process stages."""
    from vidprune.pipeline.segments import batches_from_clip
    from vidprune.pipeline.stages import VideoSelection, clip_from_array

    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen3_vl"], budget=90, frames=8)
    frames = random_frames(8, seed=13)
    whole = qa.prepare(frames)
    clip = clip_from_array(frames)
    stream = VideoSelection(qa.select_stage, len(clip.indices))
    for batch in batches_from_clip(clip, segment_frames=4):
        stream.add(qa.encode_stage.process(batch.frames, batch.times_s), batch.indices, batch.times_s)
    parts = stream.finish()
    assert parts.layout == whole.layout and parts.layout["times_s"] == [0.5, 2.5, 4.5, 6.5]
    torch.testing.assert_close(parts.tokens, whole.tokens, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_demo_runs_qwen3_vl_offline(family, capsys):
    import json

    from vidprune.cli import main

    assert main(["ask", "--demo", "--demo-family", family, "--max-new-tokens", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == family and report["tokens"]["to_llm"] <= report["tokens"]["budget"]


def test_load_video_llm_picks_the_moe_class_through_the_same_adapter(tiny_checkpoints):
    from vidprune.video_models.qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter

    llm = load_video_llm(tiny_checkpoints["qwen3_vl_moe"])
    assert type(llm) is Qwen3VLMoeAdapter and issubclass(Qwen3VLMoeAdapter, Qwen3VLAdapter)
    assert np.isclose(llm.geometry.frames_per_unit, 2)


# --------------------------------------------------------------------------- the live memory (demo)
@pytest.mark.parametrize("frame_rate, hold_to_rate", [(1.0, True), (4.0, False)])  # a browser tab; a --source
def test_live_memory_with_pruning_off_answers_exactly_the_stock_model(tiny_checkpoints, random_frames, frame_rate,
                                                                      hold_to_rate):
    """The demo's pairs of frames with their times: each patch's timestamp is the mean of its two frames'
    times from the oldest frame held, as the stock processor computes it for the same frames."""
    from test_models_qwen import _live_memory  # tests/ is on sys.path under pytest

    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen3_vl"], budget=None, dedup=False)
    frames = random_frames(6, seed=21)
    feed, _, messages = _live_memory(qa.llm, frames, budget=None, dedup=False, frame_rate=frame_rate,
                                     hold_to_rate=hold_to_rate)
    snap = feed.memory.snapshot()
    assert snap.layout["times_s"] == [(2 * u + 0.5) / frame_rate for u in range(3)]
    answer = qa.answer_stage.answer_tokens([(snap.tokens, QUESTIONS[0])], layouts=[snap.layout], max_new_tokens=12)[0]
    assert len(answer["token_ids"]) > 0
    assert answer["token_ids"] == _stock_generate(qa.llm, frames, QUESTIONS[0], 12, fps=frame_rate)


def test_live_memory_under_a_budget_holds_what_the_offline_pipeline_selects(tiny_checkpoints, random_frames):
    from test_models_qwen import _live_memory

    frames = random_frames(6, seed=22)
    ckpt = tiny_checkpoints["qwen3_vl"]
    qa = VideoQA.from_pretrained(ckpt, budget=None, dedup=False)
    per_unit = math.prod(qa.llm.frame_geometry(qa.llm.geometry, qa.llm.processor.video_processor,
                                               *frames.shape[1:3]).prune_grid) // 3
    budget = 3 * per_unit
    feed, plan, _ = _live_memory(qa.llm, frames, budget=budget, dedup=False)
    snap = feed.memory.snapshot()
    offline = VideoQA.from_pretrained(ckpt, budget=budget, dedup=False, frames=6)
    pruned = offline.prepare(frames)
    assert snap.layout == pruned.layout and snap.tokens.shape[0] == budget
    torch.testing.assert_close(snap.tokens, pruned.tokens)
    live = qa.answer_stage.answer_tokens([(snap.tokens, QUESTIONS[1])], layouts=[snap.layout], max_new_tokens=10)[0]
    assert live["token_ids"] == offline.answer(pruned, [QUESTIONS[1]], max_new_tokens=10)[0].token_ids


def test_a_segment_with_another_grid_is_refused(tiny_checkpoints, random_frames):
    """One video, one grid: a segment encoded to another grid (Qwen3-VL's processor sizes frames from the
    pixel total of what it is given) is refused rather than placed at wrong positions."""
    from vidprune.pipeline.stages import VideoSelection

    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen3_vl"], budget=60, frames=4)
    first, second = random_frames(2, seed=1), random_frames(2, seed=2, height=200, width=360)
    stream = VideoSelection(qa.select_stage, 4)
    stream.add(qa.encode_stage.process(first, [0.0, 1.0]), [0, 1], [0.0, 1.0])
    with pytest.raises(RuntimeError, match="every unit of one video needs the same grid"):
        stream.add(qa.encode_stage.process(second, [2.0, 3.0]), [2, 3], [2.0, 3.0])
