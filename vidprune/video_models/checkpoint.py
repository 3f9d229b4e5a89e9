"""What a checkpoint's config alone says, before any weights load: :func:`inspect_checkpoint`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .datatypes import VisualGeometry
from .registry import family_of_checkpoint, family_of_model_type

if TYPE_CHECKING:
    from .base import VideoLLM

__all__ = ["CheckpointInfo", "inspect_checkpoint", "checkpoint_info_from_config"]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's config alone says (no weights): its adapter, HF config and visual geometry."""

    family: type["VideoLLM"]
    config: Any
    geometry: VisualGeometry


def inspect_checkpoint(model: str, *, keep_cls: bool = True, prune_pooled: bool = True, revision: str | None = None,
                       trust_remote_code: bool = False) -> CheckpointInfo:
    """Family, config and :class:`VisualGeometry` of a checkpoint directory or hub id, without loading weights.

    Raises:
        ModelLoadError: no readable config, or not one of the supported families.
    """
    from transformers import AutoConfig

    family = family_of_checkpoint(model, revision=revision, trust_remote_code=trust_remote_code)
    config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    return CheckpointInfo(family, config,
                          family.geometry_from_config(config, keep_cls=keep_cls, prune_pooled=prune_pooled))


def checkpoint_info_from_config(config: Any, *, keep_cls: bool = True, prune_pooled: bool = True) -> CheckpointInfo:
    """:func:`inspect_checkpoint` for a model already loaded: family and geometry from its HF ``config``.

    Raises:
        ModelLoadError: its ``model_type`` is not one of the supported families.
    """
    family = family_of_model_type(getattr(config, "model_type", None), getattr(config, "_name_or_path", "") or "the model")
    return CheckpointInfo(family, config,
                          family.geometry_from_config(config, keep_cls=keep_cls, prune_pooled=prune_pooled))
