"""Small random-weight checkpoints of both model families, built offline.

They exist so that the whole pipeline (decode → vision tower → pruning → LLM →
generate) runs on any machine without hub access: in the tests, in CI and in
``vidprune ask --demo``. They are saved with ``save_pretrained`` and loaded back with
``from_pretrained`` from the directory, exactly like a user's checkpoint.

What they keep from the real models: the model classes, the vision geometry (224 px
and 16×16 patches + [CLS] for Video-LLaVA, 336 px and 24×24 patches pooled 2×2 to
12×12 for LLaVA-NeXT-Video), ``vision_feature_layer = -2``, the linear RoPE scaling of
LLaVA-NeXT-Video, the processors and a Vicuna-style chat template. So every token count
equals the real model's. What they do not keep: sizes (a few layers, hidden 32–64) and
weights (random). **A tiny model answers nonsense**; it exists to exercise the code.

The tokenizer is byte-level (one token per byte, no merges) built with the
``tokenizers`` library, plus ``<s>``, ``</s>``, ``<unk>``, ``<pad>``, ``<image>`` and
``<video>`` special tokens; ``<s>`` is prepended as a Llama tokenizer does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["TINY_FAMILIES", "VLLM_TINY_FAMILIES", "build_tiny_checkpoint", "tiny_checkpoint_dir",
           "ensure_tiny_checkpoint"]

TINY_FAMILIES = ("video_llava", "llava_next_video", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
# The families vLLM has a model class for (it has none for Video-LLaVA): ``build_tiny_checkpoint(..., vllm=True)``.
VLLM_TINY_FAMILIES = ("llava_next_video", "llava_onevision", "qwen2_5_vl")

# ``vllm=True`` checkpoints: the text decoder's size (head_dim 64 = 128 / 2 heads: vLLM's CPU attention
# refuses the default tiny head_dim of 16), and the factors that scale the random weights up so that a
# greedy answer depends on the video (an unscaled random decoder repeats one token whatever it sees).
_VLLM_TEXT_SIZES = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1}
_VLLM_QUERY_KEY_SCALE = 4.0  # q_proj and k_proj of every decoder layer: sharper attention over the video
_VLLM_PROJECTOR_SCALE = 8.0  # the projector's (merger's) last linear: visual rows as large as the text's
_VLLM_HEAD_SCALE = 4.0  # lm_head: logits far enough apart that float rounding between engines cannot flip them

# Bump when the tiny configs change, so cached demo checkpoints are rebuilt.
_TINY_FORMAT_VERSION = 1

# Vicuna-style template, as on the real model cards:
# "USER: <video>\n{question} ASSISTANT:" (media first, then the text of the turn).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] if message['content'] is not string else message['content'] }}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]

# Qwen2-style (ChatML) special tokens: no BOS is prepended, <|im_end|> ends a turn.
_CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# LLaVA-OneVision's ChatML template as on its model card: media of the turn first, then "\n" + text;
# "<|im_start|>user <video>\n{question}<|im_end|>\n<|im_start|>assistant\n".
CHATML_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _build_tokenizer(chatml: bool = False, extra_special: tuple[str, ...] = ()):
    """Byte-level tokenizer: the special tokens + 256 byte tokens, no merges.

    ``chatml=False``: Llama-like (``<s>`` prepended, ``</s>`` ends). ``chatml=True``: Qwen2-like
    (nothing prepended, ``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads), with ``extra_special``
    added as special tokens (e.g. Qwen2.5-VL's ``<|vision_start|>``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = (_CHATML_SPECIAL_TOKENS if chatml else _SPECIAL_TOKENS) + list(extra_special)
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(byte_alphabet):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None if chatml else "<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if chatml:
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            padding_side="left",
            extra_special_tokens=[t for t in specials if t not in ("<|endoftext|>", "<|im_end|>")],
            model_max_length=32768,
        )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens=["<image>", "<video>"],
        model_max_length=4096,
    )
    return tokenizer


