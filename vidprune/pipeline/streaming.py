"""Deprecated: the Ray segment plan moved to :mod:`vidprune.pipeline.segments`.

"Streaming" now means one thing per package (tokens to the browser in the demo, live
sources in :mod:`vidprune.pipeline.live`); time segments of a file are "segments".
"""

import warnings

from vidprune.pipeline.segments import (
    MAX_OPEN_STREAMS,
    FrameBatch,
    FramePlan,
    PlanChanged,
    SegmentDecoder,
    batches_from_clip,
    plan_frames,
    split_segments,
)
from vidprune.pipeline.stages import VideoSelection as SelectionStream

__all__ = [
    "MAX_OPEN_STREAMS",
    "FrameBatch",
    "FramePlan",
    "PlanChanged",
    "SegmentDecoder",
    "SelectionStream",
    "batches_from_clip",
    "plan_frames",
    "split_segments",
]

warnings.warn(
    "vidprune.pipeline.streaming was renamed vidprune.pipeline.segments; import it from there "
    "(SelectionStream, now VideoSelection, from vidprune.pipeline.stages)",
    DeprecationWarning,
    stacklevel=2,
)
