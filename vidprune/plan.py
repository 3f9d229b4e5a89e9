"""How many visual tokens each stage may hand on, known before any model runs.

:func:`plan_tokens` needs only a checkpoint's :class:`~vidprune.video_models.datatypes.VisualGeometry`
(read from its config) and the frame count; options validation, the stages, the report and
the tests all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .video_models.datatypes import VisualGeometry

__all__ = ["TokenPlan", "plan_tokens"]


@dataclass(frozen=True)
class TokenPlan:
    """Token counts known before any model runs (from the config and the frame count)."""

    num_frames: int  # pruning units: frames, or Qwen2.5-VL's temporal patches
    full: int | None  # what the stock model would feed its LLM; None: a dynamic grid not yet known
    budget: int | None
    max_to_llm: int | None  # the hard upper bound of what vidprune hands on (None: no budget, grid unknown)

    def to_dict(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "full": self.full, "budget": self.budget, "max_to_llm": self.max_to_llm}


def plan_tokens(geometry: VisualGeometry, num_frames: int, budget: int | None,
                tokens_per_frame: int | None = None) -> TokenPlan:
    """How many visual tokens each stage may hand on for ``num_frames`` pruning units.

    ``tokens_per_frame``: prunable tokens per unit when the geometry is dynamic (Qwen2.5-VL:
    ``(h/2)·(w/2)`` of the preprocessed grid ``video_grid_thw``); fixed geometries know it from
    the config. Without it a dynamic plan checks the budget only (``full`` is None).

    Raises:
        ConfigError: the budget cannot even hold the extra tokens handed on outside pruning.
    """
    reserved = geometry.reserved(num_frames)
    if budget is not None and budget < reserved:
        what = []
        if geometry.extra_per_frame:
            what.append(f"{geometry.extra_per_frame * num_frames} [CLS] tokens kept (one per frame for {num_frames} frames)")
        if geometry.extra_per_video:
            what.append(f"{geometry.extra_per_video} newline token kept once per video")
        remedy = ", or drop the [CLS] tokens (keep_cls=False / --drop-cls)" if geometry.extra_per_frame else ""
        raise ConfigError(
            f"budget {budget} is smaller than the {' + '.join(what)}; raise the budget"
            + (f", sample fewer frames{remedy}" if geometry.extra_per_frame else "")
        )
    if geometry.dynamic and tokens_per_frame is None:
        return TokenPlan(num_frames=num_frames, full=None, budget=budget, max_to_llm=budget)
    if tokens_per_frame is not None and geometry.dynamic:
        full = possible = tokens_per_frame * num_frames + geometry.reserved(num_frames)
    else:
        full, possible = geometry.stock_tokens(num_frames), geometry.full_tokens(num_frames)
    return TokenPlan(
        num_frames=num_frames,
        full=full,
        budget=budget,
        max_to_llm=possible if budget is None else min(budget, possible),
    )
