"""The ``vidprune`` command end to end: generated videos, saved tiny checkpoints, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vidprune.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vidprune.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)


def test_make_tiny_checkpoint_then_ask_with_json_report(tmp_path, sample_video):
    ckpt = tmp_path / "ckpt"
    proc = _run("make-tiny-checkpoint", str(ckpt), "--family", "llava_next_video")
    assert proc.returncode == 0, proc.stderr
    assert "answers are nonsense" in proc.stdout
    proc = _run("ask", sample_video, "What is moving?", "--model", str(ckpt), "--frames", "6", "--budget", "60",
                "--max-new-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["family"] == "llava_next_video"
    assert report["tokens"]["full"] == 6 * 144 and report["tokens"]["to_llm"] <= 60
    assert len(report["frames"]) == 6 and report["ivtp"] is None
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_ask_prints_answer_and_summary(tiny_checkpoints, sample_video, capsys, family):
    code = main(["ask", sample_video, "What is moving?", "--model", tiny_checkpoints[family], "--frames", "4",
                 "--budget", "100", "--ivtp-layer", "2", "--ivtp-keep", "0.5", "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.strip() != "" or "visual tokens" in err  # the answer line (may be blank bytes of a random model)
    assert "visual tokens:" in err and "to the LLM (budget 100)" in err and "IVTP (layer 2 keeps 0.5)" in err


def test_config_preset_with_cli_override(tiny_checkpoints, sample_video, tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"model: {tiny_checkpoints['video_llava']}\nframes: 8\nbudget: 227\ndedup: true\n")
    code = main(["ask", sample_video, "What?", "--config", str(preset), "--budget", "60", "--no-dedup", "--json",
                 "--max-new-tokens", "2"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["tokens"]["budget"] == 60 and report["options"]["dedup"] is False
    assert report["tokens"]["to_llm"] == 60 and len(report["frames"]) == 8


@pytest.mark.parametrize("args,code,message", [
    (["--budget", "0"], 2, "budget must be a positive integer, got 0"),
    (["--important-ratio", "2"], 2, r"important_ratio must be in [0, 1]"),
    (["--budget", "4"], 2, "smaller than the 8 [CLS] tokens"),
    (["--ivtp-layer", "0", "--ivtp-keep", "0.5"], 2, "ivtp layer must be >= 1"),
])
def test_bad_options_one_line_error(tiny_checkpoints, sample_video, capsys, args, code, message):
    rc = main(["ask", sample_video, "What?", "--model", tiny_checkpoints["video_llava"], *args])
    err = capsys.readouterr().err
    assert rc == code
    assert message in err and err.count("\n") == 1 and err.startswith("vidprune: error: ")


def test_bad_inputs_exit_codes_without_traceback(tiny_checkpoints, sample_video, tmp_path):
    not_a_model = tmp_path / "bert"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"model_type": "bert"}')
    text_file = tmp_path / "notes.mp4"
    text_file.write_text("this is not a video\n" * 10)
    cases = [
        (["ask", str(tmp_path / "missing.mp4"), "What?", "--model", tiny_checkpoints["video_llava"]], 1, "does not exist"),
        (["ask", str(text_file), "What?", "--model", tiny_checkpoints["video_llava"]], 1, "notes.mp4"),
        (["ask", sample_video, "What?", "--model", str(not_a_model)], 2, "'bert' checkpoint"),
        (["ask", sample_video, "   ", "--model", tiny_checkpoints["video_llava"]], 2, "question is empty"),
    ]
    for args, code, message in cases:
        proc = _run(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_demo_runs_offline_and_says_the_model_is_random(tmp_path):
    proc = _run("ask", "--demo", "--max-new-tokens", "3", env_extra={"VIDPRUNE_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "ANSWERS NONSENSE" in proc.stderr
    assert "visual tokens: 2056 full" in proc.stderr
    assert (tmp_path / "sample-moving-square.mp4").exists()


def test_pruners_command_lists_the_registry(capsys):
    assert main(["pruners"]) == 0
    assert capsys.readouterr().out.split() == ["none", "random", "uniform", "vispruner"]


# Non-default pruning options: each changes what reaches the LLM (the random pruner's seed picks its tokens,
# dedup's threshold and reference what repeats, IVTP how many visual tokens the last layers see).
PRUNING_FLAGS = ["--budget", "60", "--pruner", "random", "--seed", "3", "--dedup-threshold", "0.8",
                 "--dedup-reference", "previous", "--ivtp-layer", "2", "--ivtp-keep", "0.5"]
PRUNING_OPTIONS = dict(budget=60, pruner="random", seed=3, dedup_threshold=0.8, dedup_reference="previous",
                       ivtp_layer=2, ivtp_keep=0.5)


def test_ask_hands_every_pruning_option_to_the_llm(video_llava_ckpt, sample_video, capsys):
    """`vidprune ask` with every pruning option set: the tokens kept per frame and by IVTP, and the answer, are
    those of VideoQA built with the same options in this process (and another seed keeps other tokens)."""
    from vidprune.qa import VideoQA

    code = main(["ask", sample_video, "What is moving?", "--model", video_llava_ckpt, "--frames", "4",
                 *PRUNING_FLAGS, "--max-new-tokens", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    want = VideoQA.from_pretrained(video_llava_ckpt, frames=4, max_new_tokens=4, **PRUNING_OPTIONS).ask(
        sample_video, "What is moving?").report
    assert report["options"]["pruner"] == "random" and report["options"]["dedup_reference"] == "previous"
    assert [f["kept"] for f in report["frames"]] == [f["kept"] for f in want["frames"]]
    assert report["ivtp"]["visual_tokens_kept"] == want["ivtp"]["visual_tokens_kept"] < report["tokens"]["to_llm"]
    assert report["ivtp"]["kept"] == want["ivtp"]["kept"] and report["answer"] == want["answer"]
    other_seed = VideoQA.from_pretrained(video_llava_ckpt, frames=4, **{**PRUNING_OPTIONS, "seed": 4})
    assert [f["kept"] for f in other_seed.prepare(sample_video).frames] != [f["kept"] for f in report["frames"]]
