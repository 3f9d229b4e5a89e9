"""Every preset in configs/ is valid, documents its command, and means what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidprune.config import VidpruneConfig, load_preset

# eval_*.yaml are sweep presets (benchmarks x budgets); tests/test_eval_sweep.py validates those
CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")
                 if not p.stem.startswith("eval_"))


# The hub id of each family's presets (the real checkpoints; tests use tiny offline ones).
HUB_IDS = {"video_llava": "LanguageBind/Video-LLaVA-7B-hf", "llava_next_video": "llava-hf/LLaVA-NeXT-Video-7B-hf",
           "llava_onevision": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct"}


def test_there_are_presets_for_every_family():
    names = {p.stem for p in CONFIGS}
    assert {"video_llava_455", "video_llava_227", "video_llava_114"} <= names
    assert {"llava_next_video_1024", "llava_next_video_512", "llava_next_video_256"} <= names
    assert {"llava_onevision_1568", "llava_onevision_941", "llava_onevision_627", "llava_onevision_full"} <= names
    assert {"qwen2_5_vl_1440", "qwen2_5_vl_864", "qwen2_5_vl_576", "qwen2_5_vl_full"} <= names
    from vidprune.video_models import list_families

    assert set(HUB_IDS) == set(list_families())
    for family in list_families():
        assert any(name.startswith(family + "_") for name in names), family


def test_onevision_budgets_are_25_15_10_percent_of_the_stock_count():
    stock = 32 * 196 + 1  # 32 frames of 14x14 pooled tokens + the image newline
    for name, share in (("llava_onevision_1568", 0.25), ("llava_onevision_941", 0.15), ("llava_onevision_627", 0.10)):
        preset = load_preset(name)
        assert preset["frames"] == 32 and round(share * stock) == preset["budget"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_is_valid_and_starts_with_its_command(path):
    text = path.read_text()
    assert text.startswith("#"), "a preset starts with a comment"
    assert "vidprune " in text.split("\n\n")[0] or any(line.startswith("#   vidprune") for line in text.splitlines())
    cfg = VidpruneConfig.from_dict(load_preset(path), source=str(path)).validate()
    assert cfg.model in HUB_IDS.values() or cfg.model is None
    family = next((f for f in sorted(HUB_IDS, key=len, reverse=True) if path.stem.startswith(f + "_")), None)
    assert family is None or cfg.model == HUB_IDS[family]


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.split("_")[-1].isdigit()], ids=lambda p: p.stem)
def test_budget_in_the_name_is_the_budget(path):
    assert load_preset(path)["budget"] == int(path.stem.split("_")[-1])


def test_preset_by_name_and_unknown_keys(tmp_path):
    assert load_preset("video_llava_227")["budget"] == 227
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: 10\nbugdet: 3\n")
    from vidprune.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key.*bugdet"):
        VidpruneConfig.from_dict(load_preset(bad), source=str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_preset(tmp_path / "missing.yaml")


def test_validation_collects_every_problem_in_one_line():
    from vidprune.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        VidpruneConfig(budget=0, important_ratio=3, dedup_threshold=0, frames=4, fps=2.0).validate()
    message = str(info.value)
    assert "\n" not in message
    for part in ("budget", "important_ratio", "dedup_threshold", "either frames"):
        assert part in message


def test_qwen_budgets_are_25_15_10_percent_of_16_frames_of_720p():
    """The full count from the stock processor's own resize at its default pixel limits (no weights)."""
    from transformers import Qwen2VLVideoProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

    proc = Qwen2VLVideoProcessor()
    height, width = smart_resize(720, 1280, factor=28, min_pixels=proc.size["shortest_edge"],
                                 max_pixels=proc.size["longest_edge"])
    stock = 16 // proc.temporal_patch_size * (height // 28) * (width // 28)
    assert stock == 5760
    for name, share in (("qwen2_5_vl_1440", 0.25), ("qwen2_5_vl_864", 0.15), ("qwen2_5_vl_576", 0.10)):
        preset = load_preset(name)
        assert preset["frames"] == 16 and round(share * stock) == preset["budget"]
