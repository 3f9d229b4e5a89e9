"""``vidprune eval``: sweep token budgets and pruning methods over video QA benchmarks.

    vidprune eval --benchmark msvd_qa --annotations MSVD/test_q.json --videos MSVD/videos \\
        --model LanguageBind/Video-LLaVA-7B-hf --budgets 2048,455,227,114 --methods vispruner,random,uniform \\
        --judge-url http://localhost:8000/v1 --judge-model gpt-3.5-turbo --out runs/msvd
    vidprune eval --config eval_video_llava_vispruner --data-root /data/GPT_Zero_Shot_QA
    vidprune eval ... --address HEAD:6379                # answer on a Ray cluster (vidprune job machinery)
    vidprune eval --out runs/msvd --report-only          # rebuild the table and plots from samples.jsonl
    vidprune eval --list                                 # benchmarks and methods

Rerunning the same command resumes an interrupted sweep.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..prompts import PROMPT_STYLES

__all__ = ["add_command", "run"]


def add_command(subparsers) -> None:
    """Register ``vidprune eval``."""
    from ..config import add_option_flags as add_pipeline_options

    p = subparsers.add_parser(
        "eval", help="evaluate pruning on video QA benchmarks over a budget sweep",
        description="Run video QA benchmarks under every (method, budget) of a sweep, score them as the papers do, "
                    "and write per-answer JSONL, an aggregate, a paper-style table and plots. Resumable.",
    )
    g = p.add_argument_group("benchmarks")
    g.add_argument("--benchmark", action="append", help="benchmark name (repeat with --annotations/--videos for more)")
    g.add_argument("--annotations", action="append", help="the benchmark's published annotation file")
    g.add_argument("--videos", action="append", help="the folder holding the benchmark's videos")
    g.add_argument("--data-root", help="folder that relative benchmark paths (flags or preset) are read from")
    g.add_argument("--limit", type=int, help="first N questions of each benchmark")
    g.add_argument("--prompt", choices=sorted(PROMPT_STYLES),
                   help="multiple-choice prompt: lmms_eval (default: lmms-eval's prompt for the benchmark, byte for "
                        "byte) or video_llava (question, 'A. option' lines, the letter instruction)")
    g.add_argument("--skip-missing-videos", action="store_true", default=None,
                   help="leave out questions whose video is missing instead of stopping")
    g = p.add_argument_group("sweep")
    g.add_argument("--budgets", help="visual token budgets, e.g. 2048,455,227,114 (>= the model's full count: no pruning)")
    g.add_argument("--methods", help="comma-separated methods (see --list; default vispruner)")
    g.add_argument("--ivtp", help="in-LLM pruning on top of every method, LAYER:KEEP_RATIO, e.g. 2:0.5")
    g.add_argument("--out", help="output folder (default vidprune-eval); rerun into it to resume")
    g.add_argument("--report-only", action="store_true", help="only rebuild the report from --out's samples.jsonl")
    g.add_argument("--list", action="store_true", help="list benchmarks and methods, then exit")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("ray")
    g.add_argument("--address", help="answer on this Ray cluster (HOST:PORT) through vidprune's job machinery; "
                                     "'local' starts Ray on this machine")
    g.add_argument("--node-ip-address", help="the address a local Ray binds to, e.g. 127.0.0.2")
    g = p.add_argument_group("judge (open-ended benchmarks; no network is used without --judge-url)")
    g.add_argument("--judge-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    g.add_argument("--judge-model", help="judge model name, e.g. gpt-3.5-turbo")
    g.add_argument("--judge-api-key-env", help="environment variable holding the judge's API key (default OPENAI_API_KEY)")
    g.add_argument("--no-judge", action="store_true", help="ignore the preset's judge: exact match only, no network")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def _list() -> int:
    from .benchmarks import get_benchmark, list_benchmarks
    from .methods import get_method, list_methods

    print("benchmarks:")
    for name in list_benchmarks():
        spec = get_benchmark(name)
        print(f"  {name:16s} {spec.title} ({spec.kind.replace('_', ' ')})")
    print("methods:")
    for name in list_methods():
        print(f"  {name:16s} {get_method(name).description}")
    print("prompt styles (--prompt):")
    for name, description in PROMPT_STYLES.items():
        print(f"  {name:16s} {description}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..config import options_from_args
    from .runner import SweepRunner, rebuild_report
    from .settings import BenchmarkSource, resolve_settings

    if args.list:
        return _list()
    if args.report_only:
        if not args.out:
            raise ConfigError("--report-only needs --out, the folder of an earlier sweep")
        agg = rebuild_report(args.out)
        print(f"report rebuilt in {args.out} ({len(agg['arms'])} arms)")
        return 0
    per_arm = [flag for flag, dest in (("--budget", "budget"), ("--pruner", "pruner"), ("--dedup/--no-dedup", "dedup"))
               if getattr(args, dest, None) is not None]
    if per_arm:
        raise ConfigError(f"{', '.join(per_arm)} vary per arm of a sweep: use --budgets and --methods "
                          "(e.g. --methods vispruner,vispruner_dedup)")
    names, anns, vids = args.benchmark or [], args.annotations or [], args.videos or []
    if not (len(names) == len(anns) == len(vids)):
        raise ConfigError(f"give --benchmark, --annotations and --videos together for each benchmark "
                          f"(got {len(names)}, {len(anns)} and {len(vids)})")
    sources = [BenchmarkSource(n, a, v) for n, a, v in zip(names, anns, vids)]
    settings = resolve_settings(
        args.config, benchmarks=sources or None, budgets=args.budgets,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None,
        ivtp=args.ivtp, limit=args.limit, out=args.out, judge_url=args.judge_url, judge_model=args.judge_model,
        judge_api_key_env=args.judge_api_key_env, no_judge=args.no_judge, data_root=args.data_root,
        skip_missing_videos=args.skip_missing_videos, options=options_from_args(args), prompt=args.prompt,
        address=args.address, node_ip_address=args.node_ip_address,
    )
    runner = SweepRunner(settings, progress=not args.no_progress)
    runner.setup()
    agg = runner.run()
    from .report import TABLE_MD

    print(open(f"{settings.out}/{TABLE_MD}").read(), end="")
    print(f"results in {settings.out}/ (samples.jsonl, aggregate.json, table.md, table.csv, plots)", file=sys.stderr)
    return 0 if agg["arms"] else 1
