"""A rolling token memory for a live stream: the last seconds of video as pruned, deduplicated tokens.

Frames arrive one at a time, already encoded (:class:`EncodedFrames` with T = 1). A "frame"
here is the pruner's unit: one sampled frame, or one temporal patch of two (Qwen2.5-VL; the
caller pairs the frames, see ``vidprune.demo.feed``). For each:

1. **Age out** frames older than ``window_s`` (relative to the new frame's time).
2. **Make room** for one full frame: while the memory would exceed ``max_frames`` frames or
   ``budget - (frame_allowance + reserved_per_frame)`` tokens, the *oldest* frame leaves.
3. **Prune** the frame with the per-frame pruner (VisPruner by default) at ``frame_allowance``.
4. **Dedup** the candidates with :class:`~vidprune.pruners.CrossFrameDedup` against the
   tokens the memory holds *now* (after steps 1–2), then store the frame's extra tokens
   ([CLS]) and kept patches.

``budget`` is a hard limit on the tokens held, the oldest whole frame leaves first, and room
is made before the new frame is deduped; why, and how the dedup state forgets frames that
left (reset + replay through the public API), is in docs/demo.md, "The rolling memory".
The dedup reference must be ``"kept"`` or ``"kept_any"`` (the memory holds kept tokens only).

:meth:`RollingTokenMemory.tokens` gives the (K, Dv) stream in temporal order (per frame:
extra tokens first, then kept patches in raster order, the layout of
:class:`~vidprune.pipeline.stages.SelectStage`), ready for ``VideoLLM.project``;
:meth:`RollingTokenMemory.snapshot` adds, for families with multimodal positions (frames that
come with a ``grid``), where the kept tokens sit in the stock grid of the frames held (the
``PrunedVideo.layout`` of a video made of those frames).

The class is plain (no Ray, no event loop) and thread-safe: one lock guards every method.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..validators import check_positive_int, check_positive_number
from ..pruners import CrossFrameDedup, Pruner, check_pruner_grid, prune_frame, pruner_from_options
from ..video_models.datatypes import EncodedFrames, VisualGeometry

__all__ = [
    "MEMORY_DEDUP_REFERENCES",
    "MemoryPlan",
    "MemoryFrame",
    "MemorySnapshot",
    "MemoryStats",
    "RollingTokenMemory",
    "plan_memory",
    "build_memory",
]

# Dedup references that compare with kept tokens only (what the memory holds).
MEMORY_DEDUP_REFERENCES = ("kept", "kept_any")


@dataclass(frozen=True)
class MemoryPlan:
    """The memory's sizes, known from the config before any model loads.

    Attributes:
        budget: tokens the memory may hold (hard limit; extra tokens included).
        window_s: seconds of stream the memory covers at most.
        frame_rate: frames per second the stream is sampled at (what ``max_frames`` assumes).
        max_frames: frames (pruning units) held at most, ``ceil(window_s * frame_rate / frames_per_unit)``.
        frame_allowance: patch tokens the pruner proposes per frame (before dedup).
        reserved_per_frame: extra tokens held per frame outside the pruner ([CLS]: 1).
        tokens_per_frame: prunable tokens per frame (N).
        stock_per_frame: tokens per frame the stock model would feed its LLM.
        reserved_per_video: rows held once for the whole memory, after the newest frame,
            outside the pruner (LLaVA-OneVision's image newline: 1); they count against the budget.
        frames_per_unit: sampled frames per pruning unit (Qwen2.5-VL's temporal patch: 2).
        dynamic: the token grid comes from each frame's size (Qwen2.5-VL); the per-frame counts
            above are those of the frame size planned for.
    """

    budget: int
    window_s: float
    frame_rate: float
    max_frames: int
    frame_allowance: int
    reserved_per_frame: int
    tokens_per_frame: int
    stock_per_frame: int
    reserved_per_video: int = 0
    frames_per_unit: int = 1
    dynamic: bool = False

    @property
    def stock_tokens(self) -> int:
        """Tokens the stock model would need for a full window (``max_frames`` frames)."""
        return self.stock_per_frame * self.max_frames + self.reserved_per_video

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stock_tokens": self.stock_tokens}


def plan_memory(geometry: VisualGeometry, *, budget: int | None, window_s: float, frame_rate: float,
                frame_tokens: int | None = None) -> MemoryPlan:
    """Size a rolling memory for ``window_s`` seconds of a stream sampled at ``frame_rate``.

    Args:
        budget: tokens held at most; None holds every token of a full window
            (``full_per_frame * max_frames``: no pruning, dedup still applies).
        frame_tokens: patch tokens per frame the pruner proposes; None splits the budget
            evenly over a full window (``budget // max_frames - reserved``, at least 1, at most N).

    A geometry whose grid comes from each video (Qwen2.5-VL) is planned for one frame size:
    pass ``VideoLLM.frame_geometry(...)`` of the size the stream is expected to have; frames of
    another size still work (the pruner is asked for at most the tokens a frame has).

    Raises:
        ConfigError: non-positive values, or a budget that cannot hold even one frame.
    """
    if geometry.prunable_per_frame == 0:
        raise ConfigError(
            "this model's token grid comes from each video's frame size (Qwen2.5-VL): plan the memory for the "
            "frame size the stream is expected to have (VideoLLM.frame_geometry)"
        )
    window_s = check_positive_number("window_s", window_s)
    frame_rate = check_positive_number("frame_rate", frame_rate)
    per_unit = geometry.frames_per_unit
    max_frames = max(1, math.ceil(window_s * frame_rate / per_unit - 1e-9))
    reserved, per_frame = geometry.extra_per_frame, geometry.prunable_per_frame
    per_video = geometry.extra_per_video
    if budget is None:
        budget = geometry.full_tokens(max_frames)
    budget = check_positive_int("budget", budget)
    if budget < reserved + per_video + 1:
        raise ConfigError(
            f"budget={budget} cannot hold one frame ({reserved + per_video} extra token(s) + at least 1 patch); "
            f"raise the budget to at least {reserved + per_video + 1}"
        )
    budget_for_frames = budget - per_video
    if frame_tokens is None:
        frame_tokens = min(per_frame, max(1, budget_for_frames // max_frames - reserved))
    frame_tokens = check_positive_int("frame_tokens", frame_tokens)
    if frame_tokens > per_frame:
        raise ConfigError(f"frame_tokens={frame_tokens} is more than the {per_frame} patch tokens a frame has")
    if frame_tokens + reserved > budget_for_frames:
        raise ConfigError(
            f"frame_tokens={frame_tokens} (+{reserved + per_video} extra) does not fit in budget={budget}; "
            f"lower frame_tokens to at most {budget_for_frames - reserved} or raise the budget"
        )
    return MemoryPlan(budget=budget, window_s=window_s, frame_rate=frame_rate, max_frames=max_frames,
                      frame_allowance=frame_tokens, reserved_per_frame=reserved, tokens_per_frame=per_frame,
                      stock_per_frame=geometry.stock_per_frame, reserved_per_video=per_video,
                      frames_per_unit=per_unit, dynamic=geometry.dynamic)


@dataclass
class MemoryFrame:
    """One frame as the memory holds it.

    Attributes:
        seq: the caller's label for the frame (e.g. the browser's frame number).
        time_s: when the frame was taken (the caller's clock, seconds).
        tokens: (E + K, Dc) the frame's extra tokens then its kept patches (raster order): the rows
            handed on (``EncodedFrames.rows``).
        kept: (K,) long, CPU: indices of the kept patches among the frame's N.
        duplicates: (C - K,) long, CPU: candidates dropped as repeats of the memory.
        candidates: C, patches the pruner proposed.
        seen: N + E, tokens the encoder produced for the frame.
        features: (K, Dv) what dedup compares, when the rows are not the features; else None.
        grid: (h, w) of the frame's N tokens where its geometry is dynamic (Qwen2.5-VL), else None.
        seconds_per_unit: seconds the frame spans, for families whose positions depend on time.
        unit_time_s: the mean time of the unit's frames (a temporal patch of two: between them), on the
            caller's clock; None: ``time_s``. Qwen3-VL writes it (from the oldest frame held) in the prompt.
    """

    seq: int
    time_s: float
    tokens: torch.Tensor
    kept: torch.Tensor
    duplicates: torch.Tensor
    candidates: int
    seen: int
    features: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    seconds_per_unit: float | None = None
    unit_time_s: float | None = None

    @property
    def num_extra(self) -> int:
        return self.tokens.shape[0] - self.kept.shape[0]


@dataclass(frozen=True)
class MemorySnapshot:
    """What the memory holds at one moment (taken under one lock: no frame comes in between).

    Attributes:
        tokens: (K, Dc) the tokens held, in temporal order; a copy. (0, Dv) when empty.
        layout: where they sit in the stock grid of the frames held, for families with
            multimodal positions (``{"units", "grid", "seconds_per_unit", "kept"}``, the form of
            ``PrunedVideo.layout``: the frames held make one video); None for the others.
        stats: the memory's :class:`MemoryStats` at that moment.
    """

    tokens: torch.Tensor
    layout: dict[str, Any] | None
    stats: "MemoryStats"


@dataclass
class MemoryStats:
    """What the memory holds now, and counters since it started (JSON-friendly via ``to_dict``)."""

    frames: int  # frames held
    tokens: int  # tokens held (what a question hands the LLM)
    tokens_seen: int  # tokens the encoder produced for the frames held
    stock_tokens: int  # tokens the stock model would need for the frames held
    candidates: int  # patches the pruner proposed for the frames held
    duplicates: int  # of those, dropped as repeats of the memory
    span_s: float  # newest minus oldest frame time
    budget: int
    window_s: float
    max_frames: int
    held_bytes: int  # bytes of the token tensors held
    frames_added: int
    frames_aged_out: int  # left because older than the window
    frames_evicted: int  # left early to keep the budget / frame cap
    tokens_seen_total: int
    candidates_total: int
    duplicates_total: int

    @property
    def kept_share(self) -> float:
        """Tokens held / tokens seen for the frames held (0 with no frames)."""
        return self.tokens / self.tokens_seen if self.tokens_seen else 0.0

    @property
    def duplicate_share(self) -> float:
        """Share of the pruner's candidates (frames held) dropped as duplicates."""
        return self.duplicates / self.candidates if self.candidates else 0.0

    @property
    def duplicate_share_total(self) -> float:
        """The same share over every frame added so far."""
        return self.duplicates_total / self.candidates_total if self.candidates_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept_share": round(self.kept_share, 6),
                "duplicate_share": round(self.duplicate_share, 6),
                "duplicate_share_total": round(self.duplicate_share_total, 6)}


class RollingTokenMemory:
    """Pruned, deduplicated tokens of the last ``window_s`` seconds of a stream, under a hard budget.

    Args:
        budget: tokens held at most (extra tokens included).
        window_s: frames older than this (relative to the newest frame, or to ``now_s``) age out.
        max_frames: frames held at most.
        frame_allowance: patch tokens the pruner proposes per frame.
        pruner: a :class:`~vidprune.pruners.Pruner` that respects its budget.
        dedup: a :class:`~vidprune.pruners.CrossFrameDedup` with reference ``"kept"`` or
            ``"kept_any"``, or None. The memory owns it (resets and replays it).
        stock_per_frame: tokens per frame the stock model would feed its LLM (for the stats).
        reserved_per_video: rows held once, after the newest frame (``EncodedFrames.video_extra``:
            LLaVA-OneVision's newline), counted against the budget.

    See the module docstring for the policy.
    """

    def __init__(self, *, budget: int, window_s: float, max_frames: int, frame_allowance: int, pruner: Pruner,
                 dedup: CrossFrameDedup | None = None, stock_per_frame: int | None = None,
                 reserved_per_video: int = 0):
        self.budget = check_positive_int("budget", budget)
        self.window_s = check_positive_number("window_s", window_s)
        self.max_frames = check_positive_int("max_frames", max_frames)
        self.frame_allowance = check_positive_int("frame_allowance", frame_allowance)
        if not getattr(pruner, "respects_budget", True):
            raise ConfigError(
                f"pruner {getattr(pruner, 'name', pruner)!r} keeps every token; a memory with a budget needs a "
                "pruner that respects it (e.g. 'vispruner')"
            )
        if dedup is not None and dedup.reference not in MEMORY_DEDUP_REFERENCES:
            raise ConfigError(
                f"dedup reference {dedup.reference!r} cannot be used by a rolling memory: it compares with tokens "
                f"the memory does not hold; use one of {list(MEMORY_DEDUP_REFERENCES)}"
            )
        self.pruner, self.dedup = pruner, dedup
        self.stock_per_frame = stock_per_frame
        self.reserved_per_video = int(reserved_per_video)
        self._video_extra: torch.Tensor | None = None  # (V, Dc) the newest frame's per-video rows
        self._lock = threading.Lock()
        self._frames: deque[MemoryFrame] = deque()
        self._held = 0  # tokens held
        self._shape: tuple | None = None  # (N, E, Dv, grid) of this stream
        self._dedup_stale = False  # frames left since the dedup last saw the memory
        self._next_seq = 0
        self._counters = {"frames_added": 0, "frames_aged_out": 0, "frames_evicted": 0, "tokens_seen_total": 0,
                          "candidates_total": 0, "duplicates_total": 0}
        if dedup is not None:
            dedup.reset()

    # ------------------------------------------------------------------ intake
    def add(self, encoded: EncodedFrames, time_s: float, seq: int | None = None,
            unit_time_s: float | None = None) -> MemoryFrame:
        """Prune, dedup and store one encoded frame taken at ``time_s``; return what was stored.

        Args:
            encoded: one frame: features (1, N, Dv), cls_attn (1, N), extra (1, E, Dv) or None.
            time_s: the frame's time on the caller's clock; not earlier than the previous frame's.
            seq: a label kept with the frame (default: a running count).
            unit_time_s: the mean time of the unit's frames when a unit holds several (default: ``time_s``).
        """
        features, cls_attn, extra, all_rows = self._check_frame(encoded)
        grid = None if encoded.grid is None else (int(encoded.grid[0]), int(encoded.grid[1]))
        with self._lock:
            newest = self._frames[-1].time_s if self._frames else -math.inf
            if time_s < newest:
                raise ConfigError(f"frame time {time_s} is earlier than the newest frame held ({newest}); "
                                  "frames must arrive in time order")
            self._expire(time_s)
            self._make_room(extra_tokens=0 if extra is None else extra.shape[0])
            self._check_shape(features, extra, grid)
            if self._dedup_stale and self.dedup is not None:
                self._replay_dedup()
            num_tokens = features.shape[0]
            sel = prune_frame(cls_attn, features, self.frame_allowance, pruner=self.pruner, dedup=self.dedup)
            candidates, kept, duplicates = sel.candidates, sel.kept, sel.duplicates  # (C,), (K,), (C - K,)
            rows = all_rows.index_select(0, kept.to(all_rows.device))  # (K, Dc), a copy
            tokens = rows if extra is None else torch.cat([extra, rows])  # (E + K, Dc)
            kept_features = None if all_rows is features else features.index_select(0, kept.to(features.device))
            if encoded.video_extra is not None:
                self._video_extra = encoded.video_extra.detach().clone()
            frame = MemoryFrame(
                seq=self._next_seq if seq is None else int(seq),
                time_s=float(time_s),
                tokens=tokens,
                kept=kept.detach().cpu(),
                duplicates=duplicates.detach().cpu(),
                candidates=int(candidates.shape[0]),
                seen=num_tokens + (0 if extra is None else extra.shape[0]),
                features=kept_features,
                grid=grid,
                seconds_per_unit=encoded.seconds_per_unit,
                unit_time_s=None if unit_time_s is None else float(unit_time_s),
            )
            self._next_seq = frame.seq + 1
            self._frames.append(frame)
            self._held += tokens.shape[0]
            c = self._counters
            c["frames_added"] += 1
            c["tokens_seen_total"] += frame.seen
            c["candidates_total"] += frame.candidates
            c["duplicates_total"] += int(duplicates.shape[0])
            if self._held + self.reserved_per_video > self.budget:  # _make_room leaves room: never reached
                raise RuntimeError(f"memory holds {self._held} tokens, above its budget {self.budget}")
            return frame

    def expire(self, now_s: float) -> int:
        """Age out frames older than ``window_s`` before ``now_s``; return how many left."""
        with self._lock:
            return self._expire(now_s)

    def clear(self) -> None:
        """Drop every frame (the counters stay)."""
        with self._lock:
            self._frames.clear()
            self._held = 0
            self._video_extra = None
            self._shape = None
            if self.dedup is not None:
                self.dedup.reset()
            self._dedup_stale = False

    # ------------------------------------------------------------------ read
    def tokens(self, now_s: float | None = None) -> torch.Tensor:
        """(K, Dv) the tokens held, in temporal order (ageing out first if ``now_s`` is given).

        A copy: later ``add`` calls do not change it. (0, Dv) when empty ((0, 0) before any frame).
        """
        return self.snapshot(now_s).tokens

    def snapshot(self, now_s: float | None = None) -> MemorySnapshot:
        """``tokens(now_s)``, their layout and ``stats()`` of the same moment (one lock, no frame in between)."""
        with self._lock:
            if now_s is not None:
                self._expire(now_s)
            layout = None
            if self._frames:
                rows = [f.tokens for f in self._frames]
                if self._video_extra is not None:
                    rows.append(self._video_extra)  # after the newest frame, as the stock model places it
                tokens = torch.cat(rows)  # (K, Dc)
                first = self._frames[0]
                if first.grid is not None:  # every frame held has this grid (_check_shape)
                    layout = {"units": len(self._frames), "grid": first.grid,
                              "seconds_per_unit": first.seconds_per_unit,
                              "kept": [f.kept.tolist() for f in self._frames],
                              # the frames held make one video: each unit's mean time, from its oldest frame
                              "times_s": [round((f.time_s if f.unit_time_s is None else f.unit_time_s)
                                                - first.time_s, 6) for f in self._frames]}
            else:
                tokens = torch.zeros(0, 0 if self._shape is None else self._shape[2])
            return MemorySnapshot(tokens=tokens, layout=layout, stats=self._stats())

    def frames(self) -> list[MemoryFrame]:
        """The frames held, oldest first (the list is a copy; the frames are shared, do not modify)."""
        with self._lock:
            return list(self._frames)

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def num_tokens(self) -> int:
        """Tokens held now (the per-video rows included)."""
        with self._lock:
            return self._held_total()

    def _held_total(self) -> int:
        per_video = self._video_extra.shape[0] if (self._frames and self._video_extra is not None) else 0
        return self._held + per_video

    def stats(self) -> MemoryStats:
        with self._lock:
            return self._stats()

    # --------------------------------------------------------------- internals
    def _stats(self) -> MemoryStats:
        frames = self._frames
        seen = sum(f.seen for f in frames)
        return MemoryStats(
            frames=len(frames),
            tokens=self._held_total(),
            tokens_seen=seen,
            stock_tokens=(self.stock_per_frame * len(frames) + (self.reserved_per_video if frames else 0))
            if self.stock_per_frame else seen,
            candidates=sum(f.candidates for f in frames),
            duplicates=sum(int(f.duplicates.shape[0]) for f in frames),
            span_s=(frames[-1].time_s - frames[0].time_s) if frames else 0.0,
            budget=self.budget,
            window_s=self.window_s,
            max_frames=self.max_frames,
            held_bytes=sum(f.tokens.numel() * f.tokens.element_size() for f in frames),
            **self._counters,
        )

    def _expire(self, now_s: float) -> int:
        gone = 0
        while self._frames and self._frames[0].time_s <= now_s - self.window_s:
            self._pop_oldest()
            gone += 1
        self._counters["frames_aged_out"] += gone
        return gone

    def _make_room(self, extra_tokens: int) -> None:
        """Evict oldest frames until one more frame (at most ``frame_allowance + extra`` tokens) fits."""
        room = self.frame_allowance + extra_tokens + self.reserved_per_video
        while self._frames and (len(self._frames) >= self.max_frames or self._held + room > self.budget):
            self._pop_oldest()
            self._counters["frames_evicted"] += 1

    def _pop_oldest(self) -> None:
        frame = self._frames.popleft()
        self._held -= frame.tokens.shape[0]
        self._dedup_stale = True

    def _replay_dedup(self) -> None:
        """Rebuild the dedup state from the frames held (a suffix of the stream), oldest first."""
        self.dedup.reset()
        num_tokens, _, dim, _ = self._shape
        for frame in self._frames:
            patches = frame.tokens[frame.num_extra:] if frame.features is None else frame.features  # (K, Dv)
            full = patches.new_zeros(num_tokens, dim)  # (N, Dv): only the kept rows are compared or stored
            index = frame.kept.to(patches.device)
            full[index] = patches
            self.dedup.step(full, index)
        self._dedup_stale = False

    def _check_shape(self, features: torch.Tensor, extra: torch.Tensor | None,
                     grid: tuple[int, int] | None) -> None:
        shape = (features.shape[0], 0 if extra is None else extra.shape[0], features.shape[1], grid)
        if self._shape is not None and shape != self._shape and self._frames:
            raise ConfigError(f"frame has (N, E, Dv, grid) = {shape} but the memory holds frames with {self._shape}; "
                              "clear() the memory before switching models or frame sizes")
        if self._shape != shape and self.dedup is not None:
            self.dedup.reset()
        self._shape = shape

    def _check_frame(self, encoded: EncodedFrames):
        """(features (N, Dv), cls_attn (N,), extra (E, Dc) or None, rows (N, Dc): ``features`` itself when the rows are)."""
        if not isinstance(encoded, EncodedFrames) or len(encoded) != 1:
            got = len(encoded) if isinstance(encoded, EncodedFrames) else type(encoded).__name__
            raise ConfigError(f"add() takes EncodedFrames of exactly one frame, got {got}")
        features, cls_attn = encoded.features[0], encoded.cls_attn[0]  # (N, Dv), (N,)
        if features.dim() != 2 or cls_attn.shape != features.shape[:1]:
            raise ConfigError(f"features (1, N, Dv) and cls_attn (1, N) expected, got "
                              f"{tuple(encoded.features.shape)} and {tuple(encoded.cls_attn.shape)}")
        extra = None if encoded.extra is None else encoded.extra[0].detach().clone()  # (E, Dc), own storage
        features = features.detach()
        rows = features if encoded.tokens is None else encoded.tokens[0].detach()  # (N, Dc)
        return features, cls_attn.detach(), extra, rows


def build_memory(plan: MemoryPlan, *, pruner: str = "vispruner", important_ratio: float = 0.5, seed: int = 0,
                 prune_grid: tuple[int, int] | None = None, dedup: bool = True, dedup_threshold: float = 0.9,
                 dedup_reference: str = "kept", dedup_window: int | None = None) -> RollingTokenMemory:
    """A :class:`RollingTokenMemory` from a plan and the pruning options of :class:`~vidprune.config.VidpruneConfig`.

    ``dedup_window`` (frames) defaults to the whole memory (``"kept_any"`` looks back ``max_frames``).
    """
    check_pruner_grid(pruner, plan.dynamic)
    dedup_state = None
    if dedup:
        if dedup_reference not in MEMORY_DEDUP_REFERENCES:
            raise ConfigError(
                f"dedup_reference={dedup_reference!r} cannot be used by a rolling memory (it compares with tokens "
                f"the memory does not hold); use one of {list(MEMORY_DEDUP_REFERENCES)}"
            )
        window = dedup_window
        if window is None and dedup_reference == "kept_any":
            window = plan.max_frames
        dedup_state = CrossFrameDedup(threshold=dedup_threshold, reference=dedup_reference, window=window)
    return RollingTokenMemory(budget=plan.budget, window_s=plan.window_s, max_frames=plan.max_frames,
                              frame_allowance=plan.frame_allowance, pruner=pruner_from_options(pruner, important_ratio=important_ratio,
                                                                        seed=seed, grid=prune_grid),
                              dedup=dedup_state, stock_per_frame=None if plan.dynamic else plan.stock_per_frame,
                              reserved_per_video=plan.reserved_per_video)
