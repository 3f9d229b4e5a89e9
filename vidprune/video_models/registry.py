"""The family registry: ``config.model_type`` → adapter class, and picking the family of a checkpoint.

``register_family("qwen2_5_vl")`` is the class decorator each family module applies;
:func:`family_of_checkpoint` reads a checkpoint's config alone (no weights) and returns its
adapter, or refuses in one line; :func:`load_video_llm` is the front door.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from .base import VideoLLM

__all__ = ["family_of_checkpoint", "family_of_model_type", "list_families", "load_video_llm", "register_family"]

_FAMILIES: dict[str, type["VideoLLM"]] = {}

# The modules that register the built-in families (imported on the registry's first use).
_FAMILY_MODULES = ("video_llava", "llava_next_video", "llava_onevision", "qwen2_5_vl", "qwen3_vl")


def _families() -> dict[str, type["VideoLLM"]]:
    import importlib

    for module in _FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return _FAMILIES


def register_family(model_type: str):
    """Class decorator: register an adapter for a transformers ``config.model_type``."""

    def wrap(cls):
        _FAMILIES[model_type] = cls
        cls.model_type = model_type
        return cls

    return wrap


def list_families() -> list[str]:
    """The ``model_type`` values that vidprune can run, sorted."""
    return sorted(_families())


def _read_config_dict(path: str | os.PathLike) -> dict | None:
    cfg = Path(path) / "config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            return None
    return None


def family_of_checkpoint(model: str, *, revision: str | None = None, trust_remote_code: bool = False) -> type["VideoLLM"]:
    """The adapter class for a checkpoint directory or hub id, from its config alone (no weights).

    Raises:
        ModelLoadError: the directory has no config, or its ``model_type`` is not supported.
    """
    if os.path.isdir(model):
        cfg = _read_config_dict(model)
        if cfg is None:
            raise ModelLoadError(
                f"{model!r} is a directory without a readable config.json; pass a checkpoint saved with save_pretrained"
            )
        model_type = cfg.get("model_type")
    elif os.path.exists(model):
        raise ModelLoadError(f"{model!r} is a file, not a checkpoint directory or hub id")
    elif _names_a_local_path(model):  # refused now, not after the hub client's retries
        raise ModelLoadError(f"checkpoint directory {model!r} does not exist; check the path "
                             "(a hub id looks like org/name)")
    else:
        try:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(model, revision=revision,
                                                    trust_remote_code=trust_remote_code).model_type
        except Exception as exc:  # hub unreachable, unknown id, ...
            raise ModelLoadError(
                f"cannot read the config of {model!r} ({type(exc).__name__}); "
                "pass a local checkpoint directory or a hub id you can download"
            ) from None
    return family_of_model_type(model_type, model)


def family_of_model_type(model_type: str | None, model: str) -> type["VideoLLM"]:
    """The adapter class for a transformers ``config.model_type`` (``model`` names it in the error)."""
    if model_type not in _families():
        raise ModelLoadError(
            f"{model!r} is a {model_type!r} checkpoint; vidprune supports {', '.join(list_families())}"
        )
    return _FAMILIES[model_type]


def _names_a_local_path(model: str) -> bool:
    """Whether ``model`` can only mean a local path: absolute, ``./``, ``../`` or ``~``, a trailing or
    second separator (hub ids are ``name`` or ``org/name``), or a first component that is a folder here."""
    if os.path.isabs(model) or model.startswith(("./", "../", "~", ".\\")) or model.endswith(("/", os.sep)):
        return True
    parts = model.replace(os.sep, "/").split("/")
    return len(parts) > 2 or (len(parts) == 2 and os.path.isdir(parts[0]))


def load_video_llm(name_or_path: str, **kwargs) -> VideoLLM:
    """Load a checkpoint of any supported family: the adapter is chosen from its config."""
    hub = {k: kwargs[k] for k in ("revision", "trust_remote_code") if kwargs.get(k) is not None}
    return family_of_checkpoint(name_or_path, **hub).from_pretrained(name_or_path, **kwargs)
