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

**A prefix shared by every prompt of a batch** (several questions about one video) runs the
layers below the first pruning layer k1 once: they are causal, so the prefix's keys, values
and hidden states there do not depend on what follows it. :meth:`IVTPDecoder.prefill_prefix`
runs the prefix through layers < k1 into the cache and keeps its hidden states entering k1
(and entering every scoring layer ≤ k1) with its positions and rotary tables, then stops the
forward: no layer ≥ k1 runs or caches the prefix. A :meth:`IVTPDecoder.session` given that
:class:`IVTPPrefix` takes prompts whose first P tokens are the prefix (its cache rows repeated
per prompt): layers < k1 run only the prompts' own tokens against the cached prefix, and where
IVTP needs the whole prompt (scoring layers ≤ k1, the pruning at k1) the prefix's rows are put
back in front of them, so everything from the first score on runs exactly as for the whole prompt.

Mirrors ``LlamaModel.forward`` / ``LlamaDecoderLayer.forward`` of transformers 5.0–5.25: the
model computes one mask, ``position_ids`` and ``position_embeddings`` per forward and hands
them to every layer as keyword arguments, which is what the wrapper replaces. The names of
those internals (the cache keyword changed in 5.24) live in :mod:`.hf_internals`, which
checks them when a wrapper is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from ..pruners.ivtp import IVTPSchedule, instruction_attention_scores, instruction_rows, select_visual_tokens
from .hf_internals import causal_mask, check_ivtp_internals, layer_cache

