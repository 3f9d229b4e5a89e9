"""The Ray adapter: the plain stages as actors, streamed with backpressure, fault tolerant.

    from vidprune.pipeline.ray import RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray

    connect_ray()                                   # local Ray, or RAY_ADDRESS / address="head:6379"
    cfg, _info = resolve_config("ckpt/", budget=114, frames=32, encoder_batch_size=8)  # vidprune.config
    pipe = RayVideoPipeline(cfg, RayPipelineOptions(decoders=2, encoders=2))
    pruned = pipe.prepare("long.mp4")               # == VideoQA.prepare("long.mp4")
    for result in pipe.run([VideoRequest("a", "a.mp4", ["What happens?"])]): ...

Modules, one concept each: :mod:`.options` (layout, resources, fault-tolerance options),
:mod:`.layout` (the default layout sized from the cluster's nodes),
:mod:`.actors` (the stages as actors), :mod:`.scheduler` (the driver's loop, its states),
:mod:`.failures` (what a failed call means), :mod:`.pipeline` (``RayVideoPipeline``),
:mod:`.connect` (``connect_ray``). This package is the only one that touches Ray; it
imports the ``ray`` library by absolute import (``import ray`` is the top-level package,
never this one). The design (segments, backpressure, fault tolerance): docs/ray.md.
"""

import importlib

# Where each public name lives; a module is imported when one of its names is first used, so
# ``vidprune --help`` (which reads the layout constants) does not import Ray.
_HOME = {
    "StageResources": "options", "RayPipelineOptions": "options", "actor_options": "options",
    "ClusterShape": "layout", "NodeShape": "layout",
    "VideoRequest": "scheduler", "VideoResult": "scheduler",
    "RayVideoPipeline": "pipeline", "connect_ray": "connect", "SelectionLost": "failures",
    "DecodeActor": "actors", "EncodeActor": "actors", "SelectActor": "actors", "AnswerActor": "actors",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
