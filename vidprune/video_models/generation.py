"""The language side of a :class:`~vidprune.video_models.base.VideoLLM`: prompts, tokens, and
generation, where **the pruned visual tokens enter the LLM** (:meth:`VideoLLMGeneration.generate`),
with the video's prompt prefix prefilled once for several questions
(:meth:`VideoLLMGeneration.generate_about_one_video`).

A mixin: it reads ``self.model``, ``self.processor``, ``self.video_token``, ``self.video_token_id``
and the IVTP schedule (``self.default_ivtp``, ``self.ivtp_decoder()``) that
:class:`~vidprune.video_models.base.VideoLLM` sets up.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..errors import ModelLoadError
from .datatypes import GenerationOutput

__all__ = ["VideoLLMGeneration"]

_DEFAULT = object()  # "not given" for keyword arguments whose None means "off"


class VideoLLMGeneration:
    """Prompts, tokenization and generation of a video LLM fed a pruned visual stream."""

    def build_prompt(self, question: str) -> str:
        """The checkpoint's chat template applied to one user turn: the video, then the question."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        if getattr(self.processor, "chat_template", None) is None:
            raise ModelLoadError(
                f"the processor of {self.name_or_path!r} has no chat template; save one with the processor"
            )
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        if prompt.count(self.video_token) != 1:
            raise ModelLoadError(
                f"the chat template of {self.name_or_path!r} must place exactly one {self.video_token} "
                f"for one video, it placed {prompt.count(self.video_token)}"
            )
        return prompt

    def video_placeholder(self, count: int, layout: Any = None) -> str:
        """The prompt text that stands for one video's ``count`` kept rows: ``<video>`` ``count`` times.

        Families whose prompt marks the video's structure (Qwen3-VL: per temporal patch a timestamp and
        its kept pads between vision start/end) build it from ``layout`` (``PrunedVideo.layout``).
        """
        return self.video_token * count

    def tokenize(self, prompts: list[str], visual_counts: list[int], layouts: list | None = None) -> dict[str, torch.Tensor]:
        """Tokenize prompts, each ``<video>`` expanded to that sample's kept-token count; left padding.

        ``layouts``: per sample, ``PrunedVideo.layout`` (for :meth:`video_placeholder`), or None.
        Returns ``input_ids`` and ``attention_mask`` (B, L) on the model's device.
        """
        layouts = [None] * len(prompts) if layouts is None else layouts
        texts = [p.replace(self.video_token, self.video_placeholder(k, layout))
                 for p, k, layout in zip(prompts, visual_counts, layouts)]
        tok = self.processor.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok(texts, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = old_side
        got = (enc["input_ids"] == self.video_token_id).sum(dim=1).tolist()
        if got != list(visual_counts):
            raise RuntimeError(f"placeholder counts {got} differ from kept-token counts {list(visual_counts)}")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def video_encoder_output(self, visual_tokens: list[torch.Tensor]):
        """The kept rows as the ``mm_encoder_outputs["video"]`` the model's forward reads.

        LLaVA families: ``pooler_output`` (1, sum K_i, D), all samples' rows in batch order.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        rows = torch.cat([t.to(self.device) for t in visual_tokens], dim=0)  # (sum K_i, D) on the LLM's first device
        return BaseModelOutputWithPooling(pooler_output=rows.unsqueeze(0))

    def position_inputs(self, inputs: dict[str, torch.Tensor], layouts) -> dict[str, torch.Tensor]:
        """Extra ``generate()`` inputs that place the kept tokens (none: 1-D positions follow the sequence).

        Families with multimodal rotary positions (Qwen2.5-VL) return the stock positions of the
        kept tokens here, from ``layouts`` (per sample, what :class:`PrunedVideo.layout` holds).
        """
        return {}

    @torch.no_grad()
    def generate(self, prompts: list[str], visual_tokens: list[torch.Tensor], layouts: list | None = None, *,
                 ivtp: Any = _DEFAULT, **generate_kwargs) -> GenerationOutput:
        """Generate answers. **The pruned visual tokens enter the LLM here.**

        Args:
            prompts: one chat-formatted prompt per sample, each with one ``<video>``.
            visual_tokens: per sample, (K_i, D) projected visual tokens in stream order
                (temporal, then raster inside a frame). K_i may differ between samples.
            layouts: per sample, where the kept tokens sit in the stock grid (``PrunedVideo.layout``);
                needed by families with multimodal rotary positions (Qwen2.5-VL), ignored by the others.
            ivtp: the :class:`~vidprune.pruners.ivtp.IVTPSchedule` of this call, None for no
                in-LLM pruning (default: the schedule the model was loaded with, if any).
            generate_kwargs: passed to ``model.generate`` (``max_new_tokens``, ``do_sample``,
                ``streamer``, ``stopping_criteria``...).

        Returns:
            :class:`GenerationOutput`: per sample the generated ids (prompt removed, stopped
            before EOS) and, with IVTP, what it kept and the tokens each layer ran on.
        """

        counts = [int(t.shape[0]) for t in visual_tokens]
        schedule = self.default_ivtp if ivtp is _DEFAULT else ivtp
        self.check_ivtp_schedule(self.config, schedule)
        inputs = self.tokenize(prompts, counts, layouts)
        positions = self.position_inputs(inputs, layouts)
        encoded = self.video_encoder_output(visual_tokens)
        session = (
            self.ivtp_decoder().session(inputs["input_ids"], inputs["attention_mask"], self.video_token_id,
                                        schedule=schedule)
            if schedule is not None else contextlib.nullcontext()
        )
        with session as ivtp_state:
            out = self.model.generate(
                **inputs,
                **positions,
                mm_encoder_outputs={"video": encoded},
                **generate_kwargs,
            )
        result = self._answer_ids(out[:, inputs["input_ids"].shape[1]:])
        ivtp = [ivtp_state.summary(b) for b in range(len(result))] if ivtp_state is not None else None
        return GenerationOutput(answer_ids=result, prompt_tokens=inputs["attention_mask"].sum(dim=1).tolist(), ivtp=ivtp)

    def _answer_ids(self, new_tokens: torch.Tensor) -> list[list[int]]:
        """Generated ids (B, T) → per row the answer: stopped before EOS, trailing padding removed."""
        return self.answer_ids(new_tokens.tolist())

    def answer_ids(self, generated: list[list[int]]) -> list[list[int]]:
        """Per row of generated ids, the answer every engine returns: stopped before EOS, trailing padding removed."""
        pad = self.processor.tokenizer.pad_token_id
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        result = []
        for row in generated:
            ids = []
            for t in row:
                if t in eos_ids:
                    break
                ids.append(t)
            while ids and ids[-1] == pad and pad not in eos_ids:
                ids.pop()
            result.append(ids)
        return result

    @staticmethod
    def reuses_prefix(num_prompts: int, generate_kwargs: dict[str, Any]) -> bool:
        """Whether :meth:`generate_about_one_video` prefills the shared prefix once for this call.

        It does for several prompts under greedy decoding without a streamer (one prompt at a
        time anyway), with or without IVTP; sampling and beams prefill every prompt whole.
        """
        return (num_prompts > 1 and not generate_kwargs.get("do_sample")
                and generate_kwargs.get("num_beams", 1) == 1 and generate_kwargs.get("streamer") is None)

    @torch.no_grad()
    def generate_about_one_video(self, prompts: list[str], visual_tokens: torch.Tensor, layout: Any = None, *,
                                 ivtp: Any = _DEFAULT, **generate_kwargs) -> GenerationOutput:
        """Answer several prompts about one video, prefilling what they share once.

        The prompts' token ids agree up to the end of the video's tokens (the chat template's
        opening, the K visual tokens) and often a little beyond; that shared prefix of P tokens is
        prefilled once, its KV cache repeated for every prompt, and ``generate`` runs on the whole
        prompts with the cache holding the first P. Each prompt's rest is padded *between* the
        prefix and itself (masked out, so positions, which follow the attention mask, are those of
        the prompt alone). The ids equal :meth:`generate`'s on the same prompts (tested per family).

        With IVTP the prefix is prefilled once through the layers below the first pruning layer
        k1 only (causal, so the same for every question; :meth:`IVTPDecoder.prefill_prefix`);
        IVTP scores and prunes each prompt as a whole from there on (its instruction rows depend
        on the question), and layers ≥ k1 cache only each prompt's kept tokens.

        Falls back to :meth:`generate` where :meth:`reuses_prefix` says no.

        Args:
            prompts: chat-formatted prompts, each with one ``<video>``.
            visual_tokens: (K, D) the video's projected tokens, shared by every prompt.
            layout: the video's ``PrunedVideo.layout`` (Qwen2.5-VL's positions), or None.
            ivtp: the call's IVTP schedule, None for none (default: the model's).
        """
        from transformers.cache_utils import DynamicCache

        from .hf_internals import check_prefix_cache_internals, model_cache_keyword

        schedule = self.default_ivtp if ivtp is _DEFAULT else ivtp
        self.check_ivtp_schedule(self.config, schedule)
        layouts = None if layout is None else [layout] * len(prompts)
        if not self.reuses_prefix(len(prompts), generate_kwargs):
            return self.generate(prompts, [visual_tokens] * len(prompts), layouts, ivtp=schedule, **generate_kwargs)
        check_prefix_cache_internals(self.model)
        count = int(visual_tokens.shape[0])
        ids = [self.tokenize([p], [count], None if layout is None else [layout])["input_ids"][0]
               for p in prompts]  # (L_i,) each, unpadded
        shortest = min(len(i) for i in ids)
        shared = 0
        while shared < shortest and all(int(i[shared]) == int(ids[0][shared]) for i in ids):
            shared += 1
        last_video = int((ids[0] == self.video_token_id).nonzero().max())
        prefix = min(shared, shortest - 1)  # every prompt keeps at least one token of its own to prefill
        if prefix <= last_video:  # the prompts differ before the video ends: nothing worth sharing
            return self.generate(prompts, [visual_tokens] * len(prompts), layouts, ivtp=schedule, **generate_kwargs)
        rest = max(len(i) for i in ids) - prefix
        pad = self.processor.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        rows, masks = [], []
        for i in ids:
            gap = rest - (len(i) - prefix)
            rows.append(torch.cat([i[:prefix], i.new_full((gap,), pad), i[prefix:]]))
            masks.append(torch.cat([torch.ones(prefix, dtype=torch.long), torch.zeros(gap, dtype=torch.long),
                                    torch.ones(len(i) - prefix, dtype=torch.long)]))
        inputs = {"input_ids": torch.stack(rows).to(self.device), "attention_mask": torch.stack(masks).to(self.device)}
        positions = self.position_inputs(inputs, layouts)  # (..., B, L)
        keyword = model_cache_keyword(self.model)
        cache = DynamicCache(config=self.model.config)

        def prefill_prefix():  # the prefix alone (batch 1, P tokens) into the cache; its logits are not needed
            self.model(input_ids=inputs["input_ids"][:1, :prefix], attention_mask=inputs["attention_mask"][:1, :prefix],
                       mm_encoder_outputs={"video": self.video_encoder_output([visual_tokens])},
                       use_cache=True, logits_to_keep=1, **{keyword: cache},
                       **{k: v[..., :1, :prefix] for k, v in positions.items()})

        if schedule is None:
            prefill_prefix()
            session = contextlib.nullcontext()
        else:  # layers < k1 only; the session puts the prefix's rows back in front where IVTP needs them
            decoder = self.ivtp_decoder()
            shared_prefix = decoder.prefill_prefix(prefill_prefix, prefix, schedule=schedule)
            session = decoder.session(inputs["input_ids"], inputs["attention_mask"], self.video_token_id,
                                      schedule=schedule, prefix=shared_prefix)
        cache.batch_repeat_interleave(len(prompts))  # (1, ...) → (B, ...) rows of the one prefilled prefix
        with session as ivtp_state:
            out = self.model.generate(**inputs, **positions, **{keyword: cache}, **generate_kwargs)
        sequences = self._answer_ids(out[:, inputs["input_ids"].shape[1]:])
        ivtp = [ivtp_state.summary(b) for b in range(len(sequences))] if ivtp_state is not None else None
        return GenerationOutput(answer_ids=sequences, prompt_tokens=[len(i) for i in ids], ivtp=ivtp,
                                prefix_tokens=prefix)

    def decode_text(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
