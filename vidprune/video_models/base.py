"""The adapter contract every family shares: :class:`VideoLLM`, a stock HF video LLM plus its vision side.

An adapter wraps a stock Hugging Face model (``VideoLlavaForConditionalGeneration``,
``LlavaNextVideoForConditionalGeneration``, ...) and its processor, both loaded with
``from_pretrained`` (:mod:`.loading`). It never changes the model's classes; it calls their
public seams:

* the vision tower, run up to its feature layer (:mod:`.tower_hooks`),
* the model's own projector / pooler modules,
* ``generate(input_ids=..., mm_encoder_outputs={"video": ...})``: **the point where the
  pruned tokens enter the LLM** (:meth:`VideoLLMGeneration.generate` in :mod:`.generation`).
  The prompt carries exactly as many ``<video>`` placeholders as there are kept token rows.

A family subclass supplies only :meth:`VideoLLM.encode` (tower → prunable features,
[CLS] attention, extra tokens) and :meth:`VideoLLM.project`, plus its
:class:`VisualGeometry` read from the config. Where the rest lives: the family registry in
:mod:`.registry`, checkpoint inspection in :mod:`.checkpoint`, the data types in
:mod:`.datatypes`.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ModelLoadError
from ..pruners.ivtp import IVTPSchedule
from .checkpoint import CheckpointInfo, inspect_checkpoint
from .datatypes import EncodedFrames, GenerationOutput, VisualGeometry
from .generation import VideoLLMGeneration
from .hf_internals import check_mm_encoder_outputs
from .ivtp_decoder import IVTPDecoder
from .loading import image_processor_notice_silenced, load_model_and_processor, module_device
from .registry import family_of_checkpoint, list_families, load_video_llm, register_family
from .tower_hooks import run_tower_to_layer

# The names re-exported here are those adapters and older imports use (``from .base import ...``).
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
    "run_tower_to_layer",
]


# The methods that touch state shared by every call on one model: the vision tower's forward hooks
# (run_tower_to_layer), the tokenizer's padding_side (tokenize), the positions Qwen2.5-VL writes to the model
# (position_inputs: rope_deltas), and IVTP's one session slot (generate). They run under the model's lock.
_SERIALIZED_METHODS = ("encode", "tokenize", "position_inputs", "generate", "generate_about_one_video")


def _serialized(method):
    """``method`` run under its instance's :attr:`VideoLLM.lock` (re-entrant: generate calls tokenize)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    locked.serialized = True
    return locked


