"""Deprecated: the Ray adapter is the package :mod:`vidprune.pipeline.ray`; this alias goes in a later release."""

import warnings

from .ray import *  # noqa: F401,F403
from .ray import __all__  # noqa: F401

warnings.warn("vidprune.pipeline.ray_actors is deprecated; import from vidprune.pipeline.ray",
              DeprecationWarning, stacklevel=2)
