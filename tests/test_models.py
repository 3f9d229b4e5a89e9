"""Model-level correctness against independent references: the stock HF model and eager attention.

Every test loads a tiny random-weight checkpoint from its directory with
``from_pretrained``, exactly as a user's checkpoint is loaded. Every stock reference is a
fresh ``from_pretrained`` of the model and processor (:func:`_fresh_stock`), never the
objects vidprune loaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidprune import VideoQA
from vidprune.errors import ConfigError, ModelLoadError
from vidprune.flops import layer_flops
from vidprune.video_models import load_video_llm
from vidprune.video_models.base import inspect_checkpoint
from vidprune.video_models.cls_attention import clip_cls_attention

# (family, frames a test samples, tokens per frame the stock model feeds its LLM); every registered family
FAMILIES = [("video_llava", 8, 257), ("llava_next_video", 4, 144), ("llava_onevision", 4, 196)]
QUESTIONS = ["What is the man holding?", "Describe what happens."]


def _ckpt(tiny_checkpoints, family):
    return tiny_checkpoints[family]


def _fresh_stock(checkpoint: str):
    """The stock model and processor, loaded again from the checkpoint directory (nothing vidprune holds)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(checkpoint)


def _stock_generate(checkpoint: str, frames: np.ndarray, question: str, max_new_tokens: int) -> list[int]:
    """The stock pipeline on a fresh load: the checkpoint's own processor on the same frames, then model.generate."""
    model, processor = _fresh_stock(checkpoint)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}], add_generation_prompt=True
    )
    inputs = processor(text=prompt, videos=frames, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.mark.parametrize("family,num_frames,per_frame", FAMILIES)
def test_pruning_off_generates_exactly_the_stock_model(tiny_checkpoints, random_frames, family, num_frames, per_frame):
    qa = VideoQA.from_pretrained(_ckpt(tiny_checkpoints, family), budget=None, dedup=False)
    for seed, question in enumerate(QUESTIONS):
        frames = random_frames(num_frames, seed=seed)
        answer = qa.ask(frames, question, max_new_tokens=12)
        stock = num_frames * per_frame + qa.llm.geometry.extra_per_video  # OneVision: + its newline
        assert answer.report["tokens"]["to_llm"] == stock == answer.report["tokens"]["full"]
        assert len(answer.token_ids) > 0
        assert answer.token_ids == _stock_generate(qa.llm.name_or_path, frames, question, 12)


@pytest.mark.parametrize("family,num_frames,per_frame", FAMILIES)
def test_pruning_off_from_a_video_file_matches_stock_on_the_decoded_frames(tiny_checkpoints, sample_video, family,
                                                                          num_frames, per_frame):
    from vidprune.pipeline.decode import read_video

    qa = VideoQA.from_pretrained(_ckpt(tiny_checkpoints, family), budget=None, dedup=False, frames=num_frames)
    answer = qa.ask(sample_video, "What moves?", max_new_tokens=8)
    clip = read_video(sample_video, num_frames=num_frames)
    assert [f["index"] for f in answer.report["frames"]] == clip.indices
    assert answer.token_ids == _stock_generate(qa.llm.name_or_path, clip.frames, "What moves?", 8)


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_recomputed_cls_attention_equals_eager_attention(tiny_checkpoints, random_frames, family):
    llm = load_video_llm(_ckpt(tiny_checkpoints, family))
    pixel_values = llm.preprocess(random_frames(3, seed=5))
    tower = llm.model.model.video_tower if family == "video_llava" else llm.model.model.vision_tower
    tower.config._attn_implementation = "eager"
    try:
        out = tower(pixel_values, output_attentions=True, output_hidden_states=True)
    finally:
        tower.config._attn_implementation = "sdpa"
    layer = llm.config.vision_feature_layer % (tower.config.num_hidden_layers + 1) - 1
    eager = out.attentions[layer][:, :, 0, 1:].mean(dim=1)  # (T, N): [CLS] row, heads averaged, [CLS] key dropped
    recomputed = clip_cls_attention(tower.encoder.layers[layer], out.hidden_states[layer])
    torch.testing.assert_close(recomputed, eager, rtol=1e-5, atol=1e-7)
    encoded = llm.encode(pixel_values)  # the adapter's SDPA path gives the same scores
    if family == "video_llava":
        torch.testing.assert_close(encoded.cls_attn, eager, rtol=1e-5, atol=1e-7)
        assert encoded.features.shape == (3, 256, llm.config.vision_config.hidden_size)
    else:  # pooled 2x2 like the features
        pooled = torch.nn.functional.avg_pool2d(eager.view(3, 1, 24, 24), 2).flatten(1)
        torch.testing.assert_close(encoded.cls_attn, pooled, rtol=1e-5, atol=1e-7)
        assert encoded.features.shape == (3, 144, llm.config.vision_config.hidden_size)


@pytest.mark.parametrize("family,num_frames,per_frame", FAMILIES)
def test_kept_tokens_are_exactly_the_stock_features_at_the_kept_positions(tiny_checkpoints, random_frames, family,
                                                                          num_frames, per_frame):
    """What enters the LLM = rows of the stock get_video_features output, in temporal then raster order."""
    qa = VideoQA.from_pretrained(_ckpt(tiny_checkpoints, family), budget=num_frames * 20, dedup=False)
    frames = random_frames(num_frames, seed=3)
    pruned = qa.prepare(frames)
    projected = qa.llm.project(pruned.tokens)
    # no return_dict: 5.18-5.22 hand back the tuple form when it is passed explicitly, and there
    # LLaVA-NeXT-Video's pooler_output is a tuple of per-video tensors
    model, processor = _fresh_stock(qa.llm.name_or_path)
    pixels = processor.video_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
    with torch.no_grad():
        stock = model.model.get_video_features(pixel_values_videos=pixels).pooler_output
    stock = torch.cat(stock) if isinstance(stock, (tuple, list)) else stock
    stock = stock.reshape(-1, stock.shape[-1])
    per_video = qa.llm.geometry.extra_per_video  # rows after the last frame (OneVision's newline)
    video_rows = stock[stock.shape[0] - per_video:]
    stock = stock[: stock.shape[0] - per_video].reshape(num_frames, per_frame, -1)
    extra = 1 if family == "video_llava" else 0
    rows = []
    for t, frame in enumerate(pruned.frames):
        assert frame["kept"] == sorted(frame["kept"])
        idx = ([0] if extra else []) + [i + extra for i in frame["kept"]]
        rows.append(stock[t, idx])
    rows.append(video_rows)
    torch.testing.assert_close(projected, torch.cat(rows), rtol=1e-5, atol=1e-5)
    assert projected.shape[0] == num_frames * 20


@pytest.mark.parametrize("family,num_frames,per_frame", FAMILIES)
def test_budgeted_answer_report(tiny_checkpoints, sample_video, family, num_frames, per_frame):
    budget = 114 if family == "video_llava" else 64
    qa = VideoQA.from_pretrained(_ckpt(tiny_checkpoints, family), budget=budget, frames=num_frames)
    answer = qa.ask(sample_video, "What is moving?", max_new_tokens=6)
    r = answer.report
    assert r["answer"] == answer.text
    assert r["tokens"]["full"] == num_frames * per_frame + qa.llm.geometry.extra_per_video
    assert r["tokens"]["to_llm"] <= budget
    assert r["tokens"]["to_llm"] == r["tokens"]["after_dedup"] <= r["tokens"]["after_vispruner"]
    assert len(r["frames"]) == num_frames
    assert sum(len(f["kept"]) for f in r["frames"]) + qa.llm.geometry.reserved(num_frames) == r["tokens"]["to_llm"]
    assert [f["time_s"] for f in r["frames"]] == sorted(f["time_s"] for f in r["frames"])
    assert 0 < r["flops"]["llm_prefill_pruned"] < r["flops"]["llm_prefill_full"]
    assert set(r["timings_s"]) >= {"decode", "encode", "select", "generate"}
    # the static background repeats: dedup drops duplicates after the first frame
    assert sum(len(f["duplicates"]) for f in r["frames"]) > 0
    assert r["frames"][0]["duplicates"] == []


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_tower_flops_count_the_clip_layers_that_run(tiny_checkpoints, family):
    # the tower stops at the feature layer (-2: the last encoder layer does not run), so its FLOPs leave that layer out
    info = inspect_checkpoint(_ckpt(tiny_checkpoints, family))
    vc = info.config.vision_config
    assert info.config.vision_feature_layer == -2
    side = vc.image_size // vc.patch_size
    per_layer = layer_flops(side * side + 1, vc.hidden_size, vc.intermediate_size, 2)  # patches + [CLS]
    assert info.family.tower_flops(info.config, 8) == 8 * (vc.num_hidden_layers - 1) * per_layer


@pytest.mark.parametrize("family,num_frames,per_frame", FAMILIES)
def test_batch_with_different_kept_counts_equals_one_at_a_time(tiny_checkpoints, random_frames, family, num_frames,
                                                               per_frame):
    qa = VideoQA.from_pretrained(_ckpt(tiny_checkpoints, family), budget=num_frames * 24, dedup=False)
    a = qa.prepare(random_frames(num_frames, seed=11))
    qa.select_stage.budget = num_frames * 12
    b = qa.prepare(random_frames(num_frames, seed=12))
    assert a.tokens.shape[0] != b.tokens.shape[0]
    items = [(a, "What is the man holding?"), (b, "Why?")]
    batched = qa.answer_batch(items, max_new_tokens=8)
    single = [qa.answer_batch([item], max_new_tokens=8)[0] for item in items]
    assert [x.token_ids for x in batched] == [x.token_ids for x in single]


def test_wrong_family_fails_before_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    from vidprune.video_models import list_families

    with pytest.raises(ModelLoadError, match="bert.*supports " + ", ".join(list_families())):
        VideoQA.from_pretrained(str(tmp_path), budget=100)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="without a readable config.json"):
        VideoQA.from_pretrained(str(empty), budget=100)


