"""Cross-frame similarity dedup (docs/method.md section 2).

After a pruner has proposed tokens for frame t, ``CrossFrameDedup.step`` drops the
candidates whose feature (pre-projector) repeats what earlier frames already showed.
It is streaming: frame t is decided from frames < t only, then the state takes frame t
in. One instance serves one video (or one live stream); ``reset()`` starts the next.

Similarity is the cosine of L2-normalised float32 features, evaluated as
``cos = 1 - |u - v|^2 / 2`` on the unit vectors ``u, v``: a candidate is a duplicate if
``cos >= threshold``, i.e. ``|u - v| <= sqrt(2 * (1 - threshold))``. In this form
identical vectors give distance exactly 0, so ``threshold=1.0`` reliably means "same
feature up to a positive scale" (a dot product of unit vectors rounds to values just
below 1 and would miss them).
"""

from __future__ import annotations

import math
import numbers
from collections import deque

import torch
import torch.nn.functional as F

from vidprune.errors import ConfigError

__all__ = ["CrossFrameDedup", "DEDUP_REFERENCES", "KEPT_ANY_MAX_FRAMES"]

DEDUP_REFERENCES = ("previous", "kept", "kept_any")

# reference="kept_any" with window=None remembers the kept tokens of at most this many
# past frames (memory and the per-frame compare cost grow with it; 16 frames of a
# sampled video are several seconds, well past where static content repeats).
KEPT_ANY_MAX_FRAMES = 16


