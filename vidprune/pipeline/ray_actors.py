"""The Ray adapter: the plain stages as actors, streamed with backpressure, fault tolerant.

    import ray
    from vidprune.pipeline.ray_actors import RayPipelineOptions, RayVideoPipeline, connect_ray

    connect_ray()                                   # local Ray, or RAY_ADDRESS / address="head:6379"
    cfg = VideoQA.resolve_config("ckpt/", budget=114, frames=32, encoder_batch_size=8)
    pipe = RayVideoPipeline(cfg, RayPipelineOptions(decoders=2, encoders=2))
    pruned = pipe.prepare("long.mp4")               # == VideoQA.prepare("long.mp4")
    for result in pipe.run([VideoRequest("a", "a.mp4", ["What happens?"])]): ...

This is the only module that touches Ray. Each actor holds the very stage objects of the
in-process path (:class:`~vidprune.qa.VideoQA` builds them, from the same config), so
there is one implementation of every stage:

``DecodeActor`` (``DecodeStage`` via :class:`~vidprune.pipeline.streaming.SegmentDecoder`)
  plans a video's frames from its demuxed table, then decodes **time segments** of
  ``segment_frames`` sampled frames. Segment ``s`` goes to decoder ``s % decoders``, so
  several decoders work on one long video at once; each keeps its lane's stream open.
``EncodeActor`` × ``encoders`` (``EncodeStage``)
  one segment per call (= ``encoder_batch_size`` frames); returns the features on CPU
  and drops the pixels. A replica frees its copy of the language model's weights.
``SelectActor`` (``SelectStage`` via :class:`~vidprune.pipeline.streaming.SelectionStream`)
  **where selection runs**: one actor, per video one selection stream fed segment by
  segment in temporal order. The driver submits a video's segments to it in order and
  Ray runs one caller's tasks on a single-threaded actor in submission order, so the
  encoded segments, which finish in any order on the replicas, are merged back in time
  order before dedup and the budget carry-over. Its result, a ``PrunedVideo`` of at most
  ``budget`` tokens, goes from the object store straight to
``AnswerActor`` (``AnswerStage`` via ``VideoQA.answer``)
  all questions of a video from its one pruned stream. Only pruned tokens reach it.

**Backpressure.** The driver keeps at most ``max_segments_in_flight`` segments between
"decode submitted" and "selected" (over all videos), and at most
``max_videos_in_flight`` videos streaming plus ``max_answers_queued`` pruned videos
waiting for the LLM. A new segment is submitted only when an older one has been
selected and its frames and features released, so the frames and tensors alive in the
cluster are bounded by the window, not by the video's length.

**Fault tolerance** (:func:`actor_options`). Every actor restarts when its process or
node dies (``max_restarts=-1``). Stateless actors (decode, encode, answer) also retry
their interrupted calls (``max_task_retries``). The select actor's streams live in its
memory, so its calls are not retried by Ray; instead the driver restarts any video whose
work was lost (up to ``video_attempts`` times, from its plan). A bad video (an
unreadable file) is not retried: its questions get an error.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
import types
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..config import VidpruneConfig
from ..errors import ConfigError, ModelLoadError, VidpruneError
from .stages import PrunedVideo, clip_from_array
from .streaming import FrameBatch, FramePlan, PlanChanged, SegmentDecoder, SelectionStream, batches_from_clip

__all__ = [
    "StageResources",
    "RayPipelineOptions",
    "VideoRequest",
    "VideoResult",
    "RayVideoPipeline",
    "actor_options",
    "connect_ray",
    "SelectionLost",
    "DecodeActor",
    "EncodeActor",
    "SelectActor",
    "AnswerActor",
]

log = logging.getLogger(__name__)

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
# Seconds to wait for a restarted actor (process start + model load on a busy node).
ACTOR_RESTART_TIMEOUT_S = 300.0
# Seconds between scheduler wake-ups when nothing finishes (only bounds how late a wait notices a stop).
_POLL_S = 1.0
# Ray errors that mean "the work was lost with a process or node", not "the input is bad".
_LOST_WORK_ERRORS = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
                     "LocalRayletDiedError", "OutOfMemoryError", "ActorUnschedulableError")


class SelectionLost(RuntimeError):
    """The select actor no longer holds a video's stream (it restarted): the video must start over."""


