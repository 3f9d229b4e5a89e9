"""LLaVA-OneVision against independent references: the stock model and eager SigLIP attention.

The checks every family shares (pruning off = stock ids, kept rows = stock rows, report,
batching, IVTP) run over the family registry in test_models.py / test_ivtp.py; this file
holds what is particular to OneVision: importance without [CLS], the pooling order
(projector first), the newline once per video, the SigLIP FLOPs.
"""

from __future__ import annotations

import math

import pytest
import torch

from vidprune import VideoQA
from vidprune.errors import ConfigError
from vidprune.video_models import load_video_llm
from vidprune.video_models.cls_attention import mean_received_attention


@pytest.fixture(scope="module")
def onevision_ckpt(tiny_checkpoints):
    return tiny_checkpoints["llava_onevision"]


def test_geometry_is_the_real_models(onevision_ckpt):
    llm = load_video_llm(onevision_ckpt)
    g = llm.geometry
    assert g.patch_grid == (27, 27) and g.prune_grid == (14, 14)
    assert (g.extra_per_frame, g.extra_per_video, g.stock_per_frame) == (0, 1, 196)
    assert g.stock_tokens(32) == 32 * 196 + 1
    assert type(llm.model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert type(llm.language_model).__name__ == "Qwen2Model"
    assert llm.default_num_frames == 32
    # the stock processor expands one <video> of 3 frames to the same count
    prompt = llm.build_prompt("Hi?")
    import numpy as np

    frames = np.zeros((3, 64, 80, 3), dtype=np.uint8)
    ids = llm.processor(text=prompt, videos=frames, return_tensors="pt")["input_ids"]
    assert int((ids == llm.video_token_id).sum()) == g.stock_tokens(3)


def test_importance_equals_eager_attention_received_pooled_like_the_features(onevision_ckpt, random_frames):
    llm = load_video_llm(onevision_ckpt)
    pixel_values = llm.preprocess(random_frames(3, seed=5))  # (3, 3, 384, 384)
    tower = llm.model.model.vision_tower
    tower.config._attn_implementation = "eager"
    try:
        out = tower(pixel_values, output_attentions=True, output_hidden_states=True)
    finally:
        tower.config._attn_implementation = "sdpa"
    layer = llm.config.vision_feature_layer % (tower.config.num_hidden_layers + 1) - 1
    eager = out.attentions[layer].mean(dim=1).mean(dim=1)  # (T, 729): heads, then queries averaged
    assert eager.shape == (3, 729)
    encoder_layer = getattr(tower, "vision_model", tower).encoder.layers[layer]
    recomputed = mean_received_attention(encoder_layer.self_attn, encoder_layer.layer_norm1(out.hidden_states[layer]))
    torch.testing.assert_close(recomputed, eager, rtol=1e-5, atol=1e-8)
    encoded = llm.encode(pixel_values)  # the adapter's SDPA path
    pooled = llm.model.model.apply_pooling(eager[..., None])[..., 0]  # the stock pooling of the features, (T, 196)
    torch.testing.assert_close(encoded.cls_attn, pooled, rtol=1e-5, atol=1e-8)
    # dedup / diversity features: the feature layer's tower output, pooled the same way
    hidden = out.hidden_states[llm.config.vision_feature_layer]  # (T, 729, Dv), before the post-layernorm
    torch.testing.assert_close(encoded.features, llm.model.model.apply_pooling(hidden), rtol=1e-5, atol=1e-6)
    assert encoded.features.shape == (3, 196, llm.config.vision_config.hidden_size)
    assert encoded.tokens.shape == (3, 196, llm.config.text_config.hidden_size)


def test_rows_handed_on_are_the_projected_then_pooled_stock_rows(onevision_ckpt, random_frames):
    """Pooling the pre-projector features and projecting them would give other rows: check we do not."""
    llm = load_video_llm(onevision_ckpt)
    pixel_values = llm.preprocess(random_frames(2, seed=8))
    encoded = llm.encode(pixel_values)
    stock = llm.model.model.get_video_features(pixel_values_videos=pixel_values[None]).pooler_output  # (1, 2*196+1, D)
    torch.testing.assert_close(encoded.tokens.reshape(-1, encoded.tokens.shape[-1]), stock[0, :-1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(encoded.video_extra, stock[0, -1:], rtol=0, atol=0)
    wrong_order = llm.model.model.multi_modal_projector(encoded.features)
    assert not torch.allclose(wrong_order, encoded.tokens, atol=1e-3)


@pytest.mark.parametrize("budget", [50, 4 * 30 + 1, 4 * 196])
def test_budget_is_exact_and_the_newline_counts_against_it(onevision_ckpt, random_frames, budget):
    qa = VideoQA.from_pretrained(onevision_ckpt, budget=budget, dedup=False, frames=4)
    pruned = qa.prepare(random_frames(4, seed=1))
    assert pruned.tokens.shape[0] == pruned.tokens_count["to_llm"] == budget
    assert sum(len(f["kept"]) for f in pruned.frames) == budget - 1
    torch.testing.assert_close(pruned.tokens[-1], qa.llm.model.model.image_newline, rtol=0, atol=0)


def test_token_plan_reserves_the_newline(onevision_ckpt):
    from vidprune.pipeline.stages import plan_tokens
    from vidprune.video_models.base import inspect_checkpoint

    geometry = inspect_checkpoint(onevision_ckpt).geometry  # from the config alone, no weights
    plan = plan_tokens(geometry, 32, 1568)
    assert (plan.full, plan.max_to_llm) == (32 * 196 + 1, 1568)
    assert plan_tokens(geometry, 32, None).max_to_llm == 32 * 196 + 1
    with pytest.raises(ConfigError, match="the 1 newline token kept once per video"):
        plan_tokens(geometry, 4, 0)


def test_report_flops_use_the_siglip_tower_and_the_qwen2_llm(onevision_ckpt, sample_video):
    from vidprune.flops import layer_flops, llm_flops

    qa = VideoQA.from_pretrained(onevision_ckpt, budget=100, frames=4)
    r = qa.ask(sample_video, "What is moving?", max_new_tokens=4).report
    vc, tc = qa.llm.config.vision_config, qa.llm.config.text_config
    layers_run = qa.llm.config.vision_feature_layer % (vc.num_hidden_layers + 1)
    assert r["flops"]["vision_tower"] == 4 * layers_run * layer_flops(729, vc.hidden_size, vc.intermediate_size, 2)
    assert r["flops"]["llm_prefill_full"] == llm_flops(tc, r["tokens"]["text"] + 4 * 196 + 1)
    assert r["tokens"]["full"] == 4 * 196 + 1 and r["tokens"]["to_llm"] <= 100
    assert r["family"] == "llava_onevision"
    assert math.isclose(r["flops"]["llm_ratio"], r["flops"]["llm_prefill_pruned"] / r["flops"]["llm_prefill_full"],
                        abs_tol=1e-6)
