"""Qwen2.5-VL against independent references: the stock model, its processor, get_rope_index and eager attention.

Frames given as an array are sampled at 1 fps (``clip_from_array``: frame i at i s), so the
stock calls get the same ``VideoMetadata(fps=1)`` vidprune hands the processor.
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

QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please."]


@pytest.fixture(scope="module")
def qwen_ckpt(tiny_checkpoints):
    return tiny_checkpoints["qwen2_5_vl"]


def _metadata(num_frames: int, fps: float = 1.0):
    return [VideoMetadata(total_num_frames=num_frames, fps=fps, frames_indices=list(range(num_frames)))]


def _stock_inputs(llm, frames, question, fps=1.0):
    prompt = llm.build_prompt(question)
    return llm.processor(text=prompt, videos=frames, return_tensors="pt", video_metadata=_metadata(len(frames), fps))


def _stock_generate(llm, frames, question, max_new_tokens, fps=1.0) -> list[int]:
    """A fresh stock call: the checkpoint's processor on the same frames, then model.generate."""
    inputs = _stock_inputs(llm, frames, question, fps)
    out = llm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = llm.model.generation_config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


def test_geometry_and_token_counts_come_from_the_processed_grid(qwen_ckpt, random_frames):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False, frames=4)
    g = qa.llm.geometry
    assert g.dynamic and g.frames_per_unit == 2 and type(qa.llm.language_model).__name__ == "Qwen2_5_VLTextModel"
    for height, width in ((240, 320), (180, 400)):
        frames = random_frames(4, seed=1, height=height, width=width)
        pruned = qa.prepare(frames)
        grid = _stock_inputs(qa.llm, frames, "q")["video_grid_thw"][0].tolist()
        t, h, w = grid
        assert len(pruned.frames) == t == 2
        assert pruned.layout["grid"] == (h // 2, w // 2)
        assert pruned.tokens_count["full"] == pruned.tokens_count["to_llm"] == t * h * w // 4
    assert [f["index"] for f in pruned.frames] == [0, 2]  # a unit's record names its first frame


def test_odd_frame_count_is_refused_before_loading(qwen_ckpt, monkeypatch):
    from vidprune.video_models.base import VideoLLM

    monkeypatch.setattr(VideoLLM, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    with pytest.raises(ConfigError, match="frames=7: qwen2_5_vl pairs frames.*use 6 or 8"):
        VideoQA.from_pretrained(qwen_ckpt, frames=7)


def test_a_pruner_that_needs_a_fixed_grid_is_refused_before_loading(qwen_ckpt, sample_video, monkeypatch, capsys):
    """'uniform' takes the grid in advance; Qwen2.5-VL's grid comes from each video."""
    from vidprune.cli import main
    from vidprune.config import resolve_config
    from vidprune.video_models.base import VideoLLM

    monkeypatch.setattr(VideoLLM, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    with pytest.raises(ConfigError, match="'uniform' pruner spreads tokens over a grid fixed in advance.*use random or vispruner"):
        resolve_config(qwen_ckpt, pruner="uniform", budget=64)
    assert main(["ask", sample_video, "What?", "--model", qwen_ckpt, "--pruner", "uniform", "--budget", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vidprune: error: ") and "dynamic resolution" in err
    for pruner in ("vispruner", "random"):  # the grid-free pruners pass the same check
        assert resolve_config(qwen_ckpt, pruner=pruner, budget=64)[0].pruner == pruner


@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_off_generates_exactly_the_stock_model(qwen_ckpt, random_frames, seed):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False, frames=4)
    frames = random_frames(4, seed=seed)
    answer = qa.ask(frames, QUESTIONS[seed], max_new_tokens=12)
    assert len(answer.token_ids) > 0
    assert answer.token_ids == _stock_generate(qa.llm, frames, QUESTIONS[seed], 12)


def test_pruning_off_from_a_video_file_matches_stock_at_the_sampling_rate(qwen_ckpt, sample_video):
    from vidprune.pipeline.decode import read_video
    from vidprune.video_models.qwen2_5_vl import sampled_fps

    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False, frames=6)
    answer = qa.ask(sample_video, "What moves?", max_new_tokens=8)
    clip = read_video(sample_video, num_frames=6)
    fps = sampled_fps(clip.times_s)
    assert fps is not None and fps < 12  # 6 of 48 frames at 12 fps: about 1.5 frames per second
    assert answer.token_ids == _stock_generate(qa.llm, clip.frames, "What moves?", 8, fps=fps)


def test_importance_equals_eager_attention_at_the_last_full_attention_block(qwen_ckpt, random_frames):
    """Reference: the stock eager kernel on the block's q/k, in the processor's natural patch order."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision, eager_attention_forward
    from transformers.vision_utils import get_vision_window_index

    llm = load_video_llm(qwen_ckpt)
    pixels = llm.preprocess(random_frames(4, seed=5), [0.0, 1.0, 2.0, 3.0])
    visual = llm.model.model.visual
    t, h, w = pixels.grid_thw
    block = visual.blocks[visual.fullatt_block_indexes[-1]]
    assert visual.fullatt_block_indexes[-1] == len(visual.blocks) - 1
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, a, k: seen.update(k, x=a[0]), with_kwargs=True)
    grid = torch.tensor([[t, h, w]])
    with torch.no_grad():
        visual(pixels.pixel_values, grid_thw=grid)
    handle.remove()
    window_index, _ = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)
    order = torch.argsort(window_index)  # natural group -> window slot
    to_natural = lambda a: a.view(-1, 4, *a.shape[1:])[order].reshape(a.shape)  # noqa: E731
    x, cos, sin = to_natural(seen["x"]), *(to_natural(e) for e in seen["position_embeddings"])
    with torch.no_grad():
        qkv = block.attn.qkv(block.norm1(x)).reshape(x.shape[0], 3, block.attn.num_heads, -1).permute(1, 0, 2, 3)
        q, k = apply_rotary_pos_emb_vision(qkv[0], qkv[1], cos, sin)
        per_unit = h * w
        eager = []
        for u in range(t):  # full attention: one temporal patch at a time
            span = slice(u * per_unit, (u + 1) * per_unit)
            qu, ku = q[span].transpose(0, 1)[None], k[span].transpose(0, 1)[None]
            _, probs = eager_attention_forward(block.attn, qu, ku, ku, None, scaling=block.attn.scaling)
            eager.append(probs[0].mean(dim=0).mean(dim=0))  # (h*w,): heads, then queries averaged
    eager = torch.cat(eager).view(t * per_unit // 4, 4).mean(dim=1).view(t, per_unit // 4)
    encoded = llm.encode(pixels)
    torch.testing.assert_close(encoded.cls_attn, eager, rtol=1e-5, atol=1e-8)
    assert encoded.features.shape == (t, per_unit // 4, visual.config.hidden_size)


def test_kept_rows_are_the_stock_merger_rows_at_the_kept_positions(qwen_ckpt, random_frames):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=50, dedup=False, frames=4)
    frames = random_frames(4, seed=3)
    pruned = qa.prepare(frames)
    assert pruned.tokens.shape[0] == 50 == sum(len(f["kept"]) for f in pruned.frames)
    inputs = _stock_inputs(qa.llm, frames, "q")
    stock = qa.llm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output[0]
    per_unit = stock.shape[0] // len(pruned.frames)
    rows = [stock[u * per_unit + torch.tensor(f["kept"], dtype=torch.long)] for u, f in enumerate(pruned.frames)]
    torch.testing.assert_close(qa.llm.project(pruned.tokens), torch.cat(rows), rtol=1e-5, atol=1e-6)


def test_kept_tokens_keep_the_stock_position_ids(qwen_ckpt, random_frames):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=37, dedup=False, frames=4)
    frames = random_frames(4, seed=4)
    pruned = qa.prepare(frames)
    llm = qa.llm
    # stock: the processor's full prompt and the model's own get_rope_index
    stock_in = _stock_inputs(llm, frames, QUESTIONS[0])
    stock_pos, _ = llm.model.model.get_rope_index(
        stock_in["input_ids"], mm_token_type_ids=stock_in["mm_token_type_ids"], video_grid_thw=stock_in["video_grid_thw"],
        second_per_grid_ts=stock_in["second_per_grid_ts"], attention_mask=stock_in["attention_mask"])
    stock_ids = stock_in["input_ids"][0]
    video = torch.nonzero(stock_ids == llm.video_token_id).flatten()
    per_unit = len(video) // len(pruned.frames)
    kept_video = torch.cat([video[u * per_unit + torch.tensor(f["kept"])] for u, f in enumerate(pruned.frames)])
    keep = torch.ones(len(stock_ids), dtype=torch.bool)
    keep[video] = False
    keep[kept_video] = True
    expected = stock_pos[:, 0, keep]  # (3, L'): stock positions at the kept tokens and all text
    inputs = llm.tokenize([llm.build_prompt(QUESTIONS[0])], [pruned.tokens.shape[0]])
    assert inputs["input_ids"][0].tolist() == stock_ids[keep].tolist()
    positions = llm.position_inputs(inputs, [pruned.layout])["position_ids"]  # (4, 1, L')
    assert torch.equal(positions[1:, 0], expected)
    assert positions[1:, 0, -1].tolist() == stock_pos[:, 0, -1].tolist()  # text after the video: stock positions
    next_pos = int(stock_pos.max()) + 1
    assert int(llm.model.model.rope_deltas[0, 0]) == next_pos - inputs["input_ids"].shape[1]


def _greedy_without_cache(llm, pruned, question, steps, **session):
    """Reference: the whole sequence every step (no KV cache), positions = the stock ones + one per new token."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inputs = llm.tokenize([llm.build_prompt(question)], [pruned.tokens.shape[0]])
    positions = llm.position_inputs(inputs, [pruned.layout])["position_ids"][1:]  # (3, 1, L)
    ids, generated = inputs["input_ids"], []
    visual = llm.project(pruned.tokens)
    eos = llm.model.generation_config.eos_token_id
    for _ in range(steps):
        with torch.no_grad():
            logits = llm.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions,
                               use_cache=False, mm_encoder_outputs={"video": BaseModelOutputWithPooling(
                                   pooler_output=(visual,))}).logits
        nxt = int(logits[0, -1].argmax())
        if nxt == eos:
            break
        generated.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return generated


def test_generation_with_the_pruned_stream_equals_a_cache_free_recomputation(qwen_ckpt, random_frames):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=60, dedup=False, frames=4)
    pruned = qa.prepare(random_frames(4, seed=6))
    answer = qa.answer(pruned, [QUESTIONS[0]], max_new_tokens=10)[0]
    reference = _greedy_without_cache(qa.llm, pruned, QUESTIONS[0], 10)
    assert len(reference) > 3
    assert answer.token_ids == reference


def test_batch_with_different_kept_counts_equals_one_at_a_time(qwen_ckpt, random_frames):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=70, dedup=False, frames=4)
    a = qa.prepare(random_frames(4, seed=11))
    qa.select_stage.budget = 30
    b = qa.prepare(random_frames(4, seed=12, height=200, width=360))  # another grid too
    assert a.tokens.shape[0] != b.tokens.shape[0] and a.layout["grid"] != b.layout["grid"]
    items = [(a, QUESTIONS[0]), (b, "Why?")]
    batched = qa.answer_batch(items, max_new_tokens=8)
    single = [qa.answer_batch([item], max_new_tokens=8)[0] for item in items]
    assert [x.token_ids for x in batched] == [x.token_ids for x in single]