__all__ = ["IVTPDecoder", "IVTPPrefix", "IVTPSession"]


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
class IVTPPrefix:
    """A prompt prefix run once through the layers below the first pruning layer (:meth:`IVTPDecoder.prefill_prefix`).

    Its keys and values for those layers are in the cache the prefill was given; this holds what
    IVTP needs of it at the layers that see the whole prompt.

    Attributes:
        length: P, the prefix's tokens (the first P of every prompt of the session that uses it).
        first_prune_layer: k1; the cache holds the prefix in layers 0..k1-1 only.
        layers: the layers ≤ k1 that score or prune, i.e. that see the whole prompt.
        hidden: {layer: (1, P, D)} the prefix's hidden states entering each of ``layers``.
        position_ids: (1, P) the position ids the layers received (None where the model hands none).
        position_embeddings: the rotary (cos, sin) the layers received, each (1, P, hd)
            (or (3, 1, P, hd) for multimodal rotary).
    """

    length: int
    first_prune_layer: int
    layers: frozenset[int]
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    position_ids: torch.Tensor | None = None
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

    def cached_tokens(self, layer: int) -> int:
        """Tokens of the prefix in ``layer``'s cache before the session's prefill (P below k1, else 0)."""
        return self.length if layer < self.first_prune_layer else 0

    def in_front_of(self, layer: int, hidden: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
        """The prompts' rows entering ``layer`` (B, L-P, D) with the prefix's rows put in front: (B, L, D).

        Returns the whole prompts' hidden states and a copy of the layer's keyword arguments
        whose ``position_ids`` and ``position_embeddings`` cover the whole prompts too.
        """
        batch = hidden.shape[0]
        whole = torch.cat([self.hidden[layer].expand(batch, -1, -1), hidden], dim=1)
        rotary = tuple(torch.cat([_batched(p, batch), _batched(q, batch)], dim=-2)
                       for p, q in zip(self.position_embeddings, kwargs["position_embeddings"]))
        own_ids = kwargs.get("position_ids")
        ids = (None if own_ids is None or self.position_ids is None
               else torch.cat([self.position_ids.expand(batch, -1), own_ids.expand(batch, -1)], dim=-1))
        return whole, {**kwargs, "position_ids": ids, "position_embeddings": rotary}


class _PrefixDone(Exception):
    """Raised at the first pruning layer while a prefix is prefilled: the layers from there on need the question."""


@dataclass
class IVTPSession:
    """State of one ``generate`` (or forward) call with IVTP. Read the results after the call.

    Attributes:
        schedule: the validated schedule this call prunes with.
        stage_scores: per pruning layer, the fused scores over the visual tokens still
            present, per sample (list of (n,) float tensors), in visual-stream order.
        kept: per sample, the visual-stream indices that survive the last stage (sorted).
        tokens_per_layer: per sample, the number of tokens each decoder layer ran on in prefill
            (the prompt's own layout: with a prefilled prefix, layers < k1 count its P tokens,
            which ran once for every prompt, so the counts and FLOPs are those of the prompt alone).
    """

    schedule: IVTPSchedule
    visual: torch.Tensor  # (B, L0) bool, prompt layout
    valid: torch.Tensor  # (B, L0) bool
    forced_keep: list[list[int]] | None = None
    prefix: IVTPPrefix | None = None
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

    def cached_tokens(self, layer: int) -> int:
        """Tokens in ``layer``'s cache when the prefill forward reaches it (the shared prefix's, or 0)."""
        return 0 if self.prefix is None else self.prefix.cached_tokens(layer)


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
        self._recording: IVTPPrefix | None = None
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
                forced_keep: list[list[int]] | None = None, schedule: IVTPSchedule | None = None,
                prefix: IVTPPrefix | None = None):
        """Enable IVTP for the calls inside the ``with`` block (one generate or forward).

        Args:
            input_ids: (B, L) prompt ids; visual positions are ``input_ids == visual_token_id``.
            attention_mask: (B, L) 1 for tokens, 0 for (left) padding; None = no padding.
            forced_keep: instead of scoring, keep these visual-stream indices per sample
                (single-stage schedules; used to check the cache against a cache-free run).
            schedule: the schedule of this call (default: the one given at construction).
            prefix: the first ``prefix.length`` tokens of every prompt, already run through the
                layers below the first pruning layer (:meth:`prefill_prefix`, same schedule); the
                forward's cache holds them there, and the forward runs on the rest of the prompts.
        """
        schedule = self._schedule(schedule)
        if prefix is not None and prefix.first_prune_layer != schedule.prune_layers[0]:
            raise ValueError(f"the prefix was prefilled up to layer {prefix.first_prune_layer}, "
                             f"the schedule prunes first at {schedule.prune_layers[0]}")
        if forced_keep is not None and len(schedule.prune_layers) != 1:
            raise ValueError("forced_keep needs a single-stage IVTP schedule")
        if self._session is not None:
            raise RuntimeError("an IVTP session is already running on this model (one generate at a time)")
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        self._session = IVTPSession(schedule=schedule, visual=input_ids == visual_token_id, valid=valid,
                                    forced_keep=forced_keep, prefix=prefix)
        try:
            yield self._session
        finally:
            self._session = None

    def _schedule(self, schedule: IVTPSchedule | None) -> IVTPSchedule:
        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise ValueError("an IVTP session needs a schedule")
        return schedule.validate(self.config.num_hidden_layers)

    def prefill_prefix(self, forward: Callable[[], Any], length: int, schedule: IVTPSchedule | None = None) -> IVTPPrefix:
        """Run a prompt prefix through the layers below the schedule's first pruning layer k1, once.

        Args:
            forward: ``forward()`` runs the model on the prefix alone (batch 1, P tokens, no
                padding) with a KV cache; it is stopped when it reaches layer k1, so only layers
                < k1 run (and cache the prefix), and nothing after them (no final norm, no logits).
            length: P, the prefix's tokens.
            schedule: the schedule of the sessions that will use the prefix (default: the one
                given at construction).

        Returns:
            The :class:`IVTPPrefix` to hand to :meth:`session` (its cache rows repeated per prompt).
        """
        schedule = self._schedule(schedule)
        first = schedule.prune_layers[0]
        if self._session is not None or self._recording is not None:
            raise RuntimeError("an IVTP session is already running on this model (one generate at a time)")
        self._recording = IVTPPrefix(length=length, first_prune_layer=first,
                                     layers=frozenset(j for j in schedule.scoring_layers() | {first} if j <= first))
        try:
            forward()
        except _PrefixDone:
            pass
        finally:
            prefix, self._recording = self._recording, None
        if first not in prefix.hidden:
            raise RuntimeError(f"the prefix forward never reached decoder layer {first}")
        return prefix

    # ----------------------------------------------------------------- wrapper
    def _layer_forward(self, layer_idx: int, original, hidden_states: torch.Tensor, *args, **kwargs):
        if self._recording is not None:
            return self._record_prefix_layer(self._recording, layer_idx, original, hidden_states, args, kwargs)
        session = self._session
        if session is None:
            return original(hidden_states, *args, **kwargs)
        cache = layer_cache(kwargs)
        if cache is None and session.prefix is not None:
            raise RuntimeError("an IVTP session with a prefilled prefix needs the forward's KV cache")
        prefill = cache is None or cache.get_seq_length(layer_idx) == session.cached_tokens(layer_idx)
        if prefill:
            return self._prefill_layer(session, layer_idx, original, hidden_states, args, kwargs)
        return self._decode_layer(session, layer_idx, original, hidden_states, args, kwargs)

    def _prefill_layer(self, s: IVTPSession, i: int, original, hidden: torch.Tensor, args, kwargs):
        if i == min(self._originals):  # a new prefill forward: start from the prompt layout
            self._begin_prefill(s, hidden, first_wrapped=i)
        if len(s.layouts) > 1:  # every layout after the prompt's is a pruned one
            _hand_layout(kwargs, s.layouts[-1])
        # IVTP sees whole prompts: below k1 a prefilled prefix ran apart from the prompts' own rows, so
        # scoring layers ≤ k1 and the pruning at k1 get its rows put back in front (above k1 the
        # pruned layout already holds the prefix's kept rows)
        whole, whole_kwargs = hidden, kwargs
        if s.prefix is not None and i <= s.prefix.first_prune_layer and (i in s.scoring_layers or i in s.prune_layers):
            whole, whole_kwargs = s.prefix.in_front_of(i, hidden, kwargs)
        if i in s.scoring_layers:
            self._accumulate_scores(s, i, whole, whole_kwargs["position_embeddings"], s.layouts[-1])
        if i in s.prune_layers:
            hidden = self._prune(s, i, whole, whole_kwargs)
            _hand_layout(kwargs, s.layouts[-1])
        for b, n in enumerate(s.layouts[-1].valid.sum(dim=1).tolist()):
            s.tokens_per_layer[b].append(int(n))
        return original(hidden, *args, **kwargs)

    def _record_prefix_layer(self, p: IVTPPrefix, i: int, original, hidden: torch.Tensor, args, kwargs):
        if i == min(self._originals):  # the positions and rotary tables every layer of this forward receives
            p.position_ids, p.position_embeddings = kwargs.get("position_ids"), kwargs["position_embeddings"]
        if i in p.layers:
            p.hidden[i] = hidden  # (1, P, D)
        if i == p.first_prune_layer:
            raise _PrefixDone
        return original(hidden, *args, **kwargs)

    def _begin_prefill(self, s: IVTPSession, hidden: torch.Tensor, first_wrapped: int) -> None:
        batch = hidden.shape[0]
        length = hidden.shape[1] + s.cached_tokens(first_wrapped)  # a prefilled prefix's tokens come first
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
    table = _batched(table, batch)
    index = gather[..., None].expand(*table.shape[:-3], -1, -1, table.shape[-1])
    return torch.gather(table, -2, index)


