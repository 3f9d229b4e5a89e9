"""The correctness checks on a CUDA GPU, in the dtypes people run there (``pytest -m gpu``).

Runs on ``$VIDPRUNE_GPU_TEST_DEVICE`` (default ``cuda``); with CUDA absent every test is skipped
with the reason "no CUDA GPU on this machine", so a CPU-only run says plainly that none of this
ran. ``benchmarks/gpu_check.sh`` runs them on a lent GPU; its CPU dry run
(``--device cpu --dry-run``) runs them on the CPU, so the code of every test runs in CI too.

* pruning off generates exactly the stock model's tokens, every family, bf16 and fp32 (a freshly
  loaded stock model and processor, same dtype and device);
* the [CLS] attention stays float32 under a bf16 model and equals the stock eager attention;
* IVTP's kept set is the top by the stock eager attention (fp32), and its recomputed bf16 scores
  equal a bf16 eager model's attention to bf16 accuracy;
* prefix reuse generates the ids of each question prefilled alone (fp32: in bf16 another batch
  shape rounds differently, as any batching does);
* flash-attention 2, where the ``flash_attn`` package is installed: pruning off = the stock
  model under flash-attention, and prefix reuse = each question alone;
* a ``device_map`` split (the vision side and half the LLM on the device, the other decoder
  layers offloaded to the CPU and run on the device by accelerate's hooks) generates the stock
  ids, and with IVTP and prefix reuse the ids of the unsplit model (fp32).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vidprune import VideoQA

DEVICE = os.environ.get("VIDPRUNE_GPU_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="no CUDA GPU on this machine: the GPU tests did not run"),
]

# family -> frames a test samples
FAMILIES = {"video_llava": 8, "llava_next_video": 4, "llava_onevision": 4, "qwen2_5_vl": 4, "qwen3_vl": 4,
            "qwen3_vl_moe": 4}
QUESTION = "What is the man holding?"
QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please.", "Why?"]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _fresh(ckpt, dtype, attn=None):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"attn_implementation": attn} if attn else {}
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=dtype, **kwargs).to(DEVICE).eval()
    return model, AutoProcessor.from_pretrained(ckpt)


def _never(llm) -> list[int]:
    """EOS: suppressed on both sides where a test compares every decode step (a random model may stop at once)."""
    eos = llm.model.generation_config.eos_token_id
    return sorted(set(eos if isinstance(eos, list) else [eos]))


def _stock_ids(ckpt, frames, question, max_new_tokens, dtype, attn=None, **generate) -> list[int]:
    """A fresh stock load on DEVICE: the checkpoint's processor on the frames, then ``model.generate``."""
    model, processor = _fresh(ckpt, dtype, attn)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    extra = {}
    name = type(model).__name__.lower()
    if "qwen" in name:  # frames at 1 fps, as vidprune times frames it is handed
        from transformers.video_utils import VideoMetadata

        extra["video_metadata"] = [VideoMetadata(total_num_frames=len(frames), fps=1.0,
                                                 frames_indices=list(range(len(frames))))]
    if "qwen3" in name:  # the frames as decoded: the processor does not sample again
        extra["videos_kwargs"] = {"do_sample_frames": False}
        frames = [frames]
    inputs = processor(text=prompt, videos=frames, return_tensors="pt", **extra).to(DEVICE)
    for key in ("pixel_values_videos",):
        inputs[key] = inputs[key].to(dtype)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **generate)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    return ids[: min([ids.index(e) for e in eos if e in ids], default=len(ids))]


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pruning_off_generates_exactly_the_stock_model(tiny_checkpoints, random_frames, family, dtype):
    ckpt = tiny_checkpoints[family]
    frames = random_frames(FAMILIES[family], seed=1)
    qa = VideoQA.from_pretrained(ckpt, budget=None, dedup=False, device=DEVICE, dtype=dtype,
                                 frames=FAMILIES[family])
    assert qa.llm.dtype == DTYPES[dtype] and qa.llm.device.type == torch.device(DEVICE).type
    never = _never(qa.llm)
    answer = qa.ask(frames, QUESTION, max_new_tokens=12, suppress_tokens=never)
    want = _stock_ids(ckpt, frames, QUESTION, 12, DTYPES[dtype], suppress_tokens=never)
    assert len(want) == 12
    assert answer.token_ids == want


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


