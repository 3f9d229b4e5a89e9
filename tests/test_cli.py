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
    assert "answers are nonsense" in proc.stdout and "Writing model shards" not in proc.stderr  # quiet by default
    proc = _run("ask", sample_video, "What is moving?", "--model", str(ckpt), "--frames", "6", "--budget", "60",
                "--max-new-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no "Loading weights" bar, no library logs: the report is on stdout
    verbose = _run("ask", sample_video, "What is moving?", "--model", str(ckpt), "--frames", "2", "--budget", "60",
                   "--max-new-tokens", "1", "--verbose")
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr
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


def test_pruners_command_lists_the_registry_a_line_each(capsys):
    assert main(["pruners"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["none", "random", "uniform", "vispruner"]
    assert all(len(line.split()) > 3 for line in lines)  # each with what it does


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



@pytest.mark.parametrize("args,message", [
    (["ask", "v.mp4", "Q?", "--budget", "abc"], "vidprune ask: error: argument --budget: budget must be an integer"),
    (["ask", "v.mp4", "Q?", "--budjet", "227"], "vidprune ask: error: unknown option --budjet (did you mean --budget?)"),
    (["job", "m.jsonl", "--model", "m"], "vidprune job: error: the following arguments are required: --out"),
    (["job", "m.jsonl", "--out", "o", "--decoderz", "2"], "unknown option --decoderz (did you mean --decoders?)"),
    (["aks", "v.mp4", "Q?"], "invalid choice: 'aks'"),
    (["make-tiny-checkpoint", "d", "--family", "vidoe_llava"], "did you mean 'video_llava'?"),
])
def test_argparse_mistakes_are_one_line_with_a_near_name(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert message in err and err.count("\n") == 1 and "usage:" not in err, err
    if args[0] == "aks":
        assert "did you mean 'ask'?" in err


def test_a_model_path_that_does_not_exist_is_refused_at_once(tmp_path, sample_video):
    (tmp_path / "ckpt").mkdir()
    for model in ("ckpt/nope", "./nope", "nope/", str(tmp_path / "ckpt" / "nope")):
        proc = subprocess.run([sys.executable, "-m", "vidprune.cli", "ask", sample_video, "Q?", "--model", model],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "0"})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == f"vidprune: error: checkpoint directory {model!r} does not exist; check the path " \
                              "(a hub id looks like org/name)\n"


def test_help_texts_say_what_each_command_takes(capsys):
    for argv in (["demo", "--help"], ["make-tiny-checkpoint", "--help"], ["ask", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        help_text = capsys.readouterr().out
        if argv[0] == "demo":  # the demo refuses these (a live stream has no frame count): not offered
            for flag in ("--frames", "--max-frames", "--decode-backend", "--encoder-batch-size"):
                assert flag not in help_text
        if argv[0] == "make-tiny-checkpoint":
            assert "model family" in help_text
        if argv[0] == "ask":
            assert "QUESTION [QUESTION ...]" in help_text or "[QUESTION ...]" in help_text


def test_ask_answers_several_questions_with_one_prepared_video(tiny_checkpoints, sample_video, capsys):
    from vidprune.qa import VideoQA

    options = dict(frames=4, budget=60, max_new_tokens=3)
    questions = ["What is moving?", "Where is the square?"]
    code = main(["ask", sample_video, *questions, "--model", tiny_checkpoints["video_llava"], "--frames", "4",
                 "--budget", "60", "--max-new-tokens", "3", "--json"])
    assert code == 0
    reports = json.loads(capsys.readouterr().out)
    qa = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], **options)
    want = [qa.ask(sample_video, q) for q in questions]  # each question alone
    assert [r["question"] for r in reports] == questions
    assert [r["answer"] for r in reports] == [a.text for a in want]


def test_ask_batch_returns_an_error_per_failed_item(tiny_checkpoints, sample_video, tmp_path):
    from vidprune.qa import VideoQA

    qa = VideoQA.from_pretrained(tiny_checkpoints["video_llava"], frames=4, budget=60, max_new_tokens=3)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 100)
    answers = qa.ask_batch([(sample_video, "What?"), (str(broken), "What?"), (sample_video, "  ")])
    assert answers[0].error is None and answers[0].token_ids == qa.ask(sample_video, "What?").token_ids
    assert answers[1].error.startswith("cannot decode video") and answers[1].text == "" and answers[1].report == {}
    assert "question is empty" in answers[2].error




def test_the_report_says_what_ran(tiny_checkpoints, sample_video, capsys):
    ckpt = tiny_checkpoints["video_llava"]
    assert main(["ask", sample_video, "What?", "--model", ckpt, "--frames", "4", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "frames: 4  visual tokens: 1028 full, no budget: no pruner ran -> " in err and "after none" not in err
    assert main(["ask", sample_video, "What?", "--model", ckpt, "--frames", "4", "--budget", "60",
                 "--max-new-tokens", "2", "--json", "--seed", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    from vidprune.qa import summarize

    line = summarize(report).splitlines()[0]
    tok = report["tokens"]
    assert f"-> {tok['after_vispruner']} proposed by vispruner -> {tok['after_dedup']} after dedup -> " \
           f"{tok['to_llm']} to the LLM (budget 60)" in line
    opts = report["options"]
    assert {k: opts[k] for k in ("frames", "fps", "device", "dtype", "seed", "max_new_tokens", "budget", "pruner")} \
        == {"frames": 4, "fps": None, "device": "cpu", "dtype": "float32", "seed": 3, "max_new_tokens": 2,
            "budget": 60, "pruner": "vispruner"}
    assert set(opts["versions"]) == {"vidprune", "torch", "transformers", "av"}
    assert opts["model"] == os.path.abspath(ckpt) == report["model"]
    # a pruner asked for without a budget would not run: refused instead of silently doing nothing
    assert main(["ask", sample_video, "What?", "--model", ckpt, "--pruner", "vispruner"]) == 2
    assert "no budget was given" in capsys.readouterr().err


def test_the_report_counts_qwen_frames_and_small_shares(tiny_checkpoints, sample_video, capsys):
    from vidprune.qa import _percent, summarize

    assert main(["ask", sample_video, "What?", "--model", tiny_checkpoints["qwen2_5_vl"], "--frames", "4",
                 "--budget", "64", "--max-new-tokens", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sampled_frames"] == 4 and len(report["frames"]) == 2
    assert summarize(report).startswith("frames: 4 (2 temporal patches of 2)  visual tokens: ")
    assert [_percent(r) for r in (0.000014, 0.014, 0.5, 0.0)] == ["0.0014%", "1.4%", "50.0%", "0.0%"]
