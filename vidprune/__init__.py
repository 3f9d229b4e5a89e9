"""vidprune: training-free visual token pruning for video LLMs.

VisPruner per frame, cross-frame dedup under a total token budget, and optional IVTP
inside the LLM, over the Hugging Face Video-LLaVA and LLaVA-NeXT-Video classes.

    from vidprune import VideoQA
    qa = VideoQA.from_pretrained("LanguageBind/Video-LLaVA-7B-hf", budget=227)
    qa.ask("clip.mp4", "What happens?").text
"""

from typing import TYPE_CHECKING

from .config import VidpruneConfig
from .errors import ConfigError, ModelLoadError, VideoDecodeError, VidpruneError

if TYPE_CHECKING:
    from .qa import Answer, VideoQA

__version__ = "0.1.0"

# Imported on first use (PEP 562): `import vidprune.pipeline.decode` and the CLI's argument
# parsing do not pay for torch and transformers.
_LAZY = {"VideoQA": "vidprune.qa", "Answer": "vidprune.qa"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidprune' has no attribute {name!r}")

__all__ = [
    "VideoQA",
    "Answer",
    "VidpruneConfig",
    "VidpruneError",
    "ConfigError",
    "ModelLoadError",
    "VideoDecodeError",
    "__version__",
]
