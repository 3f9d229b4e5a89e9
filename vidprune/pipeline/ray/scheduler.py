"""The driver's loop: videos through plan → stream segments → answer, within the in-flight bounds.

A video is a :class:`VideoRun` in one :class:`Phase`; every Ray call in flight is waited
for as one :class:`Awaiting` (what the ref will bring). :class:`Scheduler` submits work
while the bounds allow and reacts to each finished ref with the handler of its
``Awaiting``. Backpressure and fault tolerance: docs/ray.md.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from ..stages import PrunedVideo, clip_from_array
from ..segments import FrameBatch, PlanChanged, batches_from_clip
from .failures import one_line, root_cause, work_was_lost

if TYPE_CHECKING:
    from .pipeline import RayVideoPipeline

__all__ = ["VideoRequest", "VideoResult", "Phase", "Awaiting", "VideoRun", "Scheduler"]

log = logging.getLogger(__name__)

# Seconds between scheduler wake-ups when nothing finishes (only bounds how late a wait notices a stop).
POLL_S = 1.0


@dataclass
class VideoRequest:
    """A video (file path or (T, H, W, 3) uint8 array) and its questions; ``questions=None`` returns the pruned stream.

    ``variants``: labels of the pipeline's variants to select and answer with (None: the
    pipeline's only one, or all); the video is decoded and encoded once for all of them.
    ``generate``: generate() overrides for these questions (e.g. ``{"max_new_tokens": 8}``).
    """

    key: Any
    video: Any
    questions: list[str] | None = None
    variants: list[str] | None = None
    generate: dict[str, Any] | None = None


@dataclass
class VideoResult:
    """What became of a request: answers (one dict per question), the pruned stream, or an error.

    ``error`` is the failure as one line (for results files); ``exception`` the exception
    the actor raised, with its type (e.g. :class:`~vidprune.errors.VideoDecodeError`).
    With variants (a request naming them, or a pipeline of several), ``by_variant`` holds
    per label what ``answers`` / ``pruned`` hold otherwise.
    """

    key: Any
    answers: list[dict[str, Any]] | None = None
    pruned: PrunedVideo | None = None
    by_variant: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 1
    exception: BaseException | None = field(default=None, repr=False)
    answerer: int | None = None  # the LLM replica that answered (index into the pipeline's answer actors)


class Phase(Enum):
    """Where a video is: its frames being planned, its segments streaming to the select actor, or answering."""

    PLANNING = "planning"
    STREAMING = "streaming"
    ANSWERING = "answering"


class Awaiting(Enum):
    """What a ref in flight brings, and so which handler advances its video."""

    PLAN = "plan"  # a decoder's FramePlan
    WHOLE_CLIP = "whole clip"  # the clip decoded whole (the fallback)
    SELECTED = "selected segment"  # the select actor took one segment
    PRUNED = "pruned video"  # the select actor's PrunedVideo (prepare only)
    ANSWERS = "answers"  # an LLM actor's answers


@dataclass
class _Segment:
    seq: int
    select_ref: Any
    keep: tuple  # decode / encode refs, held until the segment is selected
    encoder: int


@dataclass
class VideoRun:
    """One request on its way through the cluster (one attempt at a time)."""

    request: VideoRequest
    phase: Phase = Phase.PLANNING
    attempt: int = 1
    stream_key: str = ""
    plan_ref: Any = None
    batches: list[FrameBatch] | None = None  # decoded in the driver (arrays) or whole (fallback)
    num_segments: int = 0
    num_frames: int = 0
    next_seq: int = 0
    window: dict[int, _Segment] = field(default_factory=dict)
    decode_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    answerer: int = -1
    selector: int = 0  # the select actor that holds this video's selection (all its segments go there)


class Scheduler:
    """The driver's loop for one :meth:`RayVideoPipeline.run`: submits work within the bounds, reacts to results.

    A video goes PLANNING → STREAMING (segments submitted in order, at most
    ``max_segments_in_flight`` over all videos between decode and select) → ANSWERING
    (the select actor's ``finish`` result handed to an LLM actor) → done. A failure that
    lost work sends the video back to PLANNING with a new stream key; any other failure
    is the video's result.
    """

    def __init__(self, pipe: RayVideoPipeline):
        self.pipe, self.o = pipe, pipe.options
        self.streaming: list[VideoRun] = []  # PLANNING or STREAMING, oldest first
        self.answering: list[VideoRun] = []
        self.waiting: dict[Any, tuple[VideoRun, Awaiting]] = {}  # object ref → (run, what it brings)
        self.discarded: list[Any] = []  # refs of abandoned work, fetched once done so Ray does not report them
        self.encoder_load = [0] * len(pipe.encoders)
        self.answer_load = [0] * self.o.answerers
        self.answered = [0] * self.o.answerers  # videos each LLM replica was given: ties go to the least used
        self.in_flight = 0
        self._handlers = {Awaiting.PLAN: self.on_plan, Awaiting.WHOLE_CLIP: self.on_whole_clip,
                          Awaiting.SELECTED: self.on_selected, Awaiting.PRUNED: self.on_done,
                          Awaiting.ANSWERS: self.on_done}

    def run(self, requests: Iterable[VideoRequest]) -> Iterator[VideoResult]:
        o, todo, exhausted = self.o, iter(requests), False
        self.pipe.placement.progress()  # the clock of "no result for placement_timeout_s" starts now
        while True:
            while not exhausted and len(self.streaming) < o.max_videos_in_flight \
                    and len(self.answering) < o.max_answers_queued:
                request = next(todo, None)
                if request is None:
                    exhausted = True
                    break
                run = VideoRun(request)
                self.streaming.append(run)
                self.start(run)
            if not self.streaming and not self.answering:
                self.drain(POLL_S)
                return
            for run in list(self.streaming):  # oldest video first: it holds the window's oldest segments
                while (run.phase is Phase.STREAMING and run.next_seq < run.num_segments
                       and self.in_flight < o.max_segments_in_flight):
                    self.submit_segment(run)
            self.drain(0)
            if not self.waiting:
                continue
            ready, _ = ray.wait(list(self.waiting), num_returns=1, timeout=POLL_S)
            if not ready:
                self.pipe.placement.check()  # ClusterShrunk: the cluster can no longer place the actors
            for ref in ready:
                if ref in self.waiting:
                    result = self.handle(ref, *self.waiting.pop(ref))
                    if result is not None:
                        yield result

    # ------------------------------------------------------------ submit
    def start(self, run: VideoRun) -> None:
        """(Re)start a video: plan it on a decoder, or cut an array into segments here."""
        pipe = self.pipe
        run.stream_key = uuid.uuid4().hex
        run.phase, run.next_seq, run.window, run.batches = Phase.PLANNING, 0, {}, None
        held = [sum(1 for r in self.streaming if r is not run and r.selector == i) for i in range(len(pipe.selectors))]
        run.selector = held.index(min(held))  # the select actor holding the fewest videos' selections
        video = run.request.video
        if isinstance(video, np.ndarray):
            run.batches = batches_from_clip(clip_from_array(video), self.o.segment_frames)
            run.decode_info, run.warnings = {"backend": "array", "num_stream_frames": len(video)}, []
            self.begin_streaming(run, len(run.batches), sum(len(b) for b in run.batches))
        else:
            planner = pipe.decoders[pipe.stats["videos"] % len(pipe.decoders)]  # spread the demux passes
            pipe.stats["videos"] += 1
            run.plan_ref = planner.plan.remote(os.fspath(video))
            self.waiting[run.plan_ref] = (run, Awaiting.PLAN)

    @staticmethod
    def begin_streaming(run: VideoRun, num_segments: int, num_frames: int) -> None:
        run.phase, run.num_segments, run.num_frames = Phase.STREAMING, num_segments, num_frames

    def submit_segment(self, run: VideoRun) -> None:
        """Decode (lane ``seq % decoders``) → encode (least busy replica) → select, as chained refs."""
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
        selected = pipe.selectors[run.selector].add.remote(run.stream_key, run.num_frames, encoded, self.variants_of(run))
        run.window[seq] = _Segment(seq, selected, (decoded, encoded), enc_i)
        self.waiting[selected] = (run, Awaiting.SELECTED)
        self.encoder_load[enc_i] += 1
        self.in_flight += 1
        run.next_seq += 1
        pipe.stats["segments"] += 1
        pipe.stats["max_segments_in_flight"] = max(pipe.stats["max_segments_in_flight"], self.in_flight)

    def finish_streaming(self, run: VideoRun) -> None:
        """All segments selected: the pruned stream goes from the select actor to an LLM actor (or back here)."""
        pipe = self.pipe
        self.streaming.remove(run)
        self.answering.append(run)
        run.phase = Phase.ANSWERING
        pruned_ref = pipe.selectors[run.selector].finish.remote(run.stream_key, run.decode_info, run.warnings)
        if run.request.questions is None:
            self.waiting[pruned_ref] = (run, Awaiting.PRUNED)
            return
        pipe.ensure_answerers()
        run.answerer = min(range(len(pipe.answerers)), key=lambda i: (self.answer_load[i], self.answered[i]))
        self.answer_load[run.answerer] += 1
        self.answered[run.answerer] += 1
        answer_ref = pipe.answerers[run.answerer].answer.remote(pruned_ref, run.request.questions,
                                                                run.request.generate)
        self.waiting[answer_ref] = (run, Awaiting.ANSWERS)

    # ------------------------------------------------------------ react
    def handle(self, ref, run: VideoRun, awaiting: Awaiting) -> VideoResult | None:
        """One finished ref: advance its video; returns the video's result when it is done."""
        try:
            value = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - sorted into "decode whole", "start over" or "error result"
            if awaiting is Awaiting.SELECTED and isinstance(root_cause(exc), PlanChanged):
                self.decode_whole(run)
                return None
            return self.fail(run, exc)
        self.pipe.placement.progress()
        return self._handlers[awaiting](run, ref, value, awaiting)

    def on_plan(self, run: VideoRun, ref, plan, awaiting: Awaiting) -> None:
        run.decode_info = {"backend": plan.backend, "num_stream_frames": plan.num_stream_frames}
        run.warnings = list(plan.reader_warnings) + list(plan.notes)
        self.begin_streaming(run, math.ceil(len(plan) / self.o.segment_frames), len(plan))

    def on_whole_clip(self, run: VideoRun, ref, clip, awaiting: Awaiting) -> None:
        run.batches = batches_from_clip(clip, self.o.segment_frames)
        run.decode_info = {"backend": clip.backend, "num_stream_frames": clip.num_stream_frames}
        run.warnings = list(clip.warnings)
        self.begin_streaming(run, len(run.batches), len(clip.indices))

    def on_selected(self, run: VideoRun, ref, _frames_done: int, awaiting: Awaiting) -> None:
        seg = run.window.pop(next(s for s, g in run.window.items() if g.select_ref == ref))
        self.encoder_load[seg.encoder] -= 1
        self.in_flight -= 1  # its frames and features are released with seg
        if run.next_seq == run.num_segments and not run.window:
            self.finish_streaming(run)

    def variants_of(self, run: VideoRun) -> list[str]:
        return list(run.request.variants or self.pipe.variants)

    def on_done(self, run: VideoRun, ref, by_variant: dict[str, Any], awaiting: Awaiting) -> VideoResult:
        self.answering.remove(run)
        answerer = run.answerer if awaiting is Awaiting.ANSWERS else None
        self.free_answerer(run)
        if run.request.variants is not None or len(self.pipe.variants) > 1:
            return VideoResult(run.request.key, by_variant=by_variant, attempts=run.attempt, answerer=answerer)
        (value,) = by_variant.values()
        if awaiting is Awaiting.ANSWERS:
            return VideoResult(run.request.key, answers=value, attempts=run.attempt, answerer=answerer)
        return VideoResult(run.request.key, pruned=value, attempts=run.attempt)

    def decode_whole(self, run: VideoRun) -> None:
        """Decoding disagreed with the demuxed table: one decoder reads the clip as ``VideoQA`` does."""
        self.release(run)
        self.pipe.stats["decoded_whole"] += 1
        run.stream_key, run.next_seq, run.phase = uuid.uuid4().hex, 0, Phase.PLANNING
        whole = self.pipe.decoders[0].decode_whole.remote(os.fspath(run.request.video))
        self.waiting[whole] = (run, Awaiting.WHOLE_CLIP)

    def fail(self, run: VideoRun, exc: BaseException) -> VideoResult | None:
        """Start the video over if a process/node failure lost its work, else its result is the error."""
        self.release(run)
        if run in self.answering:
            self.answering.remove(run)
        self.free_answerer(run)
        if work_was_lost(exc) and run.attempt < self.o.video_attempts:
            self.pipe.await_selector()
            run.attempt += 1
            self.pipe.stats["restarted_videos"] += 1
            log.warning("starting video %r over (attempt %d) after: %s", run.request.key, run.attempt,
                        one_line(exc)[:200])
            if run not in self.streaming:
                self.streaming.append(run)
            self.start(run)
            return None
        if run in self.streaming:
            self.streaming.remove(run)
        return VideoResult(run.request.key, error=one_line(exc), attempts=run.attempt, exception=root_cause(exc))

    def free_answerer(self, run: VideoRun) -> None:
        if run.answerer >= 0:
            self.answer_load[run.answerer] -= 1
            run.answerer = -1

    def release(self, run: VideoRun) -> None:
        """Forget a video's work in flight (its refs are drained later) and drop its selection stream."""
        for seg in run.window.values():
            self.encoder_load[seg.encoder] -= 1
        self.in_flight -= len(run.window)
        run.window = {}
        for ref, (r, _) in list(self.waiting.items()):
            if r is run:
                del self.waiting[ref]
                self.discarded.append(ref)
        self.discarded.append(self.pipe.selectors[run.selector].drop.remote(run.stream_key))

    def drain(self, timeout: float) -> None:
        if self.discarded:
            done, self.discarded = ray.wait(self.discarded, num_returns=len(self.discarded), timeout=timeout)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception:  # noqa: BLE001 - abandoned work: its failure was already handled
                    pass
