"""Exceptions that vidprune raises for problems a user can fix.

Every message is one line that says what is wrong and what to do. The CLI prints
the message (no traceback) and exits with the code on the class.
"""

__all__ = ["VidpruneError", "ConfigError", "VideoDecodeError", "ModelLoadError"]


class VidpruneError(Exception):
    """Base class of the errors a user can act on. ``exit_code`` is the CLI's exit status."""

    exit_code = 1


class ConfigError(VidpruneError, ValueError):
    """An option or preset has a bad value (raised before any model loads)."""

    exit_code = 2


class ModelLoadError(VidpruneError):
    """A checkpoint cannot be used: missing, or not one of the supported model families."""

    exit_code = 2


class VideoDecodeError(VidpruneError):
    """A video cannot be opened or decoded (missing, unreadable, corrupt, no video stream)."""

    exit_code = 1
