"""Joining a Ray cluster, or starting Ray on this machine: :func:`connect_ray`."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from ...errors import ConfigError

__all__ = ["connect_ray", "local_cpus"]


def local_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def connect_ray(address: str | None = None, *, node_ip_address: str | None = None, num_cpus: int | None = None,
                log_to_driver: bool = False) -> str:
    """Join a running cluster (``address``, else ``RAY_ADDRESS``) or start Ray on this machine.

    Without an address (and without ``RAY_ADDRESS``) a new local Ray starts
    (``ray.init(address="local")``), even where a cluster from ``ray start --head`` is up:
    a bare ``ray.init()`` would join the cluster named in Ray's session file
    (``ray_current_cluster`` in Ray's temp folder) instead.
    ``node_ip_address``: the address a local Ray binds to (e.g. ``127.0.0.2`` where Ray would
    rewrite 127.0.0.1 to an outward address); also read from ``VIDPRUNE_RAY_NODE_IP``.
    ``num_cpus``: logical CPUs of a local Ray (default :func:`local_cpus`, the CPUs there are).
    Returns "cluster ADDRESS" or "local". Already connected: does nothing.

    Raises:
        ConfigError: the cluster cannot be reached, or a local Ray cannot start.
    """
    if ray.is_initialized():
        return "connected"
    address = address or os.environ.get("RAY_ADDRESS") or None
    node_ip_address = node_ip_address or os.environ.get("VIDPRUNE_RAY_NODE_IP") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": log_to_driver,
                              "include_dashboard": False}
    if node_ip_address:
        kwargs["_node_ip_address"] = node_ip_address
    try:
        if address:
            kwargs.pop("include_dashboard")
            ray.init(address=address, **kwargs)
            return f"cluster {address}"
        ray.init(address="local", num_cpus=num_cpus or local_cpus(), **kwargs)
        return "local"
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        if address:
            raise ConfigError(f"cannot join the Ray cluster at {address} ({detail}); check the address "
                              "(ray start --head prints it), or leave --address and RAY_ADDRESS unset to run "
                              "on a Ray started on this machine") from None
        raise ConfigError(f"cannot start a local Ray on this machine ({detail}); no --address or RAY_ADDRESS "
                          "was given, so a new local Ray was started; pass --address HEAD:PORT to use a running "
                          "cluster instead") from None
