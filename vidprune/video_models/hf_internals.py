"""The transformers internals vidprune mirrors, named in one place and checked before use.

vidprune touches transformers through public seams wherever it can (``from_pretrained``,
``get_video_features``' modules, ``generate(mm_encoder_outputs=...)``). Two features must
follow internals instead, and this module is the only place that knows their names:

* **IVTP** (``ivtp_decoder.py``) wraps ``LlamaDecoderLayer.forward`` (the Qwen2 layers
  have the same contract) and relies on what ``LlamaModel.forward`` hands every layer as
  keyword arguments: ``attention_mask`` (one mask for all layers), ``position_ids``,
  ``position_embeddings`` (rotary cos/sin) and the KV cache. The cache keyword was
  ``past_key_values`` up to 5.23 and is ``cache`` from 5.24 on (the old name is
  deprecated until 5.40). It also calls ``masking_utils.create_causal_mask`` (whose cache
  keyword changed the same way), ``apply_rotary_pos_emb`` and ``repeat_kv`` of
  ``modeling_llama``, and reads ``Cache.get_seq_length(layer_idx)``. The two helpers are
  checked by calling them on small tensors (:func:`check_rotary_helper`): with ``kernels``
  installed (a dependency from 5.25) the rotary is a module whose signature says nothing.
* **[CLS] attention** (``cls_attention.py``) recomputes one row of ``CLIPAttention``:
  it reads ``CLIPEncoderLayer.layer_norm1`` and ``self_attn.{q_proj,k_proj,num_heads,
  head_dim,scale}``.
* The pruned tokens enter the LLM through ``forward(mm_encoder_outputs=...)`` of the
  conditional-generation classes (5.18 on); :func:`check_mm_encoder_outputs` runs at load.
* **Prefix reuse** (``VideoLLM.generate_about_one_video``) prefills a video's prompt prefix
  once into a ``cache_utils.DynamicCache``, repeats its rows with
  ``DynamicCache.batch_repeat_interleave`` and hands it to ``generate`` under the model
  forward's cache keyword (:func:`model_cache_keyword`: ``cache`` from 5.24, ``past_key_values``
  before); :func:`check_prefix_cache_internals` checks all three. Under IVTP the prefix forward
  is stopped at the first pruning layer (an exception from that layer's wrapper), so only the
  layers below it hold the prefix; the session tells prefill from decode by each layer's
  ``Cache.get_seq_length(layer_idx)``.
* **The vision side alone** (``vision_only.py``, Ray encoder replicas): checkpoint keys are
  named as ``from_pretrained`` names them with ``conversion_mapping.get_model_conversion_mapping``
  and ``core_model_loading.rename_source_key`` (:func:`vision_only_key_mapper`); the
  non-persistent buffers of a meta-built model are set by ``PreTrainedModel.initialize_weights``
  (each sub-model's ``_init_weights``), which skips tensors flagged ``_is_hf_initialized``.
* **Qwen2.5-VL** (``qwen2_5_vl.py``): the tower's window permutation
  (:func:`qwen_vision_window_index`: ``vision_utils.get_vision_window_index`` in 5.24,
  ``visual.get_window_index`` before), the vision block's ``norm1`` / ``attn.qkv`` /
  ``attn.scaling`` / ``apply_rotary_pos_emb_vision`` and the ``cu_seqlens`` /
  ``position_embeddings`` keywords a block receives (importance), and the text attention's
  rotary application (:func:`qwen_apply_rotary`, for IVTP).
* **Qwen3-VL's video prompt** (``qwen3_vl.py``): vidprune writes the per-temporal-patch layout
  ``Qwen3VLProcessor.replace_video_token`` writes, and follows whether the stock processor keeps the
  chat template's outer ``<|vision_start|><|video_pad|><|vision_end|>`` around it (up to 5.24) or
  collapses it to the bare video token first (5.25, ``Qwen3VLProcessor.get_text_with_replacements``):
  :func:`qwen3_vl_keeps_video_wrapper` asks the installed processor.

* **Hub kernels**: from 5.25 ``from_pretrained`` kernelizes by default and a flash attention
  without its package is downloaded from the Hub; vidprune's loads pass
  :data:`FROM_PRETRAINED_NO_HUB_KERNELS` and refuse such an attention
  (:func:`check_attn_implementation`), so nothing is fetched at run time.

``docs/internals.md`` lists each internal with the code that mirrors it and the test that
fails, naming it, when a release changes it. :func:`check_ivtp_internals` runs when IVTP is
installed on a model, so an unsupported release is refused in one line before
``generate()`` starts, never with a ``RuntimeError`` in the middle of it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ..errors import ConfigError, ModelLoadError

__all__ = [
    "vision_only_key_mapper",
    "SUPPORTED_TRANSFORMERS",
    "IncompatibleTransformersError",
    "transformers_version",
    "layer_cache",
    "causal_mask",
    "check_transformers_version",
    "check_ivtp_internals",
    "check_mm_encoder_outputs",
    "check_cls_attention_internals",
    "check_rotary_helper",
    "FROM_PRETRAINED_NO_HUB_KERNELS",
    "check_attn_implementation",
    "qwen_vision_window_index",
    "qwen_apply_rotary",
    "model_cache_keyword",
    "check_prefix_cache_internals",
    "qwen3_vl_keeps_video_wrapper",
]

# The transformers releases the suite runs on (CI tests both ends). Equal to pyproject's range
# (tests/test_hf_internals.py checks it); 5.18 is the first release whose generate() takes
# mm_encoder_outputs.
SUPPORTED_TRANSFORMERS = (">=5.18", "<5.26")

# The keyword under which the KV cache reaches decoder layers and the mask builder, newest first.
_CACHE_KEYWORDS = ("cache", "past_key_values")


class IncompatibleTransformersError(ModelLoadError):
    """The installed transformers changed an internal vidprune mirrors."""


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def _supported_text() -> str:
    return "transformers" + ",".join(SUPPORTED_TRANSFORMERS)


def check_transformers_version() -> None:
    """Refuse, in one line, a transformers release outside the range the suite was run on."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    installed = transformers_version()
    if Version(installed) not in SpecifierSet(",".join(SUPPORTED_TRANSFORMERS)):
        raise IncompatibleTransformersError(
            f"transformers {installed} is installed, but vidprune's IVTP mirrors transformers internals and is "
            f"tested with {_supported_text()} only: pip install '{_supported_text()}'"
        )