# ----------------------------------------------------------------------------- options
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


@dataclass
class RayPipelineOptions:
    """How the pipeline is laid out on Ray. Model and pruning options live in :class:`VidpruneConfig`.

    Attributes:
        decoders: decoder actors; a video's time segments are spread over them.
        encoders: vision-tower replicas.
        answerers: LLM replicas.
        segment_frames: frames per segment and encoder call; None: the config's
            ``encoder_batch_size``, else ``DEFAULT_SEGMENT_FRAMES``.
        max_segments_in_flight: segments decoded/encoded but not yet selected, over all
            videos; None: ``SEGMENTS_IN_FLIGHT_PER_ENCODER`` per encoder, at least one per decoder.
        max_videos_in_flight: videos streaming through decode/encode/select at once.
        max_answers_queued: pruned videos waiting for (or in) the LLM.
        questions_per_call: questions per generate() call.
        decode / encode / select / answer: resources per actor of each stage; None: 1 CPU
            (select: 0.5), and for encode/answer 1 GPU when the config's device is CUDA.
        max_restarts / max_task_retries / video_attempts: fault tolerance (see module doc).
        spread: place replicas on different nodes when possible.
    """

    decoders: int = 2
    encoders: int = 1
    answerers: int = 1
    segment_frames: int | None = None
    max_segments_in_flight: int | None = None
    max_videos_in_flight: int = 2
    max_answers_queued: int = 4
    questions_per_call: int = DEFAULT_QUESTIONS_PER_CALL
    decode: StageResources | None = None
    encode: StageResources | None = None
    select: StageResources | None = None
    answer: StageResources | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    max_task_retries: int = DEFAULT_MAX_TASK_RETRIES
    video_attempts: int = DEFAULT_VIDEO_ATTEMPTS
    spread: bool = True

    def resolved(self, config: VidpruneConfig) -> RayPipelineOptions:
        """A copy with every None filled from the config (segment size, GPUs on CUDA) and validated."""
        gpu = 1.0 if str(config.device).startswith("cuda") else 0.0
        out = RayPipelineOptions(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.segment_frames = self.segment_frames or config.encoder_batch_size or DEFAULT_SEGMENT_FRAMES
        out.decode = self.decode or StageResources(1.0, 0.0)
        out.encode = self.encode or StageResources(1.0, gpu)
        out.select = self.select or StageResources(0.5, 0.0)
        out.answer = self.answer or StageResources(1.0, gpu)
        if self.max_segments_in_flight is None:
            out.max_segments_in_flight = max(SEGMENTS_IN_FLIGHT_PER_ENCODER * max(1, self.encoders), self.decoders)
        problems = out.problems()
        if gpu and (out.encode.num_gpus == 0 or out.answer.num_gpus == 0):
            problems.append(f"device {config.device!r} needs GPUs for the encode and answer actors "
                            "(e.g. --encode-gpus 0.5 --answer-gpus 1)")
        if problems:
            raise ConfigError("invalid Ray options: " + "; ".join(problems))
        return out

    def problems(self) -> list[str]:
        p: list[str] = []
        for name, minimum in (("decoders", 1), ("encoders", 1), ("answerers", 1), ("segment_frames", 1),
                              ("max_segments_in_flight", 1), ("max_videos_in_flight", 1), ("max_answers_queued", 1),
                              ("questions_per_call", 1), ("video_attempts", 1), ("max_restarts", -1),
                              ("max_task_retries", -1)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                p.append(f"{name} must be an integer >= {minimum}, got {value!r}")
        for stage in ("decode", "encode", "select", "answer"):
            res = getattr(self, stage)
            if res is not None:
                p += res.problems(stage)
        return p

    def required(self, answering: bool = True) -> dict[str, float]:
        """CPUs and GPUs all actors ask for together (resolved options)."""
        counts = {"decode": self.decoders, "encode": self.encoders, "select": 1,
                  "answer": self.answerers if answering else 0}
        return {
            "CPU": sum(n * getattr(self, s).num_cpus for s, n in counts.items()),
            "GPU": sum(n * getattr(self, s).num_gpus for s, n in counts.items()),
        }

    def layout(self) -> str:
        parts = []
        for stage, n in (("decode", self.decoders), ("encode", self.encoders), ("select", 1), ("answer", self.answerers)):
            r = getattr(self, stage)
            parts.append(f"{stage} {n}x{r.num_cpus:g} CPU" + (f"+{r.num_gpus:g} GPU" if r.num_gpus else ""))
        return ", ".join(parts)


def actor_options(resources: StageResources, *, stateful: bool, options: RayPipelineOptions) -> dict[str, Any]:
    """The fault-tolerance defaults and resources of one actor (all actors are built through here).

    Every actor restarts after its process or node dies (``max_restarts``). A stateless
    actor also retries the calls that were running (``max_task_retries``); a stateful one
    does not (its state is gone; the driver restarts the video instead).
    """
    opts: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "max_restarts": options.max_restarts,
        "max_task_retries": 0 if stateful else options.max_task_retries,
    }
    if options.spread:
        opts["scheduling_strategy"] = "SPREAD"
    return opts


# ------------------------------------------------------------------------------ actors
def _stages_without_weights(config: VidpruneConfig):
    """A ``VideoQA`` whose decode and select stages are real and whose model is only its geometry.

    The decode and select actors need no weights: this builds their stages with
    ``VideoQA``'s own constructor (same options → same stages) from the checkpoint's config.
    """
    from ..qa import VideoQA
    from ..video_models.base import inspect_checkpoint

    info = inspect_checkpoint(config.model, keep_cls=config.keep_cls, prune_pooled=config.prune_pooled)
    return VideoQA(types.SimpleNamespace(geometry=info.geometry, default_num_frames=info.family.default_num_frames),
                   config)


def _load_video_qa(config: VidpruneConfig):
    from ..qa import VideoQA

    return VideoQA.from_pretrained(config=config.to_dict())


def _quiet_worker() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class _ActorBase:
    """What every actor answers: its pid and peak memory (for tests and the benchmark)."""

    def ready(self) -> int:
        return os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def peak_rss_bytes(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class DecodeActor(_ActorBase):
    """``DecodeStage`` as an actor: plans videos, decodes their time segments."""

    def __init__(self, config: VidpruneConfig):
        _quiet_worker()
        self.decoder = SegmentDecoder(_stages_without_weights(config).decode_stage)

    def plan(self, video: str) -> FramePlan:
        plan = self.decoder.plan(video)
        if not plan.indices:
            from ..errors import VideoDecodeError

            raise VideoDecodeError(f"cannot decode video {video!r}: it has no frames; re-encode it with ffmpeg")
        return plan

    def decode(self, video: str, plan: FramePlan, seq: int, segment_frames: int, lanes: int,
               stream_key: str) -> FrameBatch:
        return self.decoder.decode(video, plan, seq, segment_frames, lanes, stream_key)

    def decode_whole(self, video: str):
        return self.decoder.decode_whole(video)


class EncodeActor(_ActorBase):
    """``EncodeStage`` as an actor (one replica): a segment's frames → features on CPU, pixels dropped."""

    def __init__(self, config: VidpruneConfig, free_language_model: bool = True):
        _quiet_worker()
        qa = _load_video_qa(config)
        if free_language_model:
            _free_language_model(qa.llm)
        self.stage = qa.encode_stage

    def encode(self, batch: FrameBatch) -> FrameBatch:
        start = time.perf_counter()
        frames = batch.frames if batch.frames.flags.writeable else np.array(batch.frames)  # store objects are read-only
        enc = self.stage.process(frames, batch.times_s).to("cpu")
        timings = {**batch.timings_s, "encode": time.perf_counter() - start}
        return FrameBatch(seq=batch.seq, indices=batch.indices, times_s=batch.times_s, frames=None, encoded=enc,
                          backend=batch.backend, warnings=batch.warnings, timings_s=timings)


def _free_language_model(llm) -> None:
    """Drop the LLM's weights from an encoder replica (it runs only the vision side).

    ``get_decoder()`` / ``get_output_embeddings()`` are transformers' public accessors of
    the language model and LM head; moving them to the meta device releases their memory.
    """
    model = llm.model
    for getter in ("get_decoder", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            module.to("meta")


@dataclass
class _SelectState:
    stream: SelectionStream
    next_seq: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "encode": 0.0})


class SelectActor(_ActorBase):
    """``SelectStage`` as an actor: one selection stream per video, fed its segments in temporal order."""

    def __init__(self, config: VidpruneConfig):
        _quiet_worker()
        self.stage = _stages_without_weights(config).select_stage
        self.streams: dict[str, _SelectState] = {}

    def add(self, stream_key: str, num_frames: int, batch: FrameBatch) -> int:
        """Select the next segment of a video (``batch.seq`` 0, 1, ... in order); returns the frames selected so far."""
        if batch.seq == 0:
            self.streams[stream_key] = _SelectState(SelectionStream(self.stage, num_frames))
        state = self.streams.get(stream_key)
        if state is None:
            raise SelectionLost(f"the selection of stream {stream_key} was lost (the select actor restarted)")
        if batch.seq != state.next_seq:
            raise SelectionLost(f"segment {batch.seq} of stream {stream_key} arrived before segment {state.next_seq}")
        state.stream.add(batch.encoded, batch.indices, batch.times_s)
        state.next_seq += 1
        for k in state.timings:
            state.timings[k] += batch.timings_s.get(k, 0.0)
        return state.stream.frames_done

    def finish(self, stream_key: str, decode: dict[str, Any], warnings: list[str]) -> PrunedVideo:
        state = self.streams.pop(stream_key, None)
        if state is None:
            raise SelectionLost(f"the selection of stream {stream_key} was lost (the select actor restarted)")
        pruned = state.stream.finish(decode, warnings)
        pruned.timings_s = {**state.timings, "select": state.stream.seconds}
        return pruned

    def drop(self, stream_key: str) -> None:
        self.streams.pop(stream_key, None)


class AnswerActor(_ActorBase):
    """``AnswerStage`` (through ``VideoQA.answer``) as an actor: a pruned video + its questions → answers."""

    def __init__(self, config: VidpruneConfig, questions_per_call: int = DEFAULT_QUESTIONS_PER_CALL):
        _quiet_worker()
        self.qa = _load_video_qa(config)
        self.questions_per_call = questions_per_call
        self.received: list[tuple[int, ...]] = []  # token shapes handed to the LLM (K, Dv)

    def answer(self, pruned: PrunedVideo, questions: list[str]) -> list[dict[str, Any]]:
        """One dict per question: ``text``, ``token_ids``, ``report`` — or ``error`` if its batch failed."""
        self.received.append(tuple(pruned.tokens.shape))
        out: list[dict[str, Any]] = []
        for start in range(0, len(questions), self.questions_per_call):
            chunk = questions[start : start + self.questions_per_call]
            try:
                answers = self.qa.answer(pruned, chunk)
            except Exception as exc:  # one failed batch must not take the video's other questions with it
                out += [{"error": _one_line(exc)} for _ in chunk]
                continue
            out += [{"text": a.text, "token_ids": list(a.token_ids), "report": a.report} for a in answers]
        return out

    def received_shapes(self) -> list[tuple[int, ...]]:
        return list(self.received)


# ------------------------------------------------------------------------------ driver
@dataclass
class VideoRequest:
    """A video (file path or (T, H, W, 3) uint8 array) and its questions; ``questions=None`` returns the pruned stream."""

    key: Any
    video: Any
    questions: list[str] | None = None


@dataclass
class VideoResult:
    """What became of a request: answers (one dict per question), the pruned stream, or one error line."""

    key: Any
    answers: list[dict[str, Any]] | None = None
    pruned: PrunedVideo | None = None
    error: str | None = None
    attempts: int = 1


@dataclass
class _Segment:
    seq: int
    select_ref: Any
    keep: tuple  # decode / encode refs, held until the segment is selected
    encoder: int


@dataclass
class _VideoRun:
    request: VideoRequest
    attempt: int = 1
    stream_key: str = ""
    plan_ref: Any = None
    batches: list[FrameBatch] | None = None  # decoded in the driver (arrays) or whole (fallback)
    num_segments: int = 0
    num_frames: int = 0
    next_seq: int = 0
    window: dict[int, _Segment] = field(default_factory=dict)
    phase: str = "planning"  # planning → streaming → answering
    decode_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    answerer: int = -1


def _one_line(exc: BaseException) -> str:
    cause = _root_cause(exc)
    text = " ".join(str(cause).split()) or type(cause).__name__
    if not isinstance(cause, VidpruneError):
        text = f"{type(cause).__name__}: {text}"
    return text[:500]


def _root_cause(exc: BaseException) -> BaseException:
    import ray.exceptions

    seen = 0
    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None and seen < 10:
        exc, seen = exc.cause, seen + 1
    return exc


def _work_was_lost(exc: BaseException) -> bool:
    """True when a process/node failure (not the input) made the call fail: worth starting the video over."""
    cause = _root_cause(exc)
    if isinstance(cause, SelectionLost):
        return True
    names = {t.__name__ for t in type(cause).__mro__} | {t.__name__ for t in type(exc).__mro__}
    return bool(names & set(_LOST_WORK_ERRORS))


class RayVideoPipeline:
    """Decode → encode → select → answer as Ray actors. Needs a connected Ray (:func:`connect_ray`).

    Args:
        config: a validated :class:`VidpruneConfig` (e.g. ``VideoQA.resolve_config(...)``);
            every actor builds its stage from it exactly as ``VideoQA`` does.
        options: the actor layout, resources and bounds (:class:`RayPipelineOptions`).
        answering: start the LLM actors now, alongside the others (else on the first
            request with questions; ``prepare`` alone never needs them).

    Raises:
        ConfigError: the cluster has fewer CPUs/GPUs than the actors ask for.
        ModelLoadError: an actor could not load the checkpoint.
    """

    def __init__(self, config: VidpruneConfig, options: RayPipelineOptions | None = None, *, answering: bool = True):
        import ray

        self.config = config.validate()
        self.options = (options or RayPipelineOptions()).resolved(config)
        o = self.options
        self.stats: dict[str, Any] = {"max_segments_in_flight": 0, "segments": 0, "restarted_videos": 0,
                                      "decoded_whole": 0, "segments_per_decoder": [0] * o.decoders,
                                      "videos": 0}
        self._check_cluster(ray.cluster_resources(), answering)
        self.decoders = [self._actor(DecodeActor, o.decode, False, config) for _ in range(o.decoders)]
        self.encoders = [self._actor(EncodeActor, o.encode, False, config) for _ in range(o.encoders)]
        self.selector = self._actor(SelectActor, o.select, True, config)
        self.answerers: list[Any] = []
        if answering:
            self.answerers = [self._new_answerer() for _ in range(o.answerers)]
        self._wait_ready(self.decoders + self.encoders + [self.selector] + self.answerers)

    # ------------------------------------------------------------ actors
    def _actor(self, cls, resources: StageResources, stateful: bool, *args):
        import ray

        return ray.remote(cls).options(**actor_options(resources, stateful=stateful, options=self.options)).remote(*args)

    def _check_cluster(self, available: dict[str, float], answering: bool) -> None:
        need = self.options.required(answering)
        for kind in ("CPU", "GPU"):
            if need[kind] > available.get(kind, 0.0) + 1e-9:
                raise ConfigError(
                    f"the Ray cluster has {available.get(kind, 0.0):g} {kind}s but the pipeline asks for {need[kind]:g} "
                    f"({self.options.layout()}); lower --decoders/--encoders or the per-stage {kind}s, or add nodes"
                )

    def _wait_ready(self, actors: list) -> None:
        import ray

        try:
            ray.get([a.ready.remote() for a in actors])
        except Exception as exc:  # a constructor failed: say why once, before any work starts
            cause = _root_cause(exc)
            if isinstance(cause, VidpruneError):
                raise cause from None
            raise ModelLoadError(f"a pipeline actor failed to start: {_one_line(exc)}") from None

    def _await_selector(self) -> None:
        """Wait until the select actor answers again (it may be restarting after its process died).

        Calls to a restarting actor without task retries fail at once, so a video started over
        too early would lose its work again.
        """
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.monotonic() + ACTOR_RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self.selector.ready.remote(), timeout=max(0.1, deadline - time.monotonic()))
                return
            except ActorDiedError:
                return  # gone for good (max_restarts used up): the next attempt reports it
            except (ActorUnavailableError, GetTimeoutError):
                if time.monotonic() > deadline:
                    return  # the video's next attempt reports what is wrong
                time.sleep(_POLL_S / 4)

    def _new_answerer(self):
        return self._actor(AnswerActor, self.options.answer, False, self.config, self.options.questions_per_call)

    def _ensure_answerers(self) -> None:
        if not self.answerers:
            self.answerers = [self._new_answerer() for _ in range(self.options.answerers)]
            self._wait_ready(self.answerers)

    def pids(self) -> dict[str, list[int]]:
        """Process id of every actor, by stage (tests kill them)."""
        import ray

        groups = {"decode": self.decoders, "encode": self.encoders, "select": [self.selector],
                  "answer": self.answerers}
        return {k: ray.get([a.pid.remote() for a in v]) for k, v in groups.items()}

    def peak_rss_bytes(self) -> dict[str, list[int]]:
        """Peak resident memory of every actor process, by stage."""
        import ray

        groups = {"decode": self.decoders, "encode": self.encoders, "select": [self.selector],
                  "answer": self.answerers}
        return {k: ray.get([a.peak_rss_bytes.remote() for a in v]) for k, v in groups.items()}

    def shutdown(self) -> None:
        import ray

        for actor in self.decoders + self.encoders + [self.selector] + self.answerers:
            ray.kill(actor, no_restart=True)
        self.decoders, self.encoders, self.answerers = [], [], []

    # ------------------------------------------------------------ public
    def prepare(self, video: Any) -> PrunedVideo:
        """Decode, encode and prune one video on the cluster (== ``VideoQA.prepare(video)``)."""
        (result,) = list(self.run([VideoRequest(0, video, None)]))
        if result.error is not None:
            raise _error_from_line(result.error)
        return result.pruned

    def ask(self, video: Any, questions: list[str]) -> list[dict[str, Any]]:
        """Answer questions about one video (== ``VideoQA.answer(VideoQA.prepare(video), questions)``)."""
        (result,) = list(self.run([VideoRequest(0, video, list(questions))]))
        if result.error is not None:
            raise _error_from_line(result.error)
        return result.answers

    def run(self, requests: Iterable[VideoRequest]) -> Iterator[VideoResult]:
        """Stream requests through the cluster; yields each result as its video finishes (any order)."""
        return _Scheduler(self).run(requests)


