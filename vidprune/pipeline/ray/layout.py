"""The default layout: how many actors per stage and what share of a node each gets, sized from the cluster.

    cluster = ClusterShape.current()                  # the nodes Ray reports (CPUs, GPUs each)
    options = RayPipelineOptions().sized(config, cluster)

Rules (docs/ray.md, "Layout"):

* **CPU only** (the config's device is not CUDA): one LLM replica, one select actor, one
  decoder per node (at most 2) and the rest of the cluster's CPU slots as encoder replicas
  (at most one per node, or one per ``MAX_CPUS_PER_ACTOR`` CPUs on big nodes). Every actor left
  unsized gets the same CPU share ``s``, the largest (at most ``MAX_CPUS_PER_ACTOR``) such
  that the nodes hold all of them: ``sum(floor(cpus_n / s)) >= actors``. Equal shares make
  the fit independent of where Ray puts each actor (any node with ``s`` free takes any
  actor), so on two 1-CPU nodes the four actors get 0.5 CPU each.
* **GPU** (device CUDA): one LLM replica per GPU and one encoder replica beside each
  (``ENCODE_GPU_SHARE`` + ``ANSWER_GPU_SHARE`` = one GPU, so the pair shares it), the
  decoders and the select actor on CPU slots as above, sized on the GPU nodes' CPUs alone
  (all actors counted), so the GPU actors fit even where Ray put the CPU-only ones first.
* What is given explicitly (counts, shares) is kept; only the rest is sized. A layout
  that cannot be placed on the nodes is refused in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError

__all__ = ["NodeShape", "ClusterShape", "slot_share", "fits", "MAX_CPUS_PER_ACTOR", "MIN_CPUS_PER_ACTOR",
           "ENCODE_GPU_SHARE", "ANSWER_GPU_SHARE", "MAX_DEFAULT_DECODERS"]

# A sized actor gets at most this many CPUs (torch in an actor uses as many threads as it has CPUs).
MAX_CPUS_PER_ACTOR = 4.0
# Below this share an actor would mostly wait for its turn on the core: refuse instead.
MIN_CPUS_PER_ACTOR = 0.1
# On a GPU: the LLM replica and the encoder replica beside it share the device.
ANSWER_GPU_SHARE = 0.75
ENCODE_GPU_SHARE = 0.25
# Decoders by default: one per node, at most this many (a video's segments alternate over them).
MAX_DEFAULT_DECODERS = 2
# Shares are rounded down to this grain, so they print short and sum without float surprises.
_GRAIN = 1 / 8


@dataclass(frozen=True)
class NodeShape:
    """One alive node's logical resources."""

    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class ClusterShape:
    """The alive nodes of a cluster, as Ray reports them."""

    nodes: tuple[NodeShape, ...]

    @classmethod
    def current(cls) -> ClusterShape:
        """The connected cluster's alive nodes (``ray.nodes()``), from ``ray.cluster_resources()`` if none report."""
        import ray

        nodes = tuple(NodeShape(float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
                      for n in ray.nodes() if n.get("Alive"))
        if not nodes:
            total = ray.cluster_resources()
            nodes = (NodeShape(float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))),)
        return cls(nodes)

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    @property
    def whole_gpus(self) -> int:
        return sum(int(n.gpus) for n in self.nodes)

    def describe(self) -> str:
        return f"{len(self.nodes)} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"

    def to_dict(self) -> dict:
        return {"nodes": [{"cpus": n.cpus, "gpus": n.gpus} for n in self.nodes]}


def _round_down(x: float) -> float:
    return math.floor(x / _GRAIN + 1e-9) * _GRAIN


def slot_share(capacities: list[float], actors: int) -> float:
    """The largest CPU share ``s`` (<= MAX_CPUS_PER_ACTOR) with ``sum(floor(c / s)) >= actors``; 0 if none >= MIN."""
    if actors <= 0:
        return MAX_CPUS_PER_ACTOR
    best = 0.0
    for c in capacities:
        for k in range(1, actors + 1):  # a share that divides some node into k slots
            s = min(MAX_CPUS_PER_ACTOR, _round_down(c / k))
            if s < MIN_CPUS_PER_ACTOR or s <= best:
                continue
            if sum(math.floor(cap / s + 1e-9) for cap in capacities) >= actors:
                best = s
    return best


def fits(nodes: tuple[NodeShape, ...], demands: list[tuple[float, float]]) -> bool:
    """Whether ``demands`` ((cpus, gpus) per actor) can all be placed on ``nodes`` (first fit, biggest first).

    GPU shares of one actor must come from one device (Ray's rule for fractional GPUs).
    """
    free_cpu = [n.cpus for n in nodes]
    free_gpu = [[1.0] * int(n.gpus) + ([n.gpus - int(n.gpus)] if n.gpus % 1 else []) for n in nodes]
    for cpus, gpus in sorted(demands, key=lambda d: (d[1], d[0]), reverse=True):
        for i in range(len(nodes)):
            if free_cpu[i] + 1e-9 < cpus:
                continue
            if gpus:
                if gpus >= 1:
                    whole = [g for g, f in enumerate(free_gpu[i]) if f >= 1 - 1e-9]
                    if len(whole) < math.ceil(gpus - 1e-9):
                        continue
                    for g in whole[: math.ceil(gpus - 1e-9)]:
                        free_gpu[i][g] = 0.0
                else:
                    dev = next((g for g, f in enumerate(free_gpu[i]) if f + 1e-9 >= gpus), None)
                    if dev is None:
                        continue
                    free_gpu[i][dev] -= gpus
            free_cpu[i] -= cpus
            break
        else:
            return False
    return True


def refuse(cluster: ClusterShape, need: dict[str, float], layout: str) -> ConfigError:
    """The one-line error of a layout the cluster cannot hold."""
    short = [k for k in ("CPU", "GPU") if need[k] > (cluster.cpus if k == "CPU" else cluster.gpus) + 1e-9]
    if short:
        kind = short[0]
        have = cluster.cpus if kind == "CPU" else cluster.gpus
        return ConfigError(f"the Ray cluster has {have:g} {kind}s but the pipeline asks for {need[kind]:g} ({layout}); "
                           f"lower --decoders/--encoders or the per-stage {kind}s, or add nodes")
    return ConfigError(f"the pipeline's actors ({layout}) do not fit on the nodes of the Ray cluster "
                       f"({cluster.describe()}: no node has room for one of them); lower the per-stage shares, "
                       "or leave them out to have them sized from the cluster")