def _qwen2_text_config(tokenizer, **overrides):
    """A tiny Qwen2 decoder: q/k/v with bias, grouped-query heads (4 query heads, 2 key/value heads)."""
    from transformers import Qwen2Config

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        initializer_range=0.5,  # larger than the real 0.02 so that greedy answers depend on the input
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def _text_config(vocab_size: int, family: str, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        initializer_range=0.5,  # larger than the real 0.02 so that greedy answers depend on the input
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    if family == "llava_next_video":
        # The real checkpoint uses linear RoPE scaling with factor 2.
        kwargs["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def _vision_config(image_size: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,  # vision_feature_layer = -2 reads the output of layer 1
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
        projection_dim=32,
    )


def build_tiny_checkpoint(family: str, out_dir: str | os.PathLike, seed: int = 0, *, vllm: bool = False) -> Path:
    """Build a random-weight checkpoint of ``family`` and save model + processor in ``out_dir``.

    Args:
        family: one of ``TINY_FAMILIES``.
        out_dir: directory to write (created; existing files are overwritten).
        seed: torch seed for the random weights (same seed → same weights).
        vllm: a checkpoint vLLM loads too (``VLLM_TINY_FAMILIES``): a text decoder with head_dim 64
            (vLLM's CPU attention refuses 16), weights scaled so that the answer depends on the
            video, and the LLaVA families' towers saved in the hub's key layout
            (``vision_tower.vision_model.``; vLLM loads no other, transformers loads both).

    Returns:
        The directory, loadable with ``VideoQA.from_pretrained`` or the HF classes.
    """
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
        VideoLlavaProcessor,
        VideoLlavaVideoProcessor,
    )

    if family not in TINY_FAMILIES:
        raise ValueError(f"Unknown tiny model family {family!r}. Has to be one of {list(TINY_FAMILIES)}")
    if vllm and family not in VLLM_TINY_FAMILIES:
        raise ValueError(f"vLLM has no model class for {family!r}; vllm=True builds one of {list(VLLM_TINY_FAMILIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text_sizes = _VLLM_TEXT_SIZES if vllm else {}
    if family == "llava_onevision":
        return _save(_build_llava_onevision(seed, text_sizes), out, family, seed, vllm=vllm)
    if family == "qwen2_5_vl":
        return _save(_build_qwen2_5_vl(seed, text_sizes), out, family, seed, vllm=vllm)
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        return _save(_build_qwen3_vl(seed, moe=family == "qwen3_vl_moe"), out, family, seed)
    tokenizer = _build_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    video_token_id = tokenizer.convert_tokens_to_ids("<video>")
    import torch

    torch.manual_seed(seed)
    if family == "video_llava":
        config = VideoLlavaConfig(
            vision_config=_vision_config(224),
            text_config=_text_config(len(tokenizer), family),
            image_token_index=image_token_id,
            video_token_index=video_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_seq_length=256,
            video_seq_length=8 * 257,
        )
        model = VideoLlavaForConditionalGeneration(config)
        crop = {"height": 224, "width": 224}
        processor = VideoLlavaProcessor(
            image_processor=VideoLlavaImageProcessor(size={"shortest_edge": 224}, crop_size=crop),
            video_processor=VideoLlavaVideoProcessor(size={"shortest_edge": 224}, crop_size=crop),
            tokenizer=tokenizer,
            patch_size=14,
            vision_feature_select_strategy="default",
            chat_template=CHAT_TEMPLATE,
            num_additional_image_tokens=1,
        )
    else:
        config = LlavaNextVideoConfig(
            vision_config=_vision_config(336),
            text_config=_text_config(len(tokenizer), family, **text_sizes),
            image_token_index=image_token_id,
            video_token_index=video_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            spatial_pool_mode="average",
            spatial_pool_stride=2,
            image_seq_length=576,
            video_seq_length=144,
        )
        model = LlavaNextVideoForConditionalGeneration(config)
        crop = {"height": 336, "width": 336}
        processor = LlavaNextVideoProcessor(
            video_processor=LlavaNextVideoVideoProcessor(size={"shortest_edge": 336}, crop_size=crop),
            image_processor=LlavaNextImageProcessor(
                size={"shortest_edge": 336}, crop_size=crop, image_grid_pinpoints=config.image_grid_pinpoints
            ),
            tokenizer=tokenizer,
            patch_size=14,  # an offline-built processor needs this explicitly
            vision_feature_select_strategy="default",
            chat_template=CHAT_TEMPLATE,
            num_additional_image_tokens=1,
        )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save((model, processor), out, family, seed, vllm=vllm)


def _save(model_and_processor, out: Path, family: str, seed: int, *, vllm: bool = False) -> Path:
    model, processor = model_and_processor
    if vllm:
        _scale_for_video_dependence(model)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if vllm and family in ("llava_onevision", "llava_next_video"):
        _write_hub_tower_layout(out)
    (out / "vidprune_tiny.json").write_text(
        json.dumps({"family": family, "seed": seed, "format": _TINY_FORMAT_VERSION, "vllm": vllm,
                    "note": "random weights: answers are nonsense"})
    )
    return out


def _scale_for_video_dependence(model) -> None:
    """Scale query/key projections, the projector's last linear and the LM head (see the ``_VLLM_*`` factors).

    A random decoder with small weights ignores its input: greedy decoding repeats one token
    whatever the video. Larger query/key weights make attention pick out visual rows, larger
    visual rows make them count, a larger head spreads the logits.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "language_model" in name and (".q_proj." in name or ".k_proj." in name):
                param.mul_(_VLLM_QUERY_KEY_SCALE)
            elif name.startswith("lm_head."):
                param.mul_(_VLLM_HEAD_SCALE)
        projector = getattr(model.model, "multi_modal_projector", None)
        last = projector.linear_2 if projector is not None else model.model.visual.merger.mlp[-1]
        last.weight.mul_(_VLLM_PROJECTOR_SCALE)
        last.bias.mul_(_VLLM_PROJECTOR_SCALE)


def _write_hub_tower_layout(out: Path) -> None:
    """Rename the saved tower keys ``vision_tower.X`` to the hub's ``vision_tower.vision_model.X``.

    transformers 5.x saves the LLaVA families' CLIP / SigLIP tower without the ``vision_model.`` level (the rest in
    the hub's layout, ``language_model.model.``); the hub's checkpoints, and so vLLM's loader, have
    it. transformers loads both.
    """
    from safetensors.torch import load_file, save_file

    def hub_key(key: str) -> str:
        for prefix in ("model.vision_tower.", "vision_tower."):
            if key.startswith(prefix) and not key.startswith(prefix + "vision_model."):
                return prefix + "vision_model." + key[len(prefix):]
        return key

    for path in sorted(out.glob("*.safetensors")):
        tensors = load_file(path)
        save_file({hub_key(k): v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def _build_llava_onevision(seed: int, text_sizes: dict | None = None):
    """LLaVA-OneVision: SigLIP at 384 px / patch 14 (27×27, no [CLS]), feature layer -1, Qwen2 decoder."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    tokenizer = _build_tokenizer(chatml=True)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=384, patch_size=14, vision_use_head=False)
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=_qwen2_text_config(tokenizer, **(text_sizes or {})),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    import torch

    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    side = vision.image_size // vision.patch_size
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": 384, "width": 384},
                                                     image_grid_pinpoints=config.image_grid_pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 384, "width": 384}),
        tokenizer=tokenizer,
        num_image_tokens=side * side,
        vision_feature_select_strategy="full",
        chat_template=CHATML_LLAVA_TEMPLATE,
    )
    return model, processor