def test_budgeted_report_with_dedup(qwen_ckpt, sample_video):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=40, frames=8)
    r = qa.ask(sample_video, "What is moving?", max_new_tokens=4).report
    assert len(r["frames"]) == 4  # temporal patches
    assert r["tokens"]["to_llm"] == r["tokens"]["after_dedup"] <= 40
    assert sum(len(f["duplicates"]) for f in r["frames"]) > 0  # the static background repeats
    assert r["tokens"]["full"] == 4 * math.prod(qa.prepare(sample_video).layout["grid"])
    assert 0 < r["flops"]["vision_tower"] and 0 < r["flops"]["llm_prefill_pruned"] < r["flops"]["llm_prefill_full"]


# --------------------------------------------------------------------------- IVTP with mRoPE
def test_ivtp_keep_one_generates_the_stock_ids(qwen_ckpt, random_frames):
    frames = random_frames(4, seed=1)
    plain = VideoQA.from_pretrained(qwen_ckpt, budget=60, dedup=False, frames=4).ask(frames, QUESTIONS[0],
                                                                                     max_new_tokens=10)
    ivtp = VideoQA.from_pretrained(qwen_ckpt, budget=60, dedup=False, frames=4, ivtp_layer=2, ivtp_keep=1.0)
    answer = ivtp.ask(frames, QUESTIONS[0], max_new_tokens=10)
    assert answer.token_ids == plain.token_ids and len(answer.report["ivtp"]["kept"]) == 60


