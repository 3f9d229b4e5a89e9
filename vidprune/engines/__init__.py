"""The LLM engines behind the answer stage: ``hf`` (transformers ``generate()``) and ``vllm``.

    engine = create_engine("vllm", llm, tensor_parallel_size=2)   # one front door, by name
    engine.generate(prompts, visual_rows, layouts, max_new_tokens=64)

Each engine lives in its own module (:mod:`.hf`, :mod:`.vllm`); :mod:`.base` holds the contract.
The ``engine`` option and its settings are declared in :mod:`vidprune.config`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LLMEngine", "ENGINES", "create_engine", "list_engines"]

ENGINES = ("hf", "vllm")


def list_engines() -> list[str]:
    return list(ENGINES)


def create_engine(name: str, llm, **settings: Any) -> LLMEngine:
    """The engine ``name`` over the loaded ``llm``; ``settings``: the engine's own keywords (vLLM's)."""
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(llm)  # the settings are vLLM's (config refuses them with engine 'hf'); dtype is the model's
    if name == "vllm":
        from .vllm import VllmEngine

        return VllmEngine(llm, **settings)
    raise ValueError(f"Unknown engine {name!r}. Has to be one of {list(ENGINES)}")


def __getattr__(name: str):
    if name == "LLMEngine":  # imported on use: reading ENGINES imports no torch
        from .base import LLMEngine

        return LLMEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
