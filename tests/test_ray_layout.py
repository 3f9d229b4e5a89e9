"""The default Ray layout sized from the cluster's nodes (no Ray needed: the cluster is described)."""

from __future__ import annotations

import pytest

from vidprune.config import VidpruneConfig
from vidprune.errors import ConfigError
from vidprune.pipeline.ray.layout import (ANSWER_GPU_SHARE, ENCODE_GPU_SHARE, ClusterShape, NodeShape, fits,
                                          slot_share)
from vidprune.pipeline.ray.options import RayPipelineOptions, StageResources

CPU = VidpruneConfig(model="unused", device="cpu")
CUDA = VidpruneConfig(model="unused", device="cuda")


def cluster(*nodes: tuple[float, float]) -> ClusterShape:
    return ClusterShape(tuple(NodeShape(c, g) for c, g in nodes))


@pytest.mark.parametrize("nodes", [
    [(1, 0), (1, 0)],  # the small cluster
    [(1, 0)], [(2, 0)], [(3, 0), (1, 0)], [(4, 0)] * 3, [(6, 0)], [(64, 0)], [(0.5, 0), (1.5, 0)],
])
def test_default_layout_always_fits_and_uses_fractions_on_small_clusters(nodes):
    c = cluster(*nodes)
    o = RayPipelineOptions().resolved(CPU, c)
    assert fits(c.nodes, o.demands())
    assert o.required()["CPU"] <= c.cpus + 1e-9 and o.required()["GPU"] == 0
    assert o.answerers == 1 and o.decoders >= 1 and o.encoders >= 1
    if c.cpus <= 2:
        assert all(getattr(o, s).num_cpus < 1 for s in ("decode", "encode", "select", "answer"))


def test_two_one_cpu_nodes_get_half_a_cpu_per_actor():
    o = RayPipelineOptions().resolved(CPU, cluster((1, 0), (1, 0)))
    assert o.layout() == "decode 1x0.5 CPU, encode 1x0.5 CPU, select 1x0.5 CPU, answer 1x0.5 CPU"


def test_bigger_clusters_get_more_encoders_and_more_cpus_per_actor():
    small = RayPipelineOptions().resolved(CPU, cluster((1, 0), (1, 0)))
    big = RayPipelineOptions().resolved(CPU, cluster(*[(4, 0)] * 3))
    assert big.encoders == 3 and big.decoders == 2
    assert big.encode.num_cpus > small.encode.num_cpus


def test_one_llm_replica_per_gpu_with_an_encoder_beside_it():
    c = cluster((8, 2), (8, 2))
    o = RayPipelineOptions().resolved(CUDA, c)
    assert (o.answerers, o.encoders) == (4, 4)
    assert (o.answer.num_gpus, o.encode.num_gpus) == (ANSWER_GPU_SHARE, ENCODE_GPU_SHARE)
    assert ANSWER_GPU_SHARE + ENCODE_GPU_SHARE == 1.0  # the pair shares one device
    assert o.decode.num_gpus == o.select.num_gpus == 0
    assert o.required()["GPU"] == 4 and fits(c.nodes, o.demands())


def test_explicit_flags_override_and_the_rest_is_sized_around_them():
    c = cluster((1, 0), (1, 0))
    o = RayPipelineOptions(decoders=2, encode=StageResources(0.75)).resolved(CPU, c)
    assert o.decoders == 2 and o.encode == StageResources(0.75)
    assert fits(c.nodes, o.demands())


def test_a_layout_that_cannot_fit_is_refused_in_one_line():
    c = cluster((1, 0), (1, 0))
    with pytest.raises(ConfigError, match=r"^the Ray cluster has 2 CPUs but the pipeline asks for 4.5 \(decode") as e:
        RayPipelineOptions(decode=StageResources(1), encode=StageResources(1), select=StageResources(0.5),
                           answer=StageResources(1), decoders=2).resolved(CPU, c)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"do not fit on the nodes"):  # enough in total, but no node holds 1.5
        RayPipelineOptions(encode=StageResources(1.5)).resolved(CPU, cluster((1, 0), (1, 0), (1, 0)))
    with pytest.raises(ConfigError, match=r"has no GPUs"):
        RayPipelineOptions().resolved(CUDA, c)
    with pytest.raises(ConfigError, match=r"no room for 13 more pipeline actors"):
        RayPipelineOptions(decoders=10).resolved(CPU, cluster((1, 0)))


def test_slot_share_is_the_largest_equal_share_that_places_every_actor():
    assert slot_share([1, 1], 4) == 0.5
    assert slot_share([4, 4, 4], 6) == 2.0
    assert slot_share([1], 20) == 0  # below the smallest share
