"""Loading a stock HF model and its processor from a checkpoint directory or hub id.

The loading options (``device_map`` + ``max_memory`` + ``offload_folder``, ``attn_implementation``,
``revision``, ``trust_remote_code``, ``quantization``) are declared once in :mod:`vidprune.config`
and passed through to ``from_pretrained`` here (:func:`from_pretrained_kwargs`). With a
``device_map`` the model is dispatched by accelerate (the vision side where the map puts it,
offloaded blocks behind accelerate's hooks) and never moved afterwards; :func:`module_device`
says where a module's inputs must go.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..devices import check_device
from ..errors import ConfigError, ModelLoadError
from .hf_internals import FROM_PRETRAINED_NO_HUB_KERNELS, check_attn_implementation

__all__ = ["image_processor_notice_silenced", "load_model_and_processor", "resolve_dtype", "from_pretrained_kwargs",
           "module_device", "quantization_config", "QUANTIZATION_MODES", "LOADING_OPTIONS"]

# bitsandbytes modes of the ``quantization`` option -> BitsAndBytesConfig keywords
QUANTIZATION_MODES = {"8bit": {"load_in_8bit": True}, "4bit": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}}
# The options of the "model" section that only loading reads (the keywords of from_pretrained_kwargs).
LOADING_OPTIONS = ("device_map", "max_memory", "offload_folder", "attn_implementation", "revision",
                   "trust_remote_code", "quantization")


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


def quantization_config(quantization: str | dict | None, dtype: torch.dtype | None, skip_modules: tuple[str, ...]):
    """The ``BitsAndBytesConfig`` of the ``quantization`` option (``"8bit"``, ``"4bit"`` or its keywords), or None.

    Only the LLM is quantized: ``skip_modules`` (the family's vision side, the LM head) stay in
    ``dtype``, so the tower's features are the same as without quantization and an encoder
    replica that loads the vision side alone (:mod:`.vision_only`) computes the same ones.

    Raises:
        ConfigError: bitsandbytes is not installed (one line, before any weights load).
    """
    if quantization is None:
        return None
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"quantization={quantization!r} needs bitsandbytes, which is not installed; "
                          "pip install bitsandbytes (CUDA), or drop --quantization")
    from transformers import BitsAndBytesConfig

    kwargs = dict(QUANTIZATION_MODES[quantization]) if isinstance(quantization, str) else dict(quantization)
    skip = [name.removeprefix("model.") for name in skip_modules] + ["lm_head"]
    kwargs.setdefault("llm_int8_skip_modules", skip)
    if kwargs.get("load_in_4bit") and dtype is not None:
        kwargs.setdefault("bnb_4bit_compute_dtype", dtype)
    return BitsAndBytesConfig(**kwargs)


def from_pretrained_kwargs(*, dtype: torch.dtype | None, attn_implementation: str | None = None,
                           device_map: str | dict | None = None, max_memory: dict | None = None,
                           offload_folder: str | None = None, revision: str | None = None,
                           trust_remote_code: bool = False, quantization: str | dict | None = None,
                           keep_unquantized: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keywords of ``<Model>.from_pretrained`` for these loading options (only those given)."""
    kwargs: dict[str, Any] = {"dtype": dtype if dtype is not None else "auto"}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if revision:
        kwargs["revision"] = revision
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    if device_map is not None:
        kwargs["device_map"] = device_map
        if max_memory:
            kwargs["max_memory"] = {_memory_key(k): v for k, v in max_memory.items()}
        if offload_folder:
            kwargs["offload_folder"] = str(offload_folder)
    q = quantization_config(quantization, dtype, keep_unquantized)
    if q is not None:
        kwargs["quantization_config"] = q
    return kwargs


def _memory_key(key: Any) -> Any:
    """``max_memory`` keys as accelerate wants them: GPU indices as ints (YAML/JSON give "0")."""
    return int(key) if isinstance(key, str) and key.isdigit() else key


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s inputs must be: its accelerate hook's execution device, else its weights' device.

    A module dispatched by a ``device_map`` carries an ``AlignDevicesHook`` whose
    ``execution_device`` is where it computes (an offloaded module's weights sit on ``meta``
    and arrive there per call); otherwise the first parameter or buffer not on ``meta`` says.
    """
    hook = getattr(module, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        return torch.device(f"cuda:{execution}") if isinstance(execution, int) else torch.device(execution)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    for sub in module.modules():  # an offloaded parent: a child carries the hook
        execution = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
        if execution is not None:
            return torch.device(f"cuda:{execution}") if isinstance(execution, int) else torch.device(execution)
    return torch.device("meta")


def _computes_on_cpu(device: str | torch.device, device_map: str | dict | None) -> bool:
    """Whether the model will compute on the CPU: ``device`` without a map; with one, no GPU in it (or none here)."""
    if device_map is None:
        return str(device).startswith("cpu")
    if isinstance(device_map, str):
        return not torch.cuda.is_available()
    return all(str(d) in ("cpu", "disk") for d in device_map.values())


def load_model_and_processor(model_class_name: str, name_or_path: str, *, device: str | torch.device = "cpu",
                             dtype: str | torch.dtype | None = None, attn_implementation: str | None = None,
                             device_map: str | dict | None = None, max_memory: dict | None = None,
                             offload_folder: str | None = None, revision: str | None = None,
                             trust_remote_code: bool = False, quantization: str | dict | None = None,
                             keep_unquantized: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """The stock ``transformers.<model_class_name>`` and its processor, loaded and moved to ``device``.

    Args:
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); not used with ``device_map``.
        dtype: weights dtype (``"bfloat16"``, ``"float16"``, ``"float32"`` or a torch dtype);
            None keeps the checkpoint's dtype on GPU and uses float32 on CPU.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2`` (default: transformers' choice, SDPA);
            one that transformers would download from the Hugging Face Hub is refused
            (:func:`.hf_internals.check_attn_implementation`). Hub kernels are off (``use_kernels=False``).
        device_map: ``"auto"`` (or ``"balanced"``, ``"sequential"``...) or a map of module names to
            devices (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``), dispatched by accelerate; the model
            is not moved afterwards. ``max_memory`` ({device: "20GiB"}) bounds ``"auto"``;
            ``offload_folder`` holds what the map sends to ``"disk"``.
        revision, trust_remote_code: passed to ``from_pretrained`` of the model and the processor.
        quantization: bitsandbytes ``"8bit"`` / ``"4bit"`` (or ``BitsAndBytesConfig`` keywords) for
            the LLM; ``keep_unquantized`` (module names) stay in ``dtype``.

    Raises:
        ModelLoadError: the checkpoint cannot be read (one line).
        ConfigError: a loading option this machine cannot honour (one line, before weights load).
    """
    import transformers
    from transformers import AutoProcessor

    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is None and _computes_on_cpu(device, device_map):
        torch_dtype = torch.float32
    if device_map is None:
        check_device(device, torch_dtype)  # one line, before any weights load, on the machine that loads them
    check_attn_implementation(attn_implementation)  # nothing fetched from the Hub for attention
    model_cls = getattr(transformers, model_class_name)
    # a bitsandbytes model is placed while it loads (it cannot be moved afterwards)
    placement = device_map if device_map is not None or quantization is None else {"": str(device)}
    kwargs = from_pretrained_kwargs(dtype=torch_dtype, attn_implementation=attn_implementation,
                                    device_map=placement, max_memory=max_memory, offload_folder=offload_folder,
                                    revision=revision, trust_remote_code=trust_remote_code,
                                    quantization=quantization, keep_unquantized=keep_unquantized)
    kwargs.update(FROM_PRETRAINED_NO_HUB_KERNELS)  # no Hub kernels: 5.25 kernelizes every load by default
    hub = {k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
    try:
        model = model_cls.from_pretrained(name_or_path, **kwargs)
        with image_processor_notice_silenced():
            processor = AutoProcessor.from_pretrained(name_or_path, **hub)
    except OSError as exc:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    except ImportError as exc:  # flash_attn, accelerate, bitsandbytes missing: transformers says which
        raise ConfigError(f"cannot load {name_or_path!r} with these options: {str(exc).strip().splitlines()[0]}") from None
    except ValueError as exc:  # an incomplete device_map, max_memory too small, ...
        if device_map is None:
            raise
        raise ConfigError(f"device_map={device_map!r} cannot place {name_or_path!r}: "
                          f"{str(exc).strip().splitlines()[0][:300]}") from None
    if device_map is None and quantization is None:
        model.to(device)
    return model, processor
