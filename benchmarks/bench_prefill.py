"""Benchmark: LLM prefill time vs FLOPs at each preset budget, for Video-LLaVA and LLaVA-NeXT-Video.

    python benchmarks/bench_prefill.py                               # print the table
    python benchmarks/bench_prefill.py --write docs/performance.md   # and put it into the docs
    python benchmarks/bench_prefill.py --device cuda --layers 32     # the same on a GPU

Each family's checkpoint has ``--layers`` Vicuna-7B decoder layers (d=4096, MLP 11008, 32
heads) and random bf16 weights (``seven_b.py``), loaded with ``VideoQA.from_pretrained``. The
prompt is the checkpoint's chat template with one question; the visual rows (random, in the
LLM's width) are handed to ``VideoLLM.generate`` exactly as pruned tokens are, as many as the
stock model feeds (Video-LLaVA 8 x 257 = 2056, LLaVA-NeXT-Video 32 x 144 = 4608) and as many as
each shipped preset's budget. ``generate(max_new_tokens=1)`` is the prefill. Variants run
interleaved over ``--rounds`` rounds; the fastest round of each is compared with the stock
prefill of the same run, next to the FLOPs ratio (``vidprune.flops.llm_flops``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from machine import describe  # benchmarks/machine.py
from seven_b import PRESETS, build_checkpoint, write_into  # benchmarks/seven_b.py
from vidprune import VideoQA
from vidprune.config import load_preset
from vidprune.flops import llm_flops

QUESTION = "What is the man holding in his left hand?"


def _prefill_seconds(llm, prompt: str, visual: torch.Tensor, device: str) -> tuple[float, int]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = llm.generate([prompt], [visual], ivtp=None, max_new_tokens=1, do_sample=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out.prompt_tokens[0]


def run_family(family: str, num_layers: int, rounds: int, device: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(family, Path(tmp), num_layers)
        qa = VideoQA.from_pretrained(str(ckpt), dtype="bfloat16", device=device)
        llm = qa.llm
        full = llm.geometry.full_tokens(qa.config.frames)
        counts = {"stock": full, **{name: int(load_preset(name)["budget"]) for name in PRESETS[family]}}
        width = llm.config.text_config.hidden_size
        gen = torch.Generator().manual_seed(0)
        visual = {k: (torch.randn(n, width, generator=gen) * 0.02).to(llm.device, llm.dtype) for k, n in counts.items()}
        prompt = llm.build_prompt(QUESTION)
        times: dict[str, list[float]] = {k: [] for k in counts}
        lengths: dict[str, int] = {}
        for k in counts:  # warm-up
            lengths[k] = _prefill_seconds(llm, prompt, visual[k], device)[1]
        for _ in range(rounds):
            for k in counts:  # interleaved: load changes hit every variant alike
                times[k].append(_prefill_seconds(llm, prompt, visual[k], device)[0])
        text_cfg = llm.config.text_config
    base_t, base_f = min(times["stock"]), llm_flops(text_cfg, lengths["stock"])
    rows = []
    for k in counts:
        t, f = min(times[k]) / base_t, llm_flops(text_cfg, lengths[k]) / base_f
        absolute = "" if device == "cpu" else f" ({min(times[k]) * 1e3:.0f} ms)"
        rows.append(f"| {family} | {k} | {counts[k]} | {lengths[k]} | {t:.3f}{absolute} | {f:.3f} | {t / f:.2f} |")
    return rows


def run(num_layers: int, rounds: int, device: str, families: list[str]) -> str:
    where = describe(device)
    lines = [
        f"Setup: {num_layers} Vicuna-7B decoder layers (d=4096, MLP 11008, 32 heads), bf16 on {where}, random "
        f"weights; prefill = `VideoLLM.generate(max_new_tokens=1)`; fastest of {rounds} interleaved rounds per "
        "variant, ratios to the stock prefill of the same family in the same run.",
        "",
        "| family | variant | visual tokens | prompt tokens | prefill time (ratio) | FLOPs (ratio) | time / FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in families:
        lines += run_family(family, num_layers, rounds, device)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1, help="decoder layers (the real models have 32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", default="video_llava,llava_next_video")
    parser.add_argument("--write", type=Path, help="markdown file to write the table into (between markers)")
    args = parser.parse_args()
    table = run(args.layers, args.rounds, args.device, args.families.split(","))
    print(table)
    if args.write:
        write_into(args.write, "bench_prefill", table)


if __name__ == "__main__":
    main()
