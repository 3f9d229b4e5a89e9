"""Benchmark: end-to-end ``ask`` with pruning against the stock model, next to the FLOPs-ideal speedup.

    python benchmarks/bench_ask.py                               # print the table
    python benchmarks/bench_ask.py --write docs/performance.md   # and put it into the docs
    python benchmarks/bench_ask.py --device cuda --layers 32     # the same on a GPU

A Video-LLaVA checkpoint with the real 7B shapes where the time goes: the ViT-L/14 tower
(24 layers, 1024 wide, 224 px; features from layer -2, so 23 layers run) and ``--layers``
decoder layers of Vicuna-7B (d=4096, MLP 11008, 32 heads), random bf16 weights (speed does not
depend on the values), the project's tiny tokenizer. It is saved and loaded with
``VideoQA.from_pretrained`` like any checkpoint. One 8-frame clip (a frame array, so decoding is
not in the figure) is asked one question, interleaved over ``--rounds`` rounds, unpruned
(``budget=None, dedup=False``: the stock model's 2056 tokens) and at each ``--budgets``.

Reported per budget, from the fastest round of each variant: the speedup of the whole ``ask``
(encode + select + generate) over unpruned, the FLOPs-ideal speedup (tower + LLM prefill FLOPs,
``vidprune.flops``; the tower runs in full either way), their quotient, and each stage's share
of the pruned ``ask``. Selection (VisPruner + dedup) is also given as a share of the tower's time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidprune import VideoQA
from seven_b import build_checkpoint, write_into  # benchmarks/seven_b.py

QUESTION = "What is the man holding in his left hand?"


def _timed_ask(qa: VideoQA, frames: np.ndarray, device: str) -> tuple[float, dict[str, float], dict]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    answer = qa.ask(frames, QUESTION)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return total, dict(answer.report["timings_s"]), answer.report


def run(num_layers: int, budgets: list[int], max_new_tokens: int, rounds: int, device: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint("video_llava", Path(tmp), num_layers, vit_l=True)
        common = dict(dtype="bfloat16", device=device, max_new_tokens=max_new_tokens)
        full = VideoQA.from_pretrained(str(ckpt), budget=None, dedup=False, **common)
        variants = {"unpruned": full}
        for b in budgets:
            variants[f"budget {b}"] = VideoQA(full.llm, full.config.replace(budget=b, dedup=True), full.checkpoint_info)
        frames = np.random.default_rng(0).integers(0, 256, (full.config.frames, 240, 320, 3), dtype=np.uint8)
        runs: dict[str, list[tuple[float, dict[str, float], dict]]] = {name: [] for name in variants}
        for qa in variants.values():  # warm-up
            qa.ask(frames, QUESTION)
        for _ in range(rounds):
            for name, qa in variants.items():  # interleaved: load changes hit every variant alike
                runs[name].append(_timed_ask(qa, frames, device))
        llm = full.llm
    best = {name: min(r, key=lambda x: x[0]) for name, r in runs.items()}
    vision = llm.config.vision_config
    layers_run = vision.num_hidden_layers + 1 + llm.config.vision_feature_layer  # -2: 23 of 24 layers
    t_full = best["unpruned"][0]
    where = "CPU (2 cores)" if device == "cpu" else device
    lines = [
        f"Setup: Video-LLaVA at 7B shapes where the time goes: ViT-L/14 tower ({layers_run} of 24 layers run, "
        f"8 frames at 224 px), {num_layers} Vicuna-7B decoder layers (d=4096, MLP 11008), bf16 on {where}, one "
        f"question, {max_new_tokens} new tokens, frames given as an array (no decoding); fastest of {rounds} "
        "interleaved rounds per variant. FLOPs-ideal: (tower + LLM prefill FLOPs, from the report) unpruned / pruned.",
        "",
        "| variant | visual tokens | `ask` speedup | FLOPs-ideal speedup | speedup / ideal | encode · select · generate (share of `ask`) | select / encode |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (t, timings, rep) in best.items():
        f = rep["flops"]  # the tower runs in full either way; the LLM prefill shrinks
        speed = t_full / t
        ideal = (f["vision_tower"] + f["llm_prefill_full"]) / (f["vision_tower"] + f["llm_prefill_pruned"])
        parts = [timings.get(k, 0.0) for k in ("encode", "select", "generate")]
        shares = " · ".join(f"{p / t:.2f}" for p in parts)
        sel = parts[1] / parts[0] if parts[0] else float("nan")
        lines.append(f"| {name} | {rep['tokens']['to_llm']} | {speed:.2f}x | {ideal:.2f}x | {speed / ideal:.2f} | "
                     f"{shares} | {sel:.3f} |")
    if device == "cpu":
        lines += ["", f"(Unpruned `ask` took {t_full:.2f} s here; shared machine, not comparable across runs.)"]
    else:
        lines += ["", f"Unpruned `ask`: {t_full:.3f} s on {device}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (the real model has 32)")
    parser.add_argument("--budgets", default="455,227,114")
    parser.add_argument("--max-new-tokens", type=int, default=1, help="1: the prefill is what is compared")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", type=Path, help="markdown file to write the table into (between markers)")
    args = parser.parse_args()
    table = run(args.layers, [int(b) for b in args.budgets.split(",")], args.max_new_tokens, args.rounds, args.device)
    print(table)
    if args.write:
        write_into(args.write, "bench_ask", table)


if __name__ == "__main__":
    main()
