"""Loading a stock HF model and its processor from a checkpoint directory or hub id."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..devices import check_device
from ..errors import ConfigError, ModelLoadError
from .hf_internals import FROM_PRETRAINED_NO_HUB_KERNELS, check_attn_implementation

__all__ = ["image_processor_notice_silenced", "load_model_and_processor", "resolve_dtype"]


@contextlib.contextmanager
def image_processor_notice_silenced():
    """Hide transformers' "Requested torchvision backend is not available. Falling back to pil" notice.

    Video-LLaVA's image processor exists only as a PIL class, so every load of a stock
    Video-LLaVA processor prints that notice although torchvision is installed. vidprune
    never uses the image processor (frames go through the video processor), so the notice
    says nothing about a vidprune run. Only that logger is quieted, only during the load.
    """
    import logging

    logger = logging.getLogger("transformers.models.auto.image_processing_auto")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from ..devices import DTYPE_NAMES

    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"Unknown dtype {dtype!r}. Has to be one of {sorted(DTYPE_NAMES)}")
    return getattr(torch, DTYPE_NAMES[dtype])


def load_model_and_processor(model_class_name: str, name_or_path: str, *, device: str | torch.device = "cpu",
                             dtype: str | torch.dtype | None = None,
                             attn_implementation: str | None = None) -> tuple[Any, Any]:
    """The stock ``transformers.<model_class_name>`` and its processor, loaded and moved to ``device``.

    Args:
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        dtype: weights dtype (``"bfloat16"``, ``"float16"``, ``"float32"`` or a torch dtype);
            None keeps the checkpoint's dtype on GPU and uses float32 on CPU.
        attn_implementation: passed to ``from_pretrained`` (default: transformers' choice, SDPA); one
            that transformers would download from the Hugging Face Hub is refused
            (:func:`.hf_internals.check_attn_implementation`). Hub kernels are off (``use_kernels=False``).

    Raises:
        ModelLoadError: the checkpoint cannot be read (one line).
    """
    import transformers
    from transformers import AutoProcessor

    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is None and str(device).startswith("cpu"):
        torch_dtype = torch.float32
    check_device(device, torch_dtype)  # one line, before any weights load, on the machine that loads them
    check_attn_implementation(attn_implementation)  # nothing fetched from the Hub for attention
    model_cls = getattr(transformers, model_class_name)
    # No Hub kernels: transformers 5.25 kernelizes every load by default (docs/internals.md).
    kwargs = {"dtype": torch_dtype if torch_dtype is not None else "auto", **FROM_PRETRAINED_NO_HUB_KERNELS}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = model_cls.from_pretrained(name_or_path, **kwargs)
        with image_processor_notice_silenced():
            processor = AutoProcessor.from_pretrained(name_or_path)
    except OSError as exc:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    model.to(device)
    return model, processor
