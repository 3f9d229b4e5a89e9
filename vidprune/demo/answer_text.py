"""Answers that reach the browser token by token, from a token stream held in memory.

``VideoLLM.generate`` passes extra keyword arguments to ``model.generate``, so a
transformers streamer rides along unchanged: :func:`answer_streaming` calls it with
``streamer=`` and the projected memory tokens (which enter the LLM through
``mm_encoder_outputs`` exactly as for a video). It blocks; run it on the model thread
while the event loop reads the :class:`TokenStreamer`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import torch
from transformers import AsyncTextIteratorStreamer, StoppingCriteria

from ..pipeline.stages import MODEL_SCHEDULE, AnswerStage
from ..video_models.base import VideoLLM

__all__ = ["TokenStreamer", "StopWhenSet", "answer_streaming"]

# A UTF-8 character spans at most 4 bytes: after 3 tokens that still end in U+FFFD the
# bytes are invalid, not incomplete, so the text goes out as it is.
_MAX_HELD_TOKENS = 3


class TokenStreamer(AsyncTextIteratorStreamer):
    """An ``AsyncTextIteratorStreamer`` that hands on text after every token, not every word.

    transformers' text streamers hold text back until a word ends (a space); for a
    live answer each token should show as soon as it exists. Text is held back only
    while it ends in what may be an incomplete UTF-8 sequence (decoded as U+FFFD), for at
    most ``_MAX_HELD_TOKENS`` tokens.
    Build it inside the event loop (it binds to the running loop); iterate it with ``async for``.

    Attributes:
        first_token_s: ``time.perf_counter()`` when the first generated token arrived, or None.
        num_tokens: generated tokens seen so far (EOS included).
    """

    def __init__(self, tokenizer, timeout: float | None = None):
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
        self.first_token_s: float | None = None
        self.num_tokens = 0
        self._held = 0  # tokens held back in a row

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("TokenStreamer streams one answer at a time (batch size 1)")
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter()
        self.num_tokens += value.numel()
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd") and self._held < _MAX_HELD_TOKENS:  # a multi-byte character may be incomplete
            self._held += 1
            return
        self._held = 0
        printable = text[self.print_len:]
        self.print_len = len(text)
        if printable:
            self.on_finalized_text(printable)

    async def __anext__(self) -> str:
        # asyncio.wait_for instead of the parent's asyncio.timeout (Python >= 3.11 only).
        value = await asyncio.wait_for(self.text_queue.get(), self.timeout)
        if value is self.stop_signal:
            raise StopAsyncIteration()
        return value


class StopWhenSet(StoppingCriteria):
    """Stops generation at the next token once ``event`` is set (the asker went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def answer_streaming(llm: VideoLLM, question: str, tokens: torch.Tensor, streamer: TokenStreamer,
                     cancel: threading.Event | None = None, layout: dict[str, Any] | None = None,
                     ivtp: Any = MODEL_SCHEDULE, stage: AnswerStage | None = None,
                     **generate_kwargs: Any) -> dict[str, Any]:
    """Answer ``question`` about the pre-projector ``tokens`` (K, Dv), streaming into ``streamer``.

    The pipeline's one answer step (:meth:`AnswerStage.answer_tokens`) with a streamer.
    ``layout``: where the tokens sit in the stock grid (``MemorySnapshot.layout``; Qwen2.5-VL).
    ``cancel``: generation stops at the next token once it is set. ``ivtp``: the IVTP schedule
    (None: off; not given: the model's); ``generate_kwargs``: the ``generate`` options section
    (:class:`AnswerStage`'s keywords: ``max_new_tokens``, ``do_sample``, ``seed``, ...). Returns
    ``{"text", "token_ids", "visual_tokens", "generate_s", "ivtp"}`` (``ivtp``: what IVTP kept and the
    tokens each layer ran on, or None). ``stage``: the :class:`AnswerStage` to answer with (the server's one,
    whose sampling stream goes on from answer to answer); without it one is built from ``ivtp`` and
    ``generate_kwargs``. The streamer always ends (also when
    generation fails), so a reader never waits forever.
    """
    from transformers import StoppingCriteriaList

    start = time.perf_counter()
    stopping = StoppingCriteriaList([StopWhenSet(cancel)]) if cancel is not None else None
    try:
        if stage is None:
            stage = AnswerStage(llm, ivtp=ivtp, **generate_kwargs)
        out = stage.answer_tokens([(tokens, question)], layouts=[layout], streamer=streamer,
                                  stopping_criteria=stopping)[0]
    except BaseException:
        streamer.end()
        raise
    return {"text": out["text"], "token_ids": out["token_ids"], "visual_tokens": out["visual_tokens"],
            "generate_s": time.perf_counter() - start, "ivtp": out["ivtp"]}
