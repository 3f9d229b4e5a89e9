"""The transformers internals vidprune mirrors (docs/internals.md), each checked by name.

Every test here fails with a message that names the internal it depends on, so a
transformers release that changes one says which, instead of a wrong answer or a
``RuntimeError`` deep inside ``generate()``. They run in both CI environments (the newest
transformers the index serves inside the range, and the range's lower bound).
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest
import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vidprune.video_models import hf_internals, load_video_llm
from vidprune.video_models.tower_hooks import run_tower_to_layer


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _layer_kwargs(model, input_ids, attention_mask):
    """The keyword arguments ``LlamaModel.forward`` hands its first decoder layer."""
    seen: dict = {}

    def grab(_module, args, kwargs):
        seen.update(kwargs)
        seen["_args"] = args

    handle = model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    finally:
        handle.remove()
    return seen


def test_supported_range_equals_pyproject():
    try:
        requires = importlib.metadata.requires("vidprune") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vidprune is not installed (run from an install, as the README says)")
    spec = next(Requirement(r).specifier for r in requires if Requirement(r).name == "transformers")
    assert spec == SpecifierSet(",".join(hf_internals.SUPPORTED_TRANSFORMERS)), (
        "hf_internals.SUPPORTED_TRANSFORMERS differs from pyproject's transformers range"
    )


def test_installed_transformers_is_inside_the_supported_range():
    installed = Version(hf_internals.transformers_version())
    assert installed in SpecifierSet(",".join(hf_internals.SUPPORTED_TRANSFORMERS)), (
        f"transformers {installed} is outside the tested range {hf_internals.SUPPORTED_TRANSFORMERS}"
    )
    hf_internals.check_transformers_version()


def test_ivtp_internals_are_where_the_wrapper_expects_them():
    hf_internals.check_ivtp_internals.cache_clear()
    hf_internals.check_ivtp_internals()  # raises naming the internal otherwise


def test_decoder_layers_receive_the_cache_and_layout_as_keywords():
    """LlamaModel.forward → decoder layer: what IVTPDecoder._layer_forward reads and replaces."""
    model = _tiny_llama()
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    kwargs = _layer_kwargs(model, ids, mask)
    assert hf_internals.layer_cache(kwargs) is not None, (
        "LlamaModel.forward no longer hands its decoder layers the KV cache as 'cache' or 'past_key_values' "
        f"(keywords seen: {sorted(k for k in kwargs if not k.startswith('_'))})"
    )
    for name in ("attention_mask", "position_ids", "position_embeddings"):
        assert name in kwargs, f"LlamaModel.forward no longer hands its decoder layers {name!r} as a keyword"
    cos, sin = kwargs["position_embeddings"]
    assert cos.shape[-2] == ids.shape[1] and sin.shape == cos.shape, (
        "LlamaModel.forward's position_embeddings are no longer (cos, sin) per position"
    )


def test_causal_mask_builder_rebuilds_the_models_own_mask():
    """masking_utils.create_causal_mask, called as the IVTP wrapper calls it, gives the model's mask."""
    model = _tiny_llama()
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    kwargs = _layer_kwargs(model, ids, mask)
    from transformers import DynamicCache

    hidden = model.model.embed_tokens(ids)
    rebuilt = hf_internals.causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask,
                                       cache=DynamicCache(config=model.config), position_ids=kwargs["position_ids"],
                                       layer_idx=0)
    stock = kwargs["attention_mask"]
    if stock is None or rebuilt is None:
        assert stock is None and rebuilt is None, "masking_utils.create_causal_mask: one side skipped the mask"
    else:
        assert torch.equal(torch.as_tensor(rebuilt), torch.as_tensor(stock)), (
            "masking_utils.create_causal_mask no longer rebuilds the mask LlamaModel.forward hands its layers"
        )


