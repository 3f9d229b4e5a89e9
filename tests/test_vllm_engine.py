"""engine="vllm": the LLM stage on a vLLM engine fed the pruned stream, against vLLM's CPU build.

Two kinds of tests:

* engine settings and refusals (one line, before any weights load) and the vLLM-ready tiny
  checkpoints: these run in the main environment, no vLLM needed;
* the engine itself (marked ``vllm``; skipped where vLLM is not installed, run by ``.ci/run``'s
  vLLM environment): with pruning off, ``engine="vllm"`` gives the ids vLLM gives from the same
  frames and the metadata a vLLM user passes (source fps, sampled ``frames_indices``); with a
  budget, the same kept tokens as ``engine="hf"`` and the same ids as the HF engine on them
  (float32, greedy; the two stock engines agree on these checkpoints and videos, checked too).

The stock reference runs in the same vLLM engine (one engine per family: each takes minutes to
start on 2 cores): a request given as frames goes through the parent class's own processor,
tower and positions (vidprune's subclass adds a path for kept rows only, and hands everything
else to ``super()``).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from vidprune.config import resolve_config
from vidprune.errors import ConfigError

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here (.ci/run's vLLM environment has it)")

QUESTIONS = ["What happens in the video?", "Is there a square?"]
MAX_NEW_TOKENS = 8
NUM_FRAMES = 8
# engine settings small enough for a shared 2-core machine (KV space: VLLM_CPU_KVCACHE_SPACE, set below)
ENGINE_SETTINGS = {"max_model_len": 4096, "enforce_eager": True}
BUDGETS = {"llava_onevision": 301, "qwen2_5_vl": 200, "llava_next_video": 300}


@pytest.fixture(scope="module")
def vllm_checkpoints(tmp_path_factory):
    """{family: directory} of the vLLM-ready tiny checkpoints (head_dim 64, hub key layout), built on first use."""
    from vidprune.video_models.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny-vllm")
    cache: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in cache:
            cache[family] = str(build_tiny_checkpoint(family, root / family, vllm=True))
        return cache[family]

    return get


# ---------------------------------------------------------------- settings (main environment)
def test_engine_settings_are_refused_in_one_line(vllm_checkpoints):
    ckpt = vllm_checkpoints("llava_onevision")
    bad = [
        ({"engine": "tgi"}, "engine must be one of hf, vllm"),
        ({"tensor_parallel_size": 2}, "tensor_parallel_size is a vLLM engine setting"),
        ({"engine": "vllm", "tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"engine": "vllm", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"engine": "vllm", "max_model_len": -1}, "max_model_len"),
        ({"engine": "vllm", "vllm_options": {"model": "x"}}, "vllm_options may not set 'model'"),
        ({"engine": "vllm", "vllm_options": {"max_model_len": 8}}, "use the max_model_len option"),
        ({"engine": "vllm", "ivtp_layer": 2, "ivtp_keep": 0.5}, "use engine 'hf' for IVTP"),
    ]
    for options, phrase in bad:
        with pytest.raises(ConfigError) as info:
            resolve_config(ckpt, **options)
        message = str(info.value)
        assert phrase in message and "\n" not in message, (options, message)


def test_video_llava_is_refused_before_weights_load(tiny_checkpoints):
    with pytest.raises(ConfigError, match="vLLM has no model class for it; use engine 'hf'") as info:
        resolve_config(tiny_checkpoints["video_llava"], engine="vllm")
    assert "\n" not in str(info.value)


def test_engine_flags_parse(vllm_checkpoints):
    from vidprune.cli import build_parser

    args = build_parser().parse_args(["ask", "clip.mp4", "q", "--model", "m", "--engine", "vllm",
                                      "--tensor-parallel-size", "2", "--enforce-eager",
                                      "--vllm-options", '{"enable_chunked_prefill": false}'])
    from vidprune.config import options_from_args

    assert options_from_args(args) == {"model": "m", "engine": "vllm", "tensor_parallel_size": 2,
                                       "enforce_eager": True, "vllm_options": {"enable_chunked_prefill": False}}


def test_engine_names_match_the_registry():
    from vidprune import config, engines

    assert config.ENGINES == engines.ENGINES


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "llava_next_video"])
def test_vllm_ready_checkpoint_answer_depends_on_the_video(vllm_checkpoints, family):
    """An identity test proves nothing on a model that ignores its input: two videos, two answers (HF engine)."""
    from vidprune import VideoQA

    qa = VideoQA.from_pretrained(vllm_checkpoints(family), budget=None, dedup=False, frames=NUM_FRAMES)
    answers = [qa.ask(np.random.default_rng(seed).integers(0, 256, (NUM_FRAMES, 240, 320, 3), dtype=np.uint8),
                      QUESTIONS[0], max_new_tokens=MAX_NEW_TOKENS).token_ids for seed in (0, 1)]
    assert answers[0] != answers[1]


# ---------------------------------------------------------------- the engine (vLLM environment)
@pytest.fixture(scope="module")
def vllm_qa(vllm_checkpoints):
    """{family: VideoQA(engine="vllm", pruning off)}; one engine at a time (the previous one is closed)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    held: dict = {}

    def get(family: str):
        from vidprune import VideoQA

        if family not in held:
            for qa in held.values():
                qa.answer_stage.engine.close()
            held.clear()
            held[family] = VideoQA.from_pretrained(vllm_checkpoints(family), engine="vllm", budget=None, dedup=False,
                                                   frames=NUM_FRAMES, **ENGINE_SETTINGS)
        return held[family]

    yield get
    for qa in held.values():
        qa.answer_stage.engine.close()


