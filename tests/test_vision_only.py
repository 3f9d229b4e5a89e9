"""An encoder replica's model: the vision side alone, the LLM never materialized (``from_pretrained(vision_only=True)``).

For every family: the bytes it holds are exactly those of the family's vision modules in a full
load (tower + projector; Video-LLaVA's image tower, the LLM and the LM head not at all), and its
``encode`` gives the full model's features, scores and rows bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from vidprune.video_models import load_video_llm
from vidprune.video_models.vision_only import materialized_bytes

FAMILIES = ["video_llava", "llava_next_video", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"]


def _bytes_of(model: torch.nn.Module, names: tuple[str, ...]) -> int:
    total = 0
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if any(name == n or name.startswith(n + ".") for n in names):
            total += tensor.numel() * tensor.element_size()
    return total


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_only_holds_the_tower_and_projector_only_and_encodes_the_same(tiny_checkpoints, random_frames, family):
    ckpt = tiny_checkpoints[family]
    full = load_video_llm(ckpt)
    vision = load_video_llm(ckpt, vision_only=True)
    held = materialized_bytes(vision.model)
    modules = type(full).vision_modules
    assert sum(held.values()) == _bytes_of(full.model, modules) > 0
    assert set(held) == {".".join(m.split(".")[:2]) for m in modules if _bytes_of(full.model, (m,))}
    llm_params = list(vision.language_model.parameters()) + list(vision.model.lm_head.parameters())
    assert llm_params and all(p.device.type == "meta" for p in llm_params)  # never materialized
    if family == "video_llava":
        assert all(p.device.type == "meta" for p in vision.model.model.image_tower.parameters())

    frames = random_frames(4, seed=3)
    pixels = full.preprocess(frames, [i / 4 for i in range(4)])
    want, got = full.encode(pixels), vision.encode(pixels)
    for name in ("features", "cls_attn", "tokens", "extra", "video_extra"):
        a, b = getattr(want, name, None), getattr(got, name, None)
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.equal(a, b), name
    rows = want.features[0, :5]
    assert torch.equal(full.project(rows), vision.project(rows))
