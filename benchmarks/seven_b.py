"""Checkpoints at the real 7B shapes with random weights, and the docs writer, shared by the benchmarks.

Speed does not depend on the weights' values, so the benchmarks widen the project's tiny
checkpoints (``vidprune.video_models.tiny``: its tokenizer, processor and chat template) to the
shapes of the released models, fill the weights with cheap finite values, save the result and
load it with ``VideoQA.from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidprune.video_models.tiny import ensure_tiny_checkpoint

# Vicuna-7B, the LLM of Video-LLaVA-7B and LLaVA-NeXT-Video-7B
VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, head_dim=128)
# the shipped presets of each family, largest budget first (their budgets are the benchmarks' variants)
PRESETS = {"video_llava": ("video_llava_455", "video_llava_227", "video_llava_114"),
           "llava_next_video": ("llava_next_video_1024", "llava_next_video_512", "llava_next_video_256")}
# CLIP ViT-L/14, the tower of both (224 px for Video-LLaVA, 336 px for LLaVA-NeXT-Video)
VIT_L_14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                projection_dim=768)


def build_checkpoint(family: str, out: Path, num_layers: int, *, vit_l: bool = False) -> Path:
    """The tiny ``family`` checkpoint with ``num_layers`` Vicuna-7B decoder layers (and the ViT-L/14 tower
    with ``vit_l``), random bf16 weights, saved in ``out``."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    cache = os.environ.get("VIDPRUNE_BENCH_CHECKPOINTS")
    if cache:  # built once, reused by every benchmark of a run (benchmarks/run_all.py, gpu_check.sh)
        out = Path(cache) / f"{family}-{num_layers}layers{'-vitl' if vit_l else ''}"
        if (out / "vidprune_tiny.json").exists():
            return out
    tiny = ensure_tiny_checkpoint(family)
    config = AutoConfig.from_pretrained(tiny)
    config.text_config.update({**VICUNA_7B, "num_hidden_layers": num_layers})
    if vit_l:
        config.vision_config.update(VIT_L_14)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # cheap, finite values (uninitialised memory may hold denormals / NaN)
            p.uniform_(-0.02, 0.02, generator=gen)
        for module in model.modules():  # norms as initialised: scales of ±0.02 make every frame's tower
            if _is_norm(module):        # features alike, and dedup would then drop whole frames
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny).save_pretrained(out)
    (out / "vidprune_tiny.json").write_text((Path(tiny) / "vidprune_tiny.json").read_text())
    return out


def _is_norm(module: torch.nn.Module) -> bool:
    """LayerNorm (CLIP, the projectors) or an RMSNorm (Llama's ``LlamaRMSNorm`` and its kin)."""
    return isinstance(module, torch.nn.LayerNorm) or (type(module).__name__.endswith("RMSNorm")
                                                       and isinstance(getattr(module, "weight", None), torch.Tensor))


def write_into(doc: Path, name: str, table: str) -> None:
    """Put ``table`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``doc`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    doc.write_text(text)
