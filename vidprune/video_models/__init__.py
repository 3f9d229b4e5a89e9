"""Adapters over the Hugging Face Video-LLaVA, LLaVA-NeXT-Video and LLaVA-OneVision classes.

``load_video_llm(path)`` picks the family from the checkpoint's config. The shared
contract is ``base.py`` (:class:`VideoLLM`); loading, the tower hooks, generation (the point
where tokens enter the LLM), the family registry, checkpoint inspection and the data types
each have their own module; each family file holds only its vision side.

Names are imported on first use (PEP 562), so that importing a light submodule
(``vidprune.video_models.tiny`` for its family names, e.g. in CLI parsing) does not import torch.
"""

from __future__ import annotations

import importlib

__all__ = [
    "EncodedFrames",
    "VideoLLM",
    "VisualGeometry",
    "VideoLlavaAdapter",
    "LlavaNextVideoAdapter",
    "LlavaOnevisionAdapter",
    "build_tiny_checkpoint",
    "ensure_tiny_checkpoint",
    "family_of_checkpoint",
    "list_families",
    "load_video_llm",
]

_WHERE = {
    "EncodedFrames": "datatypes", "VideoLLM": "base", "VisualGeometry": "datatypes",
    "family_of_checkpoint": "registry", "list_families": "registry", "load_video_llm": "registry",
    "VideoLlavaAdapter": "video_llava", "LlavaNextVideoAdapter": "llava_next_video",
    "LlavaOnevisionAdapter": "llava_onevision",
    "build_tiny_checkpoint": "tiny", "ensure_tiny_checkpoint": "tiny",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