def _batched(table: torch.Tensor, batch: int) -> torch.Tensor:
    """Rotary cos or sin ((B or 1, L, hd), or (3, B or 1, L, hd)) with its batch dimension expanded to ``batch``."""
    return table.expand(*table.shape[:-3], batch, -1, -1)


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
    query = attn.q_proj(normed[:, start:]).view(batch, length - start, -1, head_dim)  # (B, T, H, hd)
    key = attn.k_proj(normed).view(batch, length, -1, head_dim)  # (B, L, KVH, hd)
    if getattr(attn, "q_norm", None) is not None:  # per-head RMSNorm of q and k (Qwen3VLTextAttention.forward, 5.24)
        query, key = attn.q_norm(query), attn.k_norm(key)
    query, key = query.transpose(1, 2), key.transpose(1, 2)  # (B, H, T, hd), (B, KVH, L, hd)
    cos, sin = position_embeddings
    query, _ = apply_rotary(query, query, cos[..., start:, :], sin[..., start:, :])
    _, key = apply_rotary(key, key, cos, sin)
    key = repeat_kv(key, attn.num_key_value_groups)  # (B, H, L, hd)
    positions = torch.arange(length, device=hidden.device)
    causal = positions[None, :] <= positions[start:, None]  # (T, L)
    allowed = causal[None] & valid[:, None, :]  # (B, T, L)
    return instruction_attention_scores(query, key, attn.scaling, allowed, rows[:, start:])
