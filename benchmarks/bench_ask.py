"""Benchmark: end-to-end ``ask`` with pruning against the stock model, next to the FLOPs-ideal speedup.

    python benchmarks/bench_ask.py                               # print the table (both families)
    python benchmarks/bench_ask.py --write docs/performance.md   # and put it into the docs
    python benchmarks/bench_ask.py --device cuda --layers 32     # the same on a GPU
    python benchmarks/bench_ask.py --families video_llava --budgets 227   # one family, one budget

Each family's checkpoint has the real 7B shapes where the time goes: the ViT-L/14 tower (24
layers, 1024 wide; features from layer -2, so 23 layers run) at the family's resolution
(Video-LLaVA 224 px, LLaVA-NeXT-Video 336 px) and ``--layers`` decoder layers of Vicuna-7B
(d=4096, MLP 11008, 32 heads), random bf16 weights (speed does not depend on the values), the
project's tiny tokenizer. It is saved and loaded with ``VideoQA.from_pretrained`` like any
checkpoint. One clip of the family's default frame count (Video-LLaVA 8, LLaVA-NeXT-Video 32;
a frame array, so decoding is not in the figure) is asked one question, interleaved over
``--rounds`` rounds, unpruned (``budget=None, dedup=False``: the stock model's 2056 or 4608
tokens) and at each budget (default: the family's shipped presets, ``seven_b.PRESETS``).

Reported per family and budget, from the fastest round of each variant: the speedup of the
whole ``ask`` (encode + select + generate) over the same family unpruned, the FLOPs-ideal
speedup (tower + LLM prefill FLOPs, ``vidprune.flops``; the tower runs in full either way),
their quotient, and each stage's share of the pruned ``ask``. Selection (VisPruner + dedup) is
also given as a share of the tower's time. The families run one after the other, each with its
variants interleaved, so ratios compare variants of one family in one stretch of the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidprune import VideoQA
from vidprune.config import load_preset
from machine import describe  # benchmarks/machine.py
from seven_b import PRESETS, build_checkpoint, write_into  # benchmarks/seven_b.py

QUESTION = "What is the man holding in his left hand?"
NAMES = {"video_llava": "Video-LLaVA", "llava_next_video": "LLaVA-NeXT-Video"}


def _timed_ask(qa: VideoQA, frames: np.ndarray, device: str) -> tuple[float, dict[str, float], dict]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    answer = qa.ask(frames, QUESTION)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return total, dict(answer.report["timings_s"]), answer.report


def run_family(family: str, num_layers: int, budgets: list[int] | None, max_new_tokens: int, rounds: int,
               device: str) -> tuple[list[str], str, str]:
    """The family's table rows, its setup (frames, resolution) and its unpruned ``ask`` time, as text."""
    budgets = budgets or [int(load_preset(name)["budget"]) for name in PRESETS[family]]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(family, Path(tmp), num_layers, vit_l=True)
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
        llm, num_frames = full.llm, full.config.frames
    best = {name: min(r, key=lambda x: x[0]) for name, r in runs.items()}
    t_full = best["unpruned"][0]
    rows = []
    for name, (t, timings, rep) in best.items():
        f = rep["flops"]  # the tower runs in full either way; the LLM prefill shrinks
        speed = t_full / t
        ideal = (f["vision_tower"] + f["llm_prefill_full"]) / (f["vision_tower"] + f["llm_prefill_pruned"])
        parts = [timings.get(k, 0.0) for k in ("encode", "select", "generate")]
        shares = " · ".join(f"{p / t:.2f}" for p in parts)
        sel = parts[1] / parts[0] if parts[0] else float("nan")
        rows.append(f"| {family} | {name} | {rep['tokens']['to_llm']} | {speed:.2f}x | {ideal:.2f}x | "
                    f"{speed / ideal:.2f} | {shares} | {sel:.3f} |")
    vision = llm.config.vision_config
    setup = f"{NAMES.get(family, family)} {num_frames} frames at {vision.image_size} px"
    timing = f"{NAMES.get(family, family)} {t_full:.2f} s" if device == "cpu" else f"{NAMES.get(family, family)} {t_full:.3f} s"
    return rows, setup, timing


def run(num_layers: int, families: list[str], budgets: list[int] | None, max_new_tokens: int, rounds: int,
        device: str) -> str:
    rows, setups, timings = [], [], []
    for family in families:
        family_rows, setup, timing = run_family(family, num_layers, budgets, max_new_tokens, rounds, device)
        rows += family_rows
        setups.append(setup)
        timings.append(timing)
    where = describe(device)
    lines = [
        f"Setup: each family at 7B shapes where the time goes: ViT-L/14 tower (23 of 24 layers run; "
        f"{', '.join(setups)}), {num_layers} Vicuna-7B decoder layers (d=4096, MLP 11008), bf16 on {where}, one "
        f"question, {max_new_tokens} new tokens, frames given as an array (no decoding); fastest of {rounds} "
        "interleaved rounds per variant, ratios to the same family unpruned. "
        "FLOPs-ideal: (tower + LLM prefill FLOPs, from the report; the tower's for the 23 layers that run) "
        "unpruned / pruned.",
        "",
        "| family | variant | visual tokens | `ask` speedup | FLOPs-ideal speedup | speedup / ideal | encode · select · generate (share of `ask`) | select / encode |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if device == "cpu":
        lines += ["", f"(Unpruned `ask` took {'; '.join(timings)} here; shared machine, not comparable across runs.)"]
    else:
        lines += ["", f"Unpruned `ask` on {device}: {'; '.join(timings)}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (the real models have 32)")
    parser.add_argument("--families", default="video_llava,llava_next_video",
                        help=f"comma-separated, of: {', '.join(PRESETS)}")
    parser.add_argument("--budgets", help="comma-separated token budgets for every family "
                                          "(default: each family's shipped presets)")
    parser.add_argument("--max-new-tokens", type=int, default=1, help="1: the prefill is what is compared")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", type=Path, help="markdown file to write the table into (between markers)")
    args = parser.parse_args()
    families = args.families.split(",")
    unknown = sorted(set(families) - set(PRESETS))
    if unknown:
        parser.error(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                     f"choose from {', '.join(PRESETS)}")
    try:
        budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else None
    except ValueError:
        parser.error(f"--budgets must be comma-separated integers, got {args.budgets!r}")
    table = run(args.layers, families, budgets, args.max_new_tokens, args.rounds, args.device)
    print(table)
    if args.write:
        write_into(args.write, "bench_ask", table)


if __name__ == "__main__":
    main()
