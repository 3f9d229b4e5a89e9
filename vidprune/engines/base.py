"""The contract of an LLM engine: what the answer stage calls to turn kept visual rows + prompts into ids.

Two engines implement it, each in its own module: :class:`~vidprune.engines.hf.HFEngine`
(Hugging Face ``generate()`` in this process, the reference) and
:class:`~vidprune.engines.vllm.VllmEngine` (a vLLM engine: continuous batching, paged KV,
prefix caching, tensor parallelism). The vision side (decode, tower, pruning, the budget)
never depends on which one answers; the answer stage, Ray's answer actor, eval and the demo call
the engine through this interface alike.

Shapes: K_i kept visual rows of sample i, D the LLM width.
"""

from __future__ import annotations

from typing import Any

import torch

from ..video_models.datatypes import GenerationOutput

__all__ = ["LLMEngine"]


class LLMEngine:
    """Generate answers from prompts and each prompt's kept visual rows (already LLM input embeddings).

    Attributes:
        name: the ``engine`` option's value.
        llm: the :class:`~vidprune.video_models.base.VideoLLM` whose prompts, projector and
            layouts the rows come from.
    """

    name: str

    def __init__(self, llm):
        self.llm = llm

    def generate(self, prompts: list[str], visual_tokens: list[torch.Tensor], layouts: list | None = None, *,
                 ivtp: Any = None, **generate_kwargs: Any) -> GenerationOutput:
        """One answer per prompt; ``visual_tokens[i]`` (K_i, D), ``layouts[i]`` where its rows sit (Qwen2.5-VL)."""
        raise NotImplementedError

    def generate_about_one_video(self, prompts: list[str], visual_tokens: torch.Tensor, layout: Any = None, *,
                                 ivtp: Any = None, **generate_kwargs: Any) -> GenerationOutput:
        """Several prompts about one video's rows (K, D); the engine reuses what they share."""
        raise NotImplementedError

    def reuses_prefix(self, num_prompts: int, generate_kwargs: dict[str, Any]) -> bool:
        """Whether :meth:`generate_about_one_video` shares the video's prefix for such a call."""
        return False

    def close(self) -> None:
        """Free what the engine holds beyond the ``llm`` (worker processes, device memory)."""
