"""``vidprune job`` on the command line: its flags and the function the CLI runs."""

from __future__ import annotations

import argparse
import sys
import time

from ..pipeline.ray.layout import ANSWER_GPU_SHARE, ENCODE_GPU_SHARE
from ..pipeline.ray.placement import DEFAULT_PLACEMENT_TIMEOUT_S

__all__ = ["add_command", "run"]


def add_command(subparsers) -> None:
    """Register ``vidprune job`` (called by :func:`vidprune.cli.build_parser`)."""
    from ..config import add_option_flags as add_pipeline_options

    p = subparsers.add_parser(
        "job", help="answer a JSONL manifest of questions about videos on Ray (resumable)",
        description="Answer every question of a JSONL manifest on Ray (local, or a cluster with --address or "
                    "RAY_ADDRESS). Results are appended to --out; rerunning resumes.",
    )
    p.add_argument("manifest", help='JSONL: {"id", "video", "question" | "questions", ["options"]} per line')
    p.add_argument("--out", required=True, help="JSONL results file (appended; rerun to resume)")
    p.add_argument("--retry-errors", action="store_true", help="run again the items whose result is an error")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g = p.add_argument_group("ray")
    g.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start Ray locally)")
    g.add_argument("--node-ip-address", help="IP a local Ray binds to (also $VIDPRUNE_RAY_NODE_IP), e.g. 127.0.0.2")
    g.add_argument("--decoders", type=int, help="decoder actors; a video's time segments spread over them "
                                                "(default: sized from the cluster, like every layout flag left out)")
    g.add_argument("--encoders", type=int, help="vision-tower replicas (default: sized from the cluster)")
    g.add_argument("--answerers", type=int, help="LLM replicas (default: 1, or one per GPU with --device cuda)")
    g.add_argument("--selectors", type=int, help="select actors (default: one per 4 LLM replicas)")
    g.add_argument("--segment-frames", type=int,
                   help="frames per time segment and encoder call (default: --encoder-batch-size, else 8)")
    g.add_argument("--max-segments-in-flight", type=int, help="bound on segments between decode and select")
    g.add_argument("--max-videos-in-flight", type=int,
                   help="videos streaming at once (default: one per LLM replica, at least 2)")
    g.add_argument("--questions-per-call", type=int, default=8, help="questions per LLM generate() call")
    g.add_argument("--video-attempts", type=int, default=3, help="times a video is started over after lost work")
    g.add_argument("--placement-timeout", type=float, default=DEFAULT_PLACEMENT_TIMEOUT_S, metavar="S",
                   help=f"stop (answers kept) when no result came for S seconds and the cluster, having lost nodes, "
                        f"can no longer place the layout's actors (default {DEFAULT_PLACEMENT_TIMEOUT_S:g})")
    for stage in ("decode", "encode", "select", "answer"):
        g.add_argument(f"--{stage}-cpus", type=float, help=f"CPUs per {stage} actor (default: a share of the "
                                                           "cluster's CPUs, fractions on small clusters)")
        if stage in ("encode", "answer"):
            share = ENCODE_GPU_SHARE if stage == "encode" else ANSWER_GPU_SHARE
            g.add_argument(f"--{stage}-gpus", type=float, help=f"GPUs per {stage} actor (fractions allowed; "
                                                               f"default {share:g} with --device cuda, else 0)")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def _stage_resources(args: argparse.Namespace, stage: str, cluster_default_cpus: float | None = None):
    """The stage's resources from its flags; None (sized from the cluster) when neither is given."""
    from ..pipeline.ray import StageResources
    from ..pipeline.ray.layout import ANSWER_GPU_SHARE, ENCODE_GPU_SHARE

    cpus = getattr(args, f"{stage}_cpus", None)
    gpus = getattr(args, f"{stage}_gpus", None)
    if cpus is None and gpus is None:
        return None
    on_gpu = str(getattr(args, "device", None) or "").startswith("cuda")
    gpu_default = {"encode": ENCODE_GPU_SHARE, "answer": ANSWER_GPU_SHARE}.get(stage, 0.0) if on_gpu else 0.0
    default_cpus = 0.5 if stage == "select" else 1.0
    return StageResources(num_cpus=default_cpus if cpus is None else cpus, num_gpus=gpu_default if gpus is None else gpus)


def run(args: argparse.Namespace) -> int:
    from ..config import options_from_args
    from ..pipeline.ray import RayPipelineOptions
    from .runner import run_job

    ray_options = RayPipelineOptions(
        decoders=args.decoders, encoders=args.encoders, answerers=args.answerers, segment_frames=args.segment_frames,
        max_segments_in_flight=args.max_segments_in_flight, max_videos_in_flight=args.max_videos_in_flight,
        selectors=getattr(args, "selectors", None),
        questions_per_call=args.questions_per_call, video_attempts=args.video_attempts,
        placement_timeout_s=args.placement_timeout,
        decode=_stage_resources(args, "decode"), encode=_stage_resources(args, "encode"),
        select=_stage_resources(args, "select"), answer=_stage_resources(args, "answer"),
    )
    start = time.perf_counter()
    summary = run_job(args.manifest, args.out, options_from_args(args), config=args.config, ray_options=ray_options,
                      address=args.address, node_ip_address=args.node_ip_address, retry_errors=args.retry_errors,
                      progress=args.progress)
    line = summary.line(args.out)
    if summary.new:
        line += f" in {time.perf_counter() - start:.1f} s"
    if summary.retried_videos:
        line += f"; {summary.retried_videos} video(s) started over after a worker failure"
    print(line, file=sys.stderr)
    return 0
