"""The ``vidprune`` command.

    vidprune ask VIDEO "What is the man holding?" --model llava-hf/LLaVA-NeXT-Video-7B-hf --budget 227
    vidprune ask --demo                      # offline: tiny random-weight model + generated video
    vidprune make-tiny-checkpoint DIR --family video_llava
    vidprune pruners

User mistakes print one line on stderr (no traceback): exit code 2 for bad options or a
bad model, 1 for an unreadable video.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from .errors import ConfigError, VidpruneError

__all__ = ["main", "build_parser", "add_pipeline_options", "options_from_args", "check_video_path"]

DEMO_QUESTION = "What is moving in this video?"

# Modules that add a subcommand: each has ``add_command(subparsers)``, which registers a
# parser whose ``func`` default is the function to run with the parsed args.
_COMMAND_MODULES: list[str] = ["vidprune.demo.command", "vidprune.eval.cli", "vidprune.pipeline.jobs"]


def _budget(value: str) -> int | str:
    if value.lower() in ("none", "off", "full"):
        return "none"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be an integer or 'none', got {value!r}") from None


def _ivtp_schedule(value: str) -> list[list[float]]:
    try:
        return [[int(k), float(r)] for k, r in (pair.split(":") for pair in value.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ivtp schedule must look like '2:0.5,8:0.5', got {value!r}") from None


def _ivtp_fusion(value: str) -> str | list[float]:
    if value in ("none", "mean"):
        return value
    try:
        return [float(w) for w in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ivtp fusion must be none, mean or comma-separated weights, got {value!r}") from None


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """Model, frame, pruning and generation flags shared by ``ask`` and the batch commands."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="hub id or checkpoint directory (Video-LLaVA, LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2.5-VL)")
    g.add_argument("--config", help="YAML preset (file path, or a name in configs/); flags override it")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cpu)")
    g.add_argument("--dtype", help="float32, float16 or bfloat16 (default: float32 on CPU)")
    g = p.add_argument_group("frames")
    g.add_argument("--frames", type=int, help="sample N frames uniformly (default: the family's, see docs/models.md; even for Qwen2.5-VL)")
    g.add_argument("--fps", type=float, help="sample at F frames per second instead (cap with --max-frames)")
    g.add_argument("--max-frames", type=int)
    g.add_argument("--decode-backend", choices=["pyav", "decord"])
    g.add_argument("--encoder-batch-size", type=int, help="frames per vision-tower call (default: all)")
    g = p.add_argument_group("pruning")
    g.add_argument("--budget", type=_budget, help="total visual tokens handed to the LLM per video, or 'none'")
    g.add_argument("--pruner", help="per-frame pruner (see `vidprune pruners`; default vispruner)")
    g.add_argument("--important-ratio", type=float, help="VisPruner's share of important tokens (default 0.5)")
    g.add_argument("--dedup", dest="dedup", action="store_true", default=None, help="cross-frame dedup on (default)")
    g.add_argument("--no-dedup", dest="dedup", action="store_false", help="cross-frame dedup off")
    g.add_argument("--dedup-threshold", type=float, help="cosine similarity at which a token is a duplicate (0.9)")
    g.add_argument("--dedup-reference", choices=["kept", "previous", "kept_any"])
    g.add_argument("--dedup-window", type=int, help="frames back that dedup compares with (default: all)")
    g.add_argument("--drop-cls", dest="keep_cls", action="store_false", default=None,
                   help="Video-LLaVA: do not hand on each frame's [CLS] token")
    g.add_argument("--prune-unpooled", dest="prune_pooled", action="store_false", default=None,
                   help="LLaVA-NeXT-Video: prune the 576 unpooled tokens instead of the 144 pooled ones")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("IVTP (pruning inside the LLM, conditioned on the question; off by default)")
    g.add_argument("--ivtp-layer", type=int, help="k: score after layer k-1, run layers >= k on the kept tokens")
    g.add_argument("--ivtp-keep", type=float, help="share of visual tokens kept at layer k, in (0, 1]")
    g.add_argument("--ivtp-schedule", type=_ivtp_schedule,
                   help="progressive pruning instead of --ivtp-layer/--ivtp-keep, e.g. '2:0.5,8:0.5'")
    g.add_argument("--ivtp-fusion", type=_ivtp_fusion,
                   help="score fusion over layers <= k: 'none' (default), 'mean', or weights '0.5,0,2' for layers 0..k")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--sample", dest="do_sample", action="store_true", default=None, help="sample instead of greedy")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)