@pytest.mark.parametrize("options,message", [
    ({"budget": 0}, "budget must be a positive integer"),
    ({"budget": -5}, "budget must be a positive integer"),
    ({"important_ratio": 1.5}, r"important_ratio must be in \[0, 1\]"),
    ({"budget": 4}, "smaller than the 8 \\[CLS\\] tokens"),
    ({"pruner": "magic"}, "pruner must be one of"),
])
def test_bad_options_fail_before_any_model_loads(video_llava_ckpt, monkeypatch, options, message):
    from vidprune.video_models.base import VideoLLM

    def boom(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(VideoLLM, "from_pretrained", classmethod(boom))
    with pytest.raises(ConfigError, match=message):
        VideoQA.from_pretrained(video_llava_ckpt, **options)


def test_empty_question_is_refused(video_llava_ckpt, random_frames):
    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=100)
    for q in ["", "   ", None]:
        with pytest.raises(ConfigError, match="question is empty"):
            qa.ask(random_frames(8), q)


def test_short_video_uses_all_frames_with_a_warning(video_llava_ckpt, tmp_path):
    from vidprune.samples import moving_square_frames, write_video

    path = write_video(tmp_path / "short.mp4", moving_square_frames(num_frames=3))
    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=60, frames=8)
    answer = qa.ask(str(path), "What moves?", max_new_tokens=2)
    assert [f["index"] for f in answer.report["frames"]] == [0, 1, 2]
    assert any("fewer" in w and "8" in w for w in answer.report["warnings"])
    assert answer.report["tokens"]["to_llm"] <= 60 and answer.report["tokens"]["full"] == 3 * 257