@pytest.mark.parametrize("layer,keep", [(1, 0.5), (3, 0.2)])
def test_ivtp_kept_set_is_the_top_by_eager_attention_with_the_models_mrope(qwen_ckpt, random_frames, layer, keep):
    from transformers import AutoModelForImageTextToText
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    qa = VideoQA.from_pretrained(qwen_ckpt, budget=60, dedup=False, frames=4, ivtp_layer=layer, ivtp_keep=keep)
    pruned = qa.prepare(random_frames(4, seed=21))
    answer = qa.answer(pruned, [QUESTIONS[1]], max_new_tokens=2)[0]
    eager = AutoModelForImageTextToText.from_pretrained(qwen_ckpt, attn_implementation="eager", dtype=torch.float32)
    inputs = qa.llm.tokenize([qa.llm.build_prompt(QUESTIONS[1])], [pruned.tokens.shape[0]])
    positions = qa.llm.position_inputs(inputs, [pruned.layout])["position_ids"]
    with torch.no_grad():
        out = eager(**inputs, position_ids=positions, output_attentions=True, use_cache=False,
                    mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(pruned.tokens,))})
    ids = inputs["input_ids"][0]
    vis = torch.nonzero(ids == qa.llm.video_token_id).flatten()
    rows = torch.arange(int(vis.max()) + 1, len(ids))
    scores = out.attentions[layer][0][:, rows][:, :, vis].mean(dim=0).mean(dim=0)
    expected = sorted(torch.argsort(scores, descending=True, stable=True)[: math.ceil(keep * len(vis))].tolist())
    assert answer.report["ivtp"]["kept"] == expected


