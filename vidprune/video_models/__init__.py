"""Adapters over the Hugging Face Video-LLaVA and LLaVA-NeXT-Video classes.

``load_video_llm(path)`` picks the family from the checkpoint's config. The shared
logic (loading, prompts, the point where tokens enter the LLM) is in ``base.py``; each
family file holds only its vision side.
"""

from .base import EncodedFrames, VideoLLM, VisualGeometry, family_of_checkpoint, list_families, load_video_llm
from .llava_next_video import LlavaNextVideoAdapter
from .tiny import build_tiny_checkpoint, ensure_tiny_checkpoint
from .video_llava import VideoLlavaAdapter

__all__ = [
    "EncodedFrames",
    "VideoLLM",
    "VisualGeometry",
    "VideoLlavaAdapter",
    "LlavaNextVideoAdapter",
    "build_tiny_checkpoint",
    "ensure_tiny_checkpoint",
    "family_of_checkpoint",
    "list_families",
    "load_video_llm",
]
