"""Qwen3-VL (``Qwen3VLForConditionalGeneration``, hub: Qwen/Qwen3-VL-8B-Instruct; the MoE class
``Qwen3VLMoeForConditionalGeneration``, hub: Qwen/Qwen3-VL-30B-A3B-Instruct, through the same adapter).

Vision side (transformers 5.24, ``Qwen3VLVisionModel``): the video processor resizes frames to a
multiple of 32 px within its pixel limits (dynamic resolution), pairs frames into temporal patches
of ``temporal_patch_size = 2`` and cuts 16 px patches, each 2×2 group contiguous; the ViT adds
learned position embeddings interpolated to the grid, uses 2-D rotary and full attention within
one temporal patch in every block (no windows); the merger turns each 2×2 group into one LLM
token. **The pruner's unit is one temporal patch**: its ``(h/2)·(w/2)`` merged tokens, raster order.

* **DeepStack**: the blocks in ``deepstack_visual_indexes`` have their own mergers; the decoder adds
  level i to the hidden states at the visual positions after decoder layer i. The rows handed on
  (``EncodedFrames.tokens``) are the stock main rows and every level's rows **side by side**,
  (t, N, D·(1 + levels)), so whatever the pruner and dedup drop, they drop from the main stream and
  every level at the same index; :meth:`Qwen3VLAdapter.video_encoder_output` splits them back into
  ``pooler_output`` and ``deepstack_features`` (``project`` is the identity).
* Importance: the mean attention each patch receives from all queries of its temporal patch at the
  **last ViT block**, recomputed from that block's input (``norm1``, ``qkv``, the tower's own rotary
  tables; no eager attention), averaged over the 4 patches of each merged token.
* Features for VisPruner's diversity step and dedup: the last block's output (the merger's input),
  averaged over the 4 patches of each merged token.
* **Timestamps**: the prompt holds, per temporal patch, ``<t seconds>`` + ``<|vision_start|>`` + its
  kept pads + ``<|vision_end|>`` (the stock ``Qwen3VLProcessor.replace_video_token`` layout), ``t`` the
  mean time of the patch's two decoded frames (``PrunedVideo.layout["times_s"]``, from the frames'
  real times as the report's ``time_s``). A patch whose every token was dropped (dedup on a static
  scene) keeps its timestamp and an empty ``<|vision_start|><|vision_end|>``: the model sees that the
  moment exists and adds nothing new; every other token keeps its stock position. Around the whole
  video the prompt follows the installed release's stock processor: up to transformers 5.24 the chat
  template's outer ``<|vision_start|>``…``<|vision_end|>`` stays, from 5.25 it is collapsed into the
  patches' own pairs (``hf_internals.qwen3_vl_keeps_video_wrapper`` asks the processor once).
* Positions: interleaved mRoPE. The stock (t, h, w) positions of the full prompt (every pad) come
  from the model's own ``get_rope_index``; kept tokens and text keep theirs; decode steps continue
  from the largest + 1.
* IVTP: pruning at a decoder layer inside the DeepStack layers (< number of levels) is refused in one
  line (the levels are added at the positions of every visual token there).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import ConfigError
from .base import EncodedFrames, VideoLLM, VisualGeometry, register_family
from .cls_attention import segment_mean_received_attention
from .hf_internals import qwen3_vl_keeps_video_wrapper
from .qwen2_5_vl import QwenVideoPixels, sampled_fps

__all__ = ["Qwen3VLAdapter", "Qwen3VLMoeAdapter", "unit_times"]


def unit_times(times_s: list[float], frames_per_unit: int) -> list[float]:
    """Per temporal patch, the mean time of its first and last frame (an odd last patch repeats its frame).

    What ``Qwen3VLProcessor._calculate_timestamps`` (transformers 5.24) computes from ``frames_indices / fps``,
    here from the decoded frames' own times.
    """
    times = [float(t) for t in times_s]
    return [(times[i] + times[min(i + frames_per_unit, len(times)) - 1]) / 2
            for i in range(0, len(times), frames_per_unit)]


@register_family("qwen3_vl")
class Qwen3VLAdapter(VideoLLM):
    model_class_name = "Qwen3VLForConditionalGeneration"
    default_num_frames = 16  # 8 temporal patches; even, as the temporal patch pairs frames
    sizes_frames_by_clip = True  # the processor's size limit is the whole clip's pixel total
    vision_modules = ("model.visual",)

    @classmethod
    def geometry_from_config(cls, config, *, keep_cls: bool, prune_pooled: bool) -> VisualGeometry:
        """The grid depends on the video (dynamic resolution): known after preprocessing, not from the config."""
        return VisualGeometry(patch_grid=(0, 0), prune_grid=(0, 0), extra_per_frame=0, stock_per_frame=0,
                              frames_per_unit=config.vision_config.temporal_patch_size, dynamic=True)

    @classmethod
    def frame_geometry(cls, geometry: VisualGeometry, video_processor, height: int, width: int) -> VisualGeometry:
        """The merged grid the stock ``video_processor`` gives one temporal patch of ``height`` x ``width`` frames."""
        blank = np.zeros((geometry.frames_per_unit, int(height), int(width), 3), dtype=np.uint8)
        out = video_processor(videos=[blank], return_tensors="pt", do_sample_frames=False)
        _, h, w = (int(v) for v in out["video_grid_thw"][0])
        merge = video_processor.merge_size
        grid = (h // merge, w // merge)
        return dataclasses.replace(geometry, patch_grid=(h, w), prune_grid=grid, stock_per_frame=grid[0] * grid[1])

    @classmethod
    def check_ivtp_schedule(cls, config, schedule) -> None:
        levels = len(config.vision_config.deepstack_visual_indexes)
        if schedule is not None and min(schedule.prune_layers) < levels:
            raise ConfigError(
                f"ivtp layer {min(schedule.prune_layers)} is inside {cls.model_type}'s DeepStack layers (visual "
                f"features are added after decoder layers 0-{levels - 1}); use an ivtp layer >= {levels}")

    def _check_vision_feature_layer(self) -> None:
        """Qwen3-VL feeds the merger's output; there is no ``vision_feature_layer`` to check."""

    @property
    def vision_start_id(self) -> int:
        return self.config.vision_start_token_id

    @property
    def deepstack_levels(self) -> int:
        return len(self.config.vision_config.deepstack_visual_indexes)

    # ------------------------------------------------------------- vision side
    def preprocess(self, frames: np.ndarray, times_s: list[float] | None = None) -> QwenVideoPixels:
        """Frames (T, H, W, 3) uint8 → :class:`QwenVideoPixels` with the checkpoint's own video processor.

        The frames are used as given (``do_sample_frames=False``: vidprune has sampled them); their
        times reach the prompt through the selection's layout, not through the processor.
        """
        out = self.processor.video_processor(videos=[frames], return_tensors="pt", do_sample_frames=False)
        t, h, w = (int(v) for v in out["video_grid_thw"][0])
        fps = sampled_fps(times_s)
        per_unit = self.processor.video_processor.temporal_patch_size
        return QwenVideoPixels(out["pixel_values_videos"], (t, h, w), per_unit / fps if fps else None)

    @torch.no_grad()
    def encode(self, pixels: QwenVideoPixels) -> EncodedFrames:
        """→ features (t, N, Dv), importance (t, N), tokens (t, N, D·(1 + levels)) with N = (h/2)·(w/2)."""
        visual = self.model.model.visual
        t, h, w = pixels.grid_thw
        merge = visual.spatial_merge_size
        block = visual.blocks[-1]
        captured: dict = {}

        def take_input(_module, args, kwargs):
            captured.update(kwargs, hidden_states=args[0] if args else kwargs["hidden_states"])

        handle = block.register_forward_pre_hook(take_input, with_kwargs=True)
        try:
            out = visual(pixels.pixel_values.to(self.vision_device, self.dtype),
                         grid_thw=torch.tensor([[t, h, w]], device=self.vision_device))
        finally:
            handle.remove()
        n_merged = (h // merge) * (w // merge)
        unit = merge * merge
        from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision  # the tower's own rotary
        received = segment_mean_received_attention(block, captured, apply_rotary_pos_emb_vision)  # (S,) patches, 2×2 groups contiguous
        importance = received.view(-1, unit).mean(dim=1).view(t, n_merged)
        hidden = out.last_hidden_state  # (S, Dv): the merger's input
        features = hidden.view(t, n_merged, unit, -1).mean(dim=2)  # (t, N, Dv)
        levels = [out.pooler_output, *out.deepstack_features]  # each (t·N, D)
        tokens = torch.cat(levels, dim=-1).view(t, n_merged, -1)  # (t, N, D·(1 + levels))
        return EncodedFrames(features=features, cls_attn=importance.float(), tokens=tokens,
                             grid=(h // merge, w // merge), seconds_per_unit=pixels.seconds_per_unit)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        return rows  # the mergers' outputs side by side: already the LLM's rows

    @classmethod
    def tower_flops(cls, config, num_frames: int, grid: tuple[int, int] | None = None) -> int:
        """ViT FLOPs per temporal patch of (2h)·(2w) patches (``grid`` = merged (h, w)): every block attends over
        the whole temporal patch; GELU MLP (2 matrices). The mergers are not counted (as for Qwen2.5-VL)."""
        from ..flops import layer_flops

        vc = config.vision_config
        if grid is None:
            return 0
        n = grid[0] * grid[1] * vc.spatial_merge_size ** 2
        return num_frames * vc.depth * layer_flops(n, vc.hidden_size, vc.intermediate_size, mlp_matrices=2)

    # --------------------------------------------------------------- language
    def video_placeholder(self, count: int, layout) -> str:
        """Per temporal patch ``<t seconds><|vision_start|>`` + its kept pads + ``<|vision_end|>``.

        Mirrors ``Qwen3VLProcessor.replace_video_token`` (transformers 5.24 and 5.25), with each patch's kept
        count instead of the full grid's, and ``t`` from ``layout["times_s"]`` (the decoded frames' times);
        whether the template's outer pair stays around it is :meth:`tokenize`'s business.
        """
        if layout is None or layout.get("times_s") is None:
            raise ConfigError("Qwen3-VL writes each temporal patch's time in the prompt: pass each video's layout "
                              "(PrunedVideo.layout, with its times_s) to generate()")
        kept = [len(k) for k in layout["kept"]]
        if sum(kept) != count:
            raise RuntimeError(f"the layout keeps {sum(kept)} tokens but {count} rows were given")
        start, end = self.processor.vision_start_token, self.processor.vision_end_token
        return "".join(f"<{t:.1f} seconds>{start}{self.video_token * k}{end}" for t, k in zip(layout["times_s"], kept))

    def tokenize(self, prompts: list[str], visual_counts: list[int], layouts: list | None = None) -> dict[str, torch.Tensor]:
        """:meth:`VideoLLMGeneration.tokenize`, the template's outer vision start/end dropped where the stock
        processor of the installed release drops them (transformers 5.25: the prompt holds one
        ``<|vision_start|>`` per temporal patch and none around the video)."""
        if not self._keeps_video_wrapper():
            wrapper = self.processor.vision_start_token + self.video_token + self.processor.vision_end_token
            prompts = [p.replace(wrapper, self.video_token) for p in prompts]
        return super().tokenize(prompts, visual_counts, layouts)

    def _keeps_video_wrapper(self) -> bool:
        """``hf_internals.qwen3_vl_keeps_video_wrapper`` of this model's processor, asked once."""
        if getattr(self, "_video_wrapper_kept", None) is None:
            self._video_wrapper_kept = qwen3_vl_keeps_video_wrapper(self.processor)
        return self._video_wrapper_kept

    def video_encoder_output(self, visual_tokens: list[torch.Tensor]):
        """The side-by-side rows split back: ``pooler_output`` (per video (K_i, D)) and one tuple per DeepStack level."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        width = self.config.text_config.hidden_size
        parts = [rows.to(self.device).split(width, dim=-1) for rows in visual_tokens]  # per video: 1 + levels of (K_i, D)
        if any(len(p) != 1 + self.deepstack_levels for p in parts):
            raise RuntimeError(f"Qwen3-VL rows must be {1 + self.deepstack_levels} x {width} wide "
                               f"(main + DeepStack levels), got {[int(r.shape[-1]) for r in visual_tokens]}")
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(p[0] for p in parts),
            deepstack_features=[tuple(p[level] for p in parts) for level in range(1, 1 + self.deepstack_levels)])

    def position_inputs(self, inputs: dict[str, torch.Tensor], layouts) -> dict[str, torch.Tensor]:
        """The stock 3-D positions of each sample's full prompt, at the kept tokens; generate()'s ``position_ids``.

        Returns ``{"position_ids": (4, B, L)}``: row 0 the pruned layout's text positions (attention-mask
        cumsum, what the stock generate() puts there), rows 1-3 the stock (t, h, w) positions. Also sets
        ``model.model.rope_deltas`` (B, 1) as the stock ``get_rope_index`` does (largest position + 1 minus
        the unpadded length) for decode steps that come without position ids.
        """
        if layouts is None or any(layout is None for layout in layouts):
            raise ConfigError("Qwen3-VL places kept tokens at their stock (t, h, w) positions: pass each "
                              "video's layout (PrunedVideo.layout) to generate()")
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        batch, length = ids.shape
        rope = torch.zeros(3, batch, length, dtype=torch.long, device=ids.device)
        deltas = []
        merge = self.config.vision_config.spatial_merge_size
        for b, layout in enumerate(layouts):
            valid = mask[b].bool()
            full_ids, keep = self._full_prompt(ids[b][valid], layout)  # (L_full,), (L_full,) bool
            token_type = (full_ids == self.video_token_id).long()[None] * 2  # video = 2
            full_grid = torch.tensor([[layout["units"], layout["grid"][0] * merge, layout["grid"][1] * merge]],
                                     device=ids.device)  # (1, 3) video_grid_thw in patches
            positions, _ = self.model.model.get_rope_index(full_ids[None], mm_token_type_ids=token_type,
                                                           video_grid_thw=full_grid)
            rope[:, b, valid] = positions[:, 0, keep]
            deltas.append(int(positions.max()) + 1 - int(valid.sum()))
        text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, L)
        self.model.model.rope_deltas = torch.tensor(deltas, device=ids.device).unsqueeze(1)
        return {"position_ids": torch.cat([text[None], rope], dim=0)}

    def _full_prompt(self, pruned_ids: torch.Tensor, layout) -> tuple[torch.Tensor, torch.Tensor]:
        """The unpruned prompt (every pad of every temporal patch) and which of its positions were kept.

        A patch's pads follow its ``<|vision_start|>`` (the one directly followed by a pad or by
        ``<|vision_end|>``; the template's outer ``<|vision_start|>``, kept up to transformers 5.24, is
        followed by a timestamp).
        """
        h, w = layout["grid"]
        per_unit = h * w
        nxt = torch.cat([pruned_ids[1:], pruned_ids.new_full((1,), -1)])
        starts = torch.nonzero((pruned_ids == self.vision_start_id)
                               & ((nxt == self.video_token_id) | (nxt == self.config.vision_end_token_id))).flatten()
        if len(starts) != layout["units"]:
            raise RuntimeError(f"the prompt has {len(starts)} temporal patches but the layout {layout['units']}")
        pieces, keeps, cursor = [], [], 0
        for u, start in enumerate(starts.tolist()):
            kept = torch.as_tensor(layout["kept"][u], dtype=torch.long)
            pieces.append(pruned_ids[cursor:start + 1])
            keeps.append(torch.ones(start + 1 - cursor, dtype=torch.bool))
            pieces.append(pruned_ids.new_full((per_unit,), self.video_token_id))
            unit_keep = torch.zeros(per_unit, dtype=torch.bool)
            unit_keep[kept] = True
            keeps.append(unit_keep)
            cursor = start + 1 + len(kept)
        pieces.append(pruned_ids[cursor:])
        keeps.append(torch.ones(len(pruned_ids) - cursor, dtype=torch.bool))
        full_ids, keep = torch.cat(pieces), torch.cat(keeps).to(pruned_ids.device)
        if not torch.equal(full_ids[keep], pruned_ids):
            raise RuntimeError("the pruned prompt does not match its layout (kept counts per temporal patch)")
        return full_ids, keep


@register_family("qwen3_vl_moe")
class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """The MoE class: the same vision side, DeepStack, prompt and positions; only the decoder's MLPs differ."""

    model_class_name = "Qwen3VLMoeForConditionalGeneration"
