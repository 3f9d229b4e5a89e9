"""Throughput and memory of the Ray pipeline against the in-process path, in one run.

    HOME=$(mktemp -d) && echo 'provider: {type: local}' > $HOME/ray_bootstrap_config.yaml
    python benchmarks/bench_pipeline.py --node-ip-address 127.0.0.2     # local Ray on this machine
    python benchmarks/bench_pipeline.py --address HEAD:6379             # or an existing cluster

What it measures (random weights; speed and memory do not depend on the values):

1. **Throughput**: frames per second through decode + encode + prune (``prepare``) of
   ``--frames`` frames sampled from a video, in-process (``VideoQA.prepare``) and on Ray
   with 1 and 2 encoder replicas. The encoder CPUs are the same in every case: the
   in-process path uses all ``--cores`` for one vision tower; on Ray, one replica gets
   all of them and two replicas half each (torch threads follow the actor's CPUs).
   After a warm-up, ``--repeats`` rounds time every path once, interleaved (so load from
   other work on the machine hits all paths alike); each figure is the median, and the
   ratios to the in-process rate come from the same run.
2. **Peak memory**: a short video and one ``--long-factor`` times longer, every frame
   sampled (``fps`` = the video's rate), each in a fresh process. The peak private memory
   (``RssAnon``, sampled from ``/proc`` every 20 ms: heap, tensors, frames; not the
   object store's shared pages) of the in-process path, and of every actor and the
   driver on Ray. Needs the actors on this machine (a local Ray).

The vision tower is CLIP-shaped with ``--vision-width`` / ``--vision-layers`` (default a
ViT-S-sized tower, 384 wide and 6 deep: encoding dominates without taking minutes on
two cores); the LLM is the tiny one (not used: nothing is answered).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# Frames per encoder call / time segment, in every path (same float rounding everywhere).
SEGMENT_FRAMES = 8
# Budget of visual tokens per video: fixed, so the pruned stream does not grow with length.
BUDGET = 256
# Frame size of the generated videos: large enough that holding a clip costs memory.
HEIGHT, WIDTH = 480, 640
# Stream frame rate of the generated videos.
VIDEO_FPS = 12
# Seconds between memory samples (a segment takes far longer than this to pass a stage).
MEMORY_SAMPLE_S = 0.02


def build_checkpoint(out: Path, width: int, layers: int) -> str:
    """The tiny Video-LLaVA checkpoint with a bigger CLIP vision tower (random weights)."""
    import torch
    from transformers import AutoConfig, AutoProcessor, VideoLlavaForConditionalGeneration

    from vidprune.video_models.tiny import build_tiny_checkpoint

    tiny = build_tiny_checkpoint("video_llava", out / "tiny")
    cfg = AutoConfig.from_pretrained(tiny)
    v = cfg.vision_config
    v.hidden_size, v.intermediate_size, v.num_hidden_layers = width, 4 * width, layers
    v.num_attention_heads = max(1, width // 64)
    torch.manual_seed(0)
    model = VideoLlavaForConditionalGeneration(cfg)
    path = out / f"vit{width}x{layers}"
    model.save_pretrained(path)
    AutoProcessor.from_pretrained(tiny).save_pretrained(path)
    return str(path)


def make_video(path: Path, num_frames: int) -> str:
    from vidprune.samples import moving_square_frames, write_video

    return str(write_video(path, moving_square_frames(num_frames, height=HEIGHT, width=WIDTH, square=96),
                           fps=VIDEO_FPS))


def options(frames: int | None) -> dict:
    opts = dict(budget=BUDGET, encoder_batch_size=SEGMENT_FRAMES, keep_cls=False)
    if frames is None:
        opts["fps"] = float(VIDEO_FPS)  # every frame
    else:
        opts["frames"] = frames
    return opts


def ray_options(encoders: int, cores: int):
    from vidprune.pipeline.ray import RayPipelineOptions, StageResources

    return RayPipelineOptions(decoders=2, encoders=encoders, encode=StageResources(num_cpus=cores / encoders),
                              decode=StageResources(num_cpus=0.5), select=StageResources(num_cpus=0.5))


# ------------------------------------------------------------------ throughput
def throughput(ckpt: str, video: str, frames: int, repeats: int, cores: int) -> dict[str, float]:
    """Frames/s of each path: a warm-up each, then ``repeats`` rounds that time every path once, interleaved.

    Interleaving keeps the paths on equal terms when other work on the machine comes and goes;
    each figure is the median over the rounds.
    """
    import torch

    from vidprune.pipeline.ray import RayVideoPipeline
    from vidprune.qa import VideoQA

    torch.set_num_threads(cores)
    qa = VideoQA.from_pretrained(ckpt, **options(frames))
    cfg = VideoQA.resolve_config(ckpt, **options(frames))
    pipes = {n: RayVideoPipeline(cfg, ray_options(n, cores), answering=False) for n in (1, 2)}
    paths = {"in_process": qa.prepare, "ray_1_encoder": pipes[1].prepare, "ray_2_encoder": pipes[2].prepare}
    try:
        for prepare in paths.values():
            prepare(video)  # warm-up: first calls, caches
        seconds: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(repeats):
            for name, prepare in paths.items():
                start = time.perf_counter()
                pruned = prepare(video)
                seconds[name].append(time.perf_counter() - start)
                assert len(pruned.frames) == frames
        return {k: frames / statistics.median(v) for k, v in seconds.items()}
    finally:
        for pipe in pipes.values():
            pipe.shutdown()


# ---------------------------------------------------------------------- memory
def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    """Peak private memory (RssAnon: heap, tensors, frames) of some processes, sampled from /proc.

    RssAnon leaves out the object store's shared pages, which a process maps and touches as
    objects pass through it (they count in its RSS, but are the store's fixed-size memory).
    """

    def __init__(self, pids: dict[str, list[int]]):
        super().__init__(daemon=True)
        self.pids, self.peak_kib = pids, {name: 0 for name in pids}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            time.sleep(MEMORY_SAMPLE_S)

    def sample(self) -> None:
        for name, pids in self.pids.items():
            for pid in pids:
                kib = _status_kib(pid, "RssAnon")
                if kib is not None:
                    self.peak_kib[name] = max(self.peak_kib[name], kib)

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        self.sample()
        return {name: kib * 1024 for name, kib in self.peak_kib.items()}


def _memory_in_process(ckpt: str, video: str, cores: int, queue) -> None:
    import torch

    from vidprune.qa import VideoQA

    torch.set_num_threads(cores)
    qa = VideoQA.from_pretrained(ckpt, **options(None))
    sampler = MemorySampler({"in_process": [os.getpid()]})
    loaded = _status_kib("self", "RssAnon") * 1024
    sampler.start()
    pruned = qa.prepare(video)
    queue.put({"frames": len(pruned.frames), "peak": sampler.stop()["in_process"], "after_load": loaded})


def _memory_on_ray(ckpt: str, video: str, cores: int, address: str, queue) -> None:
    from vidprune.pipeline.ray import RayVideoPipeline, connect_ray
    from vidprune.qa import VideoQA

    connect_ray(address)
    pipe = RayVideoPipeline(VideoQA.resolve_config(ckpt, **options(None)), ray_options(2, cores), answering=False)
    pids = {k: v for k, v in actor_pids(pipe).items() if v}
    sampler = MemorySampler({**pids, "driver": [os.getpid()]})
    sampler.sample()
    loaded = {k: v * 1024 for k, v in sampler.peak_kib.items()}
    sampler.start()
    pruned = pipe.prepare(video)
    peaks = sampler.stop()
    pipe.shutdown()
    queue.put({"frames": len(pruned.frames), "peaks": peaks, "after_load": loaded,
               "max_segments_in_flight": pipe.stats["max_segments_in_flight"]})


def actor_pids(pipe) -> dict[str, list[int]]:
    """Process id of every actor of ``pipe``, by stage (asked inside each actor with Ray's ``__ray_call__``)."""
    import ray

    return {stage: ray.get([a.__ray_call__.remote(lambda _self: os.getpid()) for a in handles])
            for stage, handles in pipe.actors().items()}


def in_fresh_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get(timeout=1800)
    proc.join()
    return result


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", help="Ray cluster (default: start Ray locally)")
    p.add_argument("--node-ip-address", help="IP of a local Ray (e.g. 127.0.0.2)")
    p.add_argument("--frames", type=int, default=64, help="frames per throughput run")
    p.add_argument("--short-frames", type=int, default=48, help="stream frames of the short video (memory)")
    p.add_argument("--long-factor", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores for the vision tower(s)")
    p.add_argument("--vision-width", type=int, default=384)
    p.add_argument("--vision-layers", type=int, default=6)
    p.add_argument("--work-dir", help="where checkpoints and videos go (default: a temp dir)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--write", type=Path, help="markdown file to write the tables into (between markers)")
    args = p.parse_args(argv)

    import ray
    from tqdm import tqdm

    from vidprune.pipeline.ray import connect_ray

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vidprune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=9, desc="bench_pipeline", unit="step", file=sys.stderr)
    ckpt = build_checkpoint(work, args.vision_width, args.vision_layers)
    short = make_video(work / "short.mp4", args.short_frames)
    long = make_video(work / "long.mp4", args.short_frames * args.long_factor)
    steps.update(1)

    need = 2 * (2 * 0.5 + args.cores + 0.5)  # two pipelines at once: decoders + encoders + select each
    where = connect_ray(args.address, node_ip_address=args.node_ip_address,
                        num_cpus=max(args.cores, math.ceil(need)))
    address = ray.get_runtime_context().gcs_address
    from machine import describe  # benchmarks/machine.py (imports torch)

    results: dict = {"machine": {"name": describe(), "cores": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0], "ray": where},
                     "vision": {"width": args.vision_width, "layers": args.vision_layers},
                     "frames": args.frames, "segment_frames": SEGMENT_FRAMES, "budget": BUDGET,
                     "repeats": args.repeats}
    fps = throughput(ckpt, long, args.frames, args.repeats, args.cores)
    steps.update(3)
    results["throughput_fps"] = fps
    results["throughput_ratio_to_in_process"] = {k: v / fps["in_process"] for k, v in fps.items()}
    results["ray_2_over_1_encoder"] = fps["ray_2_encoder"] / fps["ray_1_encoder"]

    memory = {}
    for name, video in (("short", short), ("long", long)):
        memory[f"in_process_{name}"] = in_fresh_process(_memory_in_process, ckpt, video, args.cores)
        steps.update(1)
        memory[f"ray_{name}"] = in_fresh_process(_memory_on_ray, ckpt, video, args.cores, address)
        steps.update(1)
    results["memory"] = memory
    ip_s, ip_l = memory["in_process_short"], memory["in_process_long"]
    ray_s, ray_l = memory["ray_short"], memory["ray_long"]
    results["memory_long_over_short"] = {
        "in_process": ip_l["peak"] / ip_s["peak"],
        "ray": {k: ray_l["peaks"][k] / ray_s["peaks"][k] for k in ray_s["peaks"]},
    }
    results["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    steps.update(1)
    steps.close()
    ray.shutdown()

    print(json.dumps(results, indent=2))
    tables = _markdown(results)
    print(tables)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.write:
        from seven_b import write_into  # benchmarks/seven_b.py

        machine = results["machine"]
        setup = (f"Setup: {machine['name']} (1-minute load {machine['load_avg_1m_at_start']:.1f} at the start, "
                 f"{machine['load_avg_1m_at_end']:.1f} at the end), local Ray, a CLIP tower {args.vision_width} wide and "
                 f"{args.vision_layers} deep in fp32 with random weights, segments of {SEGMENT_FRAMES} frames, budget "
                 f"{BUDGET}, medians of {args.repeats} interleaved rounds; the long video is {args.long_factor}x the short "
                 "one, every frame sampled.")
        write_into(args.write, "bench_pipeline", setup + "\n\n" + tables)
    return 0


def _markdown(r: dict) -> str:
    mib = 2**20
    fps, ratio = r["throughput_fps"], r["throughput_ratio_to_in_process"]
    lines = ["| path (decode + encode + prune) | frames/s | vs in-process |", "|---|---:|---:|"]
    for k in ("in_process", "ray_1_encoder", "ray_2_encoder"):
        lines.append(f"| {k} | {fps[k]:.2f} | {ratio[k]:.2f}x |")
    lines.append(f"\nRay 2 encoders / 1 encoder: {r['ray_2_over_1_encoder']:.2f}x\n")
    m = r["memory"]
    short, long = m["in_process_short"]["frames"], m["in_process_long"]["frames"]
    lines += [f"| peak private memory, MiB (RssAnon) | short ({short} frames) | long ({long} frames) | long / short |",
              "|---|---:|---:|---:|"]
    lines.append(f"| in-process | {m['in_process_short']['peak'] / mib:.0f} | {m['in_process_long']['peak'] / mib:.0f} "
                 f"| {r['memory_long_over_short']['in_process']:.2f} |")
    for name in m["ray_short"]["peaks"]:
        s_, l_ = m["ray_short"]["peaks"][name], m["ray_long"]["peaks"][name]
        label = "ray driver" if name == "driver" else f"ray {name} actor (largest)"
        lines.append(f"| {label} | {s_ / mib:.0f} | {l_ / mib:.0f} | {l_ / s_:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