def test_segment_by_segment_selection_equals_the_whole_video(qwen_ckpt, random_frames):
    """The Ray path's shape (segments encoded and selected one by one) on the in-process stages."""
    from vidprune.pipeline.stages import VideoSelection, clip_from_array
    from vidprune.pipeline.segments import batches_from_clip

    qa = VideoQA.from_pretrained(qwen_ckpt, budget=90, frames=8)
    frames = random_frames(8, seed=13)
    whole = qa.prepare(frames)
    clip = clip_from_array(frames)
    stream = VideoSelection(qa.select_stage, len(clip.indices))
    for batch in batches_from_clip(clip, segment_frames=4):
        stream.add(qa.encode_stage.process(batch.frames, batch.times_s), batch.indices, batch.times_s)
    assert stream.frames_done == 8
    parts = stream.finish()
    assert parts.layout == whole.layout and parts.frames == whole.frames
    torch.testing.assert_close(parts.tokens, whole.tokens, rtol=1e-5, atol=1e-6)
    odd = VideoSelection(qa.select_stage, len(clip.indices))
    batch = batches_from_clip(clip, segment_frames=3)[0]
    with pytest.raises(RuntimeError, match="segments must hold whole units"):
        odd.add(qa.encode_stage.process(batch.frames, batch.times_s), batch.indices, batch.times_s)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_cli_demo_runs_the_new_families_offline(family, capsys):
    from vidprune.cli import main

    assert main(["ask", "--demo", "--demo-family", family, "--max-new-tokens", "2", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["family"] == family and report["tokens"]["to_llm"] <= report["tokens"]["budget"]


# --------------------------------------------------------------------------- the live memory (demo)


def _live_memory(llm, frames, *, budget, dedup, frame_rate=1.0, hold_to_rate=True):
    """The demo's path for ``frames``: a Feed pairs them, the model's EncodeStage encodes each pair, the
    rolling memory (planned for the first frame's size, a window that holds them all) stores the units."""
    from vidprune.demo.feed import Feed, PendingFrame
    from vidprune.pipeline.memory import build_memory, plan_memory
    from vidprune.pipeline.stages import EncodeStage

    height, width = frames[0].shape[:2]
    geometry = llm.frame_geometry(llm.geometry, llm.processor.video_processor, height, width)
    plan = plan_memory(geometry, budget=budget, window_s=len(frames) / frame_rate, frame_rate=frame_rate)
    assert plan.frames_per_unit == 2 and plan.max_frames == len(frames) // 2
    feed = Feed(build_memory(plan, dedup=dedup), frame_rate=frame_rate, hold_to_rate=hold_to_rate)
    encoder = EncodeStage(llm, batch_size=1)
    messages = []
    for i, rgb in enumerate(frames):
        feed.offer(PendingFrame(seq=i, time_s=i / frame_rate, rgb=rgb))
        out, _ = feed.encode_next(encoder)
        messages.append(out)
        assert feed.load()["pairing"] == (i + 1) % 2
    return feed, plan, messages


@pytest.mark.parametrize("frame_rate, hold_to_rate", [(1.0, True), (4.0, False)])  # a browser tab; a --source
def test_live_memory_with_pruning_off_answers_exactly_the_stock_model(qwen_ckpt, random_frames, frame_rate,
                                                                      hold_to_rate):
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False)
    frames = random_frames(6, seed=21)
    feed, plan, messages = _live_memory(qa.llm, frames, budget=None, dedup=False, frame_rate=frame_rate,
                                        hold_to_rate=hold_to_rate)
    assert (feed.gate is None) == (not hold_to_rate)
    assert [bool(m) for m in messages] == [False, True] * 3  # one frame message per temporal patch, for its 2nd frame
    assert [m[-1]["seq"] for m in messages if m] == [1, 3, 5]
    snap = feed.memory.snapshot()
    grid = tuple(messages[-1][-1]["grid"])
    assert snap.layout["units"] == 3 and snap.layout["grid"] == grid
    assert snap.layout["seconds_per_unit"] == 2 / frame_rate  # a temporal patch spans two frames of the stream
    assert snap.tokens.shape[0] == 3 * math.prod(grid) == snap.stats.tokens == snap.stats.stock_tokens
    answer = qa.answer_stage.answer_tokens([(snap.tokens, QUESTIONS[0])], layouts=[snap.layout], max_new_tokens=12)[0]
    assert len(answer["token_ids"]) > 0
    assert answer["token_ids"] == _stock_generate(qa.llm, frames, QUESTIONS[0], 12, fps=frame_rate)


def test_live_memory_under_a_budget_holds_what_the_offline_pipeline_selects(qwen_ckpt, random_frames):
    frames = random_frames(6, seed=22)
    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False)
    per_unit = math.prod(qa.llm.frame_geometry(qa.llm.geometry, qa.llm.processor.video_processor,
                                               *frames.shape[1:3]).prune_grid) // 3
    budget = 3 * per_unit  # the same allowance per temporal patch on both paths
    feed, plan, _ = _live_memory(qa.llm, frames, budget=budget, dedup=False)
    assert plan.frame_allowance == per_unit
    snap = feed.memory.snapshot()
    offline = VideoQA.from_pretrained(qwen_ckpt, budget=budget, dedup=False, frames=6)
    pruned = offline.prepare(frames)
    assert snap.layout == pruned.layout and snap.tokens.shape[0] == budget
    torch.testing.assert_close(snap.tokens, pruned.tokens)
    live = qa.answer_stage.answer_tokens([(snap.tokens, QUESTIONS[1])], layouts=[snap.layout], max_new_tokens=10)[0]
    assert live["token_ids"] == offline.answer(pruned, [QUESTIONS[1]], max_new_tokens=10)[0].token_ids


