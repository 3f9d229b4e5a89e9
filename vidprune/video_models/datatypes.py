"""The data types the vision side and generation hand on: :class:`VisualGeometry` (token counts
from the config), :class:`EncodedFrames` (the tower's output for a batch of frames) and
:class:`GenerationOutput` (what :meth:`VideoLLM.generate` returns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["EncodedFrames", "GenerationOutput", "VisualGeometry"]


@dataclass(frozen=True)
class VisualGeometry:
    """How many visual tokens one frame yields, known from the config before any weights load.

    A "frame" here is the unit the pruner works on: one sampled frame for the LLaVA
    families, one temporal patch (two sampled frames) for Qwen2.5-VL.

    Attributes:
        patch_grid: (h, w) patch grid of the vision tower, e.g. (16, 16) at 224 px, (24, 24) at 336 px.
        prune_grid: (h, w) grid of the tokens the pruner chooses from (pooled or not).
        extra_per_frame: tokens per frame handed on outside the pruner (Video-LLaVA's [CLS]: 1).
        stock_per_frame: tokens per frame the stock model feeds its LLM (257 or 144).
        extra_per_video: tokens handed on once per video, after its last frame, outside the
            pruner (LLaVA-OneVision's image newline: 1). The stock model feeds them too.
        frames_per_unit: sampled frames per pruning unit (Qwen2.5-VL's temporal patch: 2).
        dynamic: the grid depends on the video (Qwen2.5-VL's dynamic resolution); the grids
            and per-frame counts here are then 0 (or those of one frame size,
            :meth:`VideoLLM.frame_geometry`) and the real ones come with the encoded frames
            (``EncodedFrames.grid``).
    """

    patch_grid: tuple[int, int]
    prune_grid: tuple[int, int]
    extra_per_frame: int
    stock_per_frame: int
    extra_per_video: int = 0
    frames_per_unit: int = 1
    dynamic: bool = False

    def units(self, num_frames: int) -> int:
        """Pruning units of ``num_frames`` sampled frames (an odd count is padded to a whole unit)."""
        return -(-num_frames // self.frames_per_unit)

    @property
    def prunable_per_frame(self) -> int:
        return self.prune_grid[0] * self.prune_grid[1]

    @property
    def full_per_frame(self) -> int:
        """Tokens per frame handed on with pruning off (prunable + extra)."""
        return self.prunable_per_frame + self.extra_per_frame

    def reserved(self, num_frames: int) -> int:
        """Tokens of a ``num_frames`` video handed on outside the pruner (they come off the budget first)."""
        return self.extra_per_frame * num_frames + self.extra_per_video

    def stock_tokens(self, num_frames: int) -> int:
        """Visual tokens the stock model feeds its LLM for ``num_frames`` frames."""
        return self.stock_per_frame * num_frames + self.extra_per_video

    def full_tokens(self, num_frames: int) -> int:
        """Visual tokens vidprune hands on for ``num_frames`` frames with pruning off."""
        return self.full_per_frame * num_frames + self.extra_per_video


@dataclass
class GenerationOutput:
    """What :meth:`VideoLLM.generate` returns.

    Attributes:
        answer_ids: per sample, the generated token ids only (prompt removed, stopped before EOS). Not
            transformers' ``sequences``, which holds the prompt too; the deprecated ``sequences`` alias
            returns these.
        prompt_tokens: per sample, the prompt's length in tokens (visual tokens included, padding not).
        ivtp: per sample ``{"kept": sorted visual-stream indices that survive IVTP,
            "tokens_per_layer": tokens each decoder layer ran on in prefill, as for the prompt alone}``,
            or None without IVTP.
        prefix_tokens: the tokens prefilled once for every prompt (:meth:`VideoLLM.generate_about_one_video`),
            or None where each prompt was prefilled whole.
    """

    answer_ids: list[list[int]]
    prompt_tokens: list[int]
    ivtp: list[dict[str, Any]] | None = None
    prefix_tokens: int | None = None

    @property
    def sequences(self) -> list[list[int]]:
        """Deprecated: ``answer_ids`` (transformers' ``sequences`` holds the prompt too; these do not)."""
        import warnings

        warnings.warn("GenerationOutput.sequences was renamed answer_ids: it holds the generated ids only, not the "
                      "prompt as transformers' sequences does", DeprecationWarning, stacklevel=2)
        return self.answer_ids


@dataclass
class EncodedFrames:
    """The vision side's output for a batch of frames: what the pruner scores and the rows it hands on.

    For Video-LLaVA and LLaVA-NeXT-Video the projector works row by row, so the rows handed
    on are the pre-projector ``features`` themselves (``tokens`` is None) and
    :meth:`VideoLLM.project` maps the kept ones. Where the projector mixes tokens or does not
    commute with pooling (LLaVA-OneVision: projector, then bilinear pooling; Qwen2.5-VL: the
    2×2 patch merger), ``tokens`` holds the stock LLM-input rows at the prunable positions,
    ``features`` holds what the pruner and dedup compare (pooled pre-projector tower
    features), and ``project`` is the identity.

    Attributes:
        features: (T, N, Dv) what the pruner and dedup compare, at ``vision_feature_layer``
            (pooled the same way as the tokens handed on).
        cls_attn: (T, N) float32 importance of those tokens ([CLS] attention, or the mean
            attention received for towers without [CLS]), pooled the same way.
        extra: (T, E, Dc) rows handed on per frame outside pruning (Video-LLaVA's [CLS]), or None.
        tokens: (T, N, Dc) the rows handed on for the N prunable tokens when they are not
            ``features`` (already LLM embeddings), or None.
        video_extra: (V, Dc) rows handed on once per video after its last frame
            (LLaVA-OneVision's image newline), or None.
        grid: (h, w) of the N prunable tokens when the geometry is dynamic (Qwen2.5-VL's merged grid).
        seconds_per_unit: seconds one unit spans, for families whose positions depend on time (Qwen2.5-VL).
        reused: per unit, whether it took the features of an earlier unit with the same (or, with
            ``skip_static``, nearly the same) pixels instead of running the tower
            (:mod:`vidprune.pipeline.frame_reuse`); None where nothing was checked.

    T counts pruning units: frames, or temporal patches of ``frames_per_unit`` frames.
    """

    features: torch.Tensor
    cls_attn: torch.Tensor
    extra: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    video_extra: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    seconds_per_unit: float | None = None
    reused: list[bool] | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def rows(self) -> torch.Tensor:
        """(T, N, Dc) the rows handed on for the prunable tokens (``tokens``, else ``features``)."""
        return self.features if self.tokens is None else self.tokens

    def __getitem__(self, units: slice) -> "EncodedFrames":
        """Units ``units`` of these (a contiguous slice; ``video_extra`` and the grid are per video, kept)."""
        if not isinstance(units, slice):
            raise TypeError("EncodedFrames takes a slice of units, e.g. encoded[4:8]")
        take = lambda t: None if t is None else t[units]  # noqa: E731
        return EncodedFrames(features=self.features[units], cls_attn=self.cls_attn[units], extra=take(self.extra),
                             tokens=take(self.tokens), video_extra=self.video_extra, grid=self.grid,
                             seconds_per_unit=self.seconds_per_unit, reused=take(self.reused))

    def take(self, units: list[int]) -> "EncodedFrames":
        """Units ``units`` of these in that order (repeats allowed): (len(units), N, Dv) features and so on."""
        index = torch.as_tensor(units, dtype=torch.long)
        take = lambda t: None if t is None else t.index_select(0, index.to(t.device))  # noqa: E731
        return EncodedFrames(features=take(self.features), cls_attn=take(self.cls_attn), extra=take(self.extra),
                             tokens=take(self.tokens), video_extra=self.video_extra, grid=self.grid,
                             seconds_per_unit=self.seconds_per_unit,
                             reused=None if self.reused is None else [self.reused[u] for u in units])

    def to(self, device: str | torch.device) -> "EncodedFrames":
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EncodedFrames(features=move(self.features), cls_attn=move(self.cls_attn), extra=move(self.extra),
                             tokens=move(self.tokens), video_extra=move(self.video_extra), grid=self.grid,
                             seconds_per_unit=self.seconds_per_unit, reused=self.reused)

    @staticmethod
    def concat(parts: list["EncodedFrames"]) -> "EncodedFrames":
        """Frames of consecutive batches as one (``video_extra`` is per video: taken from the first part)."""
        if len(parts) == 1:
            return parts[0]
        cat = lambda name: None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        reused = (None if any(p.reused is None for p in parts)
                  else [flag for p in parts for flag in p.reused])  # type: ignore[union-attr]
        return EncodedFrames(features=cat("features"), cls_attn=cat("cls_attn"), extra=cat("extra"),
                             tokens=cat("tokens"), video_extra=parts[0].video_extra, grid=parts[0].grid,
                             seconds_per_unit=parts[0].seconds_per_unit, reused=reused)
