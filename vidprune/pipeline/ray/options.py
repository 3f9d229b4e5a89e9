"""How the pipeline is laid out on Ray: actors per stage, their CPU/GPU shares, bounds, fault tolerance.

Model and pruning options live in :class:`~vidprune.config.VidpruneConfig`; these are the
Ray-only ones. :class:`RayPipelineOptions` is validated whole (``resolved``) before any
actor starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ...config import VidpruneConfig
from ...errors import ConfigError
from ...validators import problem_int_at_least
from .placement import DEFAULT_PLACEMENT_TIMEOUT_S
from .layout import (ANSWER_GPU_SHARE, ENCODE_GPU_SHARE, MAX_CPUS_PER_ACTOR, MAX_DEFAULT_DECODERS, ClusterShape, fits, refuse,
                     slot_share)

__all__ = ["StageResources", "RayPipelineOptions", "actor_options", "STAGES", "DEFAULT_SEGMENT_FRAMES",
           "DEFAULT_QUESTIONS_PER_CALL", "ANSWERERS_PER_SELECTOR", "VIDEOS_IN_FLIGHT_PER_ANSWERER",
           "ANSWERS_QUEUED_PER_ANSWERER", "MIN_VIDEOS_IN_FLIGHT", "MIN_ANSWERS_QUEUED"]

# The pipeline's stages, in the order a segment visits them; one actor class each.
STAGES = ("decode", "encode", "select", "answer")
# Frames per segment (one encoder call) when encoder_batch_size is not set: enough to keep
# the vision tower's matmuls efficient, small enough that a segment is a few MB.
DEFAULT_SEGMENT_FRAMES = 8
# Segments in flight per encoder replica: one being encoded, one decoded and waiting.
SEGMENTS_IN_FLIGHT_PER_ENCODER = 2
# A dead actor comes back as often as it dies (a job outlives flaky nodes); the work it
# lost is bounded by max_task_retries and video_attempts instead.
DEFAULT_MAX_RESTARTS = -1
# Ray retries of an interrupted call on a restarted stateless actor.
DEFAULT_MAX_TASK_RETRIES = 2
# Times the driver starts a video over after losing its work; a third loss is not a fluke.
DEFAULT_VIDEO_ATTEMPTS = 3
# Questions per LLM generate() call (a left-padded batch).
DEFAULT_QUESTIONS_PER_CALL = 8
# Bounds that grow with the LLM replicas, so every one has work (docs/ray.md, "Layout"):
# videos streaming through decode/encode/select per LLM replica (at least 2 in all) ...
VIDEOS_IN_FLIGHT_PER_ANSWERER = 1
MIN_VIDEOS_IN_FLIGHT = 2
# ... pruned videos waiting for or in an LLM replica: one running and one queued per replica (at least 4) ...
ANSWERS_QUEUED_PER_ANSWERER = 2
MIN_ANSWERS_QUEUED = 4
# ... and a select actor per this many LLM replicas (selection is light, but one actor serialises
# every segment of every video: with 8 replicas one selector becomes the queue they wait in).
ANSWERERS_PER_SELECTOR = 4


@dataclass(frozen=True)
class StageResources:
    """Ray resources of one actor of a stage: CPUs and GPUs (fractions allowed, e.g. 0.5 GPU)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def problems(self, stage: str) -> list[str]:
        p = []
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                p.append(f"{stage} {name} must be a number >= 0, got {value!r}")
        return p

    def describe(self) -> str:
        return f"{self.num_cpus:g} CPU" + (f"+{self.num_gpus:g} GPU" if self.num_gpus else "")