_OPTION_KEYS = ("model", "device", "dtype", "frames", "fps", "max_frames", "decode_backend", "encoder_batch_size",
                "budget", "pruner", "important_ratio", "dedup", "dedup_threshold", "dedup_reference", "dedup_window",
                "keep_cls", "prune_pooled", "seed", "ivtp_layer", "ivtp_keep", "ivtp_schedule", "ivtp_fusion",
                "max_new_tokens", "do_sample", "temperature", "top_p")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as VidpruneConfig overrides (flags not given are left out)."""
    opts = {k: getattr(args, k) for k in _OPTION_KEYS if getattr(args, k, None) is not None}
    if opts.get("budget") == "none":
        opts["budget"] = None
    return opts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidprune", description="Visual token pruning for video LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question about a video", description="Answer a question about a video.")
    ask.add_argument("video", nargs="?", help="video file")
    ask.add_argument("question", nargs="?", help="the question")
    ask.add_argument("--json", action="store_true", help="print the whole report as JSON")
    ask.add_argument("--demo", action="store_true",
                     help="run offline on a tiny random-weight model and a generated video (answers are nonsense)")
    from .video_models.tiny import TINY_FAMILIES  # the families vidprune can build offline (the adapter registry's)

    ask.add_argument("--demo-family", choices=TINY_FAMILIES, default="video_llava")
    add_pipeline_options(ask)

    tiny = sub.add_parser("make-tiny-checkpoint", help="save a small random-weight checkpoint (for tests and demos)")
    tiny.add_argument("out", help="directory to write")
    tiny.add_argument("--family", choices=TINY_FAMILIES, required=True)
    tiny.add_argument("--seed", type=int, default=0)

    sub.add_parser("pruners", help="list the registered per-frame pruners")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).add_command(sub)
    return parser


def _cmd_ask(args: argparse.Namespace) -> int:
    from .qa import VideoQA, check_question, summarize

    opts = options_from_args(args)
    if args.demo:
        from .samples import ensure_sample_video
        from .video_models.tiny import ensure_tiny_checkpoint

        if args.video and not args.question:  # `vidprune ask --demo "question"`
            args.question, args.video = args.video, None
        print("demo: a tiny random-weight model; it runs the whole pipeline offline but ANSWERS NONSENSE.",
              file=sys.stderr)
        opts.setdefault("model", str(ensure_tiny_checkpoint(args.demo_family)))
        opts.setdefault("budget", _demo_budget(args.demo_family, opts["model"]))
        opts.setdefault("max_new_tokens", 16)
        video = args.video or str(ensure_sample_video())
        question = args.question or DEMO_QUESTION
    else:
        if not args.video or not args.question:
            raise ConfigError("give a VIDEO and a QUESTION (or --demo to try it offline)")
        video, question = args.video, args.question
    check_question(question)
    check_video_path(video)
    qa = VideoQA.from_pretrained(config=args.config, **opts)
    answer = qa.ask(video, question)
    if args.json:
        print(json.dumps(answer.report, indent=2))
    else:
        print(answer.text)
        print(summarize(answer.report), file=sys.stderr)
    return 0


# The demo's budget: about 5-10 % of what the stock model feeds its LLM (Video-LLaVA's 114 of 2056, the
# smallest budget of its paper; LLaVA-NeXT-Video's 256 of 4608); other families get a tenth of their stock count.
_DEMO_BUDGETS = {"video_llava": 114, "llava_next_video": 256}


def _demo_budget(family: str, checkpoint: str) -> int:
    if family in _DEMO_BUDGETS:
        return _DEMO_BUDGETS[family]
    from .video_models.base import inspect_checkpoint

    info = inspect_checkpoint(checkpoint)
    if info.geometry.dynamic:  # the count depends on the video's size: a quarter of the sample video's 1120
        return 280
    return max(info.geometry.reserved(info.family.default_num_frames) + 1,
               info.geometry.stock_tokens(info.family.default_num_frames) // 10)


def check_video_path(video: str) -> None:
    """Fail fast (before any model loads) on a video path that cannot be a readable file."""
    from .errors import VideoDecodeError

    if not os.path.exists(video):
        raise VideoDecodeError(f"cannot decode video {video!r}: the file does not exist; check the path")
    if os.path.isdir(video):
        raise VideoDecodeError(f"cannot decode video {video!r}: it is a directory; pass a video file")


def _quiet_libraries() -> None:
    """Keep library chatter (backend fallbacks, deprecations) out of the CLI's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from .video_models.tiny import build_tiny_checkpoint

    path = build_tiny_checkpoint(args.family, args.out, seed=args.seed)
    print(f"saved a tiny random-weight {args.family} checkpoint to {path} (answers are nonsense)")
    return 0


def _cmd_pruners(args: argparse.Namespace) -> int:
    from .pruners import list_pruners

    print("\n".join(list_pruners()))
    return 0


_COMMANDS = {"ask": _cmd_ask, "make-tiny-checkpoint": _cmd_make_tiny, "pruners": _cmd_pruners}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None) or _COMMANDS[args.command]
    try:
        _quiet_libraries()
        return func(args)
    except VidpruneError as exc:
        print(f"vidprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vidprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