def test_live_memory_keeps_one_grid_by_resizing_frames_of_another_size(qwen_ckpt, random_frames):
    from vidprune.demo.feed import PendingFrame

    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False)
    small = random_frames(2, seed=23, height=200, width=360)
    frames = list(random_frames(4, seed=24)) + list(small)  # the last temporal patch comes at another size
    feed, _, messages = _live_memory(qa.llm, frames, budget=None, dedup=True)
    grids = [tuple(m[-1]["grid"]) for m in messages if m]
    assert len(set(grids)) == 1 and [m[-1]["size"] for m in messages if m][-1] == [320, 240]
    assert len(feed.memory) == 3 and feed.memory.snapshot().layout["units"] == 3
    feed.reset()  # an empty memory takes the next frame's size
    feed.offer(PendingFrame(seq=9, time_s=9.0, rgb=small[0]))
    assert feed.encode_next(qa.encode_stage)[0] == [] and feed.load()["pairing"] == 1
    feed.offer(PendingFrame(seq=10, time_s=10.0, rgb=small[1]))
    message = feed.encode_next(qa.encode_stage)[0][-1]
    assert message["size"] == [360, 200] and tuple(message["grid"]) != grids[0]


def test_demo_plans_qwen_for_the_pages_frame_size_before_loading(qwen_ckpt, monkeypatch):
    from vidprune.cli import build_parser
    from vidprune.demo.command import settings_from_args
    from vidprune.demo.limits import PLANNED_FRAME_SIZE
    from vidprune.video_models import base

    monkeypatch.setattr(base.VideoLLM, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("weights loaded")))
    settings, _ = settings_from_args(build_parser().parse_args(["demo", "--model", qwen_ckpt, "--window", "8",
                                                                "--fps", "2"]))
    plan = settings.plan
    processor = base.VideoLLM.video_processor_from_pretrained(qwen_ckpt)
    blank = np.zeros((2, *PLANNED_FRAME_SIZE, 3), np.uint8)
    h, w = (int(v) for v in processor(videos=[blank], return_tensors="pt")["video_grid_thw"][0][1:])
    assert plan.dynamic and plan.frames_per_unit == 2 and plan.max_frames == 8  # 8 s at 2 fps = 8 temporal patches
    assert plan.tokens_per_frame == (h // 2) * (w // 2)
    assert plan.budget == 8 * plan.tokens_per_frame  # the default: one stock 16-frame clip
    with pytest.raises(ConfigError, match="grid fixed in advance"):
        settings_from_args(build_parser().parse_args(["demo", "--model", qwen_ckpt, "--pruner", "uniform",
                                                      "--budget", "100"]))


def test_make_tiny_checkpoint_lists_every_registered_family():
    from vidprune.cli import build_parser
    from vidprune.video_models import list_families
    from vidprune.video_models.tiny import TINY_FAMILIES

    assert sorted(TINY_FAMILIES) == list_families()
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["make-tiny-checkpoint"]._actions
                  if a.dest == "family")
    assert sorted(action.choices) == list_families()


