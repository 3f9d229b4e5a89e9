"""Benchmark: LLM prefill time with and without IVTP, on the real Video-LLaVA-7B LLM shapes.

    python benchmarks/bench_ivtp.py                      # print the table
    python benchmarks/bench_ivtp.py --write docs/ivtp.md # and put it into the docs

The language model has Vicuna-7B's shapes (d=4096, MLP 11008, 32 heads) with random bf16
weights (speed does not depend on the values) and fewer layers than 32 so that it fits a
small machine; the visual tokens are random rows in the LLM's width fed through
``mm_encoder_outputs``, exactly as vidprune feeds pruned tokens. Variants run interleaved in
one process, several rounds, and are reported as ratios of the fastest round of each
variant (the least disturbed estimate on a shared machine) to the no-IVTP prefill — these
machines are shared and noisy, absolute seconds are not comparable across runs.
It also times the IVTP scoring itself (instruction rows of one layer recomputed) against
one decoder layer's forward.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from machine import describe  # benchmarks/machine.py
from seven_b import write_into  # benchmarks/seven_b.py
from vidprune.flops import llm_flops, layer_flops
from vidprune.pruners.ivtp import IVTPSchedule
from vidprune.video_models.ivtp_decoder import IVTPDecoder, layer_instruction_scores



def build_model(num_layers: int, dtype: torch.dtype):
    """Video-LLaVA with Vicuna-7B LLM shapes (``num_layers`` layers) and a tiny vision tower, random weights."""
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=num_layers,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=224, patch_size=14)
    config = VideoLlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, video_token_index=32001)
    with torch.device("meta"):
        model = VideoLlavaForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # cheap, finite values (uninitialised memory may hold denormals / NaN)
            p.uniform_(-0.02, 0.02, generator=gen)
    return model.eval()


def make_inputs(num_visual: int, num_text: int, video_token_id: int, hidden: int, dtype):
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(100, 30000, (1, 5), generator=gen)
    question = torch.randint(100, 30000, (1, num_text - 5), generator=gen)
    input_ids = torch.cat([prefix, torch.full((1, num_visual), video_token_id), question], dim=1)
    visual = (torch.randn(1, num_visual, hidden, generator=gen) * 0.02).to(dtype)
    return input_ids, torch.ones_like(input_ids), visual


@torch.no_grad()
def prefill_seconds(model, input_ids, attention_mask, visual, decoder: IVTPDecoder | None) -> float:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    mm = {"video": BaseModelOutputWithPooling(pooler_output=visual)}
    start = time.perf_counter()
    if decoder is None:
        model(input_ids=input_ids, attention_mask=attention_mask, mm_encoder_outputs=mm, use_cache=True, logits_to_keep=1)
    else:
        with decoder.session(input_ids, attention_mask, model.config.video_token_id):
            model(input_ids=input_ids, attention_mask=attention_mask, mm_encoder_outputs=mm, use_cache=True,
                  logits_to_keep=1)
    return time.perf_counter() - start


def run(num_layers: int, num_visual: int, num_text: int, settings: list[tuple[int, float]], rounds: int) -> str:
    dtype = torch.bfloat16
    torch.manual_seed(0)
    model = build_model(num_layers, dtype)
    lm = model.model.language_model
    input_ids, mask, visual = make_inputs(num_visual, num_text, model.config.video_token_id,
                                          model.config.text_config.hidden_size, dtype)
    seq = input_ids.shape[1]
    variants: list[tuple[str, tuple[int, float] | None]] = [("stock (no IVTP)", None)]
    variants += [(f"IVTP k={k}, keep {r:g}", (k, r)) for k, r in settings]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    prefill_seconds(model, input_ids, mask, visual, None)  # warm-up
    for _ in range(rounds):
        for name, setting in variants:  # interleaved, so that load changes hit every variant alike
            decoder = IVTPDecoder(lm, IVTPSchedule(stages=(setting,))) if setting else None
            try:
                times[name].append(prefill_seconds(model, input_ids, mask, visual, decoder))
            finally:
                if decoder is not None:
                    decoder.remove()
    base = min(times[variants[0][0]])
    text_cfg = model.config.text_config
    full_flops = llm_flops(text_cfg, seq)

    # the cost of scoring: one layer's instruction rows vs one decoder layer forward
    layer = lm.layers[1]
    hidden = torch.randn(1, seq, text_cfg.hidden_size, dtype=dtype) * 0.5
    position_ids = torch.arange(seq)[None]
    pos_emb = lm.rotary_emb(hidden, position_ids=position_ids)
    visual_mask = input_ids == model.config.video_token_id
    valid = torch.ones_like(visual_mask)
    score_t, layer_t = [], []
    with torch.no_grad():
        for _ in range(rounds):
            t0 = time.perf_counter()
            layer_instruction_scores(layer, hidden, pos_emb, visual_mask, valid)
            t1 = time.perf_counter()
            layer(hidden, attention_mask=None, position_embeddings=pos_emb, position_ids=position_ids)
            t2 = time.perf_counter()
            score_t.append(t1 - t0)
            layer_t.append(t2 - t1)

    lines = [
        f"Setup: Vicuna-7B layer shapes (d=4096, MLP 11008, 32 heads), {num_layers} decoder layers, bf16 on {describe()}, "
        f"{num_visual} visual + {num_text} text tokens ({seq} in all"
        f"{'; 2056 = Video-LLaVA' + chr(39) + 's 8 frames x 257' if num_visual == 2056 else ''}), "
        f"fastest of {rounds} interleaved rounds per variant. Ratios are to the stock prefill in the same run.",
        "",
        "| variant | prefill time (ratio) | FLOPs (ratio) | visual tokens from layer k |",
        "|---|---|---|---|",
    ]
    for name, setting in variants:
        t = min(times[name]) / base
        if setting is None:
            f, kept = 1.0, num_visual
        else:
            k, r = setting
            kept = math.ceil(r * num_visual)
            per_layer = [seq] * k + [seq - num_visual + kept] * (num_layers - k)
            f = sum(layer_flops(n, text_cfg.hidden_size, text_cfg.intermediate_size) for n in per_layer) / full_flops
        lines.append(f"| {name} | {t:.3f} | {f:.3f} | {kept} |")
    lines += [
        "",
        f"Scoring cost: recomputing one layer's instruction-row attention ({num_text} text rows x {seq} keys) takes "
        f"{min(score_t) / min(layer_t):.3f} of one decoder layer's forward "
        f"({min(score_t) * 1e3:.1f} ms vs {min(layer_t) * 1e3:.1f} ms here, fastest of {rounds}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="decoder layers (the real model has 32)")
    parser.add_argument("--visual", type=int, default=2056)
    parser.add_argument("--text", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settings", default="2:0.5,2:0.25,4:0.5", help="k:keep pairs")
    parser.add_argument("--write", type=Path, help="markdown file to write the table into (between markers)")
    args = parser.parse_args()
    settings = [(int(k), float(r)) for k, r in (s.split(":") for s in args.settings.split(","))]
    table = run(args.layers, args.visual, args.text, settings, args.rounds)
    print(table)
    if args.write:
        write_into(args.write, "bench_ivtp", table)


if __name__ == "__main__":
    main()
