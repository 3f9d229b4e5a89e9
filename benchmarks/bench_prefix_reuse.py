"""Benchmark: questions per second with one and several questions per video, with and without prefix reuse.

    python benchmarks/bench_prefix_reuse.py                               # print the table
    python benchmarks/bench_prefix_reuse.py --write docs/performance.md   # and put it into the docs
    python benchmarks/bench_prefix_reuse.py --device cuda --layers 32     # the same on a GPU

A Video-LLaVA checkpoint is built with Vicuna-7B's LLM shapes (d=4096, MLP 11008, 32 heads),
``--layers`` decoder layers and random bf16 weights (speed does not depend on the values), the
tiny CLIP tower (the tower is not what is measured here) and the project's tiny tokenizer; it
is saved and loaded through ``VideoQA.from_pretrained`` like any checkpoint. One video is
pruned to ``--budget`` tokens once; then, interleaved over ``--rounds`` rounds:

* ``1 question``: ``answer(pruned, [q])`` (nothing to share);
* ``N questions, each prefilled whole``: ``answer(pruned, questions)`` with ``reuse_prefix=False``
  (one left-padded batch, the video prefilled N times);
* ``N questions, prefix reused``: the same call with reuse on (the video prefilled once);
* the same two with IVTP at ``--ivtp-layer`` k keeping ``--ivtp-keep``: each question prefilled
  whole, and the prefix run once through the layers below k (layers ≥ k run per question on its
  kept tokens). ``--ivtp-layer 0`` leaves these rows out.

The generated ids of each pair of N-question variants are checked equal. Figures are the fastest
round of each variant, as questions per second and as ratios to the 1-question rate in the same
run (the machines here are shared; absolute seconds are only worth quoting from a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidprune import VideoQA
from machine import describe  # benchmarks/machine.py
from seven_b import build_checkpoint, write_into  # benchmarks/seven_b.py

QUESTIONS = ["What is the man holding in his left hand?", "What colour is the car that drives past?",
             "How many people are in the room at the end?", "Is it raining outside the window?",
             "What does the woman do after she opens the door?", "Where does the dog run to?",
             "What is written on the sign?", "Which hand holds the cup?"]


def run(num_layers: int, budget: int, num_questions: int, max_new_tokens: int, rounds: int, device: str,
        ivtp_layer: int = 1, ivtp_keep: float = 0.5) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint("video_llava", Path(tmp), num_layers)
        qa = VideoQA.from_pretrained(str(ckpt), budget=budget, dtype="bfloat16", device=device,
                                     max_new_tokens=max_new_tokens)
        frames = np.random.default_rng(0).integers(0, 256, (qa.config.frames, 240, 320, 3), dtype=np.uint8)
        pruned = qa.prepare(frames)
        no_reuse = VideoQA(qa.llm, qa.config.replace(reuse_prefix=False), qa.checkpoint_info)
        questions = QUESTIONS[:num_questions]
        variants = {
            "1 question": (qa, questions[:1]),
            f"{num_questions} questions, each prefilled whole": (no_reuse, questions),
            f"{num_questions} questions, prefix reused": (qa, questions),
        }
        pairs = [(f"{num_questions} questions, each prefilled whole", f"{num_questions} questions, prefix reused")]
        if ivtp_layer:
            ivtp = dataclasses.replace(qa.config, ivtp_layer=ivtp_layer, ivtp_keep=ivtp_keep)
            arm = f"IVTP k={ivtp_layer} keep {ivtp_keep:g}"
            variants[f"{num_questions} questions, {arm}, each prefilled whole"] = (
                VideoQA(qa.llm, dataclasses.replace(ivtp, reuse_prefix=False), qa.checkpoint_info), questions)
            variants[f"{num_questions} questions, {arm}, prefix reused below k"] = (
                VideoQA(qa.llm, ivtp, qa.checkpoint_info), questions)
            pairs.append(tuple(list(variants)[-2:]))
        times: dict[str, list[float]] = {name: [] for name in variants}
        ids: dict[str, list[list[int]]] = {}
        for name, (runner, qs) in variants.items():  # warm-up
            ids[name] = [a.token_ids for a in runner.answer(pruned, qs)]
        names = list(variants)
        for whole, reused in pairs:
            if ids[whole] != ids[reused]:
                raise SystemExit(f"prefix reuse changed the generated ids ({reused})")
        for _ in range(rounds):
            for name, (runner, qs) in variants.items():  # interleaved: load changes hit every variant alike
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                runner.answer(pruned, qs)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
        prompt = qa.answer_stage.process_batch([(pruned, q) for q in questions])
        prefix = prompt[0]["prefix_tokens"]
        lengths = [o["prompt_tokens"] for o in prompt]

    base_rate = 1 / min(times[names[0]])
    where = f"{describe(device)}, absolute rates not comparable across runs" if device == "cpu" else describe(device)
    lines = [
        f"Setup: Video-LLaVA with Vicuna-7B LLM shapes (d=4096, MLP 11008, 32 heads), {num_layers} decoder layers, "
        f"bf16 on {where}; budget {budget} ({pruned.tokens_count['to_llm']} visual tokens), prompts of "
        f"{min(lengths)}-{max(lengths)} tokens of which {prefix} are shared, {max_new_tokens} new tokens per answer; "
        f"fastest of {rounds} interleaved rounds per variant. Each pair of {num_questions}-question variants "
        "(prefilled whole / reused) generates identical ids"
        + (f"; with IVTP the prefix is run once through the {ivtp_layer} of {num_layers} layers below k."
           if ivtp_layer else "."),
        "",
        "| variant | questions / s (ratio to 1 question) |",
        "|---|---|",
    ]
    for name in names:
        n = len(variants[name][1])
        rate = n / min(times[name])
        shown = f"{rate:.3g} ({rate / base_rate:.2f})" if device != "cpu" else f"ratio {rate / base_rate:.2f}"
        lines.append(f"| {name} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (the real model has 32)")
    parser.add_argument("--budget", type=int, default=227)
    parser.add_argument("--questions", type=int, default=5, choices=range(2, len(QUESTIONS) + 1))
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ivtp-layer", type=int, default=1, help="k of the IVTP rows (0: no IVTP rows)")
    parser.add_argument("--ivtp-keep", type=float, default=0.5, help="visual tokens IVTP keeps at k")
    parser.add_argument("--write", type=Path, help="markdown file to write the table into (between markers)")
    args = parser.parse_args()
    if args.ivtp_layer and not 0 < args.ivtp_layer < args.layers:
        parser.error(f"--ivtp-layer must be in 1..{args.layers - 1} for {args.layers} layers (0: no IVTP rows)")
    table = run(args.layers, args.budget, args.questions, args.max_new_tokens, args.rounds, args.device,
                args.ivtp_layer, args.ivtp_keep)
    print(table)
    if args.write:
        write_into(args.write, "bench_prefix_reuse", table)


if __name__ == "__main__":
    main()
