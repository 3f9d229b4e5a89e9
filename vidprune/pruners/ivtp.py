"""IVTP: instruction-guided visual token pruning inside the LLM (method.md §4), the tensor math.

After layer k-1, each visual token v gets

    score(v) = mean over heads h, mean over instruction tokens t of A[h, t, v]

with A layer k's attention probabilities (softmax over all keys the row may see, causal
and padding masks applied, rotary embeddings as the model applies them). The top
``ceil(keep_ratio · n_visual)`` visual tokens stay; text tokens always stay. Variants: a
progressive schedule ((k1, r1), (k2, r2), ...) and multi-layer fusion (scores averaged
over the layers that share a layout, optionally weighted).

This module holds the schedule, the score math on given q/k rows, and the selection.
How they are wired into the decoder is in :mod:`vidprune.video_models.ivtp_decoder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = ["IVTPSchedule", "instruction_attention_scores", "select_visual_tokens", "instruction_rows"]


@dataclass(frozen=True)
class IVTPSchedule:
    """Where and how much to prune inside the LLM.

    Attributes:
        stages: ((layer, keep_ratio), ...) with strictly increasing layers; at each layer the
            top ``ceil(keep_ratio · n)`` of the n visual tokens still present stay.
        fusion: ``"none"`` (scores of the pruning layer only), ``"mean"`` (scores averaged over
            every layer since the previous stage, pruning layer included), or per-layer weights
            ``{layer: weight}`` for a single-stage schedule (layers ≤ k).
    """

    stages: tuple[tuple[int, float], ...]
    fusion: str | tuple[tuple[int, float], ...] = "none"

    @classmethod
    def from_options(cls, layer: int | None = None, keep: float | None = None,
                     schedule: Sequence[Sequence[float]] | None = None,
                     fusion: str | dict | Sequence[float] | None = None) -> "IVTPSchedule | None":
        """Build from user options (``ivtp_layer``/``ivtp_keep`` or ``ivtp_schedule``); None when IVTP is off.

        ``fusion`` may be "none", "mean", a {layer: weight} dict, or a list of weights for layers 0..k.
        """
        if schedule is not None and (layer is not None or keep is not None):
            raise ConfigError("give either ivtp_layer/ivtp_keep or ivtp_schedule, not both")
        if schedule is None:
            if layer is None and keep is None:
                if fusion not in (None, "none"):
                    raise ConfigError("ivtp_fusion needs ivtp_layer and ivtp_keep (or ivtp_schedule)")
                return None
            if layer is None or keep is None:
                raise ConfigError("IVTP needs both ivtp_layer (k) and ivtp_keep (ratio of visual tokens kept)")
            schedule = [(layer, keep)]
        try:
            stages = tuple((int(k), float(r)) for k, r in schedule)
        except (TypeError, ValueError):
            raise ConfigError(f"ivtp_schedule must be a list of [layer, keep_ratio] pairs, got {schedule!r}") from None
        if not stages:
            raise ConfigError("ivtp_schedule is empty; give at least one [layer, keep_ratio] pair")
        if fusion is None or fusion in ("none", "mean"):
            fused: str | tuple = fusion or "none"
        elif isinstance(fusion, dict):
            fused = tuple(sorted((int(k), float(w)) for k, w in fusion.items()))
        elif isinstance(fusion, (list, tuple)):
            fused = tuple((i, float(w)) for i, w in enumerate(fusion))
        else:
            raise ConfigError(f"ivtp_fusion must be 'none', 'mean', a list of weights or a {{layer: weight}} map, got {fusion!r}")
        return cls(stages=stages, fusion=fused)

    def problems(self, num_layers: int) -> list[str]:
        p = []
        layers = [k for k, _ in self.stages]
        for k, r in self.stages:
            if not 0 < k < num_layers:
                p.append(f"ivtp layer {k} is out of range: it must be in 1..{num_layers - 1} for a {num_layers}-layer LLM")
            if not (0.0 < r <= 1.0) or math.isnan(r):
                p.append(f"ivtp keep ratio {r} must be in (0, 1]")
        if layers != sorted(set(layers)):
            p.append(f"ivtp_schedule layers must be strictly increasing, got {layers}")
        if isinstance(self.fusion, tuple):
            if len(self.stages) != 1:
                p.append("per-layer ivtp_fusion weights need a single-stage schedule; use 'mean' with a progressive one")
            k = self.stages[0][0]
            bad = [layer for layer, _ in self.fusion if not 0 <= layer <= k]
            if bad:
                p.append(f"ivtp_fusion weights name layers {bad} outside 0..{k}")
            if any(w < 0 for _, w in self.fusion) or sum(w for _, w in self.fusion) <= 0:
                p.append("ivtp_fusion weights must be >= 0 with a positive sum")
        return p

    def validate(self, num_layers: int) -> "IVTPSchedule":
        problems = self.problems(num_layers)
        if problems:
            raise ConfigError("invalid IVTP options: " + "; ".join(problems))
        return self

    @property
    def prune_layers(self) -> list[int]:
        return [k for k, _ in self.stages]

    def keep_ratio_at(self, layer: int) -> float:
        return dict(self.stages)[layer]

    def fusion_weights(self, layer: int, previous: int) -> dict[int, float]:
        """Layers whose scores form the fused score at pruning ``layer`` (after stage ``previous``), with weights."""
        if self.fusion == "none":
            return {layer: 1.0}
        if self.fusion == "mean":
            return {j: 1.0 for j in range(previous + 1 if previous >= 0 else 0, layer + 1)}
        return {j: w for j, w in self.fusion if w > 0}

    def scoring_layers(self) -> set[int]:
        """Every layer at which scores are computed."""
        out: set[int] = set()
        previous = -1
        for k in self.prune_layers:
            out |= set(self.fusion_weights(k, previous))
            previous = k
        return out


def instruction_rows(visual: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Instruction tokens: valid tokens after the last visual token of each sample.

    Args:
        visual: (B, L) bool, True at visual token positions.
        valid: (B, L) bool, False at padding.

    Returns:
        (B, L) bool. A sample without visual tokens has no instruction rows.
    """
    positions = torch.arange(visual.shape[1], device=visual.device)
    last_visual = torch.where(visual, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)  # (B, 1)
    return valid & (positions > last_visual) & (last_visual >= 0)