def _eager_instruction_scores(model, qa, visual, question, layer):
    """Mean attention of the instruction rows over the visual tokens at ``layer``, from eager attention."""
    inputs = qa.llm.tokenize([qa.llm.build_prompt(question)], [visual.shape[0]])
    with torch.no_grad():
        out = model(**inputs, mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=visual[None])},
                    output_attentions=True, use_cache=False)
    ids = inputs["input_ids"][0]
    vis_pos = torch.nonzero(ids == model.config.video_token_id).flatten()
    rows = torch.arange(int(vis_pos.max()) + 1, len(ids), device=ids.device)
    return out.attentions[layer][0][:, rows][:, :, vis_pos].float().mean(dim=0).mean(dim=0)  # (K,)


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_ivtp_kept_set_is_the_top_by_eager_attention(tiny_checkpoints, random_frames, family):
    ckpt, num_frames = tiny_checkpoints[family], FAMILIES[family]
    layer, keep = 2, 0.3
    qa = VideoQA.from_pretrained(ckpt, budget=num_frames * 24, dedup=False, device=DEVICE, dtype="float32",
                                 ivtp_layer=layer, ivtp_keep=keep, frames=num_frames)
    pruned = qa.prepare(random_frames(num_frames, seed=21))
    answer = qa.answer(pruned, [QUESTION], max_new_tokens=4)[0]
    model, _ = _fresh(ckpt, torch.float32, attn="eager")
    visual = model.model.multi_modal_projector(pruned.tokens.to(DEVICE))
    scores = _eager_instruction_scores(model, qa, visual, QUESTION, layer)
    expected = sorted(torch.argsort(scores, descending=True, stable=True)[: math.ceil(keep * len(scores))].tolist())
    assert answer.report["ivtp"]["kept"] == expected


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_ivtp_bf16_scores_equal_eager_attention(tiny_checkpoints, random_frames, family):
    """IVTP's score recompute on a bf16 layer = that bf16 layer's eager attention, on the same layer input."""
    from vidprune.video_models.ivtp_decoder import layer_instruction_scores

    ckpt, num_frames = tiny_checkpoints[family], FAMILIES[family]
    layer = 2
    qa = VideoQA.from_pretrained(ckpt, budget=num_frames * 24, dedup=False, device=DEVICE, dtype="bfloat16",
                                 frames=num_frames)
    pruned = qa.prepare(random_frames(num_frames, seed=22))
    model, _ = _fresh(ckpt, torch.bfloat16, attn="eager")
    visual = model.model.multi_modal_projector(pruned.tokens.to(DEVICE, torch.bfloat16))
    captured = {}

    def take_input(_module, args, kwargs):
        captured.update(hidden=args[0] if args else kwargs["hidden_states"], rotary=kwargs["position_embeddings"])

    decoder_layer = model.model.language_model.layers[layer]
    handle = decoder_layer.register_forward_pre_hook(take_input, with_kwargs=True)
    try:
        eager = _eager_instruction_scores(model, qa, visual, QUESTION, layer)  # (K,)
    finally:
        handle.remove()
    inputs = qa.llm.tokenize([qa.llm.build_prompt(QUESTION)], [visual.shape[0]])
    is_visual = inputs["input_ids"] == model.config.video_token_id
    with torch.no_grad():
        scores = layer_instruction_scores(decoder_layer, captured["hidden"], captured["rotary"], is_visual,
                                          inputs["attention_mask"].bool())  # (1, L) float32
    assert captured["hidden"].dtype == torch.bfloat16 and scores.dtype == torch.float32
    torch.testing.assert_close(scores[0][is_visual[0]], eager, rtol=5e-2, atol=1e-3)  # bf16 q, k


@pytest.mark.parametrize("family", ["video_llava", "qwen2_5_vl"])
def test_prefix_reuse_generates_the_ids_of_each_question_alone(tiny_checkpoints, random_frames, family):
    ckpt, num_frames = tiny_checkpoints[family], FAMILIES[family]
    # float32: in bf16 a batch of another shape (the prefix prefilled apart, the questions padded) rounds
    # differently, as any batching does, and a near-tie of a random model may flip a late token
    qa = VideoQA.from_pretrained(ckpt, budget=40, device=DEVICE, dtype="float32", frames=num_frames,
                                 max_new_tokens=8)
    pruned = qa.prepare(random_frames(num_frames, seed=3))
    alone = [qa.answer(pruned, [q])[0].token_ids for q in QUESTIONS]
    outs = qa.answer_stage.process_batch([(pruned, q) for q in QUESTIONS])
    assert all(o["prefix_tokens"] is not None for o in outs)
    assert [o["token_ids"] for o in outs] == alone