def _refuse(internal: str, what: str) -> IncompatibleTransformersError:
    return IncompatibleTransformersError(
        f"transformers {transformers_version()} changed {internal} ({what}), which vidprune mirrors; "
        f"vidprune supports {_supported_text()}: pip install '{_supported_text()}'"
    )


def layer_cache(layer_kwargs: dict[str, Any]):
    """The KV cache a decoder layer received (``cache=`` from 5.24, ``past_key_values=`` before), or None."""
    for name in _CACHE_KEYWORDS:
        if layer_kwargs.get(name) is not None:
            return layer_kwargs[name]
    return None


@functools.lru_cache(maxsize=None)
def _mask_cache_keyword() -> str:
    from transformers.masking_utils import create_causal_mask

    params = inspect.signature(create_causal_mask).parameters
    for name in _CACHE_KEYWORDS:
        if name in params:
            return name
    raise _refuse("masking_utils.create_causal_mask", "it takes the cache as neither 'cache' nor 'past_key_values'")


def causal_mask(*, config, inputs_embeds, attention_mask, cache, position_ids, layer_idx: int):
    """``masking_utils.create_causal_mask`` with the cache under the keyword the installed release names."""
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              position_ids=position_ids, layer_idx=layer_idx, **{_mask_cache_keyword(): cache})


def model_cache_keyword(model) -> str:
    """The keyword under which ``model.forward`` (and so ``generate``) takes a KV cache (a model or its class)."""
    return _cache_keyword_of(model if isinstance(model, type) else type(model))


