"""The stages as Ray actors: each holds the very stage objects of the in-process path.

``DecodeActor`` (``SegmentDecoder`` over ``DecodeStage``), ``EncodeActor`` (``EncodeStage``,
one vision-tower replica), ``SelectActor`` (``SelectStage``: one ``VideoSelection`` per
video, fed in temporal order) and ``AnswerActor`` (``AnswerStage`` through
``AnswerStage`` and the report of ``pipeline.report``). Every stage comes from
:func:`~vidprune.pipeline.build.build_stages` (decode and select without weights). How they are wired and scheduled: docs/ray.md and
:mod:`vidprune.pipeline.ray.scheduler`.

Nothing an actor holds grows with the number of calls: the select actor holds the
selections of the videos in flight (dropped when finished or abandoned); the others hold
their stages only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...config import VidpruneConfig
from ...errors import VideoDecodeError
from ..build import build_stages
from ..report import answer_report
from ..segments import FrameBatch, FramePlan, SegmentDecoder
from ..stages import PrunedVideo, VideoSelection
from .failures import SelectionLost, one_line
from .options import DEFAULT_QUESTIONS_PER_CALL

__all__ = ["DecodeActor", "EncodeActor", "SelectActor", "AnswerActor", "DEFAULT_VARIANT"]

# The label of a pipeline's only variant when it is built without ``variants``.
DEFAULT_VARIANT = ""


def _checkpoint_info(config: VidpruneConfig):
    from ...video_models.checkpoint import inspect_checkpoint

    return inspect_checkpoint(config.model, keep_cls=config.keep_cls, prune_pooled=config.prune_pooled,
                              revision=config.revision, trust_remote_code=config.trust_remote_code)


def _stages_without_weights(config: VidpruneConfig):
    """The decode and select stages of ``config``, built from the checkpoint's config alone (no weights)."""
    return build_stages(config, _checkpoint_info(config))


def _quiet_worker() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class _ActorBase:
    def ready(self) -> int:
        """Returns once the constructor ran (the driver waits on it); the actor's process id."""
        return os.getpid()


class DecodeActor(_ActorBase):
    """``DecodeStage`` as an actor: plans videos, decodes their time segments."""

    def __init__(self, config: VidpruneConfig):
        _quiet_worker()
        self.decoder = SegmentDecoder(_stages_without_weights(config).decode)

    def plan(self, video: str) -> FramePlan:
        plan = self.decoder.plan(video)
        if not plan.indices:
            raise VideoDecodeError(f"cannot decode video {video!r}: it has no frames; re-encode it with ffmpeg")
        return plan

    def decode(self, video: str, plan: FramePlan, seq: int, segment_frames: int, lanes: int,
               stream_key: str) -> FrameBatch:
        return self.decoder.decode(video, plan, seq, segment_frames, lanes, stream_key)

    def decode_whole(self, video: str):
        return self.decoder.decode_whole(video)


class EncodeActor(_ActorBase):
    """``EncodeStage`` as an actor (one replica): a segment's frames → features on CPU, pixels dropped.

    A replica loads the family's vision side alone (``from_pretrained(vision_only=True)``: the
    tower and projector from the checkpoint, the LLM built on ``meta`` and never read), so
    beside an LLM replica on one GPU the weights are held once.
    """

    def __init__(self, config: VidpruneConfig):
        _quiet_worker()
        info = _checkpoint_info(config)
        model = config.section("model")
        llm = info.family.from_pretrained(**model, vision_only=True)
        self.stage = build_stages(config, info, llm).encode
        self.llm = llm

    def weights(self) -> dict[str, int]:
        """Bytes of the weights this replica holds (not on ``meta``), by module of the HF model."""
        from ...video_models.vision_only import materialized_bytes

        return materialized_bytes(self.llm.model)

    def encode(self, batch: FrameBatch) -> FrameBatch:
        start = time.perf_counter()
        frames = batch.frames if batch.frames.flags.writeable else np.array(batch.frames)  # store objects are read-only
        enc = self.stage.process(frames, batch.times_s).to("cpu")
        timings = {**batch.timings_s, "encode": time.perf_counter() - start}
        return FrameBatch(seq=batch.seq, indices=batch.indices, times_s=batch.times_s, frames=None, encoded=enc,
                          backend=batch.backend, warnings=batch.warnings, timings_s=timings)


@dataclass
class _SelectState:
    selections: dict[str, VideoSelection]  # one per variant asked for this video
    next_seq: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "encode": 0.0})