def test_report_names_the_pruner_that_ran(video_llava_ckpt, random_frames):
    off = VideoQA.from_pretrained(video_llava_ckpt, budget=None, dedup=False).ask(random_frames(8), "Hi?", max_new_tokens=1)
    on = VideoQA.from_pretrained(video_llava_ckpt, budget=100, pruner="random").ask(random_frames(8), "Hi?", max_new_tokens=1)
    assert off.report["options"]["pruner"] == "none" and on.report["options"]["pruner"] == "random"


def test_unpooled_llava_next_video_prunes_the_576_tokens(llava_next_video_ckpt, random_frames):
    qa = VideoQA.from_pretrained(llava_next_video_ckpt, budget=4 * 50, dedup=False, prune_pooled=False, frames=4)
    frames = random_frames(4, seed=2)
    answer = qa.ask(frames, "What?", max_new_tokens=3)
    assert answer.report["tokens"]["full"] == 4 * 144  # the stock model feeds the pooled tokens
    assert answer.report["tokens"]["to_llm"] == 200
    assert max(max(f["kept"]) for f in answer.report["frames"]) < 576
    assert any(max(f["kept"]) >= 144 for f in answer.report["frames"])  # indices of the unpooled 24x24 grid
    # values: the rows handed to the LLM = the stock projector on the stock tower's unpooled
    # feature-layer patches (fresh load, [CLS] dropped as the 'default' strategy does) at the kept positions
    pruned = qa.prepare(frames)
    projected = qa.llm.project(pruned.tokens)  # (200, D)
    model, processor = _fresh_stock(llava_next_video_ckpt)
    pixels = processor.video_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"][0]
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        patches = hidden[model.config.vision_feature_layer][:, 1:]  # (4, 576, Dv)
        assert patches.shape[1] == 576
        rows = torch.cat([patches[t, f["kept"]] for t, f in enumerate(pruned.frames)])
        expected = model.model.multi_modal_projector(rows)
    assert [f["kept"] for f in pruned.frames] == [f["kept"] for f in answer.report["frames"]]
    torch.testing.assert_close(projected, expected, rtol=1e-5, atol=1e-5)


def test_video_llava_without_cls_tokens(video_llava_ckpt, random_frames):
    keep = VideoQA.from_pretrained(video_llava_ckpt, budget=80, dedup=False)
    drop = VideoQA.from_pretrained(video_llava_ckpt, budget=80, dedup=False, keep_cls=False)
    frames = random_frames(8, seed=4)
    a, b = keep.prepare(frames), drop.prepare(frames)
    assert a.tokens.shape[0] == b.tokens.shape[0] == 80
    assert sum(len(f["kept"]) for f in a.frames) == 72 and sum(len(f["kept"]) for f in b.frames) == 80
    assert drop.ask(frames, "What?", max_new_tokens=2).report["tokens"]["to_llm"] == 80


