"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``, hub: Qwen/Qwen2.5-VL-7B-Instruct).

Vision side (transformers 5.24, ``Qwen2_5_VisionTransformerPretrainedModel``): the video
processor resizes every frame to a multiple of 28 px within its pixel limits (dynamic
resolution: the grid comes from the video, see ``video_grid_thw``), pairs frames into
temporal patches of ``temporal_patch_size = 2`` (an odd count is padded with the last
frame) and cuts 14 px patches; the ViT runs window attention, with full attention (within
one temporal patch) in ``fullatt_block_indexes``; the merger turns each 2×2 group of
patches into one LLM token. **The pruner's unit is one temporal patch** (two sampled
frames): its ``(h/2)·(w/2)`` merged tokens in raster order.

* Rows handed on: the merger's output (``EncodedFrames.tokens``, already LLM embeddings;
  ``project`` is the identity), exactly the stock ``get_video_features`` rows.
* Importance: the mean attention each patch receives from all queries of its temporal
  patch at the **last full-attention block**, recomputed from that block's input (its
  ``norm1``, ``qkv``, the tower's own vision rotary tables), averaged over the 4 patches
  of each merged token.
* Features for VisPruner's diversity step and dedup: the tower's last block output
  (the merger's input), averaged over the 4 patches of each merged token.
* Positions: 3-D multimodal RoPE. The stock positions of the *full* grid are computed with
  the model's own ``get_rope_index``; kept tokens keep theirs, text keeps the stock
  positions, and generation gets the 4-row ``position_ids`` the stock
  ``_prepare_position_ids_for_generation`` would build (row 0: text positions of the pruned
  layout for the mask; rows 1-3: t, h, w), plus ``rope_deltas`` for decode steps without
  position ids.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .base import EncodedFrames, VideoLLM, VisualGeometry, register_family
from .cls_attention import segment_mean_received_attention
from .hf_internals import qwen_apply_rotary, qwen_vision_window_index

__all__ = ["Qwen2_5_VLAdapter", "QwenVideoPixels"]


@dataclass
class QwenVideoPixels:
    """One video after the stock processor: its patches and grid, sliceable by temporal patch.

    Attributes:
        pixel_values: (t·h·w, C·2·14·14) flattened patches, the processor's layout.
        grid_thw: (t, h, w) temporal patches and patch rows / columns.
        seconds_per_unit: seconds one temporal patch spans (the processor's ``second_per_grid_ts``).
    """

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    seconds_per_unit: float

    def __len__(self) -> int:
        return self.grid_thw[0]

    def __getitem__(self, units: slice) -> "QwenVideoPixels":
        t, h, w = self.grid_thw
        kept = range(t)[units]
        if kept.step != 1:
            raise ValueError("QwenVideoPixels slices contiguous temporal patches only")
        rows = self.pixel_values[kept.start * h * w : kept.stop * h * w]
        return QwenVideoPixels(rows, (len(kept), h, w), self.seconds_per_unit)

    def take(self, units: list[int]) -> "QwenVideoPixels":
        """Temporal patches ``units`` in that order (any subset): ((len(units)·h·w, C·2·14·14) patches)."""
        _, h, w = self.grid_thw
        rows = self.pixel_values.view(self.grid_thw[0], h * w, -1)[list(units)]  # (len(units), h·w, C·2·14·14)
        return QwenVideoPixels(rows.reshape(len(units) * h * w, -1), (len(units), h, w), self.seconds_per_unit)


@register_family("qwen2_5_vl")
class Qwen2_5_VLAdapter(VideoLLM):
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    default_num_frames = 16  # 8 temporal patches; even, as the temporal patch pairs frames
    vision_modules = ("model.visual",)

    @classmethod
    def geometry_from_config(cls, config, *, keep_cls: bool, prune_pooled: bool) -> VisualGeometry:
        """The grid depends on the video (dynamic resolution): known after preprocessing, not from the config."""
        return VisualGeometry(patch_grid=(0, 0), prune_grid=(0, 0), extra_per_frame=0, stock_per_frame=0,
                              frames_per_unit=config.vision_config.temporal_patch_size, dynamic=True)

    @classmethod
    def frame_geometry(cls, geometry: VisualGeometry, video_processor, height: int, width: int) -> VisualGeometry:
        """The merged grid the stock ``video_processor`` gives one temporal patch of ``height`` x ``width`` frames.

        Runs the processor itself on a blank temporal patch of that size (its resize rule, pixel
        limits and merge size are the checkpoint's; no weights needed). Still ``dynamic``: frames
        of another size get another grid.
        """
        blank = np.zeros((geometry.frames_per_unit, int(height), int(width), 3), dtype=np.uint8)
        out = video_processor(videos=[blank], return_tensors="pt")
        _, h, w = (int(v) for v in out["video_grid_thw"][0])
        merge = video_processor.merge_size
        grid = (h // merge, w // merge)
        return dataclasses.replace(geometry, patch_grid=(h, w), prune_grid=grid, stock_per_frame=grid[0] * grid[1])

    def _check_vision_feature_layer(self) -> None:
        """Qwen2.5-VL feeds the merger's output; there is no ``vision_feature_layer`` to check."""

    def ivtp_rotary(self):
        return qwen_apply_rotary(self.config.text_config.rope_parameters.get("mrope_section"))

    @property
    def vision_start_id(self) -> int:
        return self.config.vision_start_token_id

    # ------------------------------------------------------------- vision side
    def preprocess(self, frames: np.ndarray, times_s: list[float] | None = None) -> QwenVideoPixels:
        """Frames (T, H, W, 3) uint8 → :class:`QwenVideoPixels` with the checkpoint's own video processor.

        ``times_s`` (the sampled frames' times) gives the sampling rate the processor turns into
        the temporal spacing of the rotary positions (``second_per_grid_ts``); without it the
        processor's default (24 fps) applies, as for any stock call on bare frames.
        """
        from transformers.video_utils import VideoMetadata

        kwargs = {}
        fps = sampled_fps(times_s)
        if fps is not None:
            kwargs["video_metadata"] = [VideoMetadata(total_num_frames=len(frames), fps=fps,
                                                      frames_indices=list(range(len(frames))))]
        out = self.processor.video_processor(videos=[frames], return_tensors="pt", **kwargs)
        t, h, w = (int(v) for v in out["video_grid_thw"][0])
        metadata = out.get("video_metadata")
        rate = metadata[0].sampled_fps if metadata else (fps or 24)
        return QwenVideoPixels(out["pixel_values_videos"], (t, h, w),
                               self.processor.video_processor.temporal_patch_size / rate)

    @torch.no_grad()
    def encode(self, pixels: QwenVideoPixels) -> EncodedFrames:
        """→ features (t, N, Dv), importance (t, N), tokens (t, N, D) with N = (h/2)·(w/2) merged tokens."""
        visual = self.model.model.visual
        t, h, w = pixels.grid_thw
        merge = visual.spatial_merge_size
        grid = torch.tensor([[t, h, w]], device=self.vision_device)
        block = visual.blocks[visual.fullatt_block_indexes[-1]]
        captured: dict = {}

        def take_input(_module, args, kwargs):
            captured.update(kwargs, hidden_states=args[0] if args else kwargs["hidden_states"])

        handle = block.register_forward_pre_hook(take_input, with_kwargs=True)
        try:
            out = visual(pixels.pixel_values.to(self.vision_device, self.dtype), grid_thw=grid)
        finally:
            handle.remove()
        n_merged = (h // merge) * (w // merge)
        unit = merge * merge
        window_index = qwen_vision_window_index(visual, grid).to(self.vision_device)  # (t·N,) window slot -> group
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision  # the tower's own rotary
        received = segment_mean_received_attention(block, captured, apply_rotary_pos_emb_vision)  # (S,) window order
        natural = torch.empty_like(received.view(-1, unit))
        natural[window_index] = received.view(-1, unit)  # (t·N, 4) natural group order
        importance = natural.mean(dim=1).view(t, n_merged)
        hidden = out.last_hidden_state  # (S, Dv) window order: the merger's input
        grouped = torch.empty_like(hidden.view(-1, unit, hidden.shape[-1]))
        grouped[window_index] = hidden.view(-1, unit, hidden.shape[-1])
        features = grouped.mean(dim=1).view(t, n_merged, -1)  # (t, N, Dv)
        tokens = out.pooler_output.view(t, n_merged, -1)  # (t, N, D): the stock merged rows
        return EncodedFrames(features=features, cls_attn=importance.float(), tokens=tokens,
                             grid=(h // merge, w // merge), seconds_per_unit=pixels.seconds_per_unit)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        return rows  # the merger's output: already the LLM's input rows

    @classmethod
    def tower_flops(cls, config, num_frames: int, grid: tuple[int, int] | None = None) -> int:
        """ViT FLOPs per temporal patch of (2h)·(2w) patches (``grid`` = merged (h, w)): full-attention
        blocks attend over the whole temporal patch, window blocks over their window; SwiGLU MLP."""
        from ..flops import layer_flops

        vc = config.vision_config
        if grid is None:
            return 0
        n = grid[0] * grid[1] * vc.spatial_merge_size ** 2
        window = min(n, (vc.window_size // vc.patch_size) ** 2)
        d, m = vc.hidden_size, vc.intermediate_size
        per_unit = 0
        for i in range(vc.depth):
            span = n if i in vc.fullatt_block_indexes else window
            # layer_flops' attention-score term is 2·n·n·d; a window block attends over `span` keys only
            per_unit += layer_flops(n, d, m, mlp_matrices=3) - 2 * 2 * n * n * d + 2 * 2 * n * span * d
        return num_frames * per_unit

    # --------------------------------------------------------------- language
    def video_encoder_output(self, visual_tokens: list[torch.Tensor]):
        """Qwen2.5-VL's forward reads ``pooler_output`` as a tuple of per-video (K_i, D) rows."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=tuple(t.to(self.device) for t in visual_tokens))

    def position_inputs(self, inputs: dict[str, torch.Tensor], layouts) -> dict[str, torch.Tensor]:
        """The stock 3-D positions of each sample's full grid, at the kept tokens; generate()'s ``position_ids``.

        Args:
            inputs: ``input_ids`` / ``attention_mask`` (B, L) of the pruned, left-padded prompts.
            layouts: per sample {"grid": (h, w) merged, "units": t, "seconds_per_unit": s,
                "kept": per temporal patch the kept merged-token indices (raster)}.

        Returns:
            ``{"position_ids": (4, B, L)}``: row 0 the pruned layout's text positions (what the
            stock generate() puts there: attention-mask cumsum), rows 1-3 the stock (t, h, w)
            positions. Also sets ``model.model.rope_deltas`` (B, 1) as the stock ``get_rope_index``
            returns them for a left-padded batch with its attention mask (the next position minus the
            sample's unpadded length) for decode steps that come without position ids.
        """
        if layouts is None or any(layout is None for layout in layouts):
            from ..errors import ConfigError

            raise ConfigError("Qwen2.5-VL places kept tokens at their stock (t, h, w) positions: pass each "
                              "video's layout (PrunedVideo.layout) to generate()")
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        batch, length = ids.shape
        rope = torch.zeros(3, batch, length, dtype=torch.long, device=ids.device)
        deltas = []
        for b, layout in enumerate(layouts):
            valid = mask[b].bool()
            pruned_ids = ids[b][valid]  # (L_b,) no padding
            full_ids, keep = self._full_prompt(pruned_ids, layout)  # (L_full,), (L_full,) bool
            token_type = (full_ids == self.video_token_id).long()[None] * 2  # video = 2
            merge = self.config.vision_config.spatial_merge_size
            full_grid = torch.tensor([[layout["units"], layout["grid"][0] * merge, layout["grid"][1] * merge]],
                                     device=ids.device)  # (1, 3) video_grid_thw in patches
            positions, _ = self.model.model.get_rope_index(
                full_ids[None], mm_token_type_ids=token_type, video_grid_thw=full_grid,
                second_per_grid_ts=torch.tensor([layout["seconds_per_unit"]], device=ids.device))
            kept_positions = positions[:, 0, keep]  # (3, L_b)
            rope[:, b, valid] = kept_positions
            # the stock convention (get_rope_index with an attention mask, transformers 5.24): next position minus
            # the sample's UNPADDED length; compute_3d_position_ids adds it to cumsum(attention_mask) - 1 in decode
            # steps without position ids (tests/test_models_qwen.py checks both against the stock model)
            deltas.append(int(positions.max()) + 1 - int(valid.sum()))
        text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, L)
        self.model.model.rope_deltas = torch.tensor(deltas, device=ids.device).unsqueeze(1)
        return {"position_ids": torch.cat([text[None], rope], dim=0)}

    def _full_prompt(self, pruned_ids: torch.Tensor, layout) -> tuple[torch.Tensor, torch.Tensor]:
        """The unpruned prompt (every merged token of the grid) and which of its positions were kept."""
        video = torch.nonzero(pruned_ids == self.video_token_id).flatten()
        h, w = layout["grid"]
        per_unit = h * w
        kept_flat = torch.cat([torch.as_tensor(k, dtype=torch.long) + u * per_unit
                               for u, k in enumerate(layout["kept"])]) if layout["kept"] else torch.zeros(0, dtype=torch.long)
        if len(kept_flat) != len(video):
            raise RuntimeError(f"the prompt has {len(video)} video placeholders but the layout keeps {len(kept_flat)}")
        full_count = layout["units"] * per_unit
        first = int(video[0]) if len(video) else int(torch.nonzero(pruned_ids == self.vision_start_id).flatten()[0]) + 1
        before, after = pruned_ids[:first], pruned_ids[first + len(video):]
        full_ids = torch.cat([before, pruned_ids.new_full((full_count,), self.video_token_id), after])
        keep = torch.ones(len(full_ids), dtype=torch.bool, device=pruned_ids.device)
        video_keep = torch.zeros(full_count, dtype=torch.bool, device=pruned_ids.device)
        video_keep[kept_flat.to(pruned_ids.device)] = True
        keep[first:first + full_count] = video_keep
        return full_ids, keep


def sampled_fps(times_s: list[float] | None) -> float | None:
    """Frames per second of uniformly sampled frames at ``times_s`` (None for fewer than two or no spread)."""
    if times_s is None or len(times_s) < 2:
        return None
    span = float(times_s[-1]) - float(times_s[0])
    return (len(times_s) - 1) / span if span > 0 else None
