"""Frames that repeat skip the vision tower: which units of a clip must be encoded, which reuse features.

A unit is what the tower encodes as one: a frame, or a temporal patch of ``frames_per_unit``
frames (Qwen2.5-VL: 2). Before encoding, each unit's raw pixels (uint8, as decoded) are
compared with those of the *last encoded* unit of the same stream:

* exact reuse (``reuse_frames``, on by default): pixels equal → the unit takes that unit's
  features as they are. The tower is a function of the pixels alone, one unit at a time
  (CLIP per frame; Qwen2.5-VL's attention never crosses a temporal patch), so the result is
  what encoding the unit would have given.
* ``skip_static`` (off by default): also reuse when the mean absolute difference to the last
  encoded unit is at most ``skip_static_threshold`` (in 0–255 levels). The reference stays
  the last *encoded* unit, so a slow drift is re-encoded once it adds up past the threshold.

Where "the last encoded unit" lives is the stream's: one call of
:meth:`~vidprune.pipeline.stages.EncodeStage.process` (a whole video in-process and in
eval; one time segment on Ray, whose encoder replicas see a video's segments in parallel,
so each segment's first unit is encoded), or a :class:`LastEncodedUnit` that the caller keeps
across calls (the demo's live feed, one unit per call).

Shapes: k frames per unit, (k, H, W, 3) uint8 pixels per unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_SKIP_STATIC_THRESHOLD
from ..video_models.datatypes import EncodedFrames

__all__ = ["CARRIED", "DEFAULT_SKIP_STATIC_THRESHOLD", "FrameReuse", "LastEncodedUnit"]

# ``FrameReuse.sources`` marks a unit that reuses the carried unit of an earlier call with this.
CARRIED = -1


@dataclass
class LastEncodedUnit:
    """A stream's last encoded unit: its pixels (k, H, W, 3) uint8 and its features (one unit), or empty."""

    pixels: np.ndarray | None = None
    encoded: EncodedFrames | None = None


class FrameReuse:
    """The rule that says which units of a clip the tower runs on.

    Args:
        exact: reuse a unit whose pixels equal the last encoded unit's.
        threshold: also reuse when the mean absolute difference is at most this (0–255 levels);
            None: exact reuse only.
    """

    def __init__(self, exact: bool = True, threshold: float | None = None):
        self.exact, self.threshold = exact, threshold

    @property
    def active(self) -> bool:
        return self.exact or self.threshold is not None

    def unchanged(self, unit: np.ndarray, reference: np.ndarray | None) -> bool:
        """Whether ``unit`` (k, H, W, 3) may take the features of ``reference`` (the last encoded unit)."""
        if reference is None or unit.shape != reference.shape:
            return False
        if self.threshold is not None:
            diff = np.abs(unit.astype(np.int16) - reference.astype(np.int16))  # (k, H, W, 3)
            return float(diff.mean()) <= self.threshold
        return self.exact and np.array_equal(unit, reference)

    def sources(self, units: list[np.ndarray], last: LastEncodedUnit) -> list[int]:
        """Per unit, the unit whose features it takes: itself (encoded), an earlier one, or ``CARRIED``.

        ``last`` is the stream's last encoded unit before these (empty for a fresh stream);
        it is not changed here (see :meth:`remember`).
        """
        out: list[int] = []
        reference, ref_source = last.pixels, CARRIED
        for u, unit in enumerate(units):
            if self.active and self.unchanged(unit, reference):
                out.append(ref_source)
            else:
                out.append(u)
                reference, ref_source = unit, u
        return out