def _stock_ids(qa, clip, question: str) -> list[int]:
    """vLLM's own answer from the frames and the metadata a vLLM user passes (source fps, sampled indices)."""
    from vllm import SamplingParams

    fps = _source_fps(clip)
    metadata = {"fps": fps, "frames_indices": list(clip.indices), "total_num_frames": int(clip.num_stream_frames),
                "duration": clip.num_stream_frames / fps}
    prompt = qa.llm.build_prompt(question)
    engine = qa.answer_stage.engine
    out = engine.engine.generate([{"prompt": prompt, "multi_modal_data": {"video": (clip.frames, metadata)}}],
                                 SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0), use_tqdm=False)
    return qa.llm.answer_ids([list(out[0].outputs[0].token_ids)])[0]  # stopped before EOS, as every engine's answer


def _source_fps(clip) -> float:
    """The file's frame rate from two sampled frames' times and indices."""
    (i0, t0), (i1, t1) = (clip.indices[0], clip.times_s[0]), (clip.indices[-1], clip.times_s[-1])
    return float((i1 - i0) / (t1 - t0))


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "llava_next_video"])
def test_vllm_engine_equals_stock_vllm_and_hf(vllm_qa, vllm_checkpoints, sample_video, family):
    """Pruning off: vidprune's vLLM engine = vLLM from the frames. With a budget: the HF engine's kept tokens and ids."""
    from vidprune import VideoQA
    from vidprune.pipeline.build import build_stages
    from vidprune.pipeline.stages import AnswerStage

    qa = vllm_qa(family)
    clip = qa.decode_stage.process(sample_video)
    encoded = qa.encode_stage.process(clip.frames, clip.times_s)
    full = qa.select_stage.process(encoded, clip)
    hf_answer = AnswerStage(qa.llm, max_new_tokens=MAX_NEW_TOKENS)  # transformers generate() on the same model
    for question in QUESTIONS:
        stock = _stock_ids(qa, clip, question)
        ours = qa.answer(full, [question], max_new_tokens=MAX_NEW_TOKENS)[0].token_ids
        assert ours == stock, (family, question)
        assert hf_answer.process_batch([(full, question)])[0]["token_ids"] == stock  # the stock engines agree here

    cfg, info = resolve_config(vllm_checkpoints(family), budget=BUDGETS[family], frames=NUM_FRAMES)
    pruned = build_stages(cfg, info).select.process(encoded, clip)
    assert pruned.tokens_count["to_llm"] <= BUDGETS[family] < full.tokens_count["to_llm"]
    hf_qa = VideoQA(qa.llm, cfg, info)  # engine "hf", the same loaded model
    hf_kept = [f["kept"] for f in hf_qa.prepare(sample_video).frames]
    assert hf_kept == [f["kept"] for f in pruned.frames]
    ours = qa.answer(pruned, QUESTIONS, max_new_tokens=MAX_NEW_TOKENS)  # both questions in one engine call
    theirs = hf_qa.answer(pruned, QUESTIONS, max_new_tokens=MAX_NEW_TOKENS)
    assert [a.token_ids for a in ours] == [a.token_ids for a in theirs]
    assert ours[0].report["tokens"]["to_llm"] == pruned.tokens_count["to_llm"]

    # several videos and questions in one call: one engine.generate (continuous batching), each answer as alone
    mixed = [(full, QUESTIONS[0]), (pruned, QUESTIONS[1]), (full, QUESTIONS[1]), (pruned, QUESTIONS[0])]
    together = [a.token_ids for a in qa.answer_batch(mixed, max_new_tokens=MAX_NEW_TOKENS)]
    alone = [hf_qa.answer_batch([item], max_new_tokens=MAX_NEW_TOKENS)[0].token_ids for item in mixed]
    assert together == alone


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("seconds_per_grid", [1.0, 4.0])
def test_where_the_stock_engines_disagree_on_qwen2_5_vl(vllm_checkpoints, seconds_per_grid):
    """The two stock engines place Qwen2.5-VL's *text after a video* differently (docs/vllm.md).

    Both give the video's rows the same (t, h, w) positions. transformers 5.x (``get_rope_index``)
    continues the text at the video's start + max(h, w) / merge, whatever its temporal extent;
    vLLM (as Qwen's original code) at the largest position + 1. They agree while the temporal
    positions stay below max(h, w) / merge (dense sampling) and differ beyond (sparse sampling:
    ``second_per_grid_ts`` 4 s here). This test fails when either side changes.
    """
    import types

    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as VllmQwen
    from vllm.multimodal.inputs import PlaceholderRange

    config = AutoConfig.from_pretrained(vllm_checkpoints("qwen2_5_vl"))
    hf = Qwen2_5_VLForConditionalGeneration(config).eval()
    t, h, w = 4, 20, 28  # patches: a 280 x 392 px frame pair, merged 10 x 14
    n = t * (h // 2) * (w // 2)
    ids = [1] * 5 + [config.video_token_id] * n + [2] * 6
    positions, _ = hf.model.get_rope_index(
        torch.tensor([ids]), mm_token_type_ids=torch.tensor([[0] * 5 + [2] * n + [0] * 6]),
        video_grid_thw=torch.tensor([[t, h, w]]), second_per_grid_ts=torch.tensor([seconds_per_grid]))
    hf_positions = positions[:, 0]  # (3, L)
    # vLLM's own method, on a stand-in holding only the config it reads
    owner = types.SimpleNamespace(config=config)
    owner.iter_mm_grid_thw = types.MethodType(VllmQwen.iter_mm_grid_thw, owner)
    video = types.SimpleNamespace(modality="video", mm_position=PlaceholderRange(offset=5, length=n), data={
        "video_grid_thw": types.SimpleNamespace(data=torch.tensor([t, h, w])),
        "second_per_grid_ts": types.SimpleNamespace(data=torch.tensor(seconds_per_grid))})
    vllm_positions, _ = VllmQwen.get_mrope_input_positions(owner, ids, [video])
    assert torch.equal(hf_positions[:, :5 + n], vllm_positions[:, :5 + n])  # the video's rows: the same
    temporal_end = int(hf_positions[0, 5:5 + n].max())
    after_hf, after_vllm = int(hf_positions[0, 5 + n]), int(vllm_positions[0, 5 + n])
    assert after_vllm == temporal_end + 1 if temporal_end >= after_hf else after_vllm == after_hf
    assert after_hf == 5 + max(h, w) // 2
    assert (after_hf != after_vllm) == (seconds_per_grid == 4.0)
