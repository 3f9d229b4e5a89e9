"""Which frames of a video to decode: index selection on the decoded frame table.

These functions work on frame *indices* in presentation order (0-based, among all
frames the decoder outputs) and never look at pixels, so they can be tested and
reused without a video. ``vidprune.pipeline.decode`` re-exports them.

- :func:`uniform_indices` is the lmms-eval convention
  ``np.linspace(0, num_total - 1, num_frames, dtype=int)`` (all frames when the
  video is shorter than asked).
- :func:`fps_indices` samples at a target rate from the real presentation times
  (variable frame rate safe), then thins uniformly to a cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vidprune.errors import ConfigError
from vidprune.validators import check_int_at_least

__all__ = ["choose_indices", "fps_indices", "uniform_indices"]

# Two times closer than this (seconds) count as a tie; ties go to the earlier frame.
_TIE_EPS = 1e-9


def uniform_indices(num_total: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly over ``[0, num_total - 1]`` (lmms-eval convention).

    Returns ``np.linspace(0, num_total - 1, num_frames, dtype=int)`` as a list of
    ``num_frames`` strictly increasing ints, or ``[0, ..., num_total - 1]`` (all
    frames) when ``num_total < num_frames``; ``[]`` when ``num_total == 0``.
    Raises ``ConfigError`` when ``num_frames <= 0`` or ``num_total < 0``.
    """
    num_total = check_int_at_least("num_total", num_total, 0)
    num_frames = check_int_at_least("num_frames", num_frames, 1)
    if num_total <= num_frames:
        return list(range(num_total))
    return np.linspace(0, num_total - 1, num_frames, dtype=int).tolist()


def fps_indices(times_s: Sequence[float], fps: float, max_frames: int | None = None) -> list[int]:
    """Indices of the frames nearest the times ``t0, t0 + 1/fps, t0 + 2/fps, ...``.

    ``times_s`` holds the presentation time (seconds) of every frame, indexed by
    frame index; ``t0 = times_s[0]`` and the last target is the last one not after
    ``max(times_s)``. Each target takes the frame whose time is nearest (a tie goes
    to the earlier frame); a frame picked twice is kept once, so asking for a rate
    above the video's returns every frame in range. The result is sorted. If it
    holds more than ``max_frames`` indices it is thinned to ``max_frames`` with
    :func:`uniform_indices` over the picked list.

    Times need not be sorted (they are searched in sorted order); ``[]`` for no
    frames. Raises ``ConfigError`` for ``fps`` not a finite number > 0 or
    ``max_frames < 1``.
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
        raise ConfigError(f"fps must be a number, got {fps!r}; pass e.g. fps=1.0")
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a finite number > 0, got {fps}; pass e.g. fps=1.0")
    if max_frames is not None:
        max_frames = check_int_at_least("max_frames", max_frames, 1)
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    n = times.size
    if n == 0:
        return []
    if not np.all(np.isfinite(times)):
        raise ConfigError("times_s holds a non-finite value; pass the frame times in seconds")
    if n == 1:
        return [0]

    order = np.argsort(times, kind="stable")
    st = times[order]
    t0 = float(times[0])
    span = float(st[-1]) - t0
    n_targets = math.floor(span * fps + _TIE_EPS) + 1 if span >= 0 else 1
    targets = t0 + np.arange(n_targets, dtype=np.float64) / fps

    j = np.searchsorted(st, targets, side="left")
    j = np.clip(j, 1, n - 1)
    left = st[j - 1]
    right = st[j]
    take_right = (right - targets) < (targets - left) - _TIE_EPS
    picked_sorted_pos = np.where(take_right, j, j - 1)
    picked = sorted(set(order[picked_sorted_pos].tolist()))

    if max_frames is not None and len(picked) > max_frames:
        picked = [picked[i] for i in uniform_indices(len(picked), max_frames)]
    return picked


def choose_indices(times_s: Sequence[float], *, num_frames: int | None = None, fps: float | None = None,
                   max_frames: int | None = None) -> tuple[list[int], list[str]]:
    """The frames :func:`read_video` samples from a stream with these presentation times, and its notes.

    Uniform sampling with ``num_frames`` (all frames, and a note, when the stream has fewer),
    otherwise rate sampling at ``fps`` capped by ``max_frames`` (a note when the stream's own
    rate gives fewer distinct frames). Used by every path that plans frames before decoding.
    """
    n = len(times_s)
    notes: list[str] = []
    if num_frames is not None:
        indices = uniform_indices(n, num_frames)
        if n < num_frames:
            notes.append(
                f"video has {n} frame{'s' if n != 1 else ''}, fewer than the {num_frames} asked for: "
                f"using {'all ' + str(n) if n != 1 else 'it'}"
            )
    else:
        indices = fps_indices(times_s, float(fps), max_frames)
        span = times_s[-1] - times_s[0] if n else 0.0
        n_targets = math.floor(span * float(fps) + 1e-9) + 1
        if len(indices) < min(n_targets, max_frames or n_targets):
            notes.append(
                f"sampling at {float(fps):g} fps asks for {n_targets} frames but the video's {n} frames "
                f"give only {len(indices)} distinct ones: its frame rate is lower"
            )
    return list(indices), notes
