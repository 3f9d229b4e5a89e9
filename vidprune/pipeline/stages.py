"""The pipeline's stages as plain classes: decode → encode → select (VisPruner + dedup + budget) → answer.

Each stage has a ``name``, is built from plain keyword arguments, and runs in-process
with no Ray: :class:`vidprune.VideoQA` chains them directly, and the Ray layer wraps the
very same objects as actors. Only the pruned tokens leave :class:`SelectStage`.

Shapes: T frames, N prunable tokens per frame, E extra tokens per frame
(Video-LLaVA's [CLS]: 1, else 0), V extra tokens per video (LLaVA-OneVision's newline: 1),
Dv the vision width, D the LLM width, Dc the width of the rows handed on (Dv, or D where
the family hands on stock LLM-input rows, see ``EncodedFrames``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, VideoDecodeError
from ..pruners import CrossFrameDedup, VideoBudget, check_pruner_grid, pruner_from_options
from ..plan import TokenPlan, plan_tokens
from ..video_models.base import VideoLLM
from ..video_models.datatypes import EncodedFrames, VisualGeometry
from .decode import DecodedClip, read_video
from .random_stream import SamplingStream
from .frame_reuse import CARRIED, DEFAULT_SKIP_STATIC_THRESHOLD, FrameReuse, LastEncodedUnit

__all__ = [
    "PrunedVideo",
    "DecodeStage",
    "EncodeStage",
    "SelectStage",
    "VideoSelection",
    "AnswerStage",
    "clip_from_array",
    "plan_tokens",
    "TokenPlan",
]


@dataclass
class PrunedVideo:
    """One video's budgeted token stream, before the projector. What crosses from the vision side to the LLM.

    Attributes:
        tokens: (K, Dc) kept rows in stream order: frame by frame, each frame's extra
            tokens first (the stock layout puts [CLS] first) then its kept patches in raster
            order; then the per-video extra rows (OneVision's newline). Pre-projector rows, or
            already LLM embeddings for families that hand on ``EncodedFrames.tokens``.
        frames: per sampled frame, a dict with index, time_s, kept, duplicates, candidates, allowance,
            and reused (the tower did not run on it: it repeats the last encoded frame) where checked.
        tokens_count: full / after_vispruner / after_dedup / to_llm totals.
        decode: what the decoder said (backend, stream frame count, warnings).
        layout: where the kept tokens sit in the stock grid, for families with multimodal
            positions (Qwen2.5-VL, Qwen3-VL): {"units", "grid": (h, w), "seconds_per_unit", "kept": per unit,
            "times_s": per unit the mean time of its frames (Qwen3-VL writes it in the prompt)}.
            None for the others.
        sampled_frames: frames sampled from the video (``frames`` has one record per pruning
            unit: a temporal patch of two frames for Qwen2.5-VL).
    """

    tokens: torch.Tensor
    frames: list[dict[str, Any]]
    tokens_count: dict[str, int]
    decode: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    layout: dict[str, Any] | None = None
    sampled_frames: int | None = None


def clip_from_array(frames: np.ndarray, fps: float | None = None) -> DecodedClip:
    """Wrap a (T, H, W, 3) uint8 array as a clip, used as given (no sampling)."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ConfigError(f"a video array must have shape (T, H, W, 3) with T >= 1, got {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise ConfigError(f"a video array must be uint8 RGB, got dtype {arr.dtype}")
    times = [i / fps for i in range(len(arr))] if fps else [float(i) for i in range(len(arr))]
    return DecodedClip(frames=arr, indices=list(range(len(arr))), times_s=times, num_stream_frames=len(arr),
                       backend="array", warnings=[])


class DecodeStage:
    """Video file → sampled frames (:class:`DecodedClip`)."""

    name = "decode"

    def __init__(self, num_frames: int | None = None, fps: float | None = None, max_frames: int | None = None,
                 backend: str = "pyav"):
        self.num_frames, self.fps, self.max_frames, self.backend = num_frames, fps, max_frames, backend

    def process(self, video: Any) -> DecodedClip:
        if isinstance(video, np.ndarray):
            return clip_from_array(video)
        if not isinstance(video, (str, bytes)) and not hasattr(video, "__fspath__"):
            raise VideoDecodeError(f"cannot read a video from a {type(video).__name__}; pass a file path or a (T, H, W, 3) uint8 array")
        return read_video(video, num_frames=self.num_frames, fps=self.fps, max_frames=self.max_frames,
                          backend=self.backend)


class EncodeStage:
    """Frames (T, H, W, 3) uint8 → :class:`EncodedFrames` with the model's own processor and vision tower.

    Units whose pixels repeat the last encoded unit's take its features instead of running the
    tower (:mod:`vidprune.pipeline.frame_reuse`): exactly equal pixels with ``reuse_frames``
    (default on), nearly equal (mean absolute difference ≤ ``skip_static_threshold`` levels)
    with ``skip_static`` (default off). ``EncodedFrames.reused`` says which.
    """

    name = "encode"

    def __init__(self, llm: VideoLLM, batch_size: int | None = None, reuse_frames: bool = True,
                 skip_static: bool = False, skip_static_threshold: float = DEFAULT_SKIP_STATIC_THRESHOLD):
        self.llm, self.batch_size = llm, batch_size
        self.reuse = FrameReuse(exact=reuse_frames, threshold=skip_static_threshold if skip_static else None)

    def process(self, frames: np.ndarray, times_s: list[float] | None = None,
                last: LastEncodedUnit | None = None) -> EncodedFrames:
        """Frames (T, H, W, 3) → :class:`EncodedFrames` of T units (Qwen2.5-VL: ceil(T/2) temporal patches).

        ``last``: the stream's last encoded unit, kept by a caller that feeds one stream in
        several calls (the demo); updated here. Without it each call is a stream of its own.
        """
        pixel_values = self.llm.preprocess(frames, times_s)  # (T, 3, S, S), or units of patches
        per_unit = self.llm.geometry.frames_per_unit
        if not self.reuse.active:
            return self._encode(pixel_values)
        last = last if last is not None else LastEncodedUnit()
        units = [frames[u * per_unit : (u + 1) * per_unit] for u in range(len(pixel_values))]  # (k, H, W, 3) each
        sources = self.reuse.sources(units, last)
        fresh = [u for u, src in enumerate(sources) if src == u]
        if len(fresh) == len(sources):
            encoded = self._encode(pixel_values)
        else:
            encoded = self._gather(pixel_values, sources, fresh, last)
        encoded.reused = [src != u for u, src in enumerate(sources)]
        if fresh:  # the stream's last encoded unit is now the last fresh one
            last.pixels, last.encoded = np.array(units[fresh[-1]]), encoded.take([fresh[-1]])
        return encoded

    def _encode(self, pixel_values: Any) -> EncodedFrames:
        """All units of ``pixel_values`` through the tower, ``batch_size`` frames per call."""
        per_unit = self.llm.geometry.frames_per_unit
        step = max(1, self.batch_size // per_unit) if self.batch_size else len(pixel_values)
        return EncodedFrames.concat([self.llm.encode(pixel_values[i : i + step]) for i in range(0, len(pixel_values), step)])

    def _gather(self, pixel_values: Any, sources: list[int], fresh: list[int], last: LastEncodedUnit) -> EncodedFrames:
        """Encode the ``fresh`` units only; every unit takes the rows of its source (``CARRIED``: ``last``'s)."""
        parts = []
        if last.encoded is not None and CARRIED in sources:
            parts.append(last.encoded.to(self.llm.device))
        if fresh:
            picked = (pixel_values.index_select(0, torch.as_tensor(fresh)) if isinstance(pixel_values, torch.Tensor)
                      else pixel_values.take(fresh))
            parts.append(self._encode(picked))
        pool = EncodedFrames.concat(parts)  # (carried?, fresh...) units
        offset = len(parts[0]) if len(parts) == 2 else 0
        position = {u: offset + i for i, u in enumerate(fresh)}
        encoded = pool.take([0 if src == CARRIED else position[src] for src in sources])
        encoded.seconds_per_unit = getattr(pixel_values, "seconds_per_unit", encoded.seconds_per_unit)
        encoded.reused = None
        return encoded


class SelectStage:
    """Per-frame VisPruner, cross-frame dedup and the video's total budget (method.md §1–3).

    Built from plain options; :meth:`process` handles one whole video's frames in
    temporal order (a new budget and dedup state per video).
    """

    name = "select"

    def __init__(self, geometry: VisualGeometry, *, budget: int | None, pruner: str = "vispruner",
                 important_ratio: float = 0.5, seed: int = 0, dedup: bool = True, dedup_threshold: float = 0.9,
                 dedup_reference: str = "kept", dedup_window: int | None = None):
        self.geometry, self.budget = geometry, budget
        check_pruner_grid(pruner, geometry.dynamic)
        # without a budget every token is a candidate: no pruner runs, and the report says "none"
        self.pruner = pruner_from_options(pruner if budget is not None else "none", important_ratio=important_ratio,
                                          seed=seed, grid=geometry.prune_grid)
        self.dedup_options = (
            {"threshold": dedup_threshold, "reference": dedup_reference, "window": dedup_window} if dedup else None
        )

    def video_budget(self, num_frames: int) -> VideoBudget:
        """A fresh :class:`VideoBudget` (pruner, dedup state, per-frame shares) for ``num_frames`` frames."""
        dedup = CrossFrameDedup(**self.dedup_options) if self.dedup_options else None
        budget = None if self.budget is None else self.budget - self.geometry.extra_per_video  # per-video rows first
        return VideoBudget(budget, num_frames, self.pruner, dedup=dedup,
                                  reserved_per_frame=self.geometry.extra_per_frame)

    def process(self, encoded: EncodedFrames, clip: DecodedClip) -> PrunedVideo:
        """Select a whole video's frames at once (the in-process path)."""
        selection = VideoSelection(self, len(clip.indices))
        selection.add(encoded, clip.indices, clip.times_s)
        return selection.finish({"backend": clip.backend, "num_stream_frames": clip.num_stream_frames}, clip.warnings)


class VideoSelection:
    """One video's selection in progress: ``SelectStage`` applied segment by segment, in temporal order.

    ``VideoSelection(stage, num_frames)``, then :meth:`add` for each segment in order, then
    :meth:`finish`. Holds only the kept tokens (at most the budget) and the dedup state,
    however long the video is. ``finish()`` equals ``stage.process(encoded, clip)`` on the
    concatenated segments.
    """

    def __init__(self, stage: "SelectStage", num_frames: int):
        self.stage = stage
        self.num_frames = num_frames  # sampled frames of the video
        self.per_unit = stage.geometry.frames_per_unit  # frames per pruning unit (Qwen2.5-VL: 2)
        self.num_units = stage.geometry.units(num_frames)
        self.plan = plan_tokens(stage.geometry, self.num_units, stage.budget)  # dynamic: completed by the first add
        self.layout: dict[str, Any] | None = None
        self.video_budget = stage.video_budget(self.num_units)
        self.rows: list[torch.Tensor] = []  # (E, Dc) and (k_t, Dc) pieces in stream order
        self.video_extra: torch.Tensor | None = None  # (V, Dc), appended after the last frame
        self.frames: list[dict[str, Any]] = []
        self.after_pruner = 0
        self.seconds = 0.0

    @property
    def frames_done(self) -> int:
        """Sampled frames selected so far."""
        return min(len(self.frames) * self.per_unit, self.num_frames)

    def add(self, encoded: EncodedFrames, indices: list[int], times_s: list[float]) -> None:
        """Select the next segment: ``len(encoded)`` units (features (B, N, Dv), cls_attn (B, N), extra (B, E, Dc)).

        ``indices`` / ``times_s`` are the segment's sampled frames (``frames_per_unit`` per unit; a
        unit's record names its first frame). Segments other than the last must hold whole units.
        """
        start = time.perf_counter()
        if len(self.frames) + len(encoded) > self.num_units:
            raise RuntimeError(f"{len(self.frames) + len(encoded)} frames added to a stream of {self.num_units}")
        last = self.frames_done + len(indices) >= self.num_frames
        if -(-len(indices) // self.per_unit) != len(encoded) or (len(indices) % self.per_unit and not last):
            raise RuntimeError(f"a segment of {len(indices)} frames encoded to {len(encoded)} units of "
                               f"{self.per_unit} frames; segments must hold whole units (an even frame count)")
        unit_times = [(float(times_s[i]) + float(times_s[min(i + self.per_unit, len(times_s)) - 1])) / 2
                      for i in range(0, len(times_s), self.per_unit)]  # mean time of each unit's frames
        indices, times_s = indices[::self.per_unit], times_s[::self.per_unit]
        if self.stage.geometry.dynamic and self.layout is None:
            self.plan = plan_tokens(self.stage.geometry, self.num_units, self.stage.budget,
                                    tokens_per_frame=int(encoded.features.shape[1]))
            self.layout = {"units": self.num_units, "grid": tuple(encoded.grid),
                           "seconds_per_unit": encoded.seconds_per_unit, "kept": [], "times_s": []}
        elif self.layout is not None and tuple(encoded.grid) != self.layout["grid"]:
            # e.g. Qwen3-VL's processor sizes frames from the whole clip's pixel total: a segment alone can differ
            raise RuntimeError(f"a segment encoded to a {tuple(encoded.grid)} grid, the video's first to "
                               f"{self.layout['grid']}; every unit of one video needs the same grid")
        for t in range(len(encoded)):
            sel = self.video_budget.select(encoded.cls_attn[t], encoded.features[t])
            if encoded.extra is not None:
                self.rows.append(encoded.extra[t])
            rows = encoded.rows[t]  # (N, Dc)
            self.rows.append(rows.index_select(0, sel.kept.to(rows.device)))
            self.after_pruner += len(sel.candidates)
            if self.layout is not None:
                self.layout["kept"].append(sel.kept.tolist())
                self.layout["times_s"].append(round(unit_times[t], 6))
            self.frames.append({
                "index": int(indices[t]),
                "time_s": round(float(times_s[t]), 6),
                "kept": sel.kept.tolist(),
                "duplicates": sel.duplicates.tolist(),
                "candidates": int(len(sel.candidates)),
                "allowance": int(sel.allowance),
                **({} if encoded.reused is None else {"reused": bool(encoded.reused[t])}),
            })
        if encoded.video_extra is not None and self.video_extra is None:
            self.video_extra = encoded.video_extra
        self.seconds += time.perf_counter() - start

    def finish(self, decode: dict[str, Any] | None = None, warnings: list[str] | None = None) -> PrunedVideo:
        """The video's :class:`PrunedVideo`: tokens (K, Dv), per-frame records, token counts."""
        if len(self.frames) != self.num_units:
            raise RuntimeError(f"the stream got {len(self.frames)} of its {self.num_units} frames")
        extra = self.stage.geometry.reserved(self.num_units)
        kept = sum(len(f["kept"]) for f in self.frames)
        rows = self.rows if self.video_extra is None else [*self.rows, self.video_extra]
        tokens = torch.cat(rows, dim=0)  # (K, Dc)
        if tokens.shape[0] != kept + extra:
            raise RuntimeError(f"the stream has {tokens.shape[0]} rows but {kept} kept + {extra} extra tokens")
        if tokens.shape[0] > self.plan.max_to_llm:  # the budget is a hard limit: never hand on more
            raise RuntimeError(f"selected {tokens.shape[0]} tokens, above the plan's {self.plan.max_to_llm}")
        counts = {"full": self.plan.full, "after_vispruner": self.after_pruner + extra, "after_dedup": kept + extra,
                  "to_llm": kept + extra}
        return PrunedVideo(tokens=tokens, frames=self.frames, tokens_count=counts, decode=dict(decode or {}),
                           warnings=list(warnings or []), layout=self.layout, sampled_frames=self.num_frames)


# ``AnswerStage(ivtp=...)`` not given: the schedule the model was loaded with.
MODEL_SCHEDULE = object()


class AnswerStage:
    """Token streams + questions → answers, with the LLM through an engine (:mod:`vidprune.engines`).

    The one answer step of every path (in-process, Ray, eval, the demo's streamed answers).
    Built from the ``generate`` options (:meth:`VidpruneConfig.section`), the IVTP schedule and
    the engine (default: the HF engine, transformers ``generate()`` on ``llm``); the schedule is
    handed to each ``generate`` call, never set on the (possibly shared) model.
    ``ivtp`` not given: the schedule the model was loaded with (``llm.default_ivtp``), so a stage
    built without it never switches off a schedule the model carries; ``ivtp=None``: no IVTP.
    """

    name = "answer"

    def __init__(self, llm: VideoLLM, *, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, ivtp: Any = MODEL_SCHEDULE,
                 reuse_prefix: bool = True, engine: Any = None, **extra_generate_kwargs: Any):
        from ..engines.hf import HFEngine

        if ivtp is MODEL_SCHEDULE:
            ivtp = getattr(llm, "default_ivtp", None)
        self.llm, self.seed, self.ivtp, self.reuse_prefix = llm, seed, ivtp, reuse_prefix
        self.engine = engine if engine is not None else HFEngine(llm)
        # sampled calls draw from this stage's own stream (seeded once), never reseeding the caller's RNG
        self.sampling = SamplingStream(seed, getattr(llm, "device", "cpu"))
        self.generate_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                                **extra_generate_kwargs}
        if do_sample:
            self.generate_kwargs.update(temperature=temperature, top_p=top_p)

    def answer_tokens(self, items: list[tuple[torch.Tensor, str]], *, layouts: list | None = None,
                      streamer: Any = None, stopping_criteria: Any = None, **overrides: Any) -> list[dict[str, Any]]:
        """Answer (pre-projector tokens (K_i, Dv), question) pairs in one left-padded batch.

        ``layouts``: per item, where the kept tokens sit in the stock grid (``PrunedVideo.layout``;
        needed by families with multimodal rotary positions); ``streamer``: a transformers streamer that receives the generated tokens (batch of 1);
        ``stopping_criteria``: passed to ``generate``; ``overrides``: ``generate`` keywords.
        Items that hold the same tokens tensor (several questions about one video) have the video
        prefilled once (:meth:`VideoLLM.generate_about_one_video`) where ``reuse_prefix`` is on and
        the call allows it (greedy, no beams); the ids are the same either way.
        Returns per item ``{"text", "token_ids", "prompt_tokens", "visual_tokens", "generate_s", "ivtp",
        "prefix_tokens"}`` (``prefix_tokens``: tokens prefilled once for the item's video, or None).
        """
        kwargs = {**self.generate_kwargs, **overrides}
        if streamer is not None:
            kwargs["streamer"] = streamer
        if stopping_criteria is not None:
            kwargs["stopping_criteria"] = stopping_criteria
        with self.sampling.active() if kwargs.get("do_sample") else contextlib.nullcontext():
            return self._answer(items, layouts, kwargs)

    def _answer(self, items: list[tuple[torch.Tensor, str]], layouts: list | None,
                kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        by_video: dict[int, list[int]] = {}  # the items of each video (same tokens tensor), in order
        for n, (tokens, _) in enumerate(items):
            by_video.setdefault(id(tokens), []).append(n)
        shared = [group for group in by_video.values() if len(group) > 1]
        if not (self.reuse_prefix and shared and self.engine.reuses_prefix(2, kwargs)):
            return self._generate(items, list(range(len(items))), layouts, kwargs)
        results: list[dict[str, Any] | None] = [None] * len(items)
        alone = [n for group in by_video.values() if len(group) == 1 for n in group]
        for group in shared + ([alone] if alone else []):
            for n, out in zip(group, self._generate(items, group, layouts, kwargs, one_video=group is not alone)):
                results[n] = out
        return results  # type: ignore[return-value]

    def _generate(self, items: list[tuple[torch.Tensor, str]], which: list[int], layouts: list | None,
                  kwargs: dict[str, Any], one_video: bool = False) -> list[dict[str, Any]]:
        """Answer ``items[n]`` for n in ``which``: one batch, or one video's questions sharing its prefill."""
        prompts = [self.llm.build_prompt(items[n][1]) for n in which]
        dtype = self.llm.dtype
        picked = None if layouts is None else [layouts[n] for n in which]
        start = time.perf_counter()
        if one_video:
            visual = self.llm.project(items[which[0]][0].to(self.llm.device, dtype))  # (K, D), once
            out = self.engine.generate_about_one_video(prompts, visual, None if picked is None else picked[0],
                                                       ivtp=self.ivtp, **kwargs)
            visual_rows = [visual] * len(which)
        else:
            visual_rows = [self.llm.project(items[n][0].to(self.llm.device, dtype)) for n in which]  # (K_i, D) each
            out = self.engine.generate(prompts, visual_rows, layouts=picked, ivtp=self.ivtp, **kwargs)
        elapsed = time.perf_counter() - start
        ivtp = out.ivtp or [None] * len(which)
        return [{"text": self.llm.decode_text(ids), "token_ids": ids, "prompt_tokens": n,
                 "visual_tokens": int(v.shape[0]), "generate_s": elapsed, "ivtp": info,
                 "prefix_tokens": out.prefix_tokens}
                for ids, n, info, v in zip(out.answer_ids, out.prompt_tokens, ivtp, visual_rows)]

    def process_batch(self, items: list[tuple[PrunedVideo, str]], **overrides: Any) -> list[dict[str, Any]]:
        """Answer several (video, question) pairs in one left-padded batch; kept counts may differ."""
        return self.answer_tokens([(v.tokens, q) for v, q in items], layouts=[v.layout for v, _ in items], **overrides)


def __getattr__(name: str):
    if name == "SelectionStream":  # renamed in 0.2: one name per concept
        import warnings

        warnings.warn("vidprune.pipeline.stages.SelectionStream was renamed VideoSelection", DeprecationWarning,
                      stacklevel=2)
        return VideoSelection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
