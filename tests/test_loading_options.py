"""Loading options (``device_map``, ``max_memory``, ``offload_folder``, ``attn_implementation``, ``revision``,
``trust_remote_code``, ``quantization``): declared once, passed to ``from_pretrained``.

The split model is the real thing on CPU: a ``device_map`` that sends two of the LLM's decoder
layers to ``"disk"`` is dispatched by accelerate exactly as a multi-GPU split is (the same
``AlignDevicesHook`` on every block; the offloaded weights sit on ``meta`` and arrive per call).
It must generate the ids of the stock HF model (a fresh ``from_pretrained``, no map) with
pruning off, and with IVTP and prefix reuse the ids of the same options without the map.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from vidprune import VideoQA
from vidprune.config import VidpruneConfig, add_option_flags, options_from_args
from vidprune.errors import ConfigError

QUESTIONS = ["What is the man holding?", "Describe the colours you see in great detail, please.", "Why?"]
FAMILIES = {"video_llava": 8, "qwen2_5_vl": 4}


def _offloading_map(checkpoint: str) -> dict[str, str]:
    """Every top-level block of the model on "cpu", LLM decoder layers 1 and 2 on "disk"."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    device_map = {}
    for name, _ in model.model.named_children():
        if name != "language_model":
            device_map[f"model.{name}"] = "cpu"
    for name, module in model.model.language_model.named_children():
        if name == "layers":
            for i in range(len(module)):
                device_map[f"model.language_model.layers.{i}"] = "disk" if i in (1, 2) else "cpu"
        else:
            device_map[f"model.language_model.{name}"] = "cpu"
    device_map["lm_head"] = "cpu"
    return device_map


def _stock_ids(checkpoint: str, frames: np.ndarray, question: str, max_new_tokens: int) -> list[int]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    extra = {}
    if "qwen" in type(model).__name__.lower():  # frames at 1 fps, as vidprune times frames it is handed
        from transformers.video_utils import VideoMetadata

        extra["video_metadata"] = [VideoMetadata(total_num_frames=len(frames), fps=1.0,
                                                 frames_indices=list(range(len(frames))))]
    inputs = processor(text=prompt, videos=frames, return_tensors="pt", **extra)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def offloaded(request, tiny_checkpoints, tmp_path_factory):
    family = request.param
    ckpt = tiny_checkpoints[family]
    qa = VideoQA.from_pretrained(ckpt, budget=None, dedup=False, device_map=_offloading_map(ckpt),
                                 offload_folder=str(tmp_path_factory.mktemp("offload")), max_new_tokens=8)
    return family, ckpt, qa


def test_a_split_model_with_disk_offload_generates_the_stock_ids(offloaded, random_frames):
    family, ckpt, qa = offloaded
    layers = qa.llm.language_model.layers
    assert layers[1].mlp.down_proj.weight.device.type == "meta"  # offloaded: arrives per call
    assert hasattr(layers[1], "_hf_hook") and qa.llm.model.hf_device_map["model.language_model.layers.1"] == "disk"
    assert qa.llm.device.type == "cpu" and qa.llm.vision_device.type == "cpu"
    frames = random_frames(FAMILIES[family], seed=2)
    answer = qa.ask(frames, QUESTIONS[0], max_new_tokens=8)
    assert answer.report["tokens"]["to_llm"] == answer.report["tokens"]["full"]
    want = _stock_ids(ckpt, frames, QUESTIONS[0], 8)
    assert len(want) > 0 and answer.token_ids == want


@pytest.mark.parametrize("ivtp", [None, {"ivtp_layer": 2, "ivtp_keep": 0.4}])
def test_a_split_model_with_pruning_ivtp_and_prefix_reuse_generates_the_unsplit_ids(offloaded, random_frames, ivtp):
    family, ckpt, split = offloaded
    options = {"budget": 40 if family == "video_llava" else 24, **(ivtp or {})}
    whole = VideoQA.from_pretrained(ckpt, max_new_tokens=8, **options)
    split = VideoQA(split.llm, split.config.replace(**options), split.checkpoint_info)
    frames = random_frames(FAMILIES[family], seed=4)
    pruned = whole.prepare(frames)
    assert split.prepare(frames).tokens.equal(pruned.tokens)  # the tower on the map's device: same rows
    want = [whole.answer(pruned, [q])[0] for q in QUESTIONS]  # one at a time: no prefix reuse
    outs = split.answer_stage.process_batch([(pruned, q) for q in QUESTIONS])  # reuses the video's prefix
    assert all(o["prefix_tokens"] is not None for o in outs)
    assert [o["token_ids"] for o in outs] == [a.token_ids for a in want]
    if ivtp:
        assert [o["ivtp"]["kept"] for o in outs] == [a.report["ivtp"]["kept"] for a in want]