@dataclass
class RayPipelineOptions:
    """How the pipeline is laid out on Ray. Model and pruning options live in :class:`VidpruneConfig`.

    Every None is filled by :meth:`resolved`: from the cluster when one is given (the default
    layout, :mod:`.layout`), else from fixed defaults (2 decoders, 1 encoder, 1 LLM replica,
    1 CPU each, 0.5 for select, 1 GPU for encode/answer on CUDA).

    Attributes:
        decoders: decoder actors; a video's time segments are spread over them.
        encoders: vision-tower replicas.
        answerers: LLM replicas.
        segment_frames: frames per segment and encoder call; None: the config's
            ``encoder_batch_size``, else ``DEFAULT_SEGMENT_FRAMES``.
        max_segments_in_flight: segments decoded/encoded but not yet selected, over all
            videos; None: ``SEGMENTS_IN_FLIGHT_PER_ENCODER`` per encoder, at least one per decoder.
        max_videos_in_flight: videos streaming through decode/encode/select at once; None:
            ``VIDEOS_IN_FLIGHT_PER_ANSWERER`` per LLM replica, at least ``MIN_VIDEOS_IN_FLIGHT``.
        max_answers_queued: pruned videos waiting for (or in) the LLM; None:
            ``ANSWERS_QUEUED_PER_ANSWERER`` per LLM replica, at least ``MIN_ANSWERS_QUEUED``.
        selectors: select actors (a video's segments all go to one); None: one per
            ``ANSWERERS_PER_SELECTOR`` LLM replicas.
        pack_gpu_pairs: on GPUs, hold each encoder replica and an LLM replica in one placement-group
            bundle of one GPU (their shares summed), so they share a device by reservation, not by
            the order Ray happened to place them.
        questions_per_call: questions per generate() call.
        decode / encode / select / answer: resources per actor of each stage.
        max_restarts / max_task_retries / video_attempts: fault tolerance (docs/ray.md).
        spread: place replicas on different nodes when possible.
        placement_timeout_s: seconds without any result after which a cluster that shrank below
            the layout (a node lost) stops the run with one line (:mod:`.placement`).
    """

    decoders: int | None = None
    encoders: int | None = None
    answerers: int | None = None
    segment_frames: int | None = None
    max_segments_in_flight: int | None = None
    max_videos_in_flight: int | None = None
    max_answers_queued: int | None = None
    selectors: int | None = None
    pack_gpu_pairs: bool = True
    questions_per_call: int = DEFAULT_QUESTIONS_PER_CALL
    decode: StageResources | None = None
    encode: StageResources | None = None
    select: StageResources | None = None
    answer: StageResources | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    max_task_retries: int = DEFAULT_MAX_TASK_RETRIES
    video_attempts: int = DEFAULT_VIDEO_ATTEMPTS
    spread: bool = True
    placement_timeout_s: float = DEFAULT_PLACEMENT_TIMEOUT_S

    def resolved(self, config: VidpruneConfig, cluster: ClusterShape | None = None, *,
                 answering: bool = True) -> RayPipelineOptions:
        """A validated copy with every None filled: sized from ``cluster`` if given, else the fixed defaults.

        Raises:
            ConfigError: a bad value, or a layout ``cluster`` cannot hold (one line).
        """
        problems = self.problems()
        if problems:
            raise ConfigError("invalid Ray options: " + "; ".join(problems))
        on_gpu = str(config.device).startswith("cuda")
        out = RayPipelineOptions(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.segment_frames = self.segment_frames or config.encoder_batch_size or DEFAULT_SEGMENT_FRAMES
        if cluster is None:
            gpu = 1.0 if on_gpu else 0.0
            out.decoders, out.encoders, out.answerers = self.decoders or 2, self.encoders or 1, self.answerers or 1
            out.selectors = self.selectors or math.ceil(out.answerers / ANSWERERS_PER_SELECTOR)
            out.decode = self.decode or StageResources(1.0, 0.0)
            out.encode = self.encode or StageResources(1.0, gpu)
            out.select = self.select or StageResources(0.5, 0.0)
            out.answer = self.answer or StageResources(1.0, gpu)
        else:
            _size_from_cluster(out, on_gpu, cluster, str(config.device))
        if self.max_videos_in_flight is None:
            out.max_videos_in_flight = max(MIN_VIDEOS_IN_FLIGHT, VIDEOS_IN_FLIGHT_PER_ANSWERER * out.answerers)
        if self.max_answers_queued is None:
            out.max_answers_queued = max(MIN_ANSWERS_QUEUED, ANSWERS_QUEUED_PER_ANSWERER * out.answerers)
        if out.selectors is None:
            out.selectors = math.ceil(out.answerers / ANSWERERS_PER_SELECTOR)
        if self.max_segments_in_flight is None:
            out.max_segments_in_flight = max(SEGMENTS_IN_FLIGHT_PER_ENCODER * out.encoders, out.decoders)
        if on_gpu and (out.encode.num_gpus == 0 or out.answer.num_gpus == 0):
            raise ConfigError(f"invalid Ray options: device {config.device!r} needs GPUs for the encode and answer "
                              "actors (e.g. --encode-gpus 0.25 --answer-gpus 0.75)")
        if cluster is not None:
            out.check_fits(cluster, answering)
        return out

    def demands(self, answering: bool = True) -> list[tuple[float, float]]:
        """(CPUs, GPUs) of every actor (resolved options)."""
        return [(getattr(self, s).num_cpus, getattr(self, s).num_gpus)
                for s, n in self.actors_per_stage(answering).items() for _ in range(n)]

    def check_fits(self, cluster: ClusterShape, answering: bool = True) -> None:
        """Raise the one-line ConfigError if the actors cannot all be placed on ``cluster``'s nodes."""
        if not fits(cluster.nodes, self.demands(answering)):
            raise refuse(cluster, self.required(answering), self.layout())

    def to_dict(self) -> dict[str, Any]:
        """The layout as data (resolved options): actors and shares per stage, bounds."""
        return {"stages": {s: {"actors": n, "num_cpus": getattr(self, s).num_cpus,
                               "num_gpus": getattr(self, s).num_gpus}
                           for s, n in self.actors_per_stage().items()},
                "segment_frames": self.segment_frames, "max_segments_in_flight": self.max_segments_in_flight,
                "max_videos_in_flight": self.max_videos_in_flight, "max_answers_queued": self.max_answers_queued,
                "questions_per_call": self.questions_per_call, "gpu_pairs": self.gpu_pairs()}

    def gpu_pairs(self) -> int:
        """Encoder + LLM replica pairs held in one placement-group bundle each (resolved options; 0: none).

        Where both stages take a GPU share and the two shares fit one device, the first
        ``min(encoders, answerers)`` encoders are each paired with an LLM replica.
        """
        if not (self.pack_gpu_pairs and self.encode and self.answer and self.encode.num_gpus > 0
                and self.answer.num_gpus > 0 and self.encode.num_gpus + self.answer.num_gpus <= 1 + 1e-9):
            return 0
        return min(self.encoders or 0, self.answerers or 0)

    def pair_bundle(self) -> dict[str, float]:
        """The placement-group bundle of one encoder + LLM replica pair: their CPUs and GPU shares summed."""
        return {"CPU": self.encode.num_cpus + self.answer.num_cpus, "GPU": self.encode.num_gpus + self.answer.num_gpus}

    def problems(self) -> list[str]:
        p: list[str] = []
        timeout = self.placement_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            p.append(f"placement_timeout_s must be a positive number of seconds, got {timeout!r}")
        for name, minimum in (("decoders", 1), ("encoders", 1), ("answerers", 1), ("selectors", 1), ("segment_frames", 1),
                              ("max_segments_in_flight", 1), ("max_videos_in_flight", 1), ("max_answers_queued", 1),
                              ("questions_per_call", 1), ("video_attempts", 1), ("max_restarts", -1),
                              ("max_task_retries", -1)):
            value = getattr(self, name)
            if value is None:
                continue
            if (problem := problem_int_at_least(name, value, minimum)) is not None:
                p.append(problem)
        for stage in STAGES:
            res = getattr(self, stage)
            if res is not None:
                p += res.problems(stage)
        return p

    def actors_per_stage(self, answering: bool = True) -> dict[str, int]:
        return {"decode": self.decoders, "encode": self.encoders, "select": self.selectors or 1,
                "answer": self.answerers if answering else 0}

    def required(self, answering: bool = True) -> dict[str, float]:
        """CPUs and GPUs all actors ask for together (resolved options)."""
        counts = self.actors_per_stage(answering)
        return {
            "CPU": sum(n * getattr(self, s).num_cpus for s, n in counts.items()),
            "GPU": sum(n * getattr(self, s).num_gpus for s, n in counts.items()),
        }

    def layout(self) -> str:
        """One line: actors and shares per stage, e.g. ``decode 2x1 CPU, encode 1x1 CPU+0.5 GPU, ...``."""
        return ", ".join(f"{stage} {n}x{getattr(self, stage).describe()}"
                         for stage, n in self.actors_per_stage().items())


def actor_options(resources: StageResources, *, stateful: bool, options: RayPipelineOptions,
                  bundle: tuple[Any, int] | None = None) -> dict[str, Any]:
    """The fault-tolerance defaults and resources of one actor (all actors are built through here).

    Every actor restarts after its process or node dies (``max_restarts``). A stateless
    actor also retries the calls that were running (``max_task_retries``); a stateful one
    does not (its state is gone; the driver restarts the video instead). ``bundle``:
    (placement group, bundle index) the actor's resources are taken from.
    """
    opts: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "max_restarts": options.max_restarts,
        "max_task_retries": 0 if stateful else options.max_task_retries,
    }
    if bundle is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement_group=bundle[0],
                                                                       placement_group_bundle_index=bundle[1])
    elif options.spread:
        opts["scheduling_strategy"] = "SPREAD"
    return opts


