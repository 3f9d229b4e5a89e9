"""What both video-LLM families share: loading, the vision side's contract, prompts, generation.

An adapter wraps a stock Hugging Face model (``VideoLlavaForConditionalGeneration`` or
``LlavaNextVideoForConditionalGeneration``) and its processor, both loaded with
``from_pretrained``. It never changes the model's classes; it calls their public seams:

* the vision tower (with ``output_hidden_states`` for the two layers it needs),
* the model's own projector / pooler modules,
* ``generate(input_ids=..., mm_encoder_outputs={"video": ...})``: **this is the point
  where the pruned tokens enter the LLM** (see :meth:`VideoLLM.generate`). The prompt
  carries exactly as many ``<video>`` placeholders as there are kept token rows.

A family subclass supplies only :meth:`VideoLLM.encode` (tower → prunable features,
[CLS] attention, extra tokens) and :meth:`VideoLLM.project`, plus its
:class:`VisualGeometry` read from the config.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..devices import check_device
from ..errors import ConfigError, ModelLoadError
from ..pruners.ivtp import IVTPSchedule
from .hf_internals import check_mm_encoder_outputs
from .ivtp_decoder import IVTPDecoder

__all__ = [
    "VisualGeometry",
    "EncodedFrames",
    "GenerationOutput",
    "VideoLLM",
    "register_family",
    "list_families",
    "family_of_checkpoint",
    "inspect_checkpoint",
    "CheckpointInfo",
    "load_video_llm",
]

_FAMILIES: dict[str, type["VideoLLM"]] = {}
_DEFAULT = object()  # "not given" for keyword arguments whose None means "off"

# The modules that register the built-in families (imported on the registry's first use).
_FAMILY_MODULES = ("video_llava", "llava_next_video", "llava_onevision", "qwen2_5_vl")


def _families() -> dict[str, type["VideoLLM"]]:
    import importlib

    for module in _FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return _FAMILIES


def register_family(model_type: str):
    """Class decorator: register an adapter for a transformers ``config.model_type``."""

    def wrap(cls):
        _FAMILIES[model_type] = cls
        cls.model_type = model_type
        return cls

    return wrap


def list_families() -> list[str]:
    """The ``model_type`` values that vidprune can run, sorted."""
    return sorted(_families())


@dataclass(frozen=True)
class VisualGeometry:
    """How many visual tokens one frame yields, known from the config before any weights load.

    A "frame" here is the unit the pruner works on: one sampled frame for the LLaVA
    families, one temporal patch (two sampled frames) for Qwen2.5-VL.

    Attributes:
        patch_grid: (h, w) patch grid of the vision tower, e.g. (16, 16) at 224 px, (24, 24) at 336 px.
        prune_grid: (h, w) grid of the tokens the pruner chooses from (pooled or not).
        extra_per_frame: tokens per frame handed on outside the pruner (Video-LLaVA's [CLS]: 1).
        stock_per_frame: tokens per frame the stock model feeds its LLM (257 or 144).
        extra_per_video: tokens handed on once per video, after its last frame, outside the
            pruner (LLaVA-OneVision's image newline: 1). The stock model feeds them too.
        frames_per_unit: sampled frames per pruning unit (Qwen2.5-VL's temporal patch: 2).
        dynamic: the grid depends on the video (Qwen2.5-VL's dynamic resolution); the grids
            and per-frame counts here are then 0 (or those of one frame size,
            :meth:`VideoLLM.frame_geometry`) and the real ones come with the encoded frames
            (``EncodedFrames.grid``).
    """

    patch_grid: tuple[int, int]
    prune_grid: tuple[int, int]
    extra_per_frame: int
    stock_per_frame: int
    extra_per_video: int = 0
    frames_per_unit: int = 1
    dynamic: bool = False

    def units(self, num_frames: int) -> int:
        """Pruning units of ``num_frames`` sampled frames (an odd count is padded to a whole unit)."""
        return -(-num_frames // self.frames_per_unit)

    @property
    def prunable_per_frame(self) -> int:
        return self.prune_grid[0] * self.prune_grid[1]

    @property
    def full_per_frame(self) -> int:
        """Tokens per frame handed on with pruning off (prunable + extra)."""
        return self.prunable_per_frame + self.extra_per_frame

    def reserved(self, num_frames: int) -> int:
        """Tokens of a ``num_frames`` video handed on outside the pruner (they come off the budget first)."""
        return self.extra_per_frame * num_frames + self.extra_per_video

    def stock_tokens(self, num_frames: int) -> int:
        """Visual tokens the stock model feeds its LLM for ``num_frames`` frames."""
        return self.stock_per_frame * num_frames + self.extra_per_video

    def full_tokens(self, num_frames: int) -> int:
        """Visual tokens vidprune hands on for ``num_frames`` frames with pruning off."""
        return self.full_per_frame * num_frames + self.extra_per_video


@dataclass
class GenerationOutput:
    """What :meth:`VideoLLM.generate` returns.

    Attributes:
        sequences: per sample, the generated token ids (prompt removed, stopped before EOS).
        prompt_tokens: per sample, the prompt's length in tokens (visual tokens included, padding not).
        ivtp: per sample ``{"kept": sorted visual-stream indices that survive IVTP,
            "tokens_per_layer": tokens each decoder layer ran on in prefill, as for the prompt alone}``,
            or None without IVTP.
        prefix_tokens: the tokens prefilled once for every prompt (:meth:`VideoLLM.generate_about_one_video`),
            or None where each prompt was prefilled whole.
    """

    sequences: list[list[int]]
    prompt_tokens: list[int]
    ivtp: list[dict[str, Any]] | None = None
    prefix_tokens: int | None = None


@dataclass
class EncodedFrames:
    """The vision side's output for a batch of frames: what the pruner scores and the rows it hands on.

    For Video-LLaVA and LLaVA-NeXT-Video the projector works row by row, so the rows handed
    on are the pre-projector ``features`` themselves (``tokens`` is None) and
    :meth:`VideoLLM.project` maps the kept ones. Where the projector mixes tokens or does not
    commute with pooling (LLaVA-OneVision: projector, then bilinear pooling; Qwen2.5-VL: the
    2×2 patch merger), ``tokens`` holds the stock LLM-input rows at the prunable positions,
    ``features`` holds what the pruner and dedup compare (pooled pre-projector tower
    features), and ``project`` is the identity.

    Attributes:
        features: (T, N, Dv) what the pruner and dedup compare, at ``vision_feature_layer``
            (pooled the same way as the tokens handed on).
        cls_attn: (T, N) float32 importance of those tokens ([CLS] attention, or the mean
            attention received for towers without [CLS]), pooled the same way.
        extra: (T, E, Dc) rows handed on per frame outside pruning (Video-LLaVA's [CLS]), or None.
        tokens: (T, N, Dc) the rows handed on for the N prunable tokens when they are not
            ``features`` (already LLM embeddings), or None.
        video_extra: (V, Dc) rows handed on once per video after its last frame
            (LLaVA-OneVision's image newline), or None.
        grid: (h, w) of the N prunable tokens when the geometry is dynamic (Qwen2.5-VL's merged grid).
        seconds_per_unit: seconds one unit spans, for families whose positions depend on time (Qwen2.5-VL).

    T counts pruning units: frames, or temporal patches of ``frames_per_unit`` frames.
    """

    features: torch.Tensor
    cls_attn: torch.Tensor
    extra: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    video_extra: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    seconds_per_unit: float | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def rows(self) -> torch.Tensor:
        """(T, N, Dc) the rows handed on for the prunable tokens (``tokens``, else ``features``)."""
        return self.features if self.tokens is None else self.tokens

    def __getitem__(self, units: slice) -> "EncodedFrames":
        """Units ``units`` of these (a contiguous slice; ``video_extra`` and the grid are per video, kept)."""
        if not isinstance(units, slice):
            raise TypeError("EncodedFrames takes a slice of units, e.g. encoded[4:8]")
        take = lambda t: None if t is None else t[units]  # noqa: E731
        return EncodedFrames(features=self.features[units], cls_attn=self.cls_attn[units], extra=take(self.extra),
                             tokens=take(self.tokens), video_extra=self.video_extra, grid=self.grid,
                             seconds_per_unit=self.seconds_per_unit)

    def to(self, device: str | torch.device) -> "EncodedFrames":
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EncodedFrames(features=move(self.features), cls_attn=move(self.cls_attn), extra=move(self.extra),
                             tokens=move(self.tokens), video_extra=move(self.video_extra), grid=self.grid,
                             seconds_per_unit=self.seconds_per_unit)

    @staticmethod
    def concat(parts: list["EncodedFrames"]) -> "EncodedFrames":
        """Frames of consecutive batches as one (``video_extra`` is per video: taken from the first part)."""
        if len(parts) == 1:
            return parts[0]
        cat = lambda name: None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        return EncodedFrames(features=cat("features"), cls_attn=cat("cls_attn"), extra=cat("extra"),
                             tokens=cat("tokens"), video_extra=parts[0].video_extra, grid=parts[0].grid,
                             seconds_per_unit=parts[0].seconds_per_unit)


def _read_config_dict(path: str | os.PathLike) -> dict | None:
    cfg = Path(path) / "config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            return None
    return None


def family_of_checkpoint(model: str) -> type["VideoLLM"]:
    """The adapter class for a checkpoint directory or hub id, from its config alone (no weights).

    Raises:
        ModelLoadError: the directory has no config, or its ``model_type`` is not supported.
    """
    if os.path.isdir(model):
        cfg = _read_config_dict(model)
        if cfg is None:
            raise ModelLoadError(
                f"{model!r} is a directory without a readable config.json; pass a checkpoint saved with save_pretrained"
            )
        model_type = cfg.get("model_type")
    elif os.path.exists(model):
        raise ModelLoadError(f"{model!r} is a file, not a checkpoint directory or hub id")
    else:
        try:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(model).model_type
        except Exception as exc:  # hub unreachable, unknown id, ...
            raise ModelLoadError(
                f"cannot read the config of {model!r} ({type(exc).__name__}); "
                "pass a local checkpoint directory or a hub id you can download"
            ) from None
    if model_type not in _families():
        raise ModelLoadError(
            f"{model!r} is a {model_type!r} checkpoint; vidprune supports {', '.join(list_families())}"
        )
    return _FAMILIES[model_type]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's config alone says (no weights): its adapter, HF config and visual geometry."""

    family: type["VideoLLM"]
    config: Any
    geometry: VisualGeometry


def inspect_checkpoint(model: str, *, keep_cls: bool = True, prune_pooled: bool = True) -> CheckpointInfo:
    """Family, config and :class:`VisualGeometry` of a checkpoint directory or hub id, without loading weights.

    Raises:
        ModelLoadError: no readable config, or not one of the supported families.
    """
    from transformers import AutoConfig

    family = family_of_checkpoint(model)
    config = AutoConfig.from_pretrained(model)
    return CheckpointInfo(family, config,
                          family.geometry_from_config(config, keep_cls=keep_cls, prune_pooled=prune_pooled))


@contextlib.contextmanager
def _image_processor_backend_notice_silenced():
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


class _StopTower(Exception):
    """Raised by the capture hook once the feature layer has run: the layers after it are not needed."""


def run_tower_to_layer(tower: torch.nn.Module, layer: torch.nn.Module, pixel_values: torch.Tensor):
    """Run a vision tower until ``layer`` has run; return (its input, its output), each (B, S, Dv).

    The tower is called as usual (its own embeddings, pre-norm and attention implementation);
    a forward pre-hook and a forward hook on ``layer`` capture its hidden states, and the hook
    then stops the forward, so no later layer runs.
    """
    captured: list[torch.Tensor] = []

    def take_input(_module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])

    def take_output(_module, _args, output):
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _StopTower

    handles = [layer.register_forward_pre_hook(take_input, with_kwargs=True), layer.register_forward_hook(take_output)]
    try:
        tower(pixel_values)
    except _StopTower:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(captured) != 2:
        raise RuntimeError(f"the vision tower never ran its encoder layer {type(layer).__name__}")
    return captured[0], captured[1]


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from ..devices import DTYPE_NAMES

    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"Unknown dtype {dtype!r}. Has to be one of {sorted(DTYPE_NAMES)}")
    return getattr(torch, DTYPE_NAMES[dtype])


class VideoLLM:
    """A stock HF video LLM plus what vidprune needs from it. Build with :func:`load_video_llm`.

    Subclasses set ``model_class_name`` and implement :meth:`geometry_from_config`,
    :meth:`encode` and :meth:`project`.
    """

    model_type: ClassVar[str]
    model_class_name: ClassVar[str]
    default_num_frames: ClassVar[int]

    def __init__(self, model, processor, name_or_path: str, *, keep_cls: bool = True, prune_pooled: bool = True,
                 ivtp: IVTPSchedule | None = None):
        self.model = model.eval()
        self.processor = processor
        self.config = model.config
        self.name_or_path = name_or_path
        self.keep_cls = keep_cls
        self.prune_pooled = prune_pooled
        self.geometry = self.geometry_from_config(self.config, keep_cls=keep_cls, prune_pooled=prune_pooled)
        tokenizer = processor.tokenizer
        self.video_token = getattr(processor, "video_token", "<video>")
        self.video_token_id = self.config.video_token_id
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._check_vision_feature_layer()
        check_mm_encoder_outputs(self.model)
        # IVTP: the schedule is chosen per generate() call (``ivtp=``); ``ivtp`` given here is the
        # default of calls that do not say. The layer wrappers are installed on first use, on
        # this instance only, and are stock pass-throughs outside a call that prunes.
        self.default_ivtp = ivtp.validate(self.config.get_text_config().num_hidden_layers) if ivtp is not None else None
        self._ivtp_decoder: IVTPDecoder | None = None
        if ivtp is not None:
            self.ivtp_decoder()

    def ivtp_decoder(self) -> IVTPDecoder:
        """The IVTP layer wrappers of this model (installed once, on first use)."""
        if self._ivtp_decoder is None:
            self._ivtp_decoder = IVTPDecoder(self.language_model, self.default_ivtp, self.ivtp_rotary())
        return self._ivtp_decoder

    @property
    def ivtp(self) -> IVTPDecoder | None:
        """The layer wrappers when the model has a default schedule (``.schedule``, ``.session``), else None."""
        return self.ivtp_decoder() if self.default_ivtp is not None else None

    def set_ivtp(self, schedule: IVTPSchedule | None) -> None:
        """Deprecated: set the default schedule. A shared model should get ``generate(..., ivtp=schedule)``."""
        self.default_ivtp = schedule
        if self._ivtp_decoder is not None:
            self._ivtp_decoder.schedule = schedule

    def ivtp_rotary(self):
        """How the LLM's attention applies its rotary tables (for IVTP's recomputed rows); None: Llama's."""
        return None

    @property
    def language_model(self) -> torch.nn.Module:
        """The decoder stack (``LlamaModel``) inside the HF model."""
        return self.model.model.language_model

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype | None = None, keep_cls: bool = True,
                        prune_pooled: bool = True, attn_implementation: str | None = None,
                        ivtp: IVTPSchedule | None = None) -> "VideoLLM":
        """Load model + processor from a checkpoint directory or hub id.

        Args:
            device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
            dtype: weights dtype (``"bfloat16"``, ``"float16"``, ``"float32"`` or a torch dtype);
                None keeps the checkpoint's dtype on GPU and uses float32 on CPU.
            attn_implementation: passed to ``from_pretrained`` (default: transformers' choice, SDPA).
            ivtp: in-LLM pruning schedule (None: off).
        """
        import transformers
        from transformers import AutoProcessor

        torch_dtype = _resolve_dtype(dtype)
        if torch_dtype is None and str(device).startswith("cpu"):
            torch_dtype = torch.float32
        check_device(device, torch_dtype)  # one line, before any weights load, on the machine that loads them
        model_cls = getattr(transformers, cls.model_class_name)
        kwargs = {"dtype": torch_dtype if torch_dtype is not None else "auto"}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = model_cls.from_pretrained(name_or_path, **kwargs)
            with _image_processor_backend_notice_silenced():
                processor = AutoProcessor.from_pretrained(name_or_path)
        except OSError as exc:
            raise ModelLoadError(f"cannot load {name_or_path!r}: {str(exc).splitlines()[0]}") from None
        model.to(device)
        return cls(model, processor, name_or_path, keep_cls=keep_cls, prune_pooled=prune_pooled, ivtp=ivtp)

    # ------------------------------------------------------------- vision side
    @classmethod
    def geometry_from_config(cls, config, *, keep_cls: bool, prune_pooled: bool) -> VisualGeometry:
        raise NotImplementedError

    @staticmethod
    def video_processor_from_pretrained(name_or_path: str) -> Any:
        """The checkpoint's own video processor alone (its config files; no weights), e.g. for :meth:`frame_geometry`."""
        from transformers import AutoVideoProcessor

        try:
            with _image_processor_backend_notice_silenced():
                return AutoVideoProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the video processor of {name_or_path!r}: {str(exc).splitlines()[0]}") from None

    @classmethod
    def frame_geometry(cls, geometry: VisualGeometry, video_processor: Any, height: int, width: int) -> VisualGeometry:
        """The geometry of frames of ``height`` x ``width`` px, for planning before any weights load.

        ``geometry`` itself where the grid comes from the config (every frame is resized to the
        tower's size); families whose grid comes from the video (``geometry.dynamic``) fill in
        the counts of that frame size from the checkpoint's own ``video_processor``.
        """
        return geometry

    def _check_vision_feature_layer(self) -> None:
        if not isinstance(self.config.vision_feature_layer, int):
            raise ModelLoadError(
                f"vision_feature_layer={self.config.vision_feature_layer!r}: vidprune supports a single feature layer"
            )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def preprocess(self, frames: np.ndarray, times_s: list[float] | None = None) -> torch.Tensor:
        """Frames (T, H, W, 3) uint8 RGB → pixel values (T, 3, S, S) with the checkpoint's own video processor.

        ``times_s``: the frames' times; used by families whose positions depend on time (Qwen2.5-VL).
        """
        out = self.processor.video_processor(videos=[frames], return_tensors="pt")
        return out["pixel_values_videos"][0]

    def _tower_hidden_states(self, tower, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Run ``tower`` (SDPA as loaded) up to its feature layer; return (layer input, feature layer output, layer index).

        The feature layer is ``config.vision_feature_layer`` in ``hidden_states`` numbering:
        ``hidden_states[i]`` is the input of encoder layer ``i`` and ``hidden_states[i + 1]``
        its output, so both tensors are the input and output of encoder layer
        ``feature_idx - 1``. They are captured with forward hooks on that one layer, and the
        tower stops there: no layer after the feature layer runs (with the stock ``-2``, the
        last encoder layer and the post-layernorm are skipped). Hooks are a torch seam, so this
        does not depend on how a transformers release returns ``output_hidden_states``.
        """
        num_states = tower.config.num_hidden_layers + 1
        feature_idx = self.config.vision_feature_layer % num_states
        if feature_idx == 0:
            raise ModelLoadError("vision_feature_layer selects the embeddings, not an encoder layer; vidprune needs a layer")
        layer_idx = feature_idx - 1  # the encoder layer whose output is the feature layer
        captured = run_tower_to_layer(tower, self._encoder_layer(tower, layer_idx), pixel_values.to(self.device, self.dtype))
        return captured[0], captured[1], layer_idx

    @staticmethod
    def _encoder_layer(tower, index: int):
        """Encoder layer ``index`` of a CLIP tower (``CLIPVisionModel`` or a bare vision transformer)."""
        return getattr(tower, "vision_model", tower).encoder.layers[index]

    def encode(self, pixel_values: torch.Tensor) -> EncodedFrames:
        """Pixel values (T, 3, S, S) → :class:`EncodedFrames` (features, [CLS] attention, extra tokens)."""
        raise NotImplementedError

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows handed on (:attr:`EncodedFrames.rows`, (..., Dc)) → LLM input embeddings (..., D).

        The model's projector for families that project row by row; the identity where the
        rows handed on are already the stock LLM inputs (``EncodedFrames.tokens``).
        """
        raise NotImplementedError

    @staticmethod
    def tower_layers_run(config) -> int:
        """Encoder layers the tower runs: those up to the feature layer (:meth:`_tower_hidden_states` stops there)."""
        return config.vision_feature_layer % (config.vision_config.num_hidden_layers + 1)

    @classmethod
    def tower_flops(cls, config, num_frames: int, grid: tuple[int, int] | None = None) -> int:
        """FLOPs of the vision tower for ``num_frames`` units (method.md §5): CLIP, patches + [CLS], the layers run.

        Only the layers up to the feature layer run (23 of ViT-L's 24 with the stock ``-2``), so
        only those are counted. ``grid``: the prunable grid of a dynamic-resolution video
        (Qwen2.5-VL); fixed-size towers ignore it.
        """
        from ..flops import vision_tower_flops

        return vision_tower_flops(config.vision_config, num_frames, layers_run=cls.tower_layers_run(config))

    # ---------------------------------------------------------------- language
    def build_prompt(self, question: str) -> str:
        """The checkpoint's chat template applied to one user turn: the video, then the question."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        if getattr(self.processor, "chat_template", None) is None:
            raise ModelLoadError(
                f"the processor of {self.name_or_path!r} has no chat template; save one with the processor"
            )
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        if prompt.count(self.video_token) != 1:
            raise ModelLoadError(
                f"the chat template of {self.name_or_path!r} must place exactly one {self.video_token} "
                f"for one video, it placed {prompt.count(self.video_token)}"
            )
        return prompt

    def tokenize(self, prompts: list[str], visual_counts: list[int]) -> dict[str, torch.Tensor]:
        """Tokenize prompts, each ``<video>`` expanded to that sample's kept-token count; left padding.

        Returns ``input_ids`` and ``attention_mask`` (B, L) on the model's device.
        """
        texts = [p.replace(self.video_token, self.video_token * k) for p, k in zip(prompts, visual_counts)]
        tok = self.processor.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok(texts, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = old_side
        got = (enc["input_ids"] == self.video_token_id).sum(dim=1).tolist()
        if got != list(visual_counts):
            raise RuntimeError(f"placeholder counts {got} differ from kept-token counts {list(visual_counts)}")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def video_encoder_output(self, visual_tokens: list[torch.Tensor]):
        """The kept rows as the ``mm_encoder_outputs["video"]`` the model's forward reads.

        LLaVA families: ``pooler_output`` (1, sum K_i, D), all samples' rows in batch order.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=torch.cat(list(visual_tokens), dim=0).unsqueeze(0))

    def position_inputs(self, inputs: dict[str, torch.Tensor], layouts) -> dict[str, torch.Tensor]:
        """Extra ``generate()`` inputs that place the kept tokens (none: 1-D positions follow the sequence).

        Families with multimodal rotary positions (Qwen2.5-VL) return the stock positions of the
        kept tokens here, from ``layouts`` (per sample, what :class:`PrunedVideo.layout` holds).
        """
        return {}

    @torch.no_grad()
    def generate(self, prompts: list[str], visual_tokens: list[torch.Tensor], layouts: list | None = None, *,
                 ivtp: Any = _DEFAULT, **generate_kwargs) -> GenerationOutput:
        """Generate answers. **The pruned visual tokens enter the LLM here.**

        Args:
            prompts: one chat-formatted prompt per sample, each with one ``<video>``.
            visual_tokens: per sample, (K_i, D) projected visual tokens in stream order
                (temporal, then raster inside a frame). K_i may differ between samples.
            layouts: per sample, where the kept tokens sit in the stock grid (``PrunedVideo.layout``);
                needed by families with multimodal rotary positions (Qwen2.5-VL), ignored by the others.
            ivtp: the :class:`~vidprune.pruners.ivtp.IVTPSchedule` of this call, None for no
                in-LLM pruning (default: the schedule the model was loaded with, if any).
            generate_kwargs: passed to ``model.generate`` (``max_new_tokens``, ``do_sample``,
                ``streamer``, ``stopping_criteria``...).

        Returns:
            :class:`GenerationOutput`: per sample the generated ids (prompt removed, stopped
            before EOS) and, with IVTP, what it kept and the tokens each layer ran on.
        """

        counts = [int(t.shape[0]) for t in visual_tokens]
        inputs = self.tokenize(prompts, counts)
        positions = self.position_inputs(inputs, layouts)
        encoded = self.video_encoder_output(visual_tokens)
        schedule = self.default_ivtp if ivtp is _DEFAULT else ivtp
        session = (
            self.ivtp_decoder().session(inputs["input_ids"], inputs["attention_mask"], self.video_token_id,
                                        schedule=schedule)
            if schedule is not None else contextlib.nullcontext()
        )
        with session as ivtp_state:
            out = self.model.generate(
                **inputs,
                **positions,
                mm_encoder_outputs={"video": encoded},
                **generate_kwargs,
            )
        result = self._answer_ids(out[:, inputs["input_ids"].shape[1]:])
        ivtp = [ivtp_state.summary(b) for b in range(len(result))] if ivtp_state is not None else None
        return GenerationOutput(sequences=result, prompt_tokens=inputs["attention_mask"].sum(dim=1).tolist(), ivtp=ivtp)

    def _answer_ids(self, new_tokens: torch.Tensor) -> list[list[int]]:
        """Generated ids (B, T) → per row the answer: stopped before EOS, trailing padding removed."""
        pad = self.processor.tokenizer.pad_token_id
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        result = []
        for row in new_tokens.tolist():
            ids = []
            for t in row:
                if t in eos_ids:
                    break
                ids.append(t)
            while ids and ids[-1] == pad and pad not in eos_ids:
                ids.pop()
            result.append(ids)
        return result

    @staticmethod
    def reuses_prefix(num_prompts: int, generate_kwargs: dict[str, Any]) -> bool:
        """Whether :meth:`generate_about_one_video` prefills the shared prefix once for this call.

        It does for several prompts under greedy decoding without a streamer (one prompt at a
        time anyway), with or without IVTP; sampling and beams prefill every prompt whole.
        """
        return (num_prompts > 1 and not generate_kwargs.get("do_sample")
                and generate_kwargs.get("num_beams", 1) == 1 and generate_kwargs.get("streamer") is None)

    @torch.no_grad()
    def generate_about_one_video(self, prompts: list[str], visual_tokens: torch.Tensor, layout: Any = None, *,
                                 ivtp: Any = _DEFAULT, **generate_kwargs) -> GenerationOutput:
        """Answer several prompts about one video, prefilling what they share once.

        The prompts' token ids agree up to the end of the video's tokens (the chat template's
        opening, the K visual tokens) and often a little beyond; that shared prefix of P tokens is
        prefilled once, its KV cache repeated for every prompt, and ``generate`` runs on the whole
        prompts with the cache holding the first P. Each prompt's rest is padded *between* the
        prefix and itself (masked out, so positions, which follow the attention mask, are those of
        the prompt alone). The ids equal :meth:`generate`'s on the same prompts (tested per family).

        With IVTP the prefix is prefilled once through the layers below the first pruning layer
        k1 only (causal, so the same for every question; :meth:`IVTPDecoder.prefill_prefix`);
        IVTP scores and prunes each prompt as a whole from there on (its instruction rows depend
        on the question), and layers ≥ k1 cache only each prompt's kept tokens.

        Falls back to :meth:`generate` where :meth:`reuses_prefix` says no.

        Args:
            prompts: chat-formatted prompts, each with one ``<video>``.
            visual_tokens: (K, D) the video's projected tokens, shared by every prompt.
            layout: the video's ``PrunedVideo.layout`` (Qwen2.5-VL's positions), or None.
            ivtp: the call's IVTP schedule, None for none (default: the model's).
        """
        from transformers.cache_utils import DynamicCache

        from .hf_internals import check_prefix_cache_internals, model_cache_keyword

        schedule = self.default_ivtp if ivtp is _DEFAULT else ivtp
        layouts = None if layout is None else [layout] * len(prompts)
        if not self.reuses_prefix(len(prompts), generate_kwargs):
            return self.generate(prompts, [visual_tokens] * len(prompts), layouts, ivtp=schedule, **generate_kwargs)
        check_prefix_cache_internals(self.model)
        count = int(visual_tokens.shape[0])
        ids = [self.tokenize([p], [count])["input_ids"][0] for p in prompts]  # (L_i,) each, unpadded
        shortest = min(len(i) for i in ids)
        shared = 0
        while shared < shortest and all(int(i[shared]) == int(ids[0][shared]) for i in ids):
            shared += 1
        last_video = int((ids[0] == self.video_token_id).nonzero().max())
        prefix = min(shared, shortest - 1)  # every prompt keeps at least one token of its own to prefill
        if prefix <= last_video:  # the prompts differ before the video ends: nothing worth sharing
            return self.generate(prompts, [visual_tokens] * len(prompts), layouts, ivtp=schedule, **generate_kwargs)
        rest = max(len(i) for i in ids) - prefix
        pad = self.processor.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        rows, masks = [], []
        for i in ids:
            gap = rest - (len(i) - prefix)
            rows.append(torch.cat([i[:prefix], i.new_full((gap,), pad), i[prefix:]]))
            masks.append(torch.cat([torch.ones(prefix, dtype=torch.long), torch.zeros(gap, dtype=torch.long),
                                    torch.ones(len(i) - prefix, dtype=torch.long)]))
        inputs = {"input_ids": torch.stack(rows).to(self.device), "attention_mask": torch.stack(masks).to(self.device)}
        positions = self.position_inputs(inputs, layouts)  # (..., B, L)
        keyword = model_cache_keyword(self.model)
        cache = DynamicCache(config=self.model.config)

        def prefill_prefix():  # the prefix alone (batch 1, P tokens) into the cache; its logits are not needed
            self.model(input_ids=inputs["input_ids"][:1, :prefix], attention_mask=inputs["attention_mask"][:1, :prefix],
                       mm_encoder_outputs={"video": self.video_encoder_output([visual_tokens])},
                       use_cache=True, logits_to_keep=1, **{keyword: cache},
                       **{k: v[..., :1, :prefix] for k, v in positions.items()})

        if schedule is None:
            prefill_prefix()
            session = contextlib.nullcontext()
        else:  # layers < k1 only; the session puts the prefix's rows back in front where IVTP needs them
            decoder = self.ivtp_decoder()
            shared_prefix = decoder.prefill_prefix(prefill_prefix, prefix, schedule=schedule)
            session = decoder.session(inputs["input_ids"], inputs["attention_mask"], self.video_token_id,
                                      schedule=schedule, prefix=shared_prefix)
        cache.batch_repeat_interleave(len(prompts))  # (1, ...) → (B, ...) rows of the one prefilled prefix
        with session as ivtp_state:
            out = self.model.generate(**inputs, **positions, **{keyword: cache}, **generate_kwargs)
        sequences = self._answer_ids(out[:, inputs["input_ids"].shape[1]:])
        ivtp = [ivtp_state.summary(b) for b in range(len(sequences))] if ivtp_state is not None else None
        return GenerationOutput(sequences=sequences, prompt_tokens=[len(i) for i in ids], ivtp=ivtp,
                                prefix_tokens=prefix)

    def decode_text(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


def load_video_llm(name_or_path: str, **kwargs) -> VideoLLM:
    """Load a checkpoint of any supported family: the adapter is chosen from its config."""
    return family_of_checkpoint(name_or_path).from_pretrained(name_or_path, **kwargs)
