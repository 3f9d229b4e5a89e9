"""The demo's streamed answer is ``generate()`` on the memory's tokens, token for token.

A rolling memory is filled as the demo fills it (frames encoded one at a time, pruned and
deduplicated into the memory), then the demo's own streaming answer function
(:func:`vidprune.demo.answer_text.answer_streaming` with its :class:`TokenStreamer`) answers
in an event loop. References, independent of the demo code:

* the memory's token stream = each frame's own encoded rows ([CLS], then the kept patches)
  in the order the frames were taken (a swapped or dropped frame fails);
* the answer's ids = the stock model, loaded fresh, generating greedily from those rows
  through its own projector; the streamed text = the tokenizer's decoding of those ids.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vidprune.demo.answer_text import TokenStreamer, answer_streaming
from vidprune.pipeline.memory import build_memory, plan_memory
from vidprune.video_models import load_video_llm

QUESTION = "Describe the colours you see in great detail, please."
MAX_NEW_TOKENS = 12


def _stock_answer(checkpoint: str, rows: torch.Tensor, question: str) -> list[int]:
    """A fresh stock model and processor: greedy ids for the pre-projector ``rows`` (K, Dv) as the video."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    video = processor.video_token
    inputs = processor.tokenizer(prompt.replace(video, video * rows.shape[0]), return_tensors="pt")
    with torch.no_grad():
        visual = model.model.multi_modal_projector(rows)  # (K, D)
        out = model.generate(**inputs, mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=visual[None])},
                             max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


async def _stream(llm, question, tokens):
    streamer = TokenStreamer(llm.processor.tokenizer, timeout=120)
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(None, lambda: answer_streaming(llm, question, tokens, streamer,
                                                              max_new_tokens=MAX_NEW_TOKENS, do_sample=False))
    pieces = [piece async for piece in streamer]
    return pieces, await job


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_streamed_answer_is_generate_on_the_memory_tokens(tiny_checkpoints, random_frames, family):
    ckpt = tiny_checkpoints[family]
    llm = load_video_llm(ckpt)
    plan = plan_memory(llm.geometry, budget=6 * 40, window_s=10.0, frame_rate=1.0)
    memory = build_memory(plan, prune_grid=llm.geometry.prune_grid, dedup_threshold=0.9)
    frames = random_frames(6, seed=31)
    frames[3] = frames[2]  # a repeated frame: dedup drops its tokens, the others stay
    encoded = []
    for t, frame in enumerate(frames):
        enc = llm.encode(llm.preprocess(frame[None]))  # (1, N, Dv)
        encoded.append(enc)
        memory.add(enc, time_s=float(t))
    held = memory.frames()
    assert [f.time_s for f in held] == [float(t) for t in range(len(frames))]
    # the memory's stream: every frame's own rows, in the order the frames were taken
    expected = []
    for enc, frame in zip(encoded, held):
        rows = enc.features[0, frame.kept]
        expected.append(rows if enc.extra is None else torch.cat([enc.extra[0], rows]))
    expected = torch.cat(expected)
    tokens = memory.tokens()
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    assert len(held[3].kept) < len(held[2].kept)  # the repeat was deduplicated

    pieces, result = asyncio.run(_stream(llm, QUESTION, tokens))
    want = _stock_answer(ckpt, expected, QUESTION)
    assert len(want) > 0
    assert result["token_ids"] == want
    assert result["visual_tokens"] == expected.shape[0]
    assert "".join(pieces) == llm.processor.tokenizer.decode(want, skip_special_tokens=True)
