"""How many visual tokens each stage may hand on, known before any model runs.

:func:`plan_tokens` needs only a checkpoint's :class:`~vidprune.video_models.base.VisualGeometry`
(read from its config) and the frame count; options validation, the stages, the report and
the tests all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .video_models.base import VisualGeometry

__all__ = ["TokenPlan", "plan_tokens"]


@dataclass(frozen=True)
class TokenPlan:
    """Token counts known before any model runs (from the config and the frame count)."""

    num_frames: int
    full: int  # what the stock model would feed its LLM for these frames
    budget: int | None
    max_to_llm: int  # the hard upper bound of what vidprune hands on

    def to_dict(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "full": self.full, "budget": self.budget, "max_to_llm": self.max_to_llm}


def plan_tokens(geometry: VisualGeometry, num_frames: int, budget: int | None) -> TokenPlan:
    """How many visual tokens each stage may hand on for ``num_frames`` frames.

    Raises:
        ConfigError: the budget cannot even hold the extra tokens kept per frame.
    """
    reserved = geometry.extra_per_frame * num_frames
    if budget is not None and budget < reserved:
        raise ConfigError(
            f"budget {budget} is smaller than the {reserved} [CLS] tokens kept (one per frame for {num_frames} "
            f"frames); raise the budget, sample fewer frames, or drop the [CLS] tokens (keep_cls=False / --drop-cls)"
        )
    possible = geometry.full_per_frame * num_frames
    return TokenPlan(
        num_frames=num_frames,
        full=geometry.stock_per_frame * num_frames,
        budget=budget,
        max_to_llm=possible if budget is None else min(budget, possible),
    )
