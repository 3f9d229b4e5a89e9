"""The Hugging Face engine: ``generate()`` of the stock model in this process (the default, the reference).

A thin delegation to :class:`~vidprune.video_models.generation.VideoLLMGeneration`, where the kept
rows enter the model (``mm_encoder_outputs``), IVTP runs and one video's prefix is prefilled once.
"""

from __future__ import annotations

from typing import Any

from .base import LLMEngine

__all__ = ["HFEngine"]


class HFEngine(LLMEngine):
    name = "hf"

    def generate(self, prompts, visual_tokens, layouts=None, *, ivtp: Any = None, **generate_kwargs):
        return self.llm.generate(prompts, visual_tokens, layouts, ivtp=ivtp, **generate_kwargs)

    def generate_about_one_video(self, prompts, visual_tokens, layout=None, *, ivtp: Any = None, **generate_kwargs):
        return self.llm.generate_about_one_video(prompts, visual_tokens, layout, ivtp=ivtp, **generate_kwargs)

    def reuses_prefix(self, num_prompts, generate_kwargs):
        return self.llm.reuses_prefix(num_prompts, generate_kwargs)
