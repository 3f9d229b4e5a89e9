"""The token budget of a video (docs/method.md section 3), frame by frame.

``budget`` is the total number of visual tokens handed to the LLM for one video. It is
a hard limit. ``reserved_per_frame`` tokens per frame that are kept outside the pruner
(e.g. a [CLS] token) come off it first; the rest, the *patch budget*
``P = budget - reserved_per_frame * num_frames``, is split evenly over the frames
(``frame_shares``). ``VideoBudget`` then walks the frames in temporal order:

    allowance_t  = share_t + carry             (carry: allowance earlier frames left unused)
    candidates_t = pruner(attn_t, feats_t, min(allowance_t, N))
    kept_t       = candidates_t minus the duplicates CrossFrameDedup finds
    carry        = allowance_t - len(kept_t)

so the budget that static frames free goes to later frames with new content, and the
kept tokens of the whole video never exceed P. ``frame_shares`` and
``frame_token_counts`` are pure functions, usable before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidprune.errors import ConfigError
from vidprune.validators import check_non_negative_int, check_positive_int
from vidprune.pruners.dedup import CrossFrameDedup
from vidprune.pruners.registry import Pruner

__all__ = ["FrameSelection", "VideoBudget", "prune_frame", "frame_shares", "frame_token_counts"]


def frame_shares(budget: int, num_frames: int, reserved_per_frame: int = 0) -> list[int]:
    """Each frame's even share of the patch budget (before any carry).

    ``P = budget - reserved_per_frame * num_frames``; every frame gets ``P // num_frames``
    and the first ``P % num_frames`` frames one more, so ``sum(shares) == P``.

    Raises:
        ConfigError: bad types/values, or ``P < 0`` (the budget does not cover the reserved tokens).
    """
    budget = check_positive_int("budget", budget)
    num_frames = check_positive_int("num_frames", num_frames)
    reserved_per_frame = check_non_negative_int("reserved_per_frame", reserved_per_frame)
    patch_budget = budget - reserved_per_frame * num_frames
    if patch_budget < 0:
        raise ConfigError(
            f"budget={budget} is smaller than the {reserved_per_frame * num_frames} reserved tokens "
            f"({reserved_per_frame} per frame x {num_frames} frames); the budget must be at least "
            f"{reserved_per_frame * num_frames}: raise the budget or drop the reserved tokens"
        )
    base, extra = divmod(patch_budget, num_frames)
    return [base + (1 if t < extra else 0) for t in range(num_frames)]


def frame_token_counts(
    budget: int | None, num_frames: int, tokens_per_frame: int, reserved_per_frame: int = 0
) -> list[int]:
    """Patch tokens ``VideoBudget`` keeps per frame without dedup (reserved tokens not included).

    ``budget=None`` keeps all ``tokens_per_frame``. With a budget, frame t keeps
    ``min(share_t + carry, tokens_per_frame)`` (a share above N carries over). With dedup
    a frame may keep fewer (duplicates) or, later on, more (freed budget carried to it);
    the video's total is then at most ``sum(counts)``.
    """
    num_frames = check_positive_int("num_frames", num_frames)
    tokens_per_frame = check_non_negative_int("tokens_per_frame", tokens_per_frame)
    if budget is None:
        return [tokens_per_frame] * num_frames
    counts, carry = [], 0
    for share in frame_shares(budget, num_frames, reserved_per_frame):
        kept = min(share + carry, tokens_per_frame)
        carry = share + carry - kept
        counts.append(kept)
    return counts


@dataclass
class FrameSelection:
    """What ``VideoBudget.select`` decided for one frame (indices into its N tokens)."""

    kept: torch.Tensor  # (K,) long, sorted ascending: handed to the LLM
    candidates: torch.Tensor  # (C,) long, sorted ascending: what the pruner proposed
    duplicates: torch.Tensor  # (C - K,) long, sorted ascending: candidates dropped by dedup
    allowance: int  # tokens this frame was allowed (share + carry; N when there is no budget)


def prune_frame(cls_attn: torch.Tensor, features: torch.Tensor, allowance: int, *, pruner: Pruner | None,
                dedup: CrossFrameDedup | None = None) -> FrameSelection:
    """The prune-frame step: one frame's candidates from the pruner, then cross-frame dedup.

    The one implementation behind :class:`VideoBudget` (a video under a budget) and
    the live stream's rolling memory.

    Args:
        cls_attn: (N,) importance of the frame's tokens (what the pruner scores).
        features: (N, D) the frame's token features, pre-projector (what dedup compares).
        allowance: tokens the frame may keep; the pruner is asked for ``min(allowance, N)``.
        pruner: a :class:`Pruner`, or None to propose all N tokens (no budget).
        dedup: a streaming :class:`CrossFrameDedup` fed this frame next, or None.

    Returns:
        :class:`FrameSelection` (kept / candidates / duplicates sorted ascending, and ``allowance``).
    """
    num_tokens = cls_attn.shape[0]
    if pruner is None:
        candidates = torch.arange(num_tokens, device=cls_attn.device)
    else:
        proposed = min(allowance, num_tokens)
        if proposed > 0:
            candidates = pruner(cls_attn, features, proposed).to(torch.long)
            if candidates.dim() != 1 or candidates.shape[0] > proposed:
                raise RuntimeError(
                    f"pruner {getattr(pruner, 'name', pruner)!r} returned {tuple(candidates.shape)} "
                    f"indices for a budget of {proposed}"
                )
        else:
            candidates = torch.zeros(0, dtype=torch.long, device=cls_attn.device)
    if dedup is not None:
        kept, duplicates = dedup.step(features, candidates)
    else:
        kept, duplicates = candidates, candidates[:0]
    return FrameSelection(kept=kept, candidates=candidates, duplicates=duplicates, allowance=allowance)


class VideoBudget:
    """One video's token budget, spent frame by frame: pruner, optional dedup, hard limit.

    Each frame is allowed its share of the budget plus what earlier frames left unused
    (:func:`frame_shares`), and :func:`prune_frame` picks its tokens.

    Args:
        budget: total visual tokens for the video, reserved ones included; None = no
            limit (every frame's candidates are all its N tokens; dedup still applies).
        num_frames: frames the video has; ``select`` is called once per frame.
        pruner: a ``Pruner`` (see ``create_pruner``); must respect the budget when one is set.
        dedup: a ``CrossFrameDedup``, or None, owned (and reset here) by this budget.
        reserved_per_frame: tokens per frame kept outside the pruner (not selected here).

    Raises:
        ConfigError: bad arguments, a budget below ``reserved_per_frame * num_frames``, or a
            pruner that ignores the budget (``"none"``) under a finite budget.
    """

    def __init__(
        self,
        budget: int | None,
        num_frames: int,
        pruner: Pruner,
        dedup: CrossFrameDedup | None = None,
        reserved_per_frame: int = 0,
    ):
        self.num_frames = check_positive_int("num_frames", num_frames)
        self.reserved_per_frame = check_non_negative_int("reserved_per_frame", reserved_per_frame)
        if budget is None:
            self.shares: list[int] | None = None
        else:
            self.shares = frame_shares(budget, self.num_frames, self.reserved_per_frame)
            if not getattr(pruner, "respects_budget", True):
                raise ConfigError(
                    f"pruner {getattr(pruner, 'name', pruner)!r} keeps every token and ignores budget={budget}; "
                    "use budget=None with it, or a pruner that respects the budget"
                )
        self.budget = budget
        self.pruner = pruner
        self.dedup = dedup
        if dedup is not None:
            dedup.reset()
        self._frame = 0
        self._carry = 0
        self.total_kept = 0  # patch tokens kept so far

    @property
    def patch_budget(self) -> int | None:
        """``budget - reserved_per_frame * num_frames``, or None without a budget."""
        return None if self.shares is None else sum(self.shares)

    def select(self, cls_attn: torch.Tensor, features: torch.Tensor) -> FrameSelection:
        """Decide the next frame (call in temporal order, once per frame).

        Args:
            cls_attn: (N,) attention of the frame's patch tokens (what the pruner scores).
            features: (N, D) the frame's patch features, pre-projector.
        """
        if self._frame >= self.num_frames:
            raise RuntimeError(
                f"select() called for frame {self._frame + 1} but the selector was built for "
                f"num_frames={self.num_frames}; build a new VideoBudget per video"
            )
        if cls_attn.dim() != 1 or features.dim() != 2 or features.shape[0] != cls_attn.shape[0]:
            raise ConfigError(
                f"select() takes one frame: cls_attn (N,) and features (N, D), got {tuple(cls_attn.shape)} "
                f"and {tuple(features.shape)}"
            )
        num_tokens = cls_attn.shape[0]
        if self.shares is None:
            sel = prune_frame(cls_attn, features, num_tokens, pruner=None, dedup=self.dedup)
        else:
            sel = prune_frame(cls_attn, features, self.shares[self._frame] + self._carry, pruner=self.pruner,
                              dedup=self.dedup)
        kept, allowance = sel.kept, sel.allowance

        if self.shares is not None:
            self._carry = allowance - kept.shape[0]
        self._frame += 1
        self.total_kept += kept.shape[0]
        return sel