class _Scheduler:
    """The driver's loop for one :meth:`RayVideoPipeline.run`: submits work within the bounds, reacts to results.

    A video goes planning → streaming (segments submitted in order, at most
    ``max_segments_in_flight`` over all videos between decode and select) → answering
    (the select actor's ``finish`` result handed to an LLM actor) → done. A failure that
    lost work sends the video back to planning with a new stream key; any other failure
    is the video's result.
    """

    def __init__(self, pipe: RayVideoPipeline):
        self.pipe, self.o = pipe, pipe.options
        self.streaming: list[_VideoRun] = []  # planning or streaming, oldest first
        self.answering: list[_VideoRun] = []
        self.waiting: dict[Any, tuple[_VideoRun, str]] = {}  # object ref → (run, what it is)
        self.discarded: list[Any] = []  # refs of abandoned work, fetched once done so Ray does not report them
        self.encoder_load = [0] * len(pipe.encoders)
        self.answer_load = [0] * self.o.answerers
        self.in_flight = 0

    def run(self, requests: Iterable[VideoRequest]) -> Iterator[VideoResult]:
        import ray

        o, todo, exhausted = self.o, iter(requests), False
        while True:
            while not exhausted and len(self.streaming) < o.max_videos_in_flight \
                    and len(self.answering) < o.max_answers_queued:
                request = next(todo, None)
                if request is None:
                    exhausted = True
                    break
                run = _VideoRun(request)
                self.streaming.append(run)
                self.start(run)
            if not self.streaming and not self.answering:
                self.drain(_POLL_S)
                return
            for run in list(self.streaming):  # oldest video first: it holds the window's oldest segments
                while (run.phase == "streaming" and run.next_seq < run.num_segments
                       and self.in_flight < o.max_segments_in_flight):
                    self.submit_segment(run)
            self.drain(0)
            if not self.waiting:
                continue
            ready, _ = ray.wait(list(self.waiting), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                if ref in self.waiting:
                    result = self.handle(ref, *self.waiting.pop(ref))
                    if result is not None:
                        yield result

    # ------------------------------------------------------------ submit
    def start(self, run: _VideoRun) -> None:
        """(Re)start a video: plan it on a decoder, or cut an array into segments here."""
        pipe = self.pipe
        run.stream_key = uuid.uuid4().hex
        run.phase, run.next_seq, run.window, run.batches = "planning", 0, {}, None
        video = run.request.video
        if isinstance(video, np.ndarray):
            run.batches = batches_from_clip(clip_from_array(video), self.o.segment_frames)
            run.decode_info, run.warnings = {"backend": "array", "num_stream_frames": len(video)}, []
            self.begin_streaming(run, len(run.batches), sum(len(b) for b in run.batches))
        else:
            planner = pipe.decoders[pipe.stats["videos"] % len(pipe.decoders)]  # spread the demux passes
            pipe.stats["videos"] += 1
            run.plan_ref = planner.plan.remote(os.fspath(video))
            self.waiting[run.plan_ref] = (run, "plan")

    @staticmethod
    def begin_streaming(run: _VideoRun, num_segments: int, num_frames: int) -> None:
        run.phase, run.num_segments, run.num_frames = "streaming", num_segments, num_frames

    def submit_segment(self, run: _VideoRun) -> None:
        """Decode (lane ``seq % decoders``) → encode (least busy replica) → select, as chained refs."""
        import ray

        pipe, seq = self.pipe, run.next_seq
        if run.batches is not None:
            decoded = ray.put(run.batches[seq])
        else:
            lane = seq % len(pipe.decoders)
            decoded = pipe.decoders[lane].decode.remote(os.fspath(run.request.video), run.plan_ref, seq,
                                                        self.o.segment_frames, len(pipe.decoders), run.stream_key)
            pipe.stats["segments_per_decoder"][lane] += 1
        enc_i = min(range(len(pipe.encoders)), key=lambda i: self.encoder_load[i])
        encoded = pipe.encoders[enc_i].encode.remote(decoded)
        selected = pipe.selector.add.remote(run.stream_key, run.num_frames, encoded)
        run.window[seq] = _Segment(seq, selected, (decoded, encoded), enc_i)
        self.waiting[selected] = (run, "select")
        self.encoder_load[enc_i] += 1
        self.in_flight += 1
        run.next_seq += 1
        pipe.stats["segments"] += 1
        pipe.stats["max_segments_in_flight"] = max(pipe.stats["max_segments_in_flight"], self.in_flight)

    def finish_streaming(self, run: _VideoRun) -> None:
        """All segments selected: the pruned stream goes from the select actor to an LLM actor (or back here)."""
        pipe = self.pipe
        self.streaming.remove(run)
        self.answering.append(run)
        run.phase = "answering"
        pruned_ref = pipe.selector.finish.remote(run.stream_key, run.decode_info, run.warnings)
        if run.request.questions is None:
            self.waiting[pruned_ref] = (run, "pruned")
            return
        pipe._ensure_answerers()
        run.answerer = min(range(len(pipe.answerers)), key=lambda i: self.answer_load[i])
        self.answer_load[run.answerer] += 1
        answer_ref = pipe.answerers[run.answerer].answer.remote(pruned_ref, run.request.questions)
        self.waiting[answer_ref] = (run, "answer")

    # ------------------------------------------------------------ react
    def handle(self, ref, run: _VideoRun, kind: str) -> VideoResult | None:
        """One finished ref: advance its video; returns the video's result when it is done."""
        import ray

        try:
            value = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - sorted into "decode whole", "start over" or "error result"
            if kind == "select" and isinstance(_root_cause(exc), PlanChanged):
                self.decode_whole(run)
                return None
            return self.fail(run, exc)
        if kind == "plan":
            run.decode_info = {"backend": value.backend, "num_stream_frames": value.num_stream_frames}
            run.warnings = list(value.reader_warnings) + list(value.notes)
            self.begin_streaming(run, math.ceil(len(value) / self.o.segment_frames), len(value))
        elif kind == "whole":
            run.batches = batches_from_clip(value, self.o.segment_frames)
            run.decode_info = {"backend": value.backend, "num_stream_frames": value.num_stream_frames}
            run.warnings = list(value.warnings)
            self.begin_streaming(run, len(run.batches), len(value.indices))
        elif kind == "select":
            seg = run.window.pop(next(s for s, g in run.window.items() if g.select_ref == ref))
            self.encoder_load[seg.encoder] -= 1
            self.in_flight -= 1  # its frames and features are released with seg
            if run.next_seq == run.num_segments and not run.window:
                self.finish_streaming(run)
        else:  # "answer" / "pruned": the video is done
            self.answering.remove(run)
            self.free_answerer(run)
            if kind == "answer":
                return VideoResult(run.request.key, answers=value, attempts=run.attempt)
            return VideoResult(run.request.key, pruned=value, attempts=run.attempt)
        return None

    def decode_whole(self, run: _VideoRun) -> None:
        """Decoding disagreed with the demuxed table: one decoder reads the clip as ``VideoQA`` does."""
        self.release(run)
        self.pipe.stats["decoded_whole"] += 1
        run.stream_key, run.next_seq, run.phase = uuid.uuid4().hex, 0, "planning"
        whole = self.pipe.decoders[0].decode_whole.remote(os.fspath(run.request.video))
        self.waiting[whole] = (run, "whole")

    def fail(self, run: _VideoRun, exc: BaseException) -> VideoResult | None:
        """Start the video over if a process/node failure lost its work, else its result is the error."""
        self.release(run)
        if run in self.answering:
            self.answering.remove(run)
        self.free_answerer(run)
        if _work_was_lost(exc) and run.attempt < self.o.video_attempts:
            self.pipe._await_selector()
            run.attempt += 1
            self.pipe.stats["restarted_videos"] += 1
            log.warning("starting video %r over (attempt %d) after: %s", run.request.key, run.attempt,
                        _one_line(exc)[:200])
            if run not in self.streaming:
                self.streaming.append(run)
            self.start(run)
            return None
        if run in self.streaming:
            self.streaming.remove(run)
        return VideoResult(run.request.key, error=_one_line(exc), attempts=run.attempt)

    def free_answerer(self, run: _VideoRun) -> None:
        if run.answerer >= 0:
            self.answer_load[run.answerer] -= 1
            run.answerer = -1

    def release(self, run: _VideoRun) -> None:
        """Forget a video's work in flight (its refs are drained later) and drop its selection stream."""
        for seg in run.window.values():
            self.encoder_load[seg.encoder] -= 1
        self.in_flight -= len(run.window)
        run.window = {}
        for ref, (r, _) in list(self.waiting.items()):
            if r is run:
                del self.waiting[ref]
                self.discarded.append(ref)
        self.discarded.append(self.pipe.selector.drop.remote(run.stream_key))

    def drain(self, timeout: float) -> None:
        import ray

        if self.discarded:
            done, self.discarded = ray.wait(self.discarded, num_returns=len(self.discarded), timeout=timeout)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception:  # noqa: BLE001 - abandoned work: its failure was already handled
                    pass


def _error_from_line(line: str) -> VidpruneError:
    from ..errors import VideoDecodeError

    return VideoDecodeError(line) if line.startswith("cannot decode video") else VidpruneError(line)


# ------------------------------------------------------------------------------ connect
def connect_ray(address: str | None = None, *, node_ip_address: str | None = None, num_cpus: int | None = None,
                log_to_driver: bool = False) -> str:
    """Join a running cluster (``address``, else ``RAY_ADDRESS``) or start Ray on this machine.

    ``node_ip_address``: the address a local Ray binds to (e.g. ``127.0.0.2`` where Ray would
    rewrite 127.0.0.1 to an outward address); also read from ``VIDPRUNE_RAY_NODE_IP``.
    ``num_cpus``: logical CPUs of a local Ray (at least what the pipeline asks for).
    Returns "cluster ADDRESS" or "local". Already connected: does nothing.

    Raises:
        ConfigError: the cluster cannot be reached.
    """
    import ray

    if ray.is_initialized():
        return "connected"
    address = address or os.environ.get("RAY_ADDRESS") or None
    node_ip_address = node_ip_address or os.environ.get("VIDPRUNE_RAY_NODE_IP") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": log_to_driver,
                              "include_dashboard": False}
    if node_ip_address:
        kwargs["_node_ip_address"] = node_ip_address
    try:
        if address:
            kwargs.pop("include_dashboard")
            ray.init(address=address, **kwargs)
            return f"cluster {address}"
        ray.init(num_cpus=num_cpus, **kwargs)
        return "local"
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"cannot start or join {where} ({' '.join(str(exc).split())[:200]}); check the address "
                          "(ray start --head prints it) or leave --address out to run locally") from None
