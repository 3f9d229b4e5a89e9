"""The same correctness checks on a CUDA GPU, in the dtypes people run there.

Runs wherever ``torch.cuda.is_available()``; elsewhere every test here is skipped with the
reason "no CUDA GPU on this machine", so a CPU-only run says plainly that none of this ran.

* pruning off in bf16 on the GPU generates exactly the stock model's tokens (a freshly
  loaded stock model and processor, the same dtype and device);
* the [CLS] attention stays float32 under a bf16 model (not rounded to bf16) and equals the
  stock eager attention of a float32 load to bf16 accuracy;
* IVTP's kept set on the GPU equals the top tokens by the stock model's eager attention.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vidprune import VideoQA

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the GPU tests did not run")

FAMILIES = [("video_llava", 8), ("llava_next_video", 4)]
QUESTION = "What is the man holding?"


def _fresh(ckpt, dtype, attn=None):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"attn_implementation": attn} if attn else {}
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=dtype, **kwargs).to(DEVICE).eval()
    return model, AutoProcessor.from_pretrained(ckpt)


@pytest.mark.parametrize("family,num_frames", FAMILIES)
def test_pruning_off_in_bf16_generates_exactly_the_stock_model(tiny_checkpoints, random_frames, family, num_frames):
    ckpt = tiny_checkpoints[family]
    frames = random_frames(num_frames, seed=1)
    qa = VideoQA.from_pretrained(ckpt, budget=None, dedup=False, device=DEVICE, dtype="bfloat16")
    assert qa.llm.dtype == torch.bfloat16 and qa.llm.device.type == "cuda"
    answer = qa.ask(frames, QUESTION, max_new_tokens=12)
    model, processor = _fresh(ckpt, torch.bfloat16)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}], add_generation_prompt=True)
    inputs = processor(text=prompt, videos=frames, return_tensors="pt").to(DEVICE)
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(torch.bfloat16)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    ids = ids[: ids.index(eos)] if eos in ids else ids
    assert len(ids) > 0
    assert answer.token_ids == ids


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_cls_attention_stays_float32_under_a_bf16_model(tiny_checkpoints, random_frames, family):
    ckpt = tiny_checkpoints[family]
    qa = VideoQA.from_pretrained(ckpt, budget=None, dedup=False, device=DEVICE, dtype="bfloat16")
    pixel_values = qa.llm.preprocess(random_frames(3, seed=5))
    encoded = qa.llm.encode(pixel_values)
    assert encoded.features.dtype == torch.bfloat16
    assert encoded.cls_attn.dtype == torch.float32
    assert bool((encoded.cls_attn != encoded.cls_attn.bfloat16().float()).any()), "the scores were rounded to bf16"
    # the stock eager attention of a float32 load, [CLS] row at the feature layer, heads averaged
    model, _ = _fresh(ckpt, torch.float32, attn="eager")
    tower = model.model.video_tower if family == "video_llava" else model.model.vision_tower
    with torch.no_grad():
        out = tower(pixel_values.to(DEVICE, torch.float32), output_attentions=True)
    layer = model.config.vision_feature_layer % (tower.config.num_hidden_layers + 1) - 1
    eager = out.attentions[layer][:, :, 0, 1:].mean(dim=1)  # (T, N)
    if family == "llava_next_video":
        side = int(math.isqrt(eager.shape[1]))
        eager = torch.nn.functional.avg_pool2d(eager.view(-1, 1, side, side), 2).flatten(1)
    torch.testing.assert_close(encoded.cls_attn, eager, rtol=5e-2, atol=2e-4)  # bf16 weights and activations


@pytest.mark.parametrize("family,num_frames", FAMILIES)
def test_ivtp_kept_set_on_the_gpu_is_the_top_by_eager_attention(tiny_checkpoints, random_frames, family, num_frames):
    ckpt = tiny_checkpoints[family]
    layer, keep = 2, 0.3
    qa = VideoQA.from_pretrained(ckpt, budget=num_frames * 24, dedup=False, device=DEVICE, dtype="float32",
                                 ivtp_layer=layer, ivtp_keep=keep)
    pruned = qa.prepare(random_frames(num_frames, seed=21))
    answer = qa.answer(pruned, [QUESTION], max_new_tokens=4)[0]
    model, _ = _fresh(ckpt, torch.float32, attn="eager")
    visual = model.model.multi_modal_projector(pruned.tokens.to(DEVICE))
    inputs = qa.llm.tokenize([qa.llm.build_prompt(QUESTION)], [visual.shape[0]])
    with torch.no_grad():
        out = model(**inputs, mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=visual[None])},
                    output_attentions=True, use_cache=False)
    ids = inputs["input_ids"][0]
    vis_pos = torch.nonzero(ids == model.config.video_token_id).flatten()
    rows = torch.arange(int(vis_pos.max()) + 1, len(ids), device=ids.device)
    scores = out.attentions[layer][0][:, rows][:, :, vis_pos].mean(dim=0).mean(dim=0)
    expected = sorted(torch.argsort(scores, descending=True, stable=True)[: math.ceil(keep * len(vis_pos))].tolist())
    assert answer.report["ivtp"]["kept"] == expected