@functools.lru_cache(maxsize=None)
def _cache_keyword_of(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters
    for name in _CACHE_KEYWORDS:
        if name in params:
            return name
    raise _refuse(f"{model_class.__name__}.forward", "it takes the KV cache as neither 'cache' nor 'past_key_values'")


def check_prefix_cache_internals(model) -> None:
    """Raise :class:`IncompatibleTransformersError` (one line) unless a prefilled prefix can be reused here."""
    _check_dynamic_cache()
    model_cache_keyword(model)


@functools.lru_cache(maxsize=None)
def _check_dynamic_cache() -> None:
    from transformers.cache_utils import DynamicCache

    if not callable(getattr(DynamicCache, "batch_repeat_interleave", None)):
        raise _refuse("cache_utils.DynamicCache.batch_repeat_interleave", "it is gone")
    if "config" not in inspect.signature(DynamicCache.__init__).parameters:
        raise _refuse("cache_utils.DynamicCache.__init__", "it no longer takes config")


_LAYER_KEYWORDS = ("hidden_states", "attention_mask", "position_ids", "position_embeddings")
_MASK_KEYWORDS = ("config", "inputs_embeds", "attention_mask", "position_ids", "layer_idx")


@functools.lru_cache(maxsize=None)
def check_ivtp_internals() -> None:
    """Raise :class:`IncompatibleTransformersError` (one line, naming the internal) if IVTP cannot run here."""
    check_transformers_version()
    try:
        from transformers.masking_utils import create_causal_mask
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel  # noqa: F401
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv
    except ImportError as exc:
        raise _refuse("modeling_llama / masking_utils", f"import failed: {exc}") from None
    layer_params = inspect.signature(LlamaDecoderLayer.forward).parameters
    missing = [k for k in _LAYER_KEYWORDS if k not in layer_params]
    if missing:
        raise _refuse("LlamaDecoderLayer.forward", f"no keyword {', '.join(missing)}")
    if not any(k in layer_params for k in _CACHE_KEYWORDS):
        raise _refuse("LlamaDecoderLayer.forward", "it takes the KV cache as neither 'cache' nor 'past_key_values'")
    mask_params = inspect.signature(create_causal_mask).parameters
    missing = [k for k in _MASK_KEYWORDS if k not in mask_params]
    if missing:
        raise _refuse("masking_utils.create_causal_mask", f"no keyword {', '.join(missing)}")
    _mask_cache_keyword()
    check_rotary_helper("modeling_llama.apply_rotary_pos_emb", apply_rotary_pos_emb)
    _check_repeat_kv(repeat_kv)
    from transformers.cache_utils import DynamicCache

    if "layer_idx" not in inspect.signature(DynamicCache.get_seq_length).parameters:
        raise _refuse("cache_utils.DynamicCache.get_seq_length", "it no longer takes layer_idx")


def _rotate_half_reference(x, cos, sin):
    """What IVTP relies on a rotary helper doing to ``x`` (B, H, L, d) with (B, L, d) ``cos``/``sin``.

    Llama's rotate-half convention: ``x·cos + rotate_half(x)·sin``, the tables broadcast over heads,
    where ``rotate_half`` swaps the two halves of the last dimension and negates the second one.
    """
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def _probe_rotary_inputs():
    """Small fixed (q, k, cos, sin): 4 query heads, 2 key heads (as under GQA), 5 positions, head_dim 8."""
    import torch

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=generator)
    k = torch.randn(2, 2, 5, 8, generator=generator)
    angles = torch.randn(2, 5, 4, generator=generator)
    angles = torch.cat((angles, angles), dim=-1)  # (B, L, d): each frequency twice, as the rotary tables are built
    return q, k, angles.cos(), angles.sin()


@functools.lru_cache(maxsize=None)
def check_rotary_helper(internal: str, apply_rotary) -> None:
    """Raise, naming ``internal``, unless ``apply_rotary(q, k, cos, sin)`` rotates as IVTP's scores assume.

    Checked by what it does, not by its signature: from transformers 5.25 (where ``kernels`` is a
    dependency) ``@use_kernel_forward_from_hub("rotary_pos_emb")`` turns the function into a module
    whose signature is ``(*args, **kwargs)``; called outside a kernelized attention it runs the
    original function. IVTP calls it with positional ``(q, k, cos, sin)`` and reads both results.
    """
    import torch

    q, k, cos, sin = _probe_rotary_inputs()
    try:
        got_q, got_k = apply_rotary(q, k, cos, sin)
    except Exception as exc:  # noqa: BLE001 - any failure means the contract changed
        raise _refuse(internal, f"calling it as (q, k, cos, sin) failed: {type(exc).__name__}: {exc}") from None
    want_q, want_k = _rotate_half_reference(q, cos, sin), _rotate_half_reference(k, cos, sin)
    for name, got, want in (("queries", got_q, want_q), ("keys", got_k, want_k)):
        if not (isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, atol=1e-6)):
            raise _refuse(internal, f"its rotated {name} are no longer x*cos + rotate_half(x)*sin over (B, H, L, d)")


def _check_repeat_kv(repeat_kv) -> None:
    """Raise unless ``repeat_kv(hidden_states, n_rep)`` repeats each key/value head ``n_rep`` times in place."""
    import torch

    kv = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).view(2, 2, 3, 4)  # (B, KVH, L, d)
    try:
        got = repeat_kv(kv, 3)
    except Exception as exc:  # noqa: BLE001
        raise _refuse("modeling_llama.repeat_kv", f"calling it as (hidden_states, n_rep) failed: {exc}") from None
    if not (isinstance(got, torch.Tensor) and torch.equal(got, kv.repeat_interleave(3, dim=1))):
        raise _refuse("modeling_llama.repeat_kv", "it no longer repeats each key/value head n_rep times in place")