class VideoLLM(VideoLLMGeneration):
    """A stock HF video LLM plus what vidprune needs from it. Build with :func:`load_video_llm`.

    Subclasses set ``model_class_name`` and implement :meth:`geometry_from_config`,
    :meth:`encode` and :meth:`project`.

    Thread safety: one ``VideoLLM`` (and a ``VideoQA`` over it) may be called from several
    threads. Its encode and generate calls, which share the tower hooks, the tokenizer's padding
    side, Qwen2.5-VL's positions and the IVTP session, take turns under one re-entrant lock per
    model (:attr:`lock`); decoding and pruning run in parallel. A subclass's overrides of those
    methods are put under the lock too (``__init_subclass__``).
    """

    model_type: ClassVar[str]
    model_class_name: ClassVar[str]
    default_num_frames: ClassVar[int]
    # True where the video processor sizes frames from the whole clip's pixel total (Qwen3-VL): a
    # video is then preprocessed in one call in-process, as the stock model does (not in segments).
    sizes_frames_by_clip: ClassVar[bool] = False
    # The modules (or parameters) of the HF model that encode() and project() run: all an
    # encoder replica loads (``from_pretrained(vision_only=True)``), what quantization leaves in dtype.
    vision_modules: ClassVar[tuple[str, ...]] = ("model.vision_tower", "model.multi_modal_projector")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _SERIALIZED_METHODS:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "serialized", False):
                setattr(cls, name, _serialized(method))

    tokenize = _serialized(VideoLLMGeneration.tokenize)
    position_inputs = _serialized(VideoLLMGeneration.position_inputs)
    generate = _serialized(VideoLLMGeneration.generate)
    generate_about_one_video = _serialized(VideoLLMGeneration.generate_about_one_video)

    def __init__(self, model, processor, name_or_path: str, *, keep_cls: bool = True, prune_pooled: bool = True,
                 ivtp: IVTPSchedule | None = None):
        self.model = model.eval()
        self.lock = threading.RLock()  # encode / generate take turns (see the class docstring)
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
        self.check_ivtp_schedule(self.config, self.default_ivtp)
        self._ivtp_decoder: IVTPDecoder | None = None
        if ivtp is not None:
            self.ivtp_decoder()

    def ivtp_decoder(self) -> IVTPDecoder:
        """The IVTP layer wrappers of this model (installed once, on first use)."""
        if self._ivtp_decoder is None:
            self._check_ivtp_placement()
            self._ivtp_decoder = IVTPDecoder(self.language_model, self.default_ivtp, self.ivtp_rotary())
        return self._ivtp_decoder

    def _check_ivtp_placement(self) -> None:
        """Refuse IVTP where its layer wrappers would see tensors of several devices, or flash-attention.

        IVTP gathers hidden states, rotary tables and scores across the decoder layers in one
        layout; a ``device_map`` that computes the layers on several devices would need every one
        of those moved per layer, which is not implemented (CPU / disk offload computes every
        layer on one device and works).
        """
        from ..errors import ConfigError

        layers = self.language_model.layers
        devices = sorted({str(module_device(layer)) for layer in layers})
        if len(devices) > 1:
            raise ConfigError(f"IVTP with a device_map that runs the decoder layers on several devices ({', '.join(devices)}) "
                              "is not supported (its pruned layout is gathered on one device); keep the LLM on one "
                              "device (offload the rest to cpu/disk) or turn IVTP off")
        attn = getattr(self.config.get_text_config(), "_attn_implementation", None)
        if attn is not None and "flash" in str(attn):
            raise ConfigError(f"IVTP with attn_implementation={attn!r} is not supported (its re-padded layouts and masks "
                              "are tested with sdpa and eager only); use --attn-implementation sdpa or turn IVTP off")

    @property
    def ivtp(self) -> IVTPDecoder | None:
        """The layer wrappers when the model has a default schedule (``.schedule``, ``.session``), else None."""
        return self.ivtp_decoder() if self.default_ivtp is not None else None

    def set_ivtp(self, schedule: IVTPSchedule | None) -> None:
        """Deprecated: set the default schedule. A shared model should get ``generate(..., ivtp=schedule)``."""
        self.default_ivtp = schedule
        if self._ivtp_decoder is not None:
            self._ivtp_decoder.schedule = schedule

    @classmethod
    def check_ivtp_schedule(cls, config, schedule: IVTPSchedule | None) -> None:
        """Raise :class:`ConfigError` (one line) if this family cannot prune at the schedule's layers (default: any layer)."""

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
                        ivtp: IVTPSchedule | None = None, vision_only: bool = False,
                        **loading: Any) -> "VideoLLM":
        """Load model + processor from a checkpoint directory or hub id (:func:`.loading.load_model_and_processor`).

        Args:
            device, dtype, attn_implementation: see :func:`~vidprune.video_models.loading.load_model_and_processor`.
            ivtp: in-LLM pruning schedule (None: off).
            vision_only: load :attr:`vision_modules` alone, the LLM left on ``meta`` (never read):
                an encoder replica (:func:`~vidprune.video_models.vision_only.load_vision_side`). It
                runs :meth:`encode` / :meth:`project` only; ``device_map`` and ``quantization`` do
                not apply (the vision side goes to ``device`` in ``dtype``).
            loading: the other loading options (``device_map``, ``max_memory``, ``offload_folder``,
                ``revision``, ``trust_remote_code``, ``quantization``), passed to ``from_pretrained``.
        """
        if vision_only:
            from .vision_only import load_vision_side

            model, processor = load_vision_side(cls.model_class_name, name_or_path, cls.vision_modules, device=device,
                                                dtype=dtype, attn_implementation=attn_implementation,
                                                revision=loading.get("revision"),
                                                trust_remote_code=bool(loading.get("trust_remote_code")))
            llm = cls(model, processor, name_or_path, keep_cls=keep_cls, prune_pooled=prune_pooled)
            llm.vision_only = True
            return llm
        model, processor = load_model_and_processor(cls.model_class_name, name_or_path, device=device, dtype=dtype,
                                                     attn_implementation=attn_implementation,
                                                     keep_unquantized=cls.vision_modules, **loading)
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
            with image_processor_notice_silenced():
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
        """The LLM's first device: where its input ids and the pruned rows go (with a ``device_map``, the
        device of the input embeddings; offloaded, the device they compute on)."""
        if getattr(self, "vision_only", False):
            return self.vision_device
        return module_device(self.model.get_input_embeddings())

    @property
    def vision_device(self) -> torch.device:
        """Where the vision tower computes (the first of :attr:`vision_modules`; the map's choice with a ``device_map``)."""
        first = self.vision_modules[0]
        return module_device(self.model.get_submodule(first))

    @property
    def dtype(self) -> torch.dtype:
        """The vision side's dtype (what pixel values and rows are cast to; quantization leaves it as loaded)."""
        for tensor in self.model.get_submodule(self.vision_modules[0]).parameters():
            if tensor.is_floating_point():
                return tensor.dtype
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
        captured = run_tower_to_layer(tower, self._encoder_layer(tower, layer_idx), pixel_values.to(self.vision_device, self.dtype))
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
