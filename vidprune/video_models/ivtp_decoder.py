"""IVTP wired into a Llama decoder: prune visual tokens after layer k-1, run layers ≥ k on the rest.

``IVTPDecoder(language_model, schedule)`` wraps the ``forward`` of the decoder layers of
**one model instance** (no class is patched; other models in the process are untouched).
Outside a :meth:`IVTPDecoder.session` the wrapped layers behave exactly like the stock ones.

Inside a session, in the prefill forward:

* at every scoring layer j, the instruction rows of layer j's attention are recomputed from
  the layer's input (``input_layernorm`` → ``q_proj`` for instruction rows only, ``k_proj``
  for all rows, the model's own rotary ``position_embeddings``, GQA repeat, causal and
  padding masks): O(n_text · n · d) and no eager attention; every layer keeps SDPA/flash;
* at a pruning layer k the fused scores pick the visual tokens to keep; the hidden states,
  rotary cos/sin and position ids are gathered (kept tokens keep their original positions)
  and re-left-padded per sample; the mask for the new layout is built with transformers'
  own ``create_causal_mask`` from the new layout's 2-D mask and the layer's cache sizes;
* layers ≥ k run on that layout and cache only the kept tokens (``DynamicCache`` holds
  per-layer lengths).

In decode steps, layers < k see the stock mask; each pruned segment gets a mask built from
its own prompt layout plus the generated tokens, sized from its own cache layer.

Mirrors ``LlamaModel.forward`` / ``LlamaDecoderLayer.forward`` of transformers 5.0–5.24: the
model computes one mask, ``position_ids`` and ``position_embeddings`` per forward and hands
them to every layer as keyword arguments, which is what the wrapper replaces. The names of
those internals (the cache keyword changed in 5.24) live in :mod:`.hf_internals`, which
checks them when a wrapper is installed.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from ..pruners.ivtp import IVTPSchedule, instruction_attention_scores, instruction_rows, select_visual_tokens
from .hf_internals import causal_mask, check_ivtp_internals, layer_cache

__all__ = ["IVTPDecoder", "IVTPSession"]


@dataclass
class _Layout:
    """A token layout of the batch: which original positions sit where (left-padded)."""

    start_layer: int
    index: torch.Tensor  # (B, L) long: original position of each slot, -1 for padding
    valid: torch.Tensor  # (B, L) bool
    visual: torch.Tensor  # (B, L) bool
    hidden_pad: Any = None
    position_ids: torch.Tensor | None = None
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None
    mask: Any = None  # the 4-D (or None) mask handed to this layout's layers in the current forward


@dataclass
class IVTPSession:
    """State of one ``generate`` (or forward) call with IVTP. Read the results after the call.

    Attributes:
        schedule: the validated schedule this call prunes with.
        stage_scores: per pruning layer, the fused scores over the visual tokens still
            present, per sample (list of (n,) float tensors), in visual-stream order.
        kept: per sample, the visual-stream indices that survive the last stage (sorted).
        tokens_per_layer: per sample, the number of tokens each decoder layer ran on in prefill.
    """

    schedule: IVTPSchedule
    visual: torch.Tensor  # (B, L0) bool, prompt layout
    valid: torch.Tensor  # (B, L0) bool
    forced_keep: list[list[int]] | None = None
    layouts: list[_Layout] = field(default_factory=list)
    score_sum: torch.Tensor | None = None
    weight_sum: float = 0.0
    stage_scores: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    kept: list[list[int]] = field(default_factory=list)
    tokens_per_layer: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prune_layers = self.schedule.prune_layers
        self.scoring_layers = self.schedule.scoring_layers()

    def summary(self, sample: int) -> dict[str, Any]:
        return {"kept": self.kept[sample], "tokens_per_layer": self.tokens_per_layer[sample]}


class IVTPDecoder:
    """Installs IVTP on one Llama-style ``language_model`` (``.layers``, ``.config``, ``.rotary_emb``).

    Every decoder layer's ``forward`` is wrapped once, on this instance only; the schedule is
    chosen per call (:meth:`session`), so one loaded model serves calls with different
    schedules (or none) without any state that outlives the call. ``schedule`` given here is
    only the default of :meth:`session`.

    ``apply_rotary(q, k, cos, sin) -> (q, k)``: how the model's attention applies the rotary
    tables it is handed (default: ``modeling_llama.apply_rotary_pos_emb``, also right for Qwen2);
    a family whose attention differs passes its own (Qwen2.5-VL: :func:`.hf_internals.qwen_apply_rotary`).
    """

    def __init__(self, language_model: torch.nn.Module, schedule: IVTPSchedule | None = None, apply_rotary=None):
        check_ivtp_internals()  # one line naming the internal if this transformers changed one
        self.language_model = language_model
        self.apply_rotary = apply_rotary or apply_rotary_pos_emb
        self.config = language_model.config
        self.schedule = schedule.validate(self.config.num_hidden_layers) if schedule is not None else None
        self._session: IVTPSession | None = None
        self._originals: dict[int, Any] = {}
        for i in range(self.config.num_hidden_layers):
            layer = language_model.layers[i]
            self._originals[i] = layer.forward
            layer.forward = functools.partial(self._layer_forward, i, layer.forward)

    def remove(self) -> None:
        """Restore the stock layer forwards."""
        for i, original in self._originals.items():
            self.language_model.layers[i].forward = original
        self._originals.clear()

    @contextmanager
    def session(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, visual_token_id: int,
                forced_keep: list[list[int]] | None = None, schedule: IVTPSchedule | None = None):
        """Enable IVTP for the calls inside the ``with`` block (one generate or forward).

        Args:
            input_ids: (B, L) prompt ids; visual positions are ``input_ids == visual_token_id``.
            attention_mask: (B, L) 1 for tokens, 0 for (left) padding; None = no padding.
            forced_keep: instead of scoring, keep these visual-stream indices per sample
                (single-stage schedules; used to check the cache against a cache-free run).
            schedule: the schedule of this call (default: the one given at construction).
        """
        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise ValueError("an IVTP session needs a schedule")
        schedule = schedule.validate(self.config.num_hidden_layers)
        if forced_keep is not None and len(schedule.prune_layers) != 1:
            raise ValueError("forced_keep needs a single-stage IVTP schedule")
        if self._session is not None:
            raise RuntimeError("an IVTP session is already running on this model (one generate at a time)")
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        self._session = IVTPSession(schedule=schedule, visual=input_ids == visual_token_id, valid=valid,
                                    forced_keep=forced_keep)
        try:
            yield self._session
        finally:
            self._session = None

    # ----------------------------------------------------------------- wrapper
    def _layer_forward(self, layer_idx: int, original, hidden_states: torch.Tensor, *args, **kwargs):
        session = self._session
        if session is None:
            return original(hidden_states, *args, **kwargs)
        cache = layer_cache(kwargs)
        prefill = cache is None or cache.get_seq_length(layer_idx) == 0
        if prefill:
            return self._prefill_layer(session, layer_idx, original, hidden_states, args, kwargs)
        return self._decode_layer(session, layer_idx, original, hidden_states, args, kwargs)

    def _prefill_layer(self, s: IVTPSession, i: int, original, hidden: torch.Tensor, args, kwargs):
        if i == min(self._originals):  # a new prefill forward: start from the prompt layout
            self._begin_prefill(s, hidden, first_wrapped=i)
        if len(s.layouts) > 1:  # every layout after the prompt's is a pruned one
            _hand_layout(kwargs, s.layouts[-1])
        if i in s.scoring_layers:
            self._accumulate_scores(s, i, hidden, kwargs["position_embeddings"], s.layouts[-1])
        if i in s.prune_layers:
            hidden = self._prune(s, i, hidden, kwargs)
            _hand_layout(kwargs, s.layouts[-1])
        for b, n in enumerate(s.layouts[-1].valid.sum(dim=1).tolist()):
            s.tokens_per_layer[b].append(int(n))
        return original(hidden, *args, **kwargs)

    def _begin_prefill(self, s: IVTPSession, hidden: torch.Tensor, first_wrapped: int) -> None:
        batch, length = hidden.shape[:2]
        visual, valid = s.visual.to(hidden.device), s.valid.to(hidden.device)
        if batch != visual.shape[0]:  # generate() repeat-interleaves prompts for num_return_sequences / beams
            if batch % visual.shape[0]:
                raise RuntimeError(f"IVTP session has {visual.shape[0]} prompts but the forward got a batch of {batch}")
            repeats = batch // visual.shape[0]
            visual, valid = visual.repeat_interleave(repeats, dim=0), valid.repeat_interleave(repeats, dim=0)
        extra = length - visual.shape[1]
        if extra < 0:
            raise RuntimeError(f"IVTP session prompt has {visual.shape[1]} tokens but the forward got {length}")
        if extra:  # cache-free decoding: generated tokens follow the prompt
            visual = torch.cat([visual, visual.new_zeros(batch, extra)], dim=1)
            valid = torch.cat([valid, valid.new_ones(batch, extra)], dim=1)
        index = torch.arange(length, device=hidden.device).expand(batch, length).masked_fill(~valid, -1)
        s.layouts = [_Layout(start_layer=0, index=index, valid=valid, visual=visual)]
        s.score_sum, s.weight_sum = None, 0.0
        s.stage_scores, s.kept = {}, []
        # the layers below the first wrapped one ran on the whole prompt
        s.tokens_per_layer = [[int(n)] * first_wrapped for n in valid.sum(dim=1).tolist()]

    def _accumulate_scores(self, s: IVTPSession, i: int, hidden: torch.Tensor, position_embeddings, layout: _Layout):
        next_prune = min(k for k in s.prune_layers if k >= i)
        previous = max([k for k in s.prune_layers if k < i], default=-1)
        weight = s.schedule.fusion_weights(next_prune, previous).get(i, 0.0)
        if weight == 0.0 or s.forced_keep is not None:
            return
        scores = layer_instruction_scores(self.language_model.layers[i], hidden, position_embeddings,
                                          layout.visual, layout.valid, apply_rotary=self.apply_rotary)
        s.score_sum = scores * weight if s.score_sum is None else s.score_sum + scores * weight
        s.weight_sum += weight

    def _prune(self, s: IVTPSession, i: int, hidden: torch.Tensor, kwargs) -> torch.Tensor:
        layout = s.layouts[-1]
        batch = hidden.shape[0]
        original_visual = s.layouts[0].visual  # visual positions of the prompt layout
        if s.forced_keep is not None:
            keep = ~layout.visual.clone()
            for b in range(batch):
                positions = torch.nonzero(original_visual[b]).flatten()[torch.as_tensor(s.forced_keep[b], dtype=torch.long)]
                keep[b] |= torch.isin(layout.index[b], positions.to(layout.index.device))
        else:
            fused = s.score_sum / s.weight_sum
            s.stage_scores[i] = [fused[b][layout.visual[b]] for b in range(batch)]
            keep = select_visual_tokens(fused, layout.visual, s.schedule.keep_ratio_at(i))
            s.score_sum, s.weight_sum = None, 0.0
        keep &= layout.valid
        counts = keep.sum(dim=1)
        new_len = int(counts.max())
        # slot -> source slot in the current layout, left-padded per sample (order preserved)
        src = torch.full((batch, new_len), -1, dtype=torch.long, device=hidden.device)
        for b in range(batch):
            kept_slots = torch.nonzero(keep[b]).flatten()
            src[b, new_len - len(kept_slots):] = kept_slots
        pad = src < 0
        gather = src.clamp_min(0)
        new_hidden = torch.gather(hidden, 1, gather[..., None].expand(-1, -1, hidden.shape[-1])).masked_fill(pad[..., None], 0)
        position_embeddings = tuple(_gather_rotary(table, gather, batch) for table in kwargs["position_embeddings"])
        position_ids = kwargs.get("position_ids")
        if position_ids is not None:
            position_ids = torch.gather(position_ids.expand(batch, -1), 1, gather).masked_fill(pad, 0)
        new = _Layout(
            start_layer=i,
            index=torch.gather(layout.index, 1, gather).masked_fill(pad, -1),
            valid=~pad,
            visual=torch.gather(layout.visual, 1, gather) & ~pad,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
        )
        new.mask = causal_mask(
            config=self.config, inputs_embeds=new_hidden, attention_mask=new.valid.long(),
            cache=layer_cache(kwargs), position_ids=position_ids, layer_idx=i,
        )
        s.layouts.append(new)
        self._record_kept(s, new)
        return new_hidden

    @staticmethod
    def _record_kept(s: IVTPSession, layout: _Layout) -> None:
        original_visual = s.layouts[0].visual
        s.kept = []
        for b in range(layout.index.shape[0]):
            positions = layout.index[b][layout.visual[b]]
            visual_positions = torch.nonzero(original_visual[b]).flatten()
            s.kept.append(torch.searchsorted(visual_positions, positions).tolist())

    def _decode_layer(self, s: IVTPSession, i: int, original, hidden: torch.Tensor, args, kwargs):
        pruned = [lay for lay in s.layouts[1:] if lay.start_layer <= i]
        if not pruned:
            return original(hidden, *args, **kwargs)
        layout = pruned[-1]
        cache = layer_cache(kwargs)
        if i == layout.start_layer:  # first layer of the segment in this step: build its mask once
            new_tokens = cache.get_seq_length(i) - layout.valid.shape[1] + hidden.shape[1]
            mask_2d = torch.cat([layout.valid, layout.valid.new_ones(hidden.shape[0], new_tokens)], dim=1)
            layout.mask = causal_mask(
                config=self.config, inputs_embeds=hidden, attention_mask=mask_2d.long(), cache=cache,
                position_ids=kwargs.get("position_ids"), layer_idx=i,
            )
        kwargs["attention_mask"] = layout.mask
        return original(hidden, *args, **kwargs)


def _gather_rotary(table: torch.Tensor, gather: torch.Tensor, batch: int) -> torch.Tensor:
    """Rotary cos or sin ((B or 1, L, hd), or (3, B or 1, L, hd) for multimodal rotary) at ``gather`` (B, L')."""
    lead = table.shape[:-3]  # () or (3,)
    table = table.expand(*lead, batch, -1, -1)
    index = gather[..., None].expand(*lead, -1, -1, table.shape[-1])
    return torch.gather(table, -2, index)


def _hand_layout(kwargs: dict, layout: _Layout) -> None:
    """Give a decoder layer the mask, position ids and rotary cos/sin of a pruned layout."""
    kwargs.update(attention_mask=layout.mask, position_ids=layout.position_ids,
                  position_embeddings=layout.position_embeddings)


@torch.no_grad()
def layer_instruction_scores(layer: torch.nn.Module, hidden: torch.Tensor,
                             position_embeddings: tuple[torch.Tensor, torch.Tensor],
                             visual: torch.Tensor, valid: torch.Tensor, apply_rotary=apply_rotary_pos_emb) -> torch.Tensor:
    """Scores of one decoder layer: mean attention from the instruction rows, recomputed from the layer input.

    Args:
        layer: a ``LlamaDecoderLayer`` (``input_layernorm``, ``self_attn`` with q/k projections).
        hidden: (B, L, D) the layer's input.
        position_embeddings: (cos, sin), each (B or 1, L, hd) (or (3, B or 1, L, hd)), as the model hands
            them to the layer.
        visual, valid: (B, L) bool masks of the current layout.
        apply_rotary: ``fn(q, k, cos, sin) -> (q, k)`` as the layer's attention applies the tables.

    Returns:
        (B, L) float32 scores (meaningful at visual positions).
    """
    attn = layer.self_attn
    batch, length, _ = hidden.shape
    rows = instruction_rows(visual, valid)  # (B, L)
    has_rows = rows.any(dim=0)
    start = int(torch.nonzero(has_rows).min()) if bool(has_rows.any()) else length - 1
    normed = layer.input_layernorm(hidden)
    head_dim = attn.head_dim
    query = attn.q_proj(normed[:, start:]).view(batch, length - start, -1, head_dim).transpose(1, 2)  # (B, H, T, hd)
    key = attn.k_proj(normed).view(batch, length, -1, head_dim).transpose(1, 2)  # (B, KVH, L, hd)
    cos, sin = position_embeddings
    query, _ = apply_rotary(query, query, cos[..., start:, :], sin[..., start:, :])
    _, key = apply_rotary(key, key, cos, sin)
    key = repeat_kv(key, attn.num_key_value_groups)  # (B, H, L, hd)
    positions = torch.arange(length, device=hidden.device)
    causal = positions[None, :] <= positions[start:, None]  # (T, L)
    allowed = causal[None] & valid[:, None, :]  # (B, T, L)
    return instruction_attention_scores(query, key, attn.scaling, allowed, rows[:, start:])
