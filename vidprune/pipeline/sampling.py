"""Deprecated: moved to :mod:`vidprune.pipeline.decode.sampling`."""

import warnings

from vidprune.pipeline.decode.sampling import choose_indices, fps_indices, uniform_indices

__all__ = ["choose_indices", "fps_indices", "uniform_indices"]

warnings.warn(
    "vidprune.pipeline.sampling moved to vidprune.pipeline.decode.sampling; import it from there "
    "(or from vidprune.pipeline.decode)",
    DeprecationWarning,
    stacklevel=2,
)