def test_rope_deltas_follow_the_stock_convention_in_a_left_padded_batch(qwen_ckpt, random_frames):
    """rope_deltas as the stock get_rope_index returns them for a left-padded batch with its attention mask
    (transformers 5.24: next position minus the sample's UNPADDED length): with pruning off they equal the stock
    deltas on the processor's own left-padded batch, and the stock decode path without position ids
    (compute_3d_position_ids: cumsum(attention_mask) - 1 + rope_deltas) puts each sample's next token right after
    its last stock position, padded or not."""
    from transformers.cache_utils import DynamicCache

    qa = VideoQA.from_pretrained(qwen_ckpt, budget=None, dedup=False, frames=4)
    llm = qa.llm
    frames = [random_frames(4, seed=31), random_frames(4, seed=32, height=200, width=360)]  # two grids
    pruned = [qa.prepare(f) for f in frames]
    prompts = [llm.build_prompt(q) for q in QUESTIONS]
    inputs = llm.tokenize(prompts, [p.tokens.shape[0] for p in pruned])
    assert (inputs["attention_mask"] == 0).any(), "the batch must be left-padded"
    positions = llm.position_inputs(inputs, [p.layout for p in pruned])["position_ids"]  # (4, B, L)
    ours = llm.model.model.rope_deltas.clone()
    # the stock processor and get_rope_index on the same two videos, left-padded
    tok = llm.processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "left"
    try:
        stock_in = llm.processor(text=prompts, videos=frames, return_tensors="pt", padding=True,
                                 video_metadata=_metadata(4) + _metadata(4))
    finally:
        tok.padding_side = old_side
    assert stock_in["input_ids"].tolist() == inputs["input_ids"].tolist()
    _, stock_deltas = llm.model.model.get_rope_index(
        stock_in["input_ids"], mm_token_type_ids=stock_in["mm_token_type_ids"],
        video_grid_thw=stock_in["video_grid_thw"], second_per_grid_ts=stock_in["second_per_grid_ts"],
        attention_mask=stock_in["attention_mask"])
    assert ours.tolist() == stock_deltas.tolist()
    # a decode step without position ids: the stock model's own positions from rope_deltas
    cache = DynamicCache(config=llm.model.config)
    with torch.no_grad():
        llm.model(**inputs, position_ids=positions, cache=cache, use_cache=True,
                  mm_encoder_outputs={"video": llm.video_encoder_output([llm.project(p.tokens) for p in pruned])})
        llm.model.model.rope_deltas = ours
        step = llm.model.get_input_embeddings()(torch.tensor([[0], [0]]))  # (B, 1, D): one new token each
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)  # as generate() grows it
        decode = llm.model.model.compute_3d_position_ids(input_ids=None, image_grid_thw=None, video_grid_thw=None,
                                                          inputs_embeds=step, attention_mask=mask, cache=cache)
    assert cache.get_seq_length() == inputs["input_ids"].shape[1]
    assert decode[:, :, -1].tolist() == (positions[1:, :, -1] + 1).tolist()