class CrossFrameDedup:
    """Drops candidate tokens that repeat earlier frames of the same video.

    Args:
        threshold: cosine similarity in (0, 1] at or above which a candidate counts as
            a duplicate. 1.0 drops only exact duplicates (same direction).
        reference: what a candidate at position i of frame t is compared with:
            ``"previous"``: token i of frame t-1 (all its tokens, kept or not);
            ``"kept"``: the most recent token at position i that was kept (handed on) in
            frames t-window .. t-1;
            ``"kept_any"``: every token kept in frames t-window .. t-1, any position
            (duplicate if the largest cosine reaches the threshold).
        window: frames to look back for ``"kept"`` / ``"kept_any"``, an int >= 1.
            None: unlimited for ``"kept"`` (one vector per position is stored), and
            ``KEPT_ANY_MAX_FRAMES`` for ``"kept_any"``. Not used by ``"previous"``.

    The first frame (after construction or ``reset()``) has no duplicates. All frames
    of one instance must have the same N and D.
    """

    def __init__(self, threshold: float = 0.9, reference: str = "kept", window: int | None = None):
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, numbers.Real)
            or not 0.0 < float(threshold) <= 1.0
        ):
            raise ConfigError(
                f"threshold={threshold!r} is not allowed: it must be a cosine similarity in (0, 1] "
                "(1.0 drops exact duplicates only)"
            )
        if reference not in DEDUP_REFERENCES:
            raise ConfigError(f"Unknown dedup reference {reference!r}. Has to be one of {list(DEDUP_REFERENCES)}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1):
            raise ConfigError(f"window={window!r} is not allowed: it must be an integer >= 1 (frames) or None")
        if reference == "previous" and window is not None:
            raise ConfigError(
                f"window={window!r} has no effect with reference='previous' (it always compares with the "
                "previous frame); drop window or use reference='kept' or 'kept_any'"
            )
        self.threshold = float(threshold)
        self.reference = reference
        self.window = None if window is None else int(window)
        # Unit-vector distance at or below which a candidate is a duplicate.
        self._radius = math.sqrt(max(0.0, 2.0 * (1.0 - self.threshold)))
        self.reset()

    def reset(self) -> None:
        """Forget all frames: the next ``step`` is a first frame."""
        self._frame = 0  # index of the next frame
        self._shape: tuple[int, int] | None = None  # (N, D) of this stream
        self._previous: torch.Tensor | None = None  # "previous": (N, D) unit features of frame t-1
        self._last_kept: torch.Tensor | None = None  # "kept": (N, D) unit feature last kept at each position
        self._last_kept_frame: torch.Tensor | None = None  # "kept": (N,) frame of it, -1 = never
        lookback = self.window if self.window is not None else KEPT_ANY_MAX_FRAMES
        self._kept_any: deque[tuple[int, torch.Tensor]] = deque(maxlen=lookback)  # (frame, (k_s, D) unit features)

    @property
    def frames_seen(self) -> int:
        """Frames passed to ``step`` since construction or the last ``reset()``."""
        return self._frame

    def step(self, features: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split this frame's candidates into new tokens and duplicates, then remember the frame.

        Args:
            features: (N, D) features of all N tokens of frame t (pre-projector).
            candidates: (C,) LongTensor, sorted ascending, unique, in ``[0, N)``: the tokens
                proposed for this frame (C may be 0).

        Returns:
            ``(kept, duplicates)``: LongTensors on ``candidates``' device, each sorted
            ascending; disjoint, and together exactly ``candidates``.
        """
        unit = self._check(features, candidates)  # (N, D) float32 unit vectors
        t = self._frame
        candidates = candidates.to(torch.long)
        dup = torch.zeros(candidates.shape[0], dtype=torch.bool, device=unit.device)  # (C,)
        cand = candidates.to(unit.device)
        if t > 0 and cand.numel() > 0:
            if self.reference == "previous":
                dist = torch.linalg.vector_norm(unit[cand] - self._previous[cand], dim=-1)  # (C,)
                dup = dist <= self._radius
            elif self.reference == "kept":
                age = t - self._last_kept_frame[cand]  # (C,)
                valid = self._last_kept_frame[cand] >= 0
                if self.window is not None:
                    valid &= age <= self.window
                dist = torch.linalg.vector_norm(unit[cand] - self._last_kept[cand], dim=-1)  # (C,)
                dup = valid & (dist <= self._radius)
            else:  # "kept_any"
                # One deque entry per past frame (maxlen = the lookback), so all entries are in the window.
                refs = torch.cat([u for _, u in self._kept_any])  # (M, D)
                if refs.shape[0] > 0:
                    # Direct differences (not the matmul expansion), so identical vectors are at distance 0.
                    dist = torch.cdist(unit[cand], refs, compute_mode="donot_use_mm_for_euclid_dist")  # (C, M)
                    dup = dist.amin(dim=-1) <= self._radius

        kept_mask = ~dup
        kept_idx = cand[kept_mask]
        self._remember(unit, kept_idx, t)
        self._frame = t + 1
        dup_idx = cand[dup]
        return kept_idx.to(candidates.device), dup_idx.to(candidates.device)

    def _remember(self, unit: torch.Tensor, kept_idx: torch.Tensor, t: int) -> None:
        if self.reference == "previous":
            self._previous = unit
        elif self.reference == "kept":
            if self._last_kept is None:
                self._last_kept = torch.zeros_like(unit)
                self._last_kept_frame = torch.full((unit.shape[0],), -1, dtype=torch.long, device=unit.device)
            self._last_kept[kept_idx] = unit[kept_idx]
            self._last_kept_frame[kept_idx] = t
        else:
            # Oldest frames fall out of the deque (maxlen = window or KEPT_ANY_MAX_FRAMES).
            self._kept_any.append((t, unit[kept_idx].clone()))

    def _check(self, features: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or not features.is_floating_point():
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ConfigError(f"features must be a floating-point tensor of shape (N, D), got {got}")
        if self._shape is not None and tuple(features.shape) != self._shape:
            raise ConfigError(
                f"features have shape {tuple(features.shape)} but earlier frames of this stream had {self._shape}; "
                "call reset() before a new video"
            )
        if not isinstance(candidates, torch.Tensor) or candidates.dim() != 1 or candidates.is_floating_point():
            got = tuple(candidates.shape) if isinstance(candidates, torch.Tensor) else type(candidates).__name__
            raise ConfigError(f"candidates must be a 1-D integer tensor of token indices, got {got}")
        num_tokens = features.shape[0]
        if candidates.numel() > 0:
            if int(candidates.min()) < 0 or int(candidates.max()) >= num_tokens:
                raise ConfigError(f"candidates must lie in [0, {num_tokens}), got values outside")
            if candidates.numel() > 1 and not bool((candidates[1:] > candidates[:-1]).all()):
                raise ConfigError("candidates must be sorted ascending without repeats")
        self._shape = tuple(features.shape)
        return F.normalize(features.detach().to(torch.float32), dim=-1)
