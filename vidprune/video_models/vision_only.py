"""Loading the vision side of a checkpoint alone: the LLM's weights are never read or materialized.

An encoder replica (``EncodeActor`` on Ray) runs the vision tower and the projector only.
:func:`load_vision_side` builds the stock model class on the ``meta`` device (no memory for
any weight), materializes the family's vision modules (``VideoLLM.vision_modules``) on the
device, and reads from the checkpoint's safetensors files only the tensors those modules own.
Checkpoint keys are mapped to the model's names with transformers' own conversion mapping
(``conversion_mapping.get_model_conversion_mapping`` + ``core_model_loading.rename_source_key``,
5.x), so a hub checkpoint in the legacy key layout (``vision_tower.vision_model...``) loads as
``from_pretrained`` would load it. Non-persistent buffers (position ids, rotary tables) are
filled by the model's own ``_init_weights`` (which, since 5.0, sets them for meta-built models),
with every loaded tensor flagged ``_is_hf_initialized`` so no weight is re-randomized.

Refused in one line: a tensor of the vision side the checkpoint lacks, a key that needs a
weight converter (merged / split tensors), a checkpoint without safetensors files.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from ..errors import ModelLoadError
from .hf_internals import check_attn_implementation, vision_only_key_mapper
from .loading import image_processor_notice_silenced, resolve_dtype

__all__ = ["load_vision_side", "materialized_bytes"]


def _checkpoint_files(name_or_path: str, revision: str | None) -> list[str]:
    """The checkpoint's safetensors files (a directory, or the hub cache via ``cached_file``)."""
    from transformers.utils import cached_file

    def find(filename: str) -> str | None:
        if os.path.isdir(name_or_path):
            path = os.path.join(name_or_path, filename)
            return path if os.path.exists(path) else None
        try:
            return cached_file(name_or_path, filename, revision=revision, _raise_exceptions_for_missing_entries=False)
        except OSError:
            return None

    index = find("model.safetensors.index.json")
    if index is not None:
        with open(index) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        files = [find(shard) for shard in shards]
        if all(files):
            return files  # type: ignore[return-value]
    single = find("model.safetensors")
    if single is not None:
        return [single]
    raise ModelLoadError(f"cannot load the vision side of {name_or_path!r} alone: it has no safetensors weights "
                         "(model.safetensors or its index); convert it, or give the encoders the whole model")


def _owned(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def load_vision_side(model_class_name: str, name_or_path: str, modules: tuple[str, ...], *,
                     device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                     attn_implementation: str | None = None, revision: str | None = None,
                     trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The stock model with only ``modules`` (names in the model, e.g. ``model.vision_tower``) holding weights.

    Everything else stays on ``meta``: built without memory, its tensors never read.

    Returns:
        (model, processor), the model in eval mode; its ``modules`` on ``device`` in ``dtype``.
    """
    import transformers
    from safetensors import safe_open
    from transformers import AutoConfig, AutoProcessor

    torch_dtype = resolve_dtype(dtype) or torch.float32
    check_attn_implementation(attn_implementation)  # nothing fetched from the Hub for attention (5.25)
    hub = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(name_or_path, **hub)
        with image_processor_notice_silenced():
            processor = AutoProcessor.from_pretrained(name_or_path, **hub)
    except OSError as exc:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    if attn_implementation:
        config._attn_implementation = attn_implementation  # noqa: SLF001  (what from_pretrained sets)
    model_cls = getattr(transformers, model_class_name)
    with torch.device("meta"):
        model = model_cls._from_config(config, dtype=torch_dtype)  # no memory for any weight
    model.eval()

    wanted = {name: t for name, t in model.state_dict(keep_vars=True).items() if _owned(name, modules)}
    if not wanted:
        raise ModelLoadError(f"{model_class_name} has none of the vision modules {list(modules)}")
    for name in modules:  # materialize the vision side only (uninitialized memory, filled below)
        module_or_param = model.get_submodule(name) if _is_module(model, name) else None
        if module_or_param is not None:
            module_or_param.to_empty(device=device)
        else:
            owner, _, attr = name.rpartition(".")
            parent = model.get_submodule(owner)
            param = getattr(parent, attr)
            setattr(parent, attr, torch.nn.Parameter(torch.empty_like(param, device=device),
                                                     requires_grad=param.requires_grad))
    wanted = {name: t for name, t in model.state_dict(keep_vars=True).items() if _owned(name, modules)}

    rename = vision_only_key_mapper(model)  # checkpoint key -> the model's name, as from_pretrained maps it
    loaded: set[str] = set()
    for path in _checkpoint_files(name_or_path, revision):
        with safe_open(path, framework="pt", device="cpu") as fh:
            for key in fh.keys():
                target, converter = rename(key, wanted)
                if target not in wanted:
                    continue
                if converter is not None:
                    raise ModelLoadError(f"cannot load the vision side of {name_or_path!r} alone: {key!r} needs "
                                         "transformers' weight converter; give the encoders the whole model")
                tensor = wanted[target]
                with torch.no_grad():
                    tensor.copy_(fh.get_tensor(key).to(tensor.dtype))  # reads this tensor only
                tensor._is_hf_initialized = True  # noqa: SLF001  (transformers' own "loaded" flag)
                loaded.add(target)
    persistent = {name for name in wanted if name not in _non_persistent_buffers(model)}
    missing = sorted(persistent - loaded)
    if missing:
        raise ModelLoadError(f"the checkpoint {name_or_path!r} lacks {len(missing)} tensor(s) of the vision side "
                             f"(first: {missing[0]}); give the encoders the whole model")
    # Non-persistent buffers: the model's own initializer sets them, dispatching to each sub-model's
    # ``_init_weights`` (the tower's own sets its position ids); every loaded tensor is flagged, so it
    # is skipped, and what is still on meta costs nothing.
    model.initialize_weights()
    return model, processor


def _is_module(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _non_persistent_buffers(model: torch.nn.Module) -> set[str]:
    out = set()
    for prefix, module in model.named_modules():
        for buffer in getattr(module, "_non_persistent_buffers_set", ()):
            out.add(f"{prefix}.{buffer}" if prefix else buffer)
    return out


def materialized_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers not on ``meta``, by top-level module under ``model.model`` (and the rest)."""
    out: dict[str, int] = {}
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.device.type == "meta":
            continue
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "model" and len(parts) >= 2 else parts[0]
        out[key] = out.get(key, 0) + tensor.numel() * tensor.element_size()
    return out