def test_rotary_helpers_match_the_models_attention():
    """modeling_llama.apply_rotary_pos_emb / repeat_kv: IVTP's recomputed rows equal the layer's own attention.

    Checked by what they do, not by their signature (from 5.25 ``apply_rotary_pos_emb`` is a ``kernels``
    module taking ``(*args, **kwargs)``): layer 0's attention probabilities, recomputed from its input with
    the two helpers called as IVTP calls them, equal the eager attention the model returns.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    model = _tiny_llama()
    model.config._attn_implementation = "eager"
    ids = torch.tensor([[3, 9, 5, 6, 7, 8, 2], [1, 2, 3, 4, 5, 6, 7]])
    kwargs = _layer_kwargs(model, ids, torch.ones_like(ids))
    with torch.no_grad():
        stock = model(input_ids=ids, output_attentions=True).attentions[0]  # (B, H, L, L)
        layer = model.model.layers[0]
        attn = layer.self_attn
        hidden = kwargs["_args"][0] if kwargs["_args"] else kwargs["hidden_states"]
        normed = layer.input_layernorm(hidden)
        shape = (*ids.shape, -1, attn.head_dim)
        query = attn.q_proj(normed).view(shape).transpose(1, 2)
        key = attn.k_proj(normed).view(shape).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        query, _ = apply_rotary_pos_emb(query, query, cos, sin)  # as layer_instruction_scores calls them
        _, key = apply_rotary_pos_emb(key, key, cos, sin)
        key = repeat_kv(key, attn.num_key_value_groups)
        scores = query @ key.transpose(-1, -2) * attn.scaling
        causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()
        recomputed = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    assert recomputed.shape == stock.shape, "modeling_llama.repeat_kv no longer gives every query head its key head"
    assert torch.allclose(recomputed, stock, atol=1e-6), (
        "modeling_llama.apply_rotary_pos_emb / repeat_kv no longer rotate and repeat keys as LlamaAttention does "
        f"(largest difference {float((recomputed - stock).abs().max()):.2e})"
    )


def test_a_changed_rotary_helper_is_refused_naming_it(monkeypatch):
    """The run-time check calls the helper: a release that rotates differently (here: adjacent pairs, the
    GPT-J convention, with the same signature) is refused in one line naming it, before IVTP runs."""
    import transformers.models.llama.modeling_llama as modeling_llama

    def rotate_pairs(q, k, cos, sin, unsqueeze_dim=1):
        def rotate(x):
            pairs = x.unflatten(-1, (-1, 2))
            return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)

        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

    shipped = modeling_llama.apply_rotary_pos_emb
    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", rotate_pairs)
    hf_internals.check_ivtp_internals.cache_clear()
    try:
        with pytest.raises(hf_internals.IncompatibleTransformersError) as info:
            hf_internals.check_ivtp_internals()
    finally:
        hf_internals.check_ivtp_internals.cache_clear()
    message = str(info.value)
    assert "\n" not in message and "modeling_llama.apply_rotary_pos_emb" in message and "rotate_half" in message
    # the helper the installed release ships passes the same check (so the check is not merely strict)
    hf_internals.check_rotary_helper("modeling_llama.apply_rotary_pos_emb", shipped)


def test_tower_capture_equals_output_hidden_states(tiny_checkpoints, random_frames):
    """CLIPEncoder numbering: hidden_states[i] is layer i's input and hidden_states[i+1] its output."""
    llm = load_video_llm(tiny_checkpoints["video_llava"])
    tower = llm.model.model.video_tower
    pixel_values = llm.preprocess(random_frames(2, seed=1))
    with torch.no_grad():
        full = tower(pixel_values, output_hidden_states=True).hidden_states
    for i in range(tower.config.num_hidden_layers):
        layer = getattr(tower, "vision_model", tower).encoder.layers[i]
        got_in, got_out = run_tower_to_layer(tower, layer, pixel_values)
        assert torch.equal(got_in, full[i]) and torch.equal(got_out, full[i + 1]), (
            f"CLIPEncoder's hidden_states[{i}] is no longer encoder layer {i}'s input (and [{i + 1}] its output)"
        )


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_cls_attention_reads_what_clip_layers_have(tiny_checkpoints, family):
    llm = load_video_llm(tiny_checkpoints[family])
    tower = llm.model.model.video_tower if family == "video_llava" else llm.model.model.vision_tower
    for layer in getattr(tower, "vision_model", tower).encoder.layers:
        hf_internals.check_cls_attention_internals(layer)  # names the missing attribute of CLIPEncoderLayer
    hf_internals.check_mm_encoder_outputs(llm.model)  # names <Class>.forward if mm_encoder_outputs went away


def test_a_changed_internal_is_refused_in_one_line_naming_it(monkeypatch):
    """What a user sees when a release renames something the wrapper needs: one line, the internal, the range."""
    import transformers.models.llama.modeling_llama as modeling_llama

    def forward(self, hidden_states, attention_mask=None, position_ids=None, kv=None, position_embeddings=None):
        raise AssertionError("not called")

    monkeypatch.setattr(modeling_llama.LlamaDecoderLayer, "forward", forward)
    hf_internals.check_ivtp_internals.cache_clear()
    try:
        with pytest.raises(hf_internals.IncompatibleTransformersError) as info:
            hf_internals.check_ivtp_internals()
    finally:
        hf_internals.check_ivtp_internals.cache_clear()
    message = str(info.value)
    assert "\n" not in message and "LlamaDecoderLayer.forward" in message
    assert hf_internals.transformers_version() in message and "transformers>=" in message


