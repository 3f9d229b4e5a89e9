"""Deprecated: moved to :mod:`vidprune.pipeline.decode.decord_guard` (this name is the same module object)."""

import sys
import warnings

from vidprune.pipeline.decode import decord_guard as _moved

warnings.warn(
    "vidprune.pipeline.decord_guard moved to vidprune.pipeline.decode.decord_guard; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # one module, so state (the shared process) and patches are shared
