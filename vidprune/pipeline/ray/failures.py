"""How a failed Ray call is read: the original exception, and whether the work was lost or the input is bad.

An exception raised in an actor comes back from ``ray.get`` as a
:class:`ray.exceptions.RayTaskError` whose ``cause`` is the original exception object
(Ray 2.x: ``RayTaskError.cause``; an actor whose constructor raised comes back the same
way, from its creation task). So a ``VideoDecodeError`` raised in a decoder is a
``VideoDecodeError`` again here, with its type and message, never rebuilt from text.
"""

from __future__ import annotations

import ray.exceptions

from ...errors import VidpruneError

__all__ = ["SelectionLost", "root_cause", "work_was_lost", "one_line", "LOST_WORK_ERRORS"]

# Ray errors that mean "the work was lost with a process or node", not "the input is bad".
LOST_WORK_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,  # OwnerDiedError, ObjectReconstructionFailedError, ...
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.OutOfMemoryError,
    ray.exceptions.ActorUnschedulableError,
)
# Ray wraps a cause at most this deep (a task error of a task that consumed a failed ref).
_MAX_CAUSE_DEPTH = 10


class SelectionLost(RuntimeError):
    """The select actor no longer holds a video's stream (it restarted): the video must start over."""


def root_cause(exc: BaseException) -> BaseException:
    """The exception the actor raised (``RayTaskError.cause``, unwrapped), or ``exc`` for Ray's own errors."""
    for _ in range(_MAX_CAUSE_DEPTH):
        cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
        if not isinstance(cause, BaseException):
            break
        exc = cause
    return exc


def work_was_lost(exc: BaseException) -> bool:
    """True when a process/node failure (not the input) made the call fail: worth starting the video over."""
    cause = root_cause(exc)
    return isinstance(cause, SelectionLost) or isinstance(cause, LOST_WORK_ERRORS) or isinstance(exc, LOST_WORK_ERRORS)


def one_line(exc: BaseException) -> str:
    """The cause as one line for a results file: a vidprune error's message, else ``Type: message``."""
    cause = root_cause(exc)
    text = " ".join(str(cause).split()) or type(cause).__name__
    if not isinstance(cause, VidpruneError):
        text = f"{type(cause).__name__}: {text}"
    return text[:500]
