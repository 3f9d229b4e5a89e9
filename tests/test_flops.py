"""FLOPs values (method.md §5): a hand-computed small case and the published LLaVA-NeXT-7B figure."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vidprune.flops import layer_flops, llm_flops, stack_flops, vision_tower_flops


def test_one_layer_by_hand():
    # n=3 tokens, d=2, m=5, SwiGLU (3 matrices): 2 * (4*3*2*2 + 2*3*3*2 + 3*3*2*5) = 2 * (48 + 36 + 90)
    assert layer_flops(3, 2, 5) == 348
    # CLIP's GELU MLP (2 matrices): 2 * (48 + 36 + 2*3*2*5) = 288
    assert layer_flops(3, 2, 5, mlp_matrices=2) == 288


def test_layers_with_their_own_token_counts():
    text = SimpleNamespace(num_hidden_layers=3, hidden_size=2, intermediate_size=5)
    assert stack_flops([3, 3, 1], 2, 5) == 348 + 348 + 2 * (4 * 1 * 4 + 2 * 1 * 2 + 3 * 1 * 2 * 5)
    assert llm_flops(text, [3, 3, 1]) == 348 + 348 + 100
    assert llm_flops(text, 3) == 3 * 348
    with pytest.raises(ValueError, match="one token count per layer"):
        llm_flops(text, [3, 3])


def test_vision_tower_counts_patches_and_cls_per_frame():
    # 28 px / patch 14 -> 2x2 patches + [CLS] = 5 tokens; d=2, m=3, GELU MLP
    vision = SimpleNamespace(image_size=28, patch_size=14, hidden_size=2, intermediate_size=3, num_hidden_layers=2)
    per_layer = 2 * (4 * 5 * 4 + 2 * 25 * 2 + 2 * 5 * 2 * 3)  # 480
    assert vision_tower_flops(vision, num_frames=3) == 3 * 2 * per_layer
    assert vision_tower_flops(vision, num_frames=3, layers_run=1) == 3 * per_layer


def test_llava_next_7b_at_2880_visual_tokens_is_about_43_tflops():
    """VisPruner's efficiency table: LLaVA-NeXT-7B (Vicuna-7B: 32 layers, d 4096, MLP 11008) at 2880 tokens."""
    vicuna_7b = SimpleNamespace(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008)
    flops = llm_flops(vicuna_7b, 2880)
    assert flops == 32 * 2 * (4 * 2880 * 4096**2 + 2 * 2880**2 * 4096 + 3 * 2880 * 4096 * 11008)
    assert flops / 1e12 == pytest.approx(43, rel=0.05)  # 41.65 for the visual tokens alone; the prompt adds the rest