# ------------------------------------------------------------------ Hub kernels
# From transformers 5.25 ``kernels`` is a dependency and ``from_pretrained`` kernelizes by default
# (``use_kernels=None`` means on unless ``USE_HUB_KERNELS`` says no): on CUDA/ROCm/XPU that downloads
# kernels (rotary, RMSNorm, activations) from the Hub at a load onto a GPU (device_map) or at the first
# train()/eval() that changes the mode after a move. vidprune's loads pass ``use_kernels=False``
# (accepted from 5.18 on, where False is the default).
FROM_PRETRAINED_NO_HUB_KERNELS = {"use_kernels": False}


def check_attn_implementation(attn_implementation: str | None) -> None:
    """Raise :class:`ConfigError` (one line) for an attention that transformers would fetch from the Hub.

    ``"org/repo[@rev][:name]"`` is a Hub kernel repository, and ``"flash_attention_N"`` without its
    package installed (``transformers.utils.is_flash_attn_N_available()`` false) makes transformers
    with ``kernels`` installed (always from 5.25) download ``kernels-community/flash-attn*`` instead.
    Refused before any weights load; ``sdpa``, ``eager``, ``flex_attention`` and an installed
    flash-attn pass.
    """
    if not attn_implementation:
        return
    name = attn_implementation.split("|")[-1]  # "paged|flash_attention_2"
    local = "use 'sdpa' (the default), 'eager', or flash_attention_N with its flash-attn package installed"
    if "/" in name:
        raise ConfigError(f"attn_implementation {attn_implementation!r} names a kernel on the Hugging Face Hub; "
                          f"vidprune runs no code downloaded at run time: {local}")
    if name.startswith("flash_attention_"):
        import transformers.utils

        available = getattr(transformers.utils, f"is_{name.replace('_attention_', '_attn_')}_available", None)
        if available is not None and not available():
            raise ConfigError(f"attn_implementation {attn_implementation!r} needs the flash-attn package of that "
                              f"version and a GPU it supports; without them transformers (with `kernels`, a "
                              f"dependency from 5.25) downloads a replacement kernel from the Hugging Face Hub, "
                              f"which vidprune never does: {local}")


def check_mm_encoder_outputs(model) -> None:
    """Raise unless ``model.forward`` takes ``mm_encoder_outputs`` (the seam the pruned tokens enter by)."""
    if "mm_encoder_outputs" not in inspect.signature(model.forward).parameters:
        raise _refuse(f"{type(model).__name__}.forward", "it takes no mm_encoder_outputs, which arrived in 5.18")


