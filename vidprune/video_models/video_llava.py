"""Video-LLaVA (``VideoLlavaForConditionalGeneration``, hub: LanguageBind/Video-LLaVA-7B-hf).

Its video tower is a CLIP ViT-L/14 at 224 px: 16×16 = 256 patches + [CLS] = 257 tokens
per frame, all 257 handed to the LLM (``get_video_features`` keeps the [CLS] token of
every frame). The pruner chooses among the 256 patches; the [CLS] token is handed on
as an extra token (``keep_cls=True``, counted against the budget) or dropped.
"""

from __future__ import annotations

import torch

from .base import EncodedFrames, VideoLLM, VisualGeometry, register_family
from .cls_attention import clip_cls_attention

__all__ = ["VideoLlavaAdapter"]


@register_family("video_llava")
class VideoLlavaAdapter(VideoLLM):
    model_class_name = "VideoLlavaForConditionalGeneration"
    default_num_frames = 8  # trained with 8 frames
    vision_modules = ("model.video_tower", "model.multi_modal_projector")

    @classmethod
    def geometry_from_config(cls, config, *, keep_cls: bool, prune_pooled: bool) -> VisualGeometry:
        side = config.vision_config.image_size // config.vision_config.patch_size
        return VisualGeometry(
            patch_grid=(side, side),
            prune_grid=(side, side),
            extra_per_frame=1 if keep_cls else 0,
            stock_per_frame=side * side + 1,
        )

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> EncodedFrames:
        """(T, 3, 224, 224) → features (T, 256, Dv), [CLS] attention (T, 256), [CLS] token (T, 1, Dv)."""
        tower = self.model.model.video_tower
        layer_input, hidden, layer_idx = self._tower_hidden_states(tower, pixel_values)  # (T, 257, Dv) each
        cls_attn = clip_cls_attention(self._encoder_layer(tower, layer_idx), layer_input)  # (T, 256)
        extra = hidden[:, :1] if self.keep_cls else None
        return EncodedFrames(features=hidden[:, 1:], cls_attn=cls_attn, extra=extra)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.model.multi_modal_projector(features)