def _flash_attention_present() -> bool:
    import importlib.util

    return DEVICE.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None


@pytest.mark.skipif(not _flash_attention_present(), reason="flash_attn is not installed here (or no CUDA device)")
@pytest.mark.parametrize("family", ["video_llava", "qwen2_5_vl"])
def test_flash_attention_pruning_off_and_prefix_reuse(tiny_checkpoints, random_frames, family):
    ckpt, num_frames = tiny_checkpoints[family], FAMILIES[family]
    frames = random_frames(num_frames, seed=6)
    qa = VideoQA.from_pretrained(ckpt, budget=None, dedup=False, device=DEVICE, dtype="bfloat16", frames=num_frames,
                                 attn_implementation="flash_attention_2")
    assert qa.llm.config.get_text_config()._attn_implementation == "flash_attention_2"
    never = _never(qa.llm)
    answer = qa.ask(frames, QUESTION, max_new_tokens=12, suppress_tokens=never)
    assert answer.token_ids == _stock_ids(ckpt, frames, QUESTION, 12, torch.bfloat16, attn="flash_attention_2",
                                          suppress_tokens=never)
    pruned = qa.prepare(frames)
    alone = [qa.answer(pruned, [q], max_new_tokens=8)[0].token_ids for q in QUESTIONS]
    outs = qa.answer_stage.process_batch([(pruned, q) for q in QUESTIONS], max_new_tokens=8)
    assert all(o["prefix_tokens"] is not None for o in outs)
    assert [o["token_ids"] for o in outs] == alone


# where the split offloads decoder layers 2..: the CPU beside a GPU; disk in the CPU dry run (a map of
# "cpu" only would not be dispatched at all)
OFFLOAD = "disk" if DEVICE == "cpu" else "cpu"


def _split_map(ckpt) -> dict[str, str]:
    """The vision side, the embeddings and decoder layers 0-1 on DEVICE; layers 2.. offloaded (``OFFLOAD``)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(ckpt))
    device_map = {f"model.{name}": DEVICE for name, _ in model.model.named_children() if name != "language_model"}
    for name, module in model.model.language_model.named_children():
        if name == "layers":
            device_map.update({f"model.language_model.layers.{i}": DEVICE if i < 2 else OFFLOAD for i in range(len(module))})
        else:
            device_map[f"model.language_model.{name}"] = DEVICE
    device_map["lm_head"] = DEVICE
    return device_map


@pytest.mark.parametrize("family", ["video_llava", "qwen2_5_vl"])
def test_device_map_split_generates_the_stock_ids(tiny_checkpoints, random_frames, family, tmp_path):
    ckpt, num_frames = tiny_checkpoints[family], FAMILIES[family]
    frames = random_frames(num_frames, seed=8)
    split = VideoQA.from_pretrained(ckpt, budget=None, dedup=False, device=DEVICE, dtype="float32",
                                    frames=num_frames, device_map=_split_map(ckpt), max_new_tokens=8,
                                    offload_folder=str(tmp_path) if OFFLOAD == "disk" else None)
    assert split.llm.device == torch.device(DEVICE) or split.llm.device.type == torch.device(DEVICE).type
    assert split.llm.model.hf_device_map["model.language_model.layers.3"] == OFFLOAD
    assert split.llm.language_model.layers[3].mlp.down_proj.weight.device.type == "meta"  # arrives per call
    never = _never(split.llm)
    answer = split.ask(frames, QUESTION, max_new_tokens=8, suppress_tokens=never)
    assert answer.token_ids == _stock_ids(ckpt, frames, QUESTION, 8, torch.float32, suppress_tokens=never)
    # with pruning, IVTP and prefix reuse: the ids of the unsplit model
    options = {"budget": 40, "ivtp_layer": 2, "ivtp_keep": 0.5}
    whole = VideoQA.from_pretrained(ckpt, device=DEVICE, dtype="float32", frames=num_frames, max_new_tokens=8,
                                    **options)
    split = VideoQA(split.llm, split.config.replace(**options), split.checkpoint_info)
    pruned = whole.prepare(frames)
    want = [whole.answer(pruned, [q])[0].token_ids for q in QUESTIONS]
    outs = split.answer_stage.process_batch([(pruned, q) for q in QUESTIONS])
    assert all(o["prefix_tokens"] is not None for o in outs)
    assert [o["token_ids"] for o in outs] == want
