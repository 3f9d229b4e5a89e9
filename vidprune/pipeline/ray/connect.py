"""Joining a Ray cluster, or starting Ray on this machine: :func:`connect_ray`."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from ...errors import ConfigError

__all__ = ["connect_ray"]


def connect_ray(address: str | None = None, *, node_ip_address: str | None = None, num_cpus: int | None = None,
                log_to_driver: bool = False) -> str:
    """Join a running cluster (``address``, else ``RAY_ADDRESS``) or start Ray on this machine.

    ``node_ip_address``: the address a local Ray binds to (e.g. ``127.0.0.2`` where Ray would
    rewrite 127.0.0.1 to an outward address); also read from ``VIDPRUNE_RAY_NODE_IP``.
    ``num_cpus``: logical CPUs of a local Ray (at least what the pipeline asks for).
    Returns "cluster ADDRESS" or "local". Already connected: does nothing.

    Raises:
        ConfigError: the cluster cannot be reached.
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
        ray.init(num_cpus=num_cpus, **kwargs)
        return "local"
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"cannot start or join {where} ({' '.join(str(exc).split())[:200]}); check the address "
                          "(ray start --head prints it) or leave --address out to run locally") from None
