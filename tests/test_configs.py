"""Every shipped preset is valid, describes itself in one line, documents its command and means what its
name says; presets resolve by name, a file path still works, `vidprune presets` lists them."""

from __future__ import annotations

import pytest

from vidprune import __version__
from vidprune.cli import main
from vidprune.config import VidpruneConfig, load_preset
from vidprune.errors import ConfigError
from vidprune.presets import get_preset, list_presets, preset_description

# eval_*.yaml are sweep presets (benchmarks x budgets); tests/test_eval_sweep.py validates those
PIPELINE = [p.name for p in list_presets("pipeline")]


# The hub id of each family's presets (the real checkpoints; tests use tiny offline ones).
HUB_IDS = {"video_llava": "LanguageBind/Video-LLaVA-7B-hf", "llava_next_video": "llava-hf/LLaVA-NeXT-Video-7B-hf",
           "llava_onevision": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct",
           "qwen3_vl": "Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl_moe": "Qwen/Qwen3-VL-30B-A3B-Instruct"}


def test_there_are_presets_for_every_family_and_the_sweeps():
    assert {"video_llava_455", "video_llava_227", "video_llava_114", "video_llava_full"} <= set(PIPELINE)
    assert {"llava_next_video_1024", "llava_next_video_512", "llava_next_video_256"} <= set(PIPELINE)
    assert {"llava_onevision_1568", "llava_onevision_941", "llava_onevision_627", "llava_onevision_full"} <= set(PIPELINE)
    assert {"qwen2_5_vl_1440", "qwen2_5_vl_864", "qwen2_5_vl_576", "qwen2_5_vl_full"} <= set(PIPELINE)
    assert {"qwen3_vl_1760", "qwen3_vl_1056", "qwen3_vl_704", "qwen3_vl_full", "qwen3_vl_moe_1056"} <= set(PIPELINE)
    from vidprune.video_models import list_families

    assert set(HUB_IDS) == set(list_families())
    for family in list_families():
        assert any(name.startswith(family + "_") for name in PIPELINE), family
    assert {p.name for p in list_presets("eval")} >= {"eval_video_llava_vispruner", "eval_llava_next_video_mc"}
    assert {p.kind for p in list_presets()} == {"pipeline", "eval"}


@pytest.mark.parametrize("name", PIPELINE)
def test_preset_is_valid_and_starts_with_its_description_and_command(name):
    preset = get_preset(name)
    text = preset.text()
    assert text.startswith("# ") and preset.description == text.splitlines()[0][2:]
    assert preset.description.endswith(".") and len(preset.description) <= 110, "one line, a whole sentence"
    assert f"--config {name}" in text, "the header shows the command that runs the preset, by name"
    cfg = VidpruneConfig.from_dict(load_preset(name), source=name).validate()
    assert cfg.model in HUB_IDS.values()


def test_onevision_budgets_are_25_15_10_percent_of_the_stock_count():
    stock = 32 * 196 + 1  # 32 frames of 14x14 pooled tokens + the image newline
    for name, share in (("llava_onevision_1568", 0.25), ("llava_onevision_941", 0.15), ("llava_onevision_627", 0.10)):
        preset = load_preset(name)
        assert preset["frames"] == 32 and round(share * stock) == preset["budget"]


def test_qwen3_vl_budgets_are_25_15_10_percent_of_a_720p_clip():
    """The stock count from the stock video processor at the hub's pixel limits: 8 patches x 22x40 merged tokens."""
    import numpy as np
    from transformers import Qwen3VLVideoProcessor

    processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 24576 * 32 * 32},
                                      cap_pixels_per_frame=False, do_sample_frames=False)
    t, h, w = processor(videos=[np.zeros((16, 720, 1280, 3), np.uint8)], return_tensors="pt")["video_grid_thw"][0]
    stock = int(t * h * w) // 4
    assert stock == 7040
    for name, share in (("qwen3_vl_1760", 0.25), ("qwen3_vl_1056", 0.15), ("qwen3_vl_704", 0.10),
                        ("qwen3_vl_moe_1056", 0.15)):
        preset = load_preset(name)
        assert preset["frames"] == 16 and round(share * stock) == preset["budget"]


