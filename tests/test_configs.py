"""Every preset in configs/ is valid, documents its command, and means what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidprune.config import VidpruneConfig, load_preset

# eval_*.yaml are sweep presets (benchmarks x budgets); tests/test_eval_sweep.py validates those
CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")
                 if not p.stem.startswith("eval_"))


def test_there_are_presets_for_both_families():
    names = {p.stem for p in CONFIGS}
    assert {"video_llava_455", "video_llava_227", "video_llava_114"} <= names
    assert {"llava_next_video_1024", "llava_next_video_512", "llava_next_video_256"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_is_valid_and_starts_with_its_command(path):
    text = path.read_text()
    assert text.startswith("#"), "a preset starts with a comment"
    assert "vidprune " in text.split("\n\n")[0] or any(line.startswith("#   vidprune") for line in text.splitlines())
    cfg = VidpruneConfig.from_dict(load_preset(path), source=str(path)).validate()
    assert cfg.model in ("LanguageBind/Video-LLaVA-7B-hf", "llava-hf/LLaVA-NeXT-Video-7B-hf") or cfg.model is None


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
