"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``, hub: llava-hf/LLaVA-NeXT-Video-7B-hf).

Its CLIP tower at 336 px gives 24×24 = 576 patches per frame ([CLS] dropped); the
model's ``vision_resampler`` pools them 2×2 to 12×12 = 144 tokens before the projector.
By default the pruner chooses among the 144 pooled tokens, with the [CLS] attention
average-pooled over the same 2×2 windows. ``prune_pooled=False`` prunes the 576
unpooled tokens instead (and skips the pooler: the kept tokens are projected as they are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError
from .base import EncodedFrames, VideoLLM, VisualGeometry, register_family
from .cls_attention import clip_cls_attention

__all__ = ["LlavaNextVideoAdapter"]


@register_family("llava_next_video")
class LlavaNextVideoAdapter(VideoLLM):
    model_class_name = "LlavaNextVideoForConditionalGeneration"
    default_num_frames = 32
    vision_modules = ("model.vision_tower", "model.vision_resampler", "model.multi_modal_projector")

    @classmethod
    def geometry_from_config(cls, config, *, keep_cls: bool, prune_pooled: bool) -> VisualGeometry:
        if config.vision_feature_select_strategy != "default":
            raise ModelLoadError(
                f"vision_feature_select_strategy={config.vision_feature_select_strategy!r} is not supported "
                "for LLaVA-NeXT-Video videos; the stock model pools patch tokens only ('default')"
            )
        side = config.vision_config.image_size // config.vision_config.patch_size
        pooled = side // config.spatial_pool_stride
        prune_side = pooled if prune_pooled else side
        return VisualGeometry(
            patch_grid=(side, side),
            prune_grid=(prune_side, prune_side),
            extra_per_frame=0,  # no [CLS], no newline token for videos
            stock_per_frame=pooled * pooled,
        )

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> EncodedFrames:
        """(T, 3, 336, 336) → features (T, 144, Dv) pooled (or (T, 576, Dv)), [CLS] attention (T, N)."""
        tower = self.model.model.vision_tower
        layer_input, hidden, layer_idx = self._tower_hidden_states(tower, pixel_values)  # (T, 577, Dv)
        cls_attn = clip_cls_attention(self._encoder_layer(tower, layer_idx), layer_input)  # (T, 576)
        patches = hidden[:, 1:]  # (T, 576, Dv), the stock 'default' strategy
        if not self.prune_pooled:
            return EncodedFrames(features=patches, cls_attn=cls_attn)
        features = self.model.model.vision_resampler(patches)  # (T, 144, Dv)
        side, stride = self.geometry.patch_grid[0], self.config.spatial_pool_stride
        attn_map = cls_attn.view(-1, 1, side, side)  # (T, 1, 24, 24)
        pooled_attn = F.avg_pool2d(attn_map, kernel_size=stride, stride=stride).flatten(1)  # (T, 144)
        return EncodedFrames(features=features, cls_attn=pooled_attn)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.model.multi_modal_projector(features)
