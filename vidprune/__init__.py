"""vidprune: training-free visual token pruning for video LLMs.

VisPruner per frame, cross-frame dedup under a total token budget, and optional IVTP
inside the LLM, over the Hugging Face Video-LLaVA and LLaVA-NeXT-Video classes.

    from vidprune import VideoQA
    qa = VideoQA.from_pretrained("LanguageBind/Video-LLaVA-7B-hf", budget=227)
    qa.ask("clip.mp4", "What happens?").text
"""

from .config import VidpruneConfig
from .errors import ConfigError, ModelLoadError, VideoDecodeError, VidpruneError
from .qa import Answer, VideoQA

__version__ = "0.1.0"

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