# The Qwen-VL chat turns: each message's media as vision-start + pad + vision-end, then its text.
_QWEN_TURNS = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2.5-VL's chat template (as on its model card), one user turn of media then text:
# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
#  <|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n".
QWEN2_5_VL_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    + _QWEN_TURNS
)

_QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def _build_qwen2_5_vl(seed: int, text_sizes: dict | None = None):
    """Qwen2.5-VL: ViT patch 14, temporal patch 2, 2×2 merger, window attention (112 px) with full attention
    in blocks 1 and 3 (the last block is full, as in the real 7B's 7/15/23/31), mRoPE with the real
    sections' proportions (16:24:24 of the half head dim), dynamic resolution from the processor's pixel limits."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _build_tokenizer(chatml=True, extra_special=_QWEN_VISION_TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_VISION_TOKENS}
    text = _qwen2_text_config(tokenizer, **{"num_attention_heads": 2, "num_key_value_heads": 1,
                                            **(text_sizes or {})}).to_dict()
    head_dim = text["hidden_size"] // text["num_attention_heads"]  # 32: rotary half 16 = 4 + 6 + 6 (64: 8 + 12 + 12)
    text.update(model_type="qwen2_5_vl_text",
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": [head_dim // 16 * 2, head_dim // 16 * 3, head_dim // 16 * 3]})
    vision = {"depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "patch_size": 14,
              "temporal_patch_size": 2, "spatial_merge_size": 2, "window_size": 112, "fullatt_block_indexes": [1, 3],
              "out_hidden_size": text["hidden_size"], "tokens_per_second": 2, "initializer_range": 0.5}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # The real processors' pixel limits: 128..768 merged tokens per video frame (a 240x320 frame becomes
    # 280x392 px: 10x14 merged tokens per temporal patch), 4..16384 per image. No total-video cap
    # (cap_pixels_per_frame=False, the 5.24 behaviour of the hub's processor config, said explicitly).
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}),
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
                                              cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=QWEN2_5_VL_TEMPLATE,
    )
    return model, processor


# Qwen3-VL's chat template (as on the Instruct model cards, no default system turn), one user turn of media
# then text: "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n
# <|im_start|>assistant\n". The processor replaces <|video_pad|> with, per temporal patch,
# "<t seconds><|vision_start|>" + pads + "<|vision_end|>".
QWEN3_VL_TEMPLATE = _QWEN_TURNS

# How much the tiny Qwen3-VL's mergers' last projection and LM head are scaled up: a random checkpoint's
# greedy answer otherwise ignores the video (same ids for two different videos, docs/models.md).
_QWEN3_VL_VISUAL_GAIN = 8.0


def _build_qwen3_vl(seed: int, moe: bool = False):
    """Qwen3-VL: ViT patch 16, temporal patch 2, 2×2 merger, learned position embeddings (the real 48×48
    table) plus 2-D rotary, no window attention; DeepStack on (vision blocks 1 and 2 → added after decoder
    layers 0 and 1, as the 8B's blocks 8/16/24 → decoder layers 0-2); interleaved mRoPE with the real sections'
    proportions (24:20:20 of the half head dim → 6:5:5); explicit ``head_dim``. ``moe``: the
    ``Qwen3VLMoeForConditionalGeneration`` class (4 experts, 2 active per token, every decoder layer sparse)."""
    import torch
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = _build_tokenizer(chatml=True, extra_special=_QWEN_VISION_TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_VISION_TOKENS}
    head_dim = 32  # rotary half 16 = 6 (t) + 5 (h) + 5 (w), interleaved
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim, max_position_embeddings=32768,
                rms_norm_eps=1e-6, initializer_range=0.5, tie_word_embeddings=False,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                                 "mrope_section": [6, 5, 5]})
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48, decoder_sparse_step=1)
    vision = {"depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "patch_size": 16,
              "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": text["hidden_size"],
              "num_position_embeddings": 2304, "deepstack_visual_indexes": [1, 2], "initializer_range": 0.5}
    config_cls, model_cls = ((Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration) if moe
                             else (Qwen3VLConfig, Qwen3VLForConditionalGeneration))
    config = config_cls(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        visual = model.model.visual
        for merger in [visual.merger, *visual.deepstack_merger_list]:
            merger.linear_fc2.weight.mul_(_QWEN3_VL_VISUAL_GAIN)
        model.lm_head.weight.mul_(_QWEN3_VL_VISUAL_GAIN)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # The hub video processor's limits (4096 .. 24576 x 32 x 32 pixels over the whole video: a 240x320 frame
    # becomes 256x320 px, 8x10 merged tokens per temporal patch; 16 frames of 720p 22x40); frames come
    # pre-sampled (vidprune samples them), so the processor does not sample again.
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                              size={"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 1280}),
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 24576 * 32 * 32},
                                              cap_pixels_per_frame=False, do_sample_frames=False),
        tokenizer=tokenizer,
        chat_template=QWEN3_VL_TEMPLATE,
    )
    return model, processor


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_checkpoint_dir(family: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the demo checkpoint of ``family`` lives (``$VIDPRUNE_CACHE`` or ``~/.cache/vidprune``)."""
    root = Path(cache_dir or os.environ.get("VIDPRUNE_CACHE") or Path.home() / ".cache" / "vidprune")
    return root / f"tiny-{family.replace('_', '-')}-v{_TINY_FORMAT_VERSION}"


def ensure_tiny_checkpoint(family: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the demo checkpoint of ``family``, building and saving it on first use."""
    path = tiny_checkpoint_dir(family, cache_dir)
    if not (path / "vidprune_tiny.json").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        build_tiny_checkpoint(family, tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; use its copy
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path
