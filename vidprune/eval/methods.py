"""Pruning methods compared in a sweep, as named sets of VideoQA options.

    from vidprune.eval.methods import plan_arms, list_methods
    arms = plan_arms(["vispruner", "random"], [2048, 227], TokenCounts(full=2048, stream=2056))
    [a.label for a in arms]        # ['full', 'vispruner@227', 'random@227']
    arms[1].options                # {'budget': 227, 'pruner': 'vispruner', 'dedup': False}

A method is a string; with a budget it becomes the keyword options of one
``VideoQA`` (any :class:`~vidprune.config.VidpruneConfig` field), applied over the run's
base options. An *arm* is one (method, budget) cell of the results table.

A budget at or above the model's full visual token count (``TokenCounts.full``: patch
tokens per frame x frames, 2048 for Video-LLaVA's 8 frames, as the papers count) means no
pruning: every such budget collapses into the one ``full`` arm, the upper bound the
table is relative to. ``full`` is always run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["Method", "Arm", "TokenCounts", "register_method", "list_methods", "get_method", "plan_arms",
           "FULL", "FASTV_LAYER"]

FULL = "full"

# FastV prunes after layer K = 2 of the LLM (its paper's default, and the setting the
# VisPruner paper compares against).
FASTV_LAYER = 2


@dataclass(frozen=True)
class Method:
    """A named pruning method.

    Attributes:
        name: registry name (``"vispruner"``).
        title: how tables and plots name it (``"VisPruner"``).
        description: one line for ``vidprune eval --list``.
        options: ``options(budget, counts) -> dict`` of VideoQA option overrides for that
            budget (``counts``: the model's :class:`TokenCounts` for the sampled frames).
    """

    name: str
    title: str
    description: str
    options: Callable[[int, "TokenCounts"], dict[str, Any]]


@dataclass(frozen=True)
class TokenCounts:
    """Visual token counts of the unpruned model for the sampled frames, known before it loads.

    Attributes:
        full: prunable (patch) tokens, frames x per-frame grid: what budgets are measured
            against (2048 for Video-LLaVA's 8 frames, as the papers count).
        stream: tokens the stock model feeds its LLM (full plus per-frame extras such as
            Video-LLaVA's [CLS]: 2056).

    Both are None where the grid comes from each video (Qwen2.5-VL's dynamic resolution):
    then no budget collapses into the full arm (a video with fewer tokens keeps them all).
    """

    full: int | None
    stream: int | None


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def list_methods() -> list[str]:
    """Registered method names (``full`` included), sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """The method ``name``; unknown names raise :class:`ConfigError` listing the known ones."""
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from: {', '.join(list_methods())}")
    return _METHODS[name]


def _fastv_options(budget: int, counts: TokenCounts) -> dict[str, Any]:
    """All tokens enter the LLM; after layer ``FASTV_LAYER`` IVTP keeps ``budget`` of the stream.

    IVTP keeps ``ceil(ratio x n)`` of the n visual tokens; the ratio is taken half a token
    below ``budget / n`` so that the ceiling lands on ``budget`` exactly, not one above
    through float rounding. A video with fewer frames keeps the same share.
    """
    if counts.stream is None:
        raise ConfigError("fastv keeps a share of the stock stream (budget / its tokens), which this model's "
                          "dynamic grid (Qwen2.5-VL) gives only per video; compare with vispruner, random or "
                          "--ivtp instead")
    return {"budget": None, "dedup": False, "ivtp_layer": FASTV_LAYER,
            "ivtp_keep": min(1.0, (budget - 0.5) / counts.stream)}


register_method(Method(FULL, "Full (no pruning)", "every visual token, the upper bound (run once)",
                       lambda budget, counts: {"budget": None, "dedup": False}))
register_method(Method("vispruner", "VisPruner", "VisPruner per frame under the video budget (the paper's method)",
                       lambda budget, counts: {"budget": budget, "pruner": "vispruner", "dedup": False}))
register_method(Method("vispruner_dedup", "VisPruner + dedup",
                       "VisPruner per frame plus cross-frame dedup (vidprune's default pipeline)",
                       lambda budget, counts: {"budget": budget, "pruner": "vispruner", "dedup": True}))
register_method(Method("random", "Random", "random tokens per frame under the video budget",
                       lambda budget, counts: {"budget": budget, "pruner": "random", "dedup": False}))
register_method(Method("uniform", "Uniform", "a uniform spatial grid of tokens per frame under the video budget",
                       lambda budget, counts: {"budget": budget, "pruner": "uniform", "dedup": False}))
register_method(Method("fastv", "FastV", f"FastV-style: all tokens enter the LLM, pruned to the budget after layer "
                       f"{FASTV_LAYER} by text-visual attention",
                       _fastv_options))


@dataclass(frozen=True)
class Arm:
    """One (method, budget) cell: ``budget`` None for the full arm; ``options`` are VideoQA overrides."""

    method: str
    budget: int | None
    options: dict[str, Any] = field(hash=False, compare=False)

    @property
    def label(self) -> str:
        return FULL if self.method == FULL else f"{self.method}@{self.budget}"


def plan_arms(methods: Sequence[str], budgets: Sequence[int | None], counts: TokenCounts,
              ivtp: dict[str, Any] | None = None) -> list[Arm]:
    """The arms of a sweep: ``full`` first, then budgets in the order given, methods in the order given.

    Args:
        methods: method names (``full`` may be listed; it is run once either way).
        budgets: visual token budgets; None or a value >= ``counts.full`` means no pruning.
        counts: the model's visual token counts for the sampled frames.
        ivtp: options added to every pruned arm except ``fastv`` (``{"ivtp_layer": 2,
            "ivtp_keep": 0.5}``): in-LLM pruning on top of the method.

    Raises:
        ConfigError: an unknown method or a bad budget.
    """
    if not methods:
        raise ConfigError("give at least one method (--methods), e.g. vispruner")
    if not budgets:
        raise ConfigError("give at least one budget (--budgets), e.g. 455,227,114")
    for m in methods:
        get_method(m)
    arms = [Arm(FULL, None, get_method(FULL).options(counts.full, counts))]
    for budget in budgets:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise ConfigError(f"budgets must be positive integers (or 'full'), got {budget!r}")
        if budget is None or (counts.full is not None and budget >= counts.full):
            continue  # the full arm
        for m in methods:
            if m == FULL:
                continue
            extra = ivtp if ivtp and m != "fastv" else {}
            arm = Arm(m, budget, {**get_method(m).options(budget, counts), **extra})
            if arm not in arms:
                arms.append(arm)
    return arms