@pytest.mark.parametrize("name", [n for n in PIPELINE if n.split("_")[-1].isdigit()])
def test_budget_in_the_name_is_the_budget(name):
    assert load_preset(name)["budget"] == int(name.split("_")[-1])


def test_preset_by_name_by_path_and_unknown_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is read relative to the working directory or a checkout
    assert load_preset("video_llava_227")["budget"] == 227
    assert load_preset("video_llava_227.yaml")["budget"] == 227
    mine = tmp_path / "mine.yaml"
    mine.write_text(get_preset("video_llava_227").text().replace("budget: 227", "budget: 100"))
    assert load_preset(mine)["budget"] == 100 and load_preset("mine.yaml")["budget"] == 100
    (tmp_path / "video_llava_455").write_text("budget: 5\n")
    assert load_preset("video_llava_455")["budget"] == 5, "an existing file wins over a preset's name"
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: 10\nbugdet: 3\n")
    with pytest.raises(ConfigError, match="unknown key.*bugdet"):
        VidpruneConfig.from_dict(load_preset(bad), source=str(bad))


def test_preset_errors_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="not found") as info:
        load_preset(tmp_path / "missing.yaml")
    assert "preset name" in str(info.value)
    with pytest.raises(ConfigError, match="no preset of that name; presets: .*video_llava_227"):
        load_preset("video_lava_227")
    # the old repository path points at the name
    with pytest.raises(ConfigError, match="ships a preset of that name: --config video_llava_227"):
        load_preset("configs/video_llava_227.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_preset(tmp_path)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_preset(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("budget: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_preset(tmp_path / "broken.yaml")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no preset named"):
        get_preset("../pyproject")


def test_description_is_the_first_comment_line():
    assert preset_description("#\n#  First line.\n# second\nbudget: 1\n") == "First line."
    assert preset_description("budget: 1\n# not a header\n") == ""


def test_presets_command_lists_every_preset_with_its_description(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    for preset in list_presets():
        assert any(line.split() and line.split()[0] == preset.name and line.endswith(preset.description)
                   for line in out), preset.name
    assert out.index(next(line for line in out if line.startswith("pipeline presets"))) < \
        out.index("  " + next(line.strip() for line in out if line.strip().startswith("video_llava_227")))


def test_presets_command_prints_one_preset_and_rejects_unknown_names(capsys):
    assert main(["presets", "video_llava_227"]) == 0
    assert capsys.readouterr().out == get_preset("video_llava_227").text()
    assert main(["presets", "no_such_preset"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no preset named 'no_such_preset'" in err and "video_llava_227" in err


def test_demo_takes_the_presets_budget_and_a_bad_preset_fails_before_building_the_model(tmp_path, monkeypatch,
                                                                                         capsys):
    import json

    monkeypatch.setenv("VIDPRUNE_CACHE", str(tmp_path / "cache"))
    assert main(["ask", "--demo", "--config", "no_such_preset"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "cache").exists(), "the tiny checkpoint was built before the bad preset was reported"
    assert main(["ask", "--demo", "--config", "video_llava_227", "--max-new-tokens", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"]["budget"] == 227 and report["tokens"]["to_llm"] <= 227  # the preset's, not the demo's 114
    assert main(["ask", "--demo", "--config", "video_llava_227", "--budget", "50", "--max-new-tokens", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"]["budget"] == 50  # a flag beats the preset


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"vidprune {__version__} (Python ") and "torch " in out and out.count("\n") == 1


def test_validation_collects_every_problem_in_one_line():
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


def test_flag_choices_spelled_in_config_equal_the_registries():
    """config.py spells the dedup references (so declaring flags imports no torch); they must match the pruners'."""
    from vidprune import config
    from vidprune.pruners import DEDUP_REFERENCES

    assert set(config.DEDUP_REFERENCES) == set(DEDUP_REFERENCES)
