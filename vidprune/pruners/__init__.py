"""Per-frame token pruners, cross-frame dedup and the per-video token budget.

    from vidprune.pruners import create_pruner, CrossFrameDedup, VideoBudget

    pruner = create_pruner("vispruner", important_ratio=0.5)
    video_budget = VideoBudget(budget=455, num_frames=8, pruner=pruner, dedup=CrossFrameDedup(0.9))
    for attn, feats in frames:                  # (N,), (N, D), in temporal order
        kept = video_budget.select(attn, feats).kept

Importing this package registers the built-in pruners (none, random, uniform, vispruner).
"""

from .registry import (Pruner, check_pruner_grid, create_pruner, describe_pruner, list_pruners, pruner_from_options,
                       register_pruner)
from .vispruner import MAX_DROP_PER_ROUND, VisPrunerPruner, vispruner_select
from .baselines import NoPruner, RandomPruner, UniformPruner, uniform_grid_indices
from .dedup import DEDUP_REFERENCES, KEPT_ANY_MAX_FRAMES, CrossFrameDedup
from .budget import FrameSelection, VideoBudget, frame_shares, frame_token_counts, prune_frame

__all__ = [
    "Pruner",
    "register_pruner",
    "create_pruner",
    "list_pruners",
    "describe_pruner",
    "pruner_from_options",
    "check_pruner_grid",
    "vispruner_select",
    "VisPrunerPruner",
    "MAX_DROP_PER_ROUND",
    "RandomPruner",
    "UniformPruner",
    "NoPruner",
    "uniform_grid_indices",
    "CrossFrameDedup",
    "DEDUP_REFERENCES",
    "prune_frame",
    "KEPT_ANY_MAX_FRAMES",
    "FrameSelection",
    "VideoBudget",
    "frame_shares",
    "frame_token_counts",
]


def __getattr__(name: str):
    if name == "VideoTokenSelector":  # renamed in 0.2: one name per concept
        import warnings

        warnings.warn("vidprune.pruners.VideoTokenSelector was renamed VideoBudget", DeprecationWarning, stacklevel=2)
        return VideoBudget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