@pytest.mark.parametrize("ivtp", [{}, {"ivtp_layer": 2, "ivtp_keep": 0.5}], ids=["plain", "ivtp"])
def test_sampling_samples_and_the_seed_fixes_it(video_llava_ckpt, random_frames, ivtp):
    """Ignoring do_sample, temperature or the seed each fails here (token ids compared)."""
    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=64, dedup=False, **ivtp)
    pruned = qa.prepare(random_frames(8, seed=2))
    question = QUESTIONS[0]
    greedy = qa.answer(pruned, [question], max_new_tokens=8)[0].token_ids

    def sample(seed: int, temperature: float) -> list[int]:
        sampler = VideoQA(qa.llm, qa.config.replace(do_sample=True, temperature=temperature, sample_seed=seed))
        return sampler.answer(pruned, [question], max_new_tokens=8)[0].token_ids

    hot = {seed: sample(seed, 5.0) for seed in range(4)}
    assert sample(0, 5.0) == hot[0]  # the same seed: the same ids
    assert len({tuple(ids) for ids in hot.values()}) >= 3  # other seeds: other ids
    assert all(ids != greedy for ids in hot.values())  # it samples: not the greedy answer
    assert sample(3, 1e-4) == greedy  # temperature is applied: near 0 sampling is greedy


def test_a_torch_dtype_is_accepted_like_its_name(video_llava_ckpt, random_frames):
    """dtype=torch.bfloat16 (not only "bfloat16"): the config holds the name, the model loads in that dtype."""
    from vidprune.config import VidpruneConfig, resolve_config

    assert VidpruneConfig(dtype=torch.bfloat16).validate().dtype == "bfloat16"
    cfg, _ = resolve_config(video_llava_ckpt, dtype=torch.float16)
    assert cfg.dtype == "float16"
    qa = VideoQA.from_pretrained(video_llava_ckpt, dtype=torch.bfloat16, budget=64, frames=4)
    assert qa.llm.dtype == torch.bfloat16 and qa.config.dtype == "bfloat16"
    named = VideoQA.from_pretrained(video_llava_ckpt, dtype="bfloat16", budget=64, frames=4)
    frames = random_frames(4, seed=5)
    assert qa.ask(frames, "What?", max_new_tokens=3).token_ids == named.ask(frames, "What?", max_new_tokens=3).token_ids
    with pytest.raises(ConfigError, match="dtype must be one of"):
        VidpruneConfig(dtype=torch.int8).validate()


@pytest.mark.parametrize("family", ["video_llava", "qwen2_5_vl"])
def test_from_model_wraps_a_model_the_user_loaded(tiny_checkpoints, random_frames, family):
    """VideoQA.from_model(model, processor, **options) on a stock model loaded with transformers gives the ids
    and report of VideoQA.from_pretrained on the same checkpoint; loading options are refused in one line."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    ckpt = tiny_checkpoints[family]
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(ckpt)
    options = dict(budget=40, frames=4, ivtp_layer=2, ivtp_keep=0.5, max_new_tokens=4)
    wrapped = VideoQA.from_model(model, processor, **options)
    loaded = VideoQA.from_pretrained(ckpt, **options)
    assert wrapped.llm.model is model and type(wrapped.llm) is type(loaded.llm)
    frames = random_frames(4, seed=6)
    a, b = wrapped.ask(frames, "What moves?"), loaded.ask(frames, "What moves?")
    assert a.token_ids == b.token_ids and a.report["tokens"] == b.report["tokens"]
    assert a.report["ivtp"]["kept"] == b.report["ivtp"]["kept"]
    assert wrapped.config.device == "cpu" and wrapped.config.dtype == "float32"
    with pytest.raises(ConfigError, match="dtype describe loading a checkpoint, but this model is already loaded"):
        VideoQA.from_model(model, processor, dtype="bfloat16")
    with pytest.raises(ConfigError, match="takes a transformers model and its processor"):
        VideoQA.from_model(model, processor.tokenizer)


def test_generation_output_names_the_new_ids_apart_from_transformers_sequences(video_llava_ckpt, random_frames):
    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=64, frames=4)
    pruned = qa.prepare(random_frames(4, seed=7))
    visual = qa.llm.project(pruned.tokens)
    out = qa.llm.generate([qa.llm.build_prompt("What?")], [visual], max_new_tokens=3)
    assert out.answer_ids == [qa.answer(pruned, ["What?"], max_new_tokens=3)[0].token_ids]
    with pytest.warns(DeprecationWarning, match="renamed answer_ids"):
        assert out.sequences == out.answer_ids
