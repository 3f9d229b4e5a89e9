"""An independent IVTP reference: a hand-written loop over the stock decoder layers of a fresh model.

Nothing here imports :mod:`vidprune.video_models.ivtp_decoder` or :mod:`vidprune.pruners.ivtp`.
The reference model is loaded again with ``from_pretrained(..., attn_implementation="eager")``
and runs, for one batch of prompts (left-padded) and a schedule ((k1, r1), (k2, r2), ...):

* the stock token embeddings with the visual rows at the ``<video>`` placeholders;
* DeepStack (Qwen3-VL): the rows hold the main merger's row and one row per DeepStack level side
  by side; as the stock ``Qwen3VLTextModel`` does, level i is added to the hidden states at the
  visual tokens after decoder layer i, for the first ``len(levels)`` layers (each visual token
  still present gets its own level row, found by its original position);
* every decoder layer called one by one (``LlamaDecoderLayer.forward``), with rotary cos/sin
  from the model's own ``rotary_emb`` at the tokens' ORIGINAL position ids and an additive
  causal + padding mask built here by hand for the current layout (the whole sequence
  below k1, the kept rows after); ``test_the_reference_loop_...`` checks that this loop
  with nothing dropped equals the stock model forward;
* at each stage k: score each visual token still present by the mean, over heads and over
  the prompt tokens after the last visual token, of layer k's attention probabilities from
  the stock eager ``self_attn`` (what ``output_attentions`` returns); keep the top
  ``ceil(r · n)`` (ties to the lower index); gather the kept rows (text rows always stay)
  and left-pad again per sample;
* the stock final norm and ``lm_head``.

Decode steps are recomputed cache-free: the prompt plus the tokens generated so far run
through the same loop with the kept sets of the prefill (IVTP scores once, in prefill).

Positions follow ``generate()``: ``cumsum(attention_mask) - 1`` (0 at padding), generated
tokens continue from the last one. Families with multimodal rotary positions (Qwen2.5-VL's
mRoPE) are handed their (t, h, w) position rows (the stock ``get_rope_index``'s, which
``tests/test_models_qwen.py`` checks vidprune's against); the model's own ``rotary_emb`` turns
them into cos/sin (Qwen3-VL's interleaved mRoPE in its ``rotary_emb``), and each decoder layer gets the
text row as its ``position_ids``; the decoder layers' own attention holds Qwen3's q/k norm. The reference never passes a KV cache, so it is
independent of the cache keyword (``past_key_values`` up to transformers 5.23, ``cache``
from 5.24): every layer is called with ``use_cache=False`` and no cache argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["IVTPReference", "ReferenceRun"]


@dataclass
class ReferenceRun:
    """One reference forward.

    Attributes:
        logits: (B, L', V) logits of the final layout (left-padded, right-aligned).
        kept_positions: per stage, per sample, the sorted original positions of the visual
            tokens kept at that stage.
        kept_stream: per sample, visual-stream indices (0..n_visual-1) kept after the last stage.
        tokens_per_layer: per sample, tokens each decoder layer ran on.
    """

    logits: torch.Tensor
    kept_positions: list[list[list[int]]]
    kept_stream: list[list[int]]
    tokens_per_layer: list[list[int]]


def _layer_output(out):
    return out[0] if isinstance(out, tuple) else out  # tuple before transformers 5.x layers returned a tensor


class IVTPReference:
    """The reference, on freshly loaded models (float32 unless told).

    Two loads of the checkpoint: ``model`` (SDPA) runs the layers, ``eager`` gives the
    attention probabilities that choose the kept rows (its ``self_attn`` on the same layer
    input). MoE decoders (Qwen3-VL-MoE) run their experts one by one (``experts_implementation="eager"``:
    torch's grouped_mm has no float64). Eager attention takes its softmax in float32 even for float64 weights, which is
    enough to rank tokens but would limit the logits comparison to float32 rounding.
    """

    def __init__(self, checkpoint: str, dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForImageTextToText

        def load(attn: str):
            return AutoModelForImageTextToText.from_pretrained(checkpoint, attn_implementation=attn, dtype=dtype,
                                                               experts_implementation="eager").eval()

        self.model, self.eager = load("sdpa"), load("eager")
        self.video_token_id = self.model.config.video_token_id
        self.decoder = self.model.model.language_model  # the stock LlamaModel
        self.num_layers = self.decoder.config.num_hidden_layers
        vision = getattr(self.model.config, "vision_config", None)
        self.deepstack_levels = len(getattr(vision, "deepstack_visual_indexes", None) or [])  # Qwen3-VL: 2 (tiny)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Pre-projector rows (K, Dv) -> (K, D) with the fresh model's own projector.

        LLaVA-OneVision pools *after* its projector, so its stream already holds the stock
        projected-then-pooled rows (K, D): they are handed on as they are; so do the Qwen families
        (the merger's rows; Qwen3-VL: (K, D·(1 + DeepStack levels)), the main row and every level's side by side).
        """
        if self.model.config.model_type in ("llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
            return features
        with torch.no_grad():
            return self.model.model.multi_modal_projector(features)

    # ------------------------------------------------------------------ helpers
    def _additive_mask(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, L) bool -> (B, 1, L, L) additive mask: key j visible to query i iff j <= i and j is a token.

        A padding row sees only itself, so that no row is fully masked (eager attention takes
        its softmax in float32, where a fully masked float64 row would give NaN); padding
        rows are never read, and no token row sees a padding key.
        """
        length = valid.shape[1]
        slots = torch.arange(length)
        allowed = (slots[None, :] <= slots[:, None])[None] & valid[:, None, :]  # (B, L, L)
        allowed |= torch.eye(length, dtype=torch.bool)[None] & ~valid[:, :, None]
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

    @staticmethod
    def _scores(attn: torch.Tensor, visual: torch.Tensor, valid: torch.Tensor, prompt_length: int,
                index: torch.Tensor, b: int) -> torch.Tensor:
        """Mean over heads and instruction rows of sample b's attention (H, L, L) at its visual slots."""
        vis_slots = torch.nonzero(visual[b]).flatten()
        last_visual = int(vis_slots.max())
        rows = torch.nonzero(valid[b] & (torch.arange(visual.shape[1]) > last_visual)
                             & (index[b] < prompt_length)).flatten()
        return attn[:, rows][:, :, vis_slots].mean(dim=0).mean(dim=0)  # (n_visual,)

    # ---------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual_rows: torch.Tensor,
                stages: list[tuple[int, float]], prompt_length: int | None = None,
                kept_positions: list[list[list[int]]] | None = None,
                rope_positions: torch.Tensor | None = None) -> ReferenceRun:
        """Run the reference on (B, L) ids (left-padded), returning logits and kept sets.

        Args:
            visual_rows: (sum K_b, D) projected visual rows of all samples in batch order; with
                DeepStack (sum K_b, D·(1 + levels)): the main row, then each level's row.
            stages: ((k, keep_ratio), ...); empty: every layer on the whole sequence.
            prompt_length: columns of ``input_ids`` that are the prompt (the rest: generated
                tokens, never instruction rows); default all.
            kept_positions: force these kept sets (per stage, per sample, original positions)
                instead of scoring, as the decode steps do.
            rope_positions: (3, B, L) multimodal rotary positions (Qwen2.5-VL's t, h, w rows);
                None: the text positions drive the rotary (Llama).
        """
        batch, length = input_ids.shape
        prompt_length = length if prompt_length is None else prompt_length
        valid = attention_mask.bool()
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(~valid, 0)  # as generate() makes them
        # (R, B, L) rows handed to rotary_emb: the text row (R=1), or the t, h, w rows (R=3)
        rope = position_ids[None] if rope_positions is None else rope_positions.clone()
        visual = (input_ids == self.video_token_id) & valid
        hidden = self.model.get_input_embeddings()(input_ids)  # (B, L, D)
        main, *deepstack = visual_rows.to(hidden.dtype).split(hidden.shape[-1], dim=-1)  # (sum K_b, D) each
        if len(deepstack) != self.deepstack_levels:
            raise ValueError(f"{len(deepstack)} DeepStack levels in the rows, the model has {self.deepstack_levels}")
        hidden[visual] = main  # the visual rows at the <video> placeholders, batch order
        index = torch.arange(length).expand(batch, length).masked_fill(~valid, -1)  # original slot of each slot
        prompt_visual = [torch.nonzero(visual[b]).flatten() for b in range(batch)]
        first_row = [sum(len(v) for v in prompt_visual[:b]) for b in range(batch)]  # sample b's first row in visual_rows
        tokens_per_layer: list[list[int]] = [[] for _ in range(batch)]
        all_kept: list[list[list[int]]] = []
        stage_of = dict(stages)
        for i, layer in enumerate(self.decoder.layers):
            pe = self._rotary(hidden, rope)  # the stock rotary at the ORIGINAL positions
            mask = self._additive_mask(valid, hidden.dtype)
            if i in stage_of:
                if kept_positions is not None:
                    kept_now = kept_positions[len(all_kept)]
                else:  # the stock eager attention module's probabilities (what output_attentions returns)
                    eager = self.eager.model.language_model.layers[i]
                    _, attn = eager.self_attn(hidden_states=eager.input_layernorm(hidden), attention_mask=mask,
                                              position_ids=position_ids, position_embeddings=pe)  # (B, H, L, L)
                    kept_now = []
                    for b in range(batch):
                        scores = self._scores(attn[b], visual, valid, prompt_length, index, b)
                        vis_slots = torch.nonzero(visual[b]).flatten()
                        n_keep = math.ceil(stage_of[i] * len(vis_slots) - 1e-9)
                        top = torch.argsort(scores, descending=True, stable=True)[:n_keep]
                        kept_now.append(sorted(index[b, vis_slots[top]].tolist()))
                all_kept.append(kept_now)
                hidden, index, visual, valid, position_ids, rope = self._keep(hidden, index, visual, valid,
                                                                              position_ids, rope, kept_now)
                pe = self._rotary(hidden, rope)
                mask = self._additive_mask(valid, hidden.dtype)
            for b, n in enumerate(valid.sum(1).tolist()):
                tokens_per_layer[b].append(int(n))
            hidden = _layer_output(layer(hidden, attention_mask=mask, position_ids=position_ids,
                                         position_embeddings=pe, use_cache=False))
            if i < len(deepstack):  # DeepStack level i at the visual tokens still present, after layer i
                hidden = hidden.clone()
                for b in range(batch):
                    slots = torch.nonzero(visual[b]).flatten()
                    stream = torch.searchsorted(prompt_visual[b], index[b, slots])
                    hidden[b, slots] = hidden[b, slots] + deepstack[i][first_row[b] + stream]
        logits = self.model.lm_head(self.decoder.norm(hidden))
        kept_stream = [torch.searchsorted(prompt_visual[b], torch.tensor(all_kept[-1][b], dtype=torch.long)).tolist()
                       for b in range(batch)] if all_kept else []
        return ReferenceRun(logits, all_kept, kept_stream, tokens_per_layer)

    def _rotary(self, hidden: torch.Tensor, rope: torch.Tensor):
        return self.decoder.rotary_emb(hidden, rope[0] if rope.shape[0] == 1 else rope)

    @staticmethod
    def _keep(hidden, index, visual, valid, position_ids, rope, kept_now):
        """Drop the visual slots whose original position is not in ``kept_now[b]``; left-pad again."""
        batch = hidden.shape[0]
        keep = [valid[b] & (~visual[b] | torch.isin(index[b], torch.tensor(kept_now[b], dtype=torch.long)))
                for b in range(batch)]
        new_len = max(int(k.sum()) for k in keep)
        out_h = hidden.new_zeros(batch, new_len, hidden.shape[-1])
        out_index = torch.full((batch, new_len), -1, dtype=torch.long)
        out_visual = torch.zeros(batch, new_len, dtype=torch.bool)
        out_valid = torch.zeros(batch, new_len, dtype=torch.bool)
        out_pos = torch.zeros(batch, new_len, dtype=torch.long)
        out_rope = torch.zeros(rope.shape[0], batch, new_len, dtype=torch.long)
        for b in range(batch):
            slots = torch.nonzero(keep[b]).flatten()
            n = len(slots)
            out_h[b, new_len - n:] = hidden[b, slots]
            out_index[b, new_len - n:] = index[b, slots]
            out_visual[b, new_len - n:] = visual[b, slots]
            out_valid[b, new_len - n:] = True
            out_pos[b, new_len - n:] = position_ids[b, slots]
            out_rope[:, b, new_len - n:] = rope[:, b, slots]
        return out_h, out_index, out_visual, out_valid, out_pos, out_rope

    # ----------------------------------------------------------------- decode
    @torch.no_grad()
    def greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual_rows: torch.Tensor,
               stages: list[tuple[int, float]], steps: int, suppress: tuple[int, ...] = (),
               rope_positions: torch.Tensor | None = None):
        """Greedy decoding, every step recomputing the whole (pruned) sequence without a cache.

        ``suppress``: token ids never chosen (as ``generate(suppress_tokens=...)``); the logits
        returned are the raw ones.

        Returns (prefill run, per-step last-row logits [(B, V)] * steps, generated ids (B, steps)).
        """
        prompt_length = input_ids.shape[1]
        first = self.forward(input_ids, attention_mask, visual_rows, stages, rope_positions=rope_positions)
        rope = rope_positions
        step_logits = [first.logits[:, -1]]
        ids, mask = input_ids, attention_mask
        generated = []
        for _ in range(steps):
            scores = step_logits[-1].clone()
            scores[:, list(suppress)] = float("-inf")
            nxt = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
            generated.append(nxt)
            if len(generated) == steps:
                break
            ids = torch.cat([ids, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            if rope is not None:  # generated tokens continue from the last position, in every row
                rope = torch.cat([rope, rope[..., -1:] + 1], dim=-1)
            run = self.forward(ids, mask, visual_rows, stages, prompt_length=prompt_length,
                               kept_positions=first.kept_positions or None, rope_positions=rope)
            step_logits.append(run.logits[:, -1])
        return first, step_logits, torch.cat(generated, dim=1)
