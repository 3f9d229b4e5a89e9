"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``, hub: llava-hf/llava-onevision-qwen2-7b-ov-hf).

Its SigLIP tower at 384 px gives 27×27 = 729 patches per frame and has **no [CLS]
token**. For video, ``LlavaOnevisionModel.get_video_features`` (transformers 5.24) runs
tower → ``hidden_states[vision_feature_layer]`` (-1: the last encoder layer, before the
post-layernorm) → **projector** → ``apply_pooling`` (bilinear ``interpolate`` of the
27×27 grid to ceil(27/2) = 14×14) → 196 tokens per frame, and appends ``image_newline``
once per video, after the last frame.

The projector (Linear-GELU-Linear) does not commute with the bilinear pooling, so the
rows handed to the LLM are the stock pooled *projected* rows at the kept positions
(``EncodedFrames.tokens``), computed exactly as the stock model does; ``project`` is
the identity. What the pruner and dedup compare (``EncodedFrames.features``) are the
pre-projector tower features at the feature layer, bilinearly pooled to the same 14×14
grid with the same ``interpolate`` call, so a token's features describe the same image
region as the row it selects. Importance is the mean attention each of the 729 patches
receives from all queries at the feature layer (method.md §1, recomputed from the
layer's input without eager attention), pooled to 14×14 the same way. The image newline
is handed on outside pruning (``extra_per_video = 1``, counted against the budget).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError
from .base import EncodedFrames, VideoLLM, VisualGeometry, register_family
from .cls_attention import mean_received_attention

__all__ = ["LlavaOnevisionAdapter", "bilinear_pool_grid"]


def bilinear_pool_grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(T, side², C) tokens on a square grid → (T, ceil(side/2)², C), pooled as ``LlavaOnevisionModel.apply_pooling``.

    Mirrors ``apply_pooling`` of transformers 5.24: ``interpolate(..., size=ceil(side/2), mode="bilinear")``
    with the default ``align_corners=False``, on a (T, C, side, side) view, raster order in and out.
    """
    frames, _, channels = tokens.shape
    grid = tokens.reshape(frames, side, side, channels).permute(0, 3, 1, 2)  # (T, C, side, side)
    pooled_side = math.ceil(side / 2)
    pooled = F.interpolate(grid, size=[pooled_side, pooled_side], mode="bilinear")  # (T, C, s', s')
    return pooled.permute(0, 2, 3, 1).reshape(frames, pooled_side * pooled_side, channels)


@register_family("llava_onevision")
class LlavaOnevisionAdapter(VideoLLM):
    model_class_name = "LlavaOnevisionForConditionalGeneration"
    default_num_frames = 32  # the model card's video setting
    vision_modules = ("model.vision_tower", "model.multi_modal_projector", "model.image_newline")

    @classmethod
    def geometry_from_config(cls, config, *, keep_cls: bool, prune_pooled: bool) -> VisualGeometry:
        if config.vision_feature_select_strategy != "full":
            raise ModelLoadError(
                f"vision_feature_select_strategy={config.vision_feature_select_strategy!r} is not supported for "
                "LLaVA-OneVision: its SigLIP tower has no [CLS] token, so the stock 'full' strategy is the only one"
            )
        side = config.vision_config.image_size // config.vision_config.patch_size
        pooled = math.ceil(side / 2)
        return VisualGeometry(
            patch_grid=(side, side),
            prune_grid=(pooled, pooled),
            extra_per_frame=0,  # no [CLS]
            stock_per_frame=pooled * pooled,
            extra_per_video=1,  # image_newline, after the last frame
        )

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> EncodedFrames:
        """(T, 3, 384, 384) → features (T, 196, Dv), importance (T, 196), tokens (T, 196, D), newline (1, D)."""
        inner = self.model.model
        tower = inner.vision_tower
        layer_input, hidden, layer_idx = self._tower_hidden_states(tower, pixel_values)  # (T, 729, Dv) each
        layer = self._encoder_layer(tower, layer_idx)
        received = mean_received_attention(layer.self_attn, layer.layer_norm1(layer_input))  # (T, 729)
        side = self.geometry.patch_grid[0]
        tokens = inner.apply_pooling(inner.multi_modal_projector(hidden))  # (T, 196, D): the stock rows
        features = bilinear_pool_grid(hidden, side)  # (T, 196, Dv)
        importance = bilinear_pool_grid(received[..., None], side)[..., 0]  # (T, 196)
        newline = inner.image_newline[None].to(tokens.device, tokens.dtype)  # (1, D)
        return EncodedFrames(features=features, cls_attn=importance.float(), tokens=tokens, video_extra=newline)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        return rows  # already the stock projected, pooled rows

    @classmethod
    def tower_flops(cls, config, num_frames: int, grid: tuple[int, int] | None = None) -> int:
        """SigLIP: 729 patches, no [CLS]; the layers up to the feature layer run (the tower stops there)."""
        from ..flops import vision_tower_flops

        return vision_tower_flops(config.vision_config, num_frames, layers_run=cls.tower_layers_run(config), has_cls=False)