class SelectActor(_ActorBase):
    """``SelectStage`` as an actor: per video one ``VideoSelection`` per variant, fed its segments in temporal order.

    ``variants`` (label → config) are the selection options one pipeline serves (the arms
    of an eval sweep: budgets, pruners, dedup); the frames are decoded and encoded once
    and every variant of the video selects from the same features.
    """

    def __init__(self, config: VidpruneConfig, variants: dict[str, VidpruneConfig] | None = None):
        _quiet_worker()
        variants = variants or {DEFAULT_VARIANT: config}
        self.stages = {label: _stages_without_weights(cfg).select for label, cfg in variants.items()}
        self.videos: dict[str, _SelectState] = {}  # videos in flight only: finish/drop remove them

    def add(self, stream_key: str, num_frames: int, batch: FrameBatch, variants: list[str]) -> int:
        """Select the next segment of a video (``batch.seq`` 0, 1, ... in order); returns the frames selected so far."""
        if batch.seq == 0:
            self.videos[stream_key] = _SelectState({v: VideoSelection(self.stages[v], num_frames) for v in variants})
        state = self.videos.get(stream_key)
        if state is None:
            raise SelectionLost(f"the selection of stream {stream_key} was lost (the select actor restarted)")
        if batch.seq != state.next_seq:
            raise SelectionLost(f"segment {batch.seq} of stream {stream_key} arrived before segment {state.next_seq}")
        for selection in state.selections.values():
            selection.add(batch.encoded, batch.indices, batch.times_s)
        state.next_seq += 1
        for k in state.timings:
            state.timings[k] += batch.timings_s.get(k, 0.0)
        return next(iter(state.selections.values())).frames_done

    def finish(self, stream_key: str, decode: dict[str, Any], warnings: list[str]) -> dict[str, PrunedVideo]:
        """The video's pruned stream of every variant it was asked for, by label."""
        state = self.videos.pop(stream_key, None)
        if state is None:
            raise SelectionLost(f"the selection of stream {stream_key} was lost (the select actor restarted)")
        out = {}
        for label, selection in state.selections.items():
            pruned = selection.finish(decode, warnings)
            pruned.timings_s = {**state.timings, "select": selection.seconds}
            out[label] = pruned
        return out

    def drop(self, stream_key: str) -> None:
        self.videos.pop(stream_key, None)


class AnswerActor(_ActorBase):
    """``AnswerStage`` as an actor: a pruned video + its questions → answers and their reports.

    One model per actor; each variant answers through its own stages (``build_stages``) over
    that model, its IVTP schedule handed to each generate call.
    """

    def __init__(self, config: VidpruneConfig, questions_per_call: int = DEFAULT_QUESTIONS_PER_CALL,
                 variants: dict[str, VidpruneConfig] | None = None):
        _quiet_worker()
        variants = variants or {DEFAULT_VARIANT: config}
        info = _checkpoint_info(config)
        self.llm = info.family.from_pretrained(**config.section("model"), ivtp=config.ivtp())
        self.variants = {label: (cfg, build_stages(cfg, info, self.llm), cfg.ivtp()) for label, cfg in variants.items()}
        self.questions_per_call = questions_per_call

    def answer(self, pruned: dict[str, PrunedVideo], questions: list[str],
               generate: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Per variant, one dict per question: ``text``, ``token_ids``, ``report`` — or ``error`` if its batch failed."""
        return {label: self._answer(label, video, questions, generate or {}) for label, video in pruned.items()}

    def _answer(self, label: str, pruned: PrunedVideo, questions: list[str],
                generate: dict[str, Any]) -> list[dict[str, Any]]:
        cfg, stages, schedule = self.variants[label]
        generate = {k: v for k, v in generate.items() if v is not None}
        out: list[dict[str, Any]] = []
        for start in range(0, len(questions), self.questions_per_call):
            chunk = questions[start : start + self.questions_per_call]
            try:
                answers = stages.answer.process_batch([(pruned, q) for q in chunk], **generate)
            except Exception as exc:  # one failed batch must not take the video's other questions with it
                out += [{"error": one_line(exc)} for _ in chunk]
                continue
            out += [{"text": a["text"], "token_ids": list(a["token_ids"]),
                     "report": answer_report(cfg, self.llm, stages.select, schedule, pruned, q, a, generate)}
                    for q, a in zip(chunk, answers)]
        return out