def _size_from_cluster(out: RayPipelineOptions, on_gpu: bool, cluster: ClusterShape, device: str) -> None:
    """Fill ``out``'s None counts and shares from the cluster's nodes (the rules: :mod:`.layout`)."""
    nodes = len(cluster.nodes)
    if on_gpu:
        gpus = cluster.whole_gpus
        if gpus == 0 and (out.encode is None or out.answer is None):
            raise ConfigError(f"device {device!r} but the Ray cluster has no GPUs ({cluster.describe()}); add GPU "
                              "nodes (ray start --num-gpus N), or run with --device cpu")
        out.answerers = out.answerers or max(1, gpus)
        out.encoders = out.encoders or out.answerers
    else:
        out.answerers = out.answerers or 1
    if out.selectors is None:  # before sizing: every select actor takes a CPU share
        out.selectors = math.ceil(out.answerers / ANSWERERS_PER_SELECTOR)
    if out.decoders is None:
        out.decoders = max(1, min(MAX_DEFAULT_DECODERS, nodes, math.floor(cluster.cpus / 2)))
    if out.encoders is None:  # CPU: the CPU slots left, at most one replica per node beyond the first
        whole_slots = sum(math.floor(n.cpus) for n in cluster.nodes)
        most = max(nodes, math.floor(cluster.cpus / MAX_CPUS_PER_ACTOR) - 1)
        out.encoders = max(1, min(most, whole_slots - out.decoders - 1 - out.answerers))
    counts = out.actors_per_stage()
    # explicit shares are taken off the nodes first (biggest first), the rest of each node is shared
    free = sorted((n.cpus for n in cluster.nodes), reverse=True)
    for stage in STAGES:
        res = getattr(out, stage)
        for _ in range(counts[stage] if res is not None else 0):
            i = max(range(len(free)), key=lambda j: free[j])
            free[i] = max(0.0, free[i] - res.num_cpus)
    unsized = sum(n for s, n in counts.items() if getattr(out, s) is None)
    if on_gpu:  # the GPU actors must land on GPU nodes whatever Ray places there first: size on those alone
        gpu_node = [n.gpus >= 1 for n in sorted(cluster.nodes, key=lambda n: n.cpus, reverse=True)]
        share = slot_share([f for f, g in zip(free, gpu_node) if g], unsized)
    else:
        share = slot_share(free, unsized)
    if unsized and share == 0:
        have = ", ".join(f"{c:g}" for c in free)
        raise ConfigError(f"the Ray cluster ({cluster.describe()}) has no room for {unsized} more pipeline actors "
                          f"(CPUs left per node: {have}); lower --decoders/--encoders/--answerers, or add nodes")
    gpu_share = {"encode": ENCODE_GPU_SHARE if on_gpu else 0.0, "answer": ANSWER_GPU_SHARE if on_gpu else 0.0}
    cap = {"decode": 1.0, "select": 0.5}  # light stages: a smaller share only frees room
    for stage in STAGES:
        if getattr(out, stage) is None:
            setattr(out, stage, StageResources(min(share, cap.get(stage, share)), gpu_share.get(stage, 0.0)))

