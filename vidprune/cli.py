"""The ``vidprune`` command.

    vidprune ask VIDEO "What is the man holding?" --model llava-hf/LLaVA-NeXT-Video-7B-hf --budget 227
    vidprune ask --demo                      # offline: tiny random-weight model + generated video
    vidprune make-tiny-checkpoint DIR --family video_llava
    vidprune pruners
    vidprune presets                         # the shipped presets, by name, with a line each
    vidprune presets video_llava_227 > mine.yaml   # a preset's YAML, to start your own
    vidprune --version

User mistakes print one line on stderr (no traceback): exit code 2 for bad options or a
bad model, 1 for an unreadable video.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .config import add_option_flags, options_from_args
from .errors import ConfigError, VidpruneError

__all__ = ["main", "build_parser", "add_pipeline_options", "options_from_args", "check_video_path"]

DEMO_QUESTION = "What is moving in this video?"

# Modules that add a subcommand: each has ``add_command(subparsers)``, which registers a
# parser whose ``func`` default is the function to run with the parsed args.
_COMMAND_MODULES: list[str] = ["vidprune.demo.command", "vidprune.eval.cli", "vidprune.jobs.command"]


def add_pipeline_options(p: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """Model, frame, pruning, IVTP and generation flags, generated from the option declarations
    in :mod:`vidprune.config` (one flag per :class:`~vidprune.config.VidpruneConfig` field)."""
    add_option_flags(p, exclude=exclude)


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` unwrapped (argparse's own action re-wraps it) and exit."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidprune", description="Visual token pruning for video LLMs.")
    parser.add_argument("--version", action=_VersionAction, help="print the versions of vidprune and its core libraries")
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
    presets = sub.add_parser("presets", help="list the shipped YAML presets, or print one",
                             description="List the presets that ship with vidprune (`--config NAME` takes the name), "
                                         "or print one preset's YAML to start your own file from.")
    presets.add_argument("name", nargs="?", help="print this preset's YAML")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).add_command(sub)
    return parser


def _cmd_ask(args: argparse.Namespace) -> int:
    from .qa import VideoQA, check_question, summarize

    opts = options_from_args(args)
    if args.demo:
        from .presets import load_preset
        from .samples import ensure_sample_video
        from .video_models.tiny import ensure_tiny_checkpoint

        if args.video and not args.question:  # `vidprune ask --demo "question"`
            args.question, args.video = args.video, None
        preset = load_preset(args.config) if args.config else {}  # a bad preset fails before the model is built
        print("demo: a tiny random-weight model; it runs the whole pipeline offline but ANSWERS NONSENSE.",
              file=sys.stderr)
        opts.setdefault("model", str(ensure_tiny_checkpoint(args.demo_family)))  # over a preset's hub id: offline
        if "budget" not in preset:  # the demo's defaults yield to the preset's values (and flags to both)
            opts.setdefault("budget", _demo_budget(args.demo_family, opts["model"]))
        if "max_new_tokens" not in preset:
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
    from .video_models.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(checkpoint)
    if info.geometry.dynamic:  # the count depends on the video's size: a quarter of the sample video's 1120
        return 280
    return max(info.geometry.reserved(info.family.default_num_frames) + 1,
               info.geometry.stock_tokens(info.family.default_num_frames) // 10)


def check_video_path(video: str) -> None:
    """Fail fast (before any model loads) on a video path that cannot be a readable file."""
    from .errors import VideoDecodeError
    from .pipeline.decode.byte_source import check_source, is_remote

    if is_remote(video):  # s3://, gs://, https://: reachable, a file, its size known (one line otherwise)
        check_source(video)
        return
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


def _cmd_presets(args: argparse.Namespace) -> int:
    from .presets import PRESET_KINDS, get_preset, list_presets

    if args.name:
        sys.stdout.write(get_preset(args.name).text())
        return 0
    presets = list_presets()
    width = max(len(p.name) for p in presets)
    for kind, users in PRESET_KINDS.items():
        print(f"{kind} presets ({users}):")
        for p in (p for p in presets if p.kind == kind):
            print(f"  {p.name:<{width}}  {p.description}")
    print("`vidprune presets NAME` prints one; --config also takes a path to your own YAML file.")
    return 0


def version_text() -> str:
    """``vidprune X.Y.Z`` and the versions of the libraries that decide its behaviour (no imports)."""
    import platform
    from importlib import metadata

    from . import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    libs = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "av", "ray"))
    return f"vidprune {__version__} (Python {platform.python_version()}; {libs})"


_COMMANDS = {"ask": _cmd_ask, "make-tiny-checkpoint": _cmd_make_tiny, "pruners": _cmd_pruners,
             "presets": _cmd_presets}


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