def vision_only_key_mapper(model):
    """``rename(checkpoint_key, wanted) -> (model_key, converter or None)`` with transformers' own key mapping.

    Loading the vision side alone (:mod:`.vision_only`) reads checkpoint tensors by name and must
    name them as ``from_pretrained`` would: ``conversion_mapping.get_model_conversion_mapping(model)``
    gives the model's renamings and converters, ``core_model_loading.rename_source_key`` applies
    them (and the base-model prefix), 5.18-5.24.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError as exc:
        raise _refuse("conversion_mapping / core_model_loading", f"import failed: {exc}") from None
    params = inspect.signature(rename_source_key).parameters
    if list(params)[:5] != ["source_key", "weight_renamings", "weight_converters", "base_model_prefix",
                            "meta_state_dict"]:
        raise _refuse("core_model_loading.rename_source_key", f"its parameters are now {list(params)}")
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]

    def rename(key: str, wanted: dict):
        return rename_source_key(key, renamings, converters, model.base_model_prefix, wanted)

    return rename


def check_cls_attention_internals(encoder_layer) -> None:
    """Raise if a CLIP encoder layer lacks what the [CLS] row recompute reads (``CLIPEncoderLayer``)."""
    attn = getattr(encoder_layer, "self_attn", None)
    missing = [name for name in ("layer_norm1", "self_attn") if not hasattr(encoder_layer, name)]
    missing += [f"self_attn.{n}" for n in ("q_proj", "k_proj", "num_heads", "head_dim", "scale")
                if attn is not None and not hasattr(attn, n)]
    if missing:
        raise _refuse(f"{type(encoder_layer).__name__}", f"no {', '.join(missing)}")


# ------------------------------------------------------------------ Qwen2.5-VL
def qwen_vision_window_index(visual, grid_thw):
    """The tower's window permutation (over merged 2×2 groups, natural → window order) for ``grid_thw``.

    Qwen2.5-VL's vision tower reorders its patches (in groups of ``spatial_merge_size²``) into
    attention windows before the first block and restores the order only after the merger, so
    hidden states captured inside the tower are in window order. transformers 5.24 computes the
    permutation in ``vision_utils.get_vision_window_index(grid_thw, spatial_merge_size,
    window_size, patch_size)``; earlier 5.x releases in the method ``visual.get_window_index(grid_thw)``.
    Returns the (num_groups,) long ``window_index`` (window slot i holds natural group ``window_index[i]``).
    """
    if hasattr(visual, "get_window_index"):
        window_index, _ = visual.get_window_index(grid_thw)
        return window_index
    try:
        from transformers.vision_utils import get_vision_window_index
    except ImportError as exc:
        raise _refuse("vision_utils.get_vision_window_index", f"import failed: {exc}") from None
    window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                              window_size=visual.window_size, patch_size=visual.patch_size)
    return window_index


def qwen_apply_rotary(mrope_section):
    """Rotary embedding as Qwen2.5-VL's text attention applies it, for IVTP's recomputed rows.

    transformers 5.24: ``Qwen2_5_VLRotaryEmbedding`` already folds the three (t, h, w) position
    rows into one (B, L, head_dim) cos/sin (``recomposition_frequencies`` over ``mrope_section``) and
    the attention calls ``modeling_qwen2_5_vl.apply_rotary_pos_emb``. Releases that hand the layer
    (3, B, L, head_dim) cos/sin apply ``apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section)``.
    Returns ``fn(q, k, cos, sin) -> (q, k)`` choosing by the layout the layer received.
    """
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

    check_rotary_helper("modeling_qwen2_5_vl.apply_rotary_pos_emb", qwen.apply_rotary_pos_emb)

    def apply(q, k, cos, sin):
        if cos.dim() == 4:
            if not hasattr(qwen, "apply_multimodal_rotary_pos_emb"):
                raise _refuse("modeling_qwen2_5_vl", "(3, B, L, d) rotary tables without apply_multimodal_rotary_pos_emb")
            return qwen.apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section)
        return qwen.apply_rotary_pos_emb(q, k, cos, sin)

    return apply


# ------------------------------------------------------------------ Qwen3-VL
def qwen3_vl_keeps_video_wrapper(processor) -> bool:
    """Whether the installed ``Qwen3VLProcessor`` keeps the chat template's outer vision start/end around a video.

    The chat template writes one video as ``<|vision_start|><|video_pad|><|vision_end|>``; the stock
    processor expands the pad into, per temporal patch, ``<t seconds><|vision_start|>`` + its pads +
    ``<|vision_end|>`` (``replace_video_token``). Up to 5.24 the template's outer pair stays around that
    expansion; from 5.25 ``Qwen3VLProcessor.get_text_with_replacements`` collapses it into the bare pad
    first, so the prompt holds one ``<|vision_start|>`` per temporal patch and no outer one. Asked of the
    installed release by running ``processor`` on the template's text and a blank one-patch video:
    True when the ids open with the outer pair (units + 1 starts), False when they hold units starts.
    """
    import numpy as np
    from transformers.video_utils import VideoMetadata

    internal = f"{type(processor).__name__}.get_text_with_replacements / replace_video_token"
    start, end, pad = processor.vision_start_token, processor.vision_end_token, processor.video_token
    frames = processor.video_processor.temporal_patch_size
    blank = np.zeros((frames, 64, 64, 3), dtype=np.uint8)
    metadata = [VideoMetadata(total_num_frames=frames, fps=1.0, frames_indices=list(range(frames)))]
    try:
        out = processor(text=start + pad + end, videos=[blank], video_metadata=metadata, return_tensors="pt",
                        videos_kwargs={"do_sample_frames": False})
    except Exception as exc:  # noqa: BLE001 - any failure means the contract changed
        raise _refuse(internal, f"expanding one video failed: {type(exc).__name__}: {exc}") from None
    ids = out["input_ids"][0].tolist()
    start_id, end_id = (processor.tokenizer.convert_tokens_to_ids(t) for t in (start, end))
    units = int(out["video_grid_thw"][0][0])
    starts = ids.count(start_id)
    if starts == units + 1 and ids[0] == start_id and ids[-1] == end_id:
        return True
    if starts == units and ids[0] != start_id:
        return False
    raise _refuse(internal, f"a video of {units} temporal patches became {starts} vision starts, neither "
                            f"{units} (outer pair collapsed) nor {units + 1} (outer pair kept)")
