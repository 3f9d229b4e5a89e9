"""``PlacementWatch``: a job whose cluster shrank below its layout stops, instead of waiting forever.

When a node dies, Ray restarts its actors on the nodes left. If those nodes cannot hold the
layout any more (two 1-CPU nodes running a 1.75-CPU layout lose one), the restarted actors stay
pending on resources the cluster no longer has, and every call to them waits with them: the job
would print nothing and never end. The scheduler tells the watch whenever a result arrives
(:meth:`PlacementWatch.progress`) and asks it while it waits (:meth:`PlacementWatch.check`):
after ``timeout_s`` seconds without a result, if the alive nodes can no longer place the
layout's actors (:func:`.layout.fits`), it raises :class:`ClusterShrunk`, one line naming what
is missing. A layout that still fits (a slow model load, a long video) is left to run.
"""

from __future__ import annotations

import time
from typing import Callable

from ...errors import ConfigError
from .layout import ClusterShape, fits

__all__ = ["ClusterShrunk", "PlacementWatch", "DEFAULT_PLACEMENT_TIMEOUT_S", "RECHECK_S"]

# Seconds without any result before the watch asks whether the cluster still holds the layout: longer
# than a restarted actor's start on a busy node, so a layout that fits is never stopped for being slow.
DEFAULT_PLACEMENT_TIMEOUT_S = 120.0
# Seconds between two looks at the cluster once that time has passed (ray.nodes() is a GCS call).
RECHECK_S = 2.0


class ClusterShrunk(ConfigError):
    """The cluster lost resources while the pipeline ran and can no longer place its actors.

    Attributes:
        cluster: the cluster's alive nodes when it was noticed.
    """

    def __init__(self, message: str, cluster: ClusterShape):
        super().__init__(message)
        self.cluster = cluster


class PlacementWatch:
    """Raises :class:`ClusterShrunk` once no result came for ``timeout_s`` s and the layout no longer fits.

    Args:
        options: the pipeline's resolved :class:`~.options.RayPipelineOptions` (its actors' demands).
        answering: whether the LLM actors are part of the layout now (they start on demand).
        timeout_s: seconds without a result before the cluster is looked at.
    """

    def __init__(self, options, answering: Callable[[], bool], timeout_s: float = DEFAULT_PLACEMENT_TIMEOUT_S):
        self.options, self.answering, self.timeout_s = options, answering, timeout_s
        self._last_result = time.monotonic()
        self._next_look = 0.0

    def progress(self) -> None:
        """A result arrived: the actors are placed and working."""
        self._last_result = time.monotonic()

    def check(self) -> None:
        """Raise :class:`ClusterShrunk` if no result came for ``timeout_s`` and the alive nodes cannot hold the layout."""
        now = time.monotonic()
        waited = now - self._last_result
        if waited < self.timeout_s or now < self._next_look:
            return
        self._next_look = now + RECHECK_S
        cluster = ClusterShape.current()
        answering = self.answering()
        if fits(cluster.nodes, self.options.demands(answering)):
            return
        need = self.options.required(answering)
        missing = [f"{need[k] - have:g} {k}" for k, have in (("CPU", cluster.cpus), ("GPU", cluster.gpus))
                   if need[k] > have + 1e-9] or ["room on one node for one of them"]
        raise ClusterShrunk(
            f"the Ray cluster shrank below the pipeline's layout while it ran: it now has {cluster.describe()}, the "
            f"layout ({self.options.layout()}) asks for {need['CPU']:g} CPUs and {need['GPU']:g} GPUs, so "
            f"{' and '.join(missing)} are missing and its actors could not be placed for {waited:.0f} s", cluster)