def instruction_attention_scores(query: torch.Tensor, key: torch.Tensor, scaling: float, allowed: torch.Tensor,
                                 rows: torch.Tensor) -> torch.Tensor:
    """Mean attention that the instruction rows give each key: (B, L) float32.

    Args:
        query: (B, H, T, hd) queries of the T candidate rows (rotary already applied).
        key: (B, H, L, hd) keys of all L tokens (rotary applied, GQA heads already repeated).
        scaling: the attention's softmax scale (head_dim ** -0.5 for Llama).
        allowed: (B, T, L) bool, which keys each row may see (causal and padding).
        rows: (B, T) bool, which of the T rows are instruction tokens of that sample.

    Returns:
        (B, L): for each key, the attention probability averaged over heads and over the
        sample's instruction rows (0 for a sample without instruction rows).
    """
    logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling  # (B, H, T, L)
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # fully masked rows (non-instruction pads) -> 0
    per_row = probs.mean(dim=1)  # (B, T, L), heads averaged
    weights = rows.float()
    return (per_row * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


def select_visual_tokens(scores: torch.Tensor, visual: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Keep mask: every non-visual token, plus the top ``ceil(keep_ratio · n_visual)`` visual tokens per sample.

    Ties break toward the lower index (stable sort).

    Args:
        scores: (B, L) float scores (only visual positions are read).
        visual: (B, L) bool.
        keep_ratio: in (0, 1].

    Returns:
        (B, L) bool keep mask, order-preserving when applied.
    """
    keep = ~visual.clone()
    masked = scores.float().masked_fill(~visual, float("-inf"))
    for b in range(scores.shape[0]):
        n_visual = int(visual[b].sum())
        n_keep = math.ceil(keep_ratio * n_visual - 1e-9)
        if n_keep:
            top = torch.argsort(masked[b], descending=True, stable=True)[:n_keep]
            keep[b, top] = True
    return keep