def test_an_untested_release_is_refused_before_ivtp_is_installed(monkeypatch, tiny_checkpoints):
    from vidprune.errors import ModelLoadError
    from vidprune.pruners.ivtp import IVTPSchedule

    supported = "transformers" + ",".join(hf_internals.SUPPORTED_TRANSFORMERS)
    monkeypatch.setattr(hf_internals, "transformers_version", lambda: "5.99.0")
    hf_internals.check_ivtp_internals.cache_clear()
    try:
        with pytest.raises(ModelLoadError, match=r"transformers 5\.99\.0 is installed.*" + re.escape(supported)):
            load_video_llm(tiny_checkpoints["video_llava"], ivtp=IVTPSchedule.from_options(1, 0.5, None, None))
    finally:
        hf_internals.check_ivtp_internals.cache_clear()


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_the_tower_stops_at_its_feature_layer(tiny_checkpoints, random_frames, family):
    """No encoder layer after vision_feature_layer runs (and no post-layernorm): counted with hooks."""
    llm = load_video_llm(tiny_checkpoints[family])
    tower = llm.model.model.video_tower if family == "video_llava" else llm.model.model.vision_tower
    vision = getattr(tower, "vision_model", tower)
    layers = vision.encoder.layers
    ran: list[int] = []
    handles = [layer.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    post = getattr(vision, "post_layernorm", None)
    if post is not None:
        handles.append(post.register_forward_hook(lambda *_: ran.append(-1)))
    try:
        llm.encode(llm.preprocess(random_frames(2, seed=4)))
    finally:
        for handle in handles:
            handle.remove()
    last = llm.config.vision_feature_layer % (len(layers) + 1) - 1
    assert ran == list(range(last + 1)), f"encoder layers that ran: {ran}; the feature layer is layer {last}"


def test_vidprune_fetches_nothing_from_the_hub(tiny_checkpoints, tmp_path):
    """No Hub call at import, load, IVTP or prefix reuse, and none for attention (tests/hub_calls.py).

    transformers 5.25 installs ``kernels`` and kernelizes every ``from_pretrained`` by default (on a GPU:
    rotary, RMSNorm and activation kernels downloaded from the Hub); a ``flash_attention_N`` without its
    package, or an ``org/repo`` attention, is downloaded too. Run in a fresh interpreter with
    ``HF_HUB_OFFLINE`` unset and every socket that leaves the machine refused and recorded.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "USE_HUB_KERNELS")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no cached token, no cached kernels
    script = Path(__file__).with_name("hub_calls.py")
    proc = subprocess.run([sys.executable, str(script), tiny_checkpoints["video_llava"]], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("HUB_CALLS ")]
    assert proc.returncode == 0 and lines, f"tests/hub_calls.py failed:\n{proc.stderr[-3000:]}"
    report = json.loads(lines[-1].removeprefix("HUB_CALLS "))
    assert report["answers"] == 2
    assert report["vidprune"] == [], f"vidprune's load and answers called the Hub: {report['vidprune']}"
    assert report["use_kernels"] is False, "vidprune's load left transformers' Hub kernels on (use_kernels)"
    assert report["refusals"] == [], f"loading with a Hub attention called the Hub: {report['refusals']}"
    assert all(msg and "\n" not in msg and "Hugging Face Hub" in msg for msg in report["refused"]), report["refused"]
    if report["kernels_installed"]:  # the control: the same watch sees transformers go to the Hub
        assert any("huggingface.co" in call for call in report["control"]), (
            "the stock flash_attention_2 fallback made no Hub call the watch saw: the watch is blind, "
            f"or transformers stopped downloading it ({report['control']})"
        )


def test_qwen3_vl_video_wrapper_follows_the_installed_release(tiny_checkpoints):
    """Up to 5.24 the stock processor keeps the template's outer vision start/end around a video; 5.25 collapses it."""
    llm = load_video_llm(tiny_checkpoints["qwen3_vl"])
    kept = Version(hf_internals.transformers_version()) < Version("5.25.0")
    assert hf_internals.qwen3_vl_keeps_video_wrapper(llm.processor) is kept


def test_a_changed_qwen3_vl_video_layout_is_refused_naming_it(monkeypatch, tiny_checkpoints):
    llm = load_video_llm(tiny_checkpoints["qwen3_vl"])
    processor_class = type(llm.processor)
    stock = processor_class.replace_video_token

    def replace_video_token(self, video_inputs, video_idx, **kwargs):
        return self.vision_start_token * 2 + stock(self, video_inputs, video_idx, **kwargs)

    monkeypatch.setattr(processor_class, "replace_video_token", replace_video_token)
    with pytest.raises(hf_internals.IncompatibleTransformersError) as info:
        hf_internals.qwen3_vl_keeps_video_wrapper(llm.processor)
    message = str(info.value)
    assert "\n" not in message and f"{processor_class.__name__}.get_text_with_replacements" in message
    assert hf_internals.transformers_version() in message and "transformers>=" in message