@pytest.mark.parametrize("options,message", [
    ({"device_map": {"lm_head": "disk"}}, "no offload_folder is given"),
    ({"device_map": "everywhere"}, "device_map must be one of auto"),
    ({"max_memory": {"0": "1GiB"}}, "max_memory bounds a device_map"),
    ({"offload_folder": "/tmp/x"}, "offload_folder holds a device_map"),
    ({"attn_implementation": "flash_attention_2", "ivtp_layer": 2, "ivtp_keep": 0.5},
     "IVTP with attn_implementation 'flash_attention_2' is not supported"),
    ({"quantization": "3bit"}, "quantization must be one of 8bit, 4bit"),
    ({"quantization": "8bit"}, "needs bitsandbytes, which is not installed"),
])
def test_bad_loading_options_fail_in_one_line_before_any_weights_load(video_llava_ckpt, monkeypatch, options, message):
    import importlib.util

    if "bitsandbytes" in message and importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    import transformers

    def no_weights(*a, **k):  # the refusal must come first
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.VideoLlavaForConditionalGeneration, "from_pretrained", no_weights)
    with pytest.raises(ConfigError) as err:
        VideoQA.from_pretrained(video_llava_ckpt, **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ivtp_on_a_map_that_runs_layers_on_several_devices_is_refused_in_one_line(tiny_checkpoints):
    """IVTP's layout is gathered on one device: a map with layers on two devices is refused when IVTP installs."""
    from vidprune.video_models import load_video_llm
    from vidprune.pruners.ivtp import IVTPSchedule

    llm = load_video_llm(tiny_checkpoints["video_llava"])
    llm.language_model.layers[3].to("meta")  # a layer whose weights are elsewhere ...
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    add_hook_to_module(llm.language_model.layers[3], AlignDevicesHook(execution_device="cuda:1"))  # ... on another device
    with pytest.raises(ConfigError, match=r"IVTP with a device_map that runs the decoder layers on several devices "
                                          r"\(cpu, cuda:1\)"):
        llm.generate(["x <video>"], [torch.zeros(1, llm.config.text_config.hidden_size)],
                     ivtp=IVTPSchedule.from_options(layer=2, keep=0.5))


def test_loading_options_are_flags_and_preset_keys_and_reach_from_pretrained(tmp_path, video_llava_ckpt):
    parser = argparse.ArgumentParser()
    add_option_flags(parser)
    args = parser.parse_args(["--device-map", '{"model": 0, "lm_head": "cpu"}', "--max-memory", "0=20GiB,cpu=60GiB",
                              "--attn-implementation", "eager", "--revision", "v1", "--trust-remote-code",
                              "--quantization", "4bit", "--offload-folder", "/tmp/off"])
    opts = options_from_args(args)
    assert opts == {"device_map": {"model": 0, "lm_head": "cpu"}, "max_memory": {"0": "20GiB", "cpu": "60GiB"},
                    "attn_implementation": "eager", "revision": "v1", "trust_remote_code": True,
                    "quantization": "4bit", "offload_folder": "/tmp/off"}
    assert parser.parse_args(["--device-map", "auto"]).device_map == "auto"
    model = VidpruneConfig(model="m", **opts).section("model")
    assert {k: model[k] for k in opts} == opts  # the keywords of VideoLLM.from_pretrained

    from vidprune.video_models.loading import from_pretrained_kwargs

    kw = from_pretrained_kwargs(dtype=torch.bfloat16, attn_implementation="eager", device_map="auto",
                                max_memory={"0": "20GiB", "cpu": "60GiB"}, revision="v1", trust_remote_code=True)
    assert kw == {"dtype": torch.bfloat16, "attn_implementation": "eager", "device_map": "auto",
                  "max_memory": {0: "20GiB", "cpu": "60GiB"}, "revision": "v1", "trust_remote_code": True}

    preset = tmp_path / "split.yaml"
    preset.write_text("device_map: auto\nmax_memory: {0: 20GiB, cpu: 60GiB}\nattn_implementation: sdpa\n")
    cfg = VideoQA.resolve_config(video_llava_ckpt, config=str(preset))
    assert (cfg.device_map, cfg.max_memory, cfg.attn_implementation) == ("auto", {0: "20GiB", "cpu": "60GiB"}, "sdpa")


def test_attn_implementation_reaches_the_loaded_model(video_llava_ckpt):
    qa = VideoQA.from_pretrained(video_llava_ckpt, attn_implementation="eager")
    assert qa.llm.config.get_text_config()._attn_implementation == "eager"
