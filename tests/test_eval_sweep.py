"""`vidprune eval` end to end on the tiny checkpoint: the paper preset as one command (with a judge
over a real local HTTP server), the multiple-choice benchmarks, resumption after a killed run,
fail-fast errors and the report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eval_helpers import JudgeServer, fake_verdict, qa_pair_benchmark, write_clip, write_csv, write_json

from vidprune.cli import main
from vidprune.errors import ConfigError
from vidprune.eval.methods import TokenCounts
from vidprune.eval.runner import SweepRunner, token_counts
from vidprune.eval.settings import resolve_settings
from vidprune.presets import get_preset, list_presets

PAPER_PRESET = "eval_video_llava_vispruner"  # shipped presets, by name (vidprune/configs/)
EVAL_PRESETS = [p.name for p in list_presets("eval")]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _paper_data(root: Path) -> None:
    """Video-LLaVA's GPT_Zero_Shot_QA layout, one video each: TGIF-QA two questions (the judge accepts
    one), MSVD-QA and MSRVTT-QA one question (accepted)."""
    for folder, videos, ext, n in (("TGIF_Zero_Shot_QA", "mp4", ".mp4", 2), ("MSVD_Zero_Shot_QA", "videos", ".avi", 1),
                                   ("MSRVTT_Zero_Shot_QA", "videos/all", ".mp4", 1)):
        q_path, made = qa_pair_benchmark(root / folder, n_videos=1, per_video=n, ext=ext)
        made.rename(root / folder / "tmp")
        (root / folder / videos).parent.mkdir(parents=True, exist_ok=True)
        (root / folder / "tmp").rename(root / folder / videos)


def test_paper_preset_is_one_command_with_judge_fastv_and_report(tmp_path, video_llava_ckpt, capsys, monkeypatch):
    _paper_data(tmp_path / "data")
    out = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")  # the preset's api_key_env
    with JudgeServer() as server:
        code = main(["eval", "--config", str(PAPER_PRESET), "--data-root", str(tmp_path / "data"),
                     "--model", video_llava_ckpt, "--judge-url", server.url, "--max-new-tokens", "3",
                     "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert server.requests and all(h["Authorization"] == "Bearer sk-local-test" for h in server.headers)
    recs = _records(out)
    arms = ["full", "fastv@455", "vispruner@455", "fastv@227", "vispruner@227", "fastv@114", "vispruner@114"]
    assert len(recs) == 4 * len(arms) and len({r["key"] for r in recs}) == len(recs)
    assert {r["arm"] for r in recs} == set(arms) and {r["benchmark"] for r in recs} == {"tgif_qa", "msvd_qa",
                                                                                         "msrvtt_qa"}
    for r in recs:
        assert r["num_frames"] == 8 and r["judge"]["model"] == "gpt-3.5-turbo"  # the preset's judge model
        assert (r["correct"], r["judge"]["score"]) == fake_verdict(r["prediction"])  # each arm's own prediction judged
        assert set(r["latency_s"]) == {"decode", "encode", "select", "generate", "total"}
        if r["method"] == "vispruner":
            assert r["tokens"]["to_llm"] <= r["budget"] and r["visual_tokens"] == r["tokens"]["to_llm"]
        elif r["method"] == "fastv":  # every token enters; IVTP keeps the budget after layer 2
            assert r["tokens"]["to_llm"] == 8 * 257 and r["tokens"]["after_ivtp"] == r["budget"] == r["visual_tokens"]
        else:
            assert r["tokens"]["to_llm"] == 8 * 257 and r["flops"]["llm_ratio"] == 1.0
    ratio = {r["arm"]: r["flops"]["llm_ratio"] for r in recs}
    assert ratio["vispruner@114"] < ratio["vispruner@455"] < ratio["fastv@455"] < 1.0
    agg = json.loads((out / "aggregate.json").read_text())
    assert [a["arm"] for a in agg["arms"]] == arms
    for a in agg["arms"]:
        for name, m in a["results"].items():
            verdicts = [fake_verdict(r["prediction"]) for r in recs if r["arm"] == a["arm"] and r["benchmark"] == name]
            expected = (100.0 * sum(c for c, _ in verdicts) / len(verdicts), sum(s for _, s in verdicts) / len(verdicts))
            assert m["metric"] == "judge_accuracy"
            assert (m["judge_accuracy"], m["judge_score"]) == pytest.approx(expected)
    table = (out / "table.md").read_text()
    assert "| Method | Budget | Visual tokens | TGIF-QA Acc | TGIF-QA Score | MSVD-QA Acc | MSVD-QA Score | " \
           "MSRVTT-QA Acc | MSRVTT-QA Score | Rel. to full |" in table
    assert "| Full (no pruning) | 2048 (100%) | 2056 |" in table and "| FastV | 227 (11.1%) | 227 |" in table
    assert table in captured.out
    for png in ("accuracy_vs_tokens.png", "latency_vs_tokens.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report rebuilds from samples.jsonl alone, identically
    (out / "aggregate.json").unlink()
    assert main(["eval", "--out", str(out), "--report-only"]) == 0
    assert json.loads((out / "aggregate.json").read_text())["arms"] == agg["arms"]


def test_multiple_choice_benchmarks_in_one_sweep(tmp_path, video_llava_ckpt, capsys):
    d = tmp_path / "data"
    write_clip(d / "videomme" / "data" / "vm1.mp4")
    write_json(d / "videomme" / "videomme.json", [{"videoID": "vm1", "question_id": "001-1", "question": "What moves?",
                                                   "options": ["A. a square", "B. a dog", "C. a car", "D. a cat"],
                                                   "answer": "A", "duration": "short", "task_type": "Counting"}])
    write_clip(d / "mvbench" / "video" / "clevrer" / "video_validation" / "video_10009.mp4", num_frames=24)
    write_json(d / "mvbench" / "json" / "moving_direction.json", [
        {"video": "video_10009.mp4", "question": "Which direction?", "candidates": ["left", "right", "up"],
         "answer": "right", "start": 0.5, "end": 3.0}])
    write_clip(d / "egoschema" / "videos" / "uid-1.mp4")
    write_json(d / "egoschema" / "questions.json", [{"q_uid": "uid-1", "google_drive_id": "g", "question": "Goal?",
                                                     **{f"option {k}": f"goal {k}" for k in range(5)}}])
    write_json(d / "egoschema" / "subset_answers.json", {"uid-1": 2})
    write_clip(d / "nextqa" / "NExTVideo" / "1150" / "244.mp4")
    write_csv(d / "nextqa" / "test.csv", [{"video": "244", "frame_count": "9", "width": "80", "height": "64",
                                           "question": "why?", "answer": "3", "qid": "1", "type": "CW",
                                           **{f"a{k}": f"reason {k}" for k in range(5)}}])
    args = ["eval", "--model", video_llava_ckpt, "--frames", "2", "--budgets", "512,16",
            "--methods", "vispruner,uniform", "--ivtp", "2:0.5", "--max-new-tokens", "3", "--out", str(tmp_path / "out"),
            "--data-root", str(d), "--no-progress"]
    for name, ann, vids in (("videomme", "videomme/videomme.json", "videomme"), ("mvbench", "mvbench/json", "mvbench/video"),
                            ("egoschema", "egoschema/questions.json", "egoschema/videos"),
                            ("nextqa", "nextqa/test.csv", "nextqa/NExTVideo")):
        args += ["--benchmark", name, "--annotations", ann, "--videos", vids]
    assert main(args) == 0, capsys.readouterr().err
    recs = _records(tmp_path / "out")
    assert {r["arm"] for r in recs} == {"full", "vispruner@16", "uniform@16"}  # 512 = every token of 2 frames: full
    assert len(recs) == 4 * 3
    answers = {"videomme": "A", "mvbench": "B", "egoschema": "C", "nextqa": "D"}
    for r in recs:
        assert r["kind"] == "multiple_choice" and r["answer"] == answers[r["benchmark"]]
        assert r["extracted"] in ("", "A", "B", "C", "D", "E") and r["correct"] == (r["extracted"] == r["answer"])
        assert r["num_frames"] == 2 and r["tokens"]["to_llm"] <= (16 if r["budget"] else 2 * 257)
        if r["budget"]:  # --ivtp: in-LLM pruning on top of each pruned arm keeps half of what entered
            assert r["tokens"]["after_ivtp"] == math.ceil(0.5 * r["tokens"]["to_llm"]) == r["visual_tokens"]
        else:
            assert "after_ivtp" not in r["tokens"] and r["visual_tokens"] == 2 * 257
    mv = next(r for r in recs if r["benchmark"] == "mvbench")
    assert mv["options"] == ["left", "right", "up"] and mv["category"] == "moving_direction"
    agg = json.loads((tmp_path / "out" / "aggregate.json").read_text())
    for a in agg["arms"]:
        for name, m in a["results"].items():
            mine = [r["correct"] for r in recs if r["arm"] == a["arm"] and r["benchmark"] == name]
            assert m["metric"] == "accuracy" and m["value"] == 100.0 * sum(mine) / len(mine)
    assert "| Video-MME Acc | MVBench Acc | EgoSchema Acc | NExT-QA Acc |" in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_the_new_families_run_a_sweep_with_pruning_and_ivtp(tmp_path, tiny_checkpoints, family, capsys):
    from vidprune import VideoQA

    ckpt, d, out = tiny_checkpoints[family], tmp_path / "data", tmp_path / "out"
    write_clip(d / "videomme" / "data" / "vm1.mp4", num_frames=24)
    write_json(d / "videomme" / "videomme.json", [{"videoID": "vm1", "question_id": "001-1", "question": "What moves?",
                                                   "options": ["A. a square", "B. a dog", "C. a car", "D. a cat"],
                                                   "answer": "A", "duration": "short", "task_type": "Counting"}])
    common = ["--model", ckpt, "--frames", "4", "--max-new-tokens", "3", "--data-root", str(d), "--no-progress",
              "--benchmark", "videomme", "--annotations", "videomme/videomme.json", "--videos", "videomme"]
    assert main(["eval", *common, "--budgets", "40", "--methods", "vispruner", "--ivtp", "2:0.5", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    recs = {r["arm"]: r for r in _records(out)}
    assert "vispruner@40" in recs
    pruned = recs["vispruner@40"]
    assert pruned["num_frames"] == 4 and 0 < pruned["tokens"]["to_llm"] <= 40
    assert pruned["tokens"]["after_ivtp"] == math.ceil(0.5 * pruned["tokens"]["to_llm"]) == pruned["visual_tokens"]
    # the sweep's arm is vidprune's own pipeline: the same options through VideoQA give the same tokens
    qa = VideoQA.from_pretrained(ckpt, budget=40, frames=4, dedup=False)
    assert qa.prepare(str(d / "videomme" / "data" / "vm1.mp4")).tokens_count["to_llm"] == pruned["tokens"]["to_llm"]
    if family in ("qwen2_5_vl", "qwen3_vl"):  # FastV's share of the stock stream is only known per video there: refused up front
        assert main(["eval", *common, "--budgets", "40", "--methods", "fastv", "--out", str(tmp_path / "o2")]) == 2
        assert "fastv keeps a share of the stock stream" in capsys.readouterr().err


def test_an_interrupted_sweep_resumes_without_redoing_answers(tmp_path, video_llava_ckpt, capsys):
    q_path, videos = qa_pair_benchmark(tmp_path / "msvd", n_videos=4, per_video=2)
    out = tmp_path / "out"
    args = ["eval", "--benchmark", "msvd_qa", "--annotations", str(q_path), "--videos", str(videos),
            "--model", video_llava_ckpt, "--frames", "2", "--budgets", "32,16", "--methods", "vispruner",
            "--max-new-tokens", "16", "--out", str(out), "--no-progress"]
    total = 8 * 3
    proc = subprocess.Popen([sys.executable, "-m", "vidprune.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    samples = out / "samples.jsonl"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if samples.exists() and samples.read_text().count("\n") >= 4:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = samples.read_text().splitlines()
    assert 4 <= len(before) < total
    with open(samples, "a") as f:  # as if killed in the middle of writing a line
        f.write('{"key": "[\\"msvd_qa\\", \\"vispruner@16\\"')
    capsys.readouterr()
    assert main(args) == 0  # the same command again
    err = capsys.readouterr().err
    assert f"resuming: {len(before)} of {total} answers already" in err and "dropped a partial last line" in err
    after = samples.read_text().splitlines()
    assert after[: len(before)] == before  # earlier answers untouched, not redone
    assert len(after) == total and len({json.loads(line)["key"] for line in after}) == total
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"resuming: {total} of {total}" in err
    assert "once for" not in err  # nothing left to answer: the model is not even loaded
    assert samples.read_text().splitlines() == after
    with JudgeServer() as server:  # a judge added on a rerun judges the earlier answers, nothing else changes
        assert main([*args, "--judge-url", server.url, "--judge-model", "m"]) == 0
    judged = _records(out)
    assert [r["key"] for r in judged] == [json.loads(line)["key"] for line in after]
    assert all((r["judge"]["correct"], r["judge"]["score"]) == fake_verdict(r["prediction"]) for r in judged)
    assert all(r["judge"]["correct"] == r["correct"] for r in judged)
    assert [r["prediction"] for r in judged] == [json.loads(line)["prediction"] for line in after]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "64"], "--budget vary per arm of a sweep: use --budgets and --methods"),
        (["--methods", "vispruner,nope"], "unknown method 'nope'; choose from: fastv, full, random"),
        (["--budgets", "64,zero"], "budgets must be integers or 'full', got 'zero'"),
        (["--judge-url", "ftp://x", "--judge-model", "m"], "judge URL 'ftp://x' must be an http(s) URL"),
        (["--judge-model", "m"], "--judge-model needs --judge-url"),
        (["--ivtp", "2"], "--ivtp takes LAYER:KEEP_RATIO"),
        (["--fps", "2"], "not fps"),
    ],
)
def test_bad_options_fail_in_one_line_before_any_work(tmp_path, video_llava_ckpt, capsys, extra, message):
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=1, per_video=1)
    code = main(["eval", "--benchmark", "msvd_qa", "--annotations", str(q_path), "--videos", str(videos),
                 "--model", video_llava_ckpt, "--budgets", "64", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_videos_stop_the_sweep_unless_skipped(tmp_path, video_llava_ckpt, capsys):
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=2, per_video=1)
    (videos / "clip1.mp4").unlink()
    code = main(["eval", "--benchmark", "msvd_qa", "--annotations", str(q_path), "--videos", str(videos),
                 "--model", video_llava_ckpt, "--budgets", "64", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "1 of 2 MSVD-QA questions have no video" in err and "--skip-missing-videos" in err
    settings = resolve_settings(benchmarks=_sources(q_path, videos), budgets="64", out=str(tmp_path / "out"),
                                skip_missing_videos=True, options={"model": video_llava_ckpt, "frames": 2})
    runner = SweepRunner(settings, progress=False)
    runner.setup()  # no model loads in setup
    assert [s.sample_id for s in runner.data[0].samples] == ["clip0_0"]
    assert "left out (--skip-missing-videos)" in capsys.readouterr().err


def test_a_judge_that_refuses_stops_the_run_before_the_model_loads(tmp_path, video_llava_ckpt, capsys):
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=1, per_video=1)
    with JudgeServer(status=401) as server:
        code = main(["eval", "--benchmark", "msvd_qa", "--annotations", str(q_path), "--videos", str(videos),
                     "--model", video_llava_ckpt, "--budgets", "64", "--out", str(tmp_path / "out"),
                     "--judge-url", server.url, "--judge-model", "m", "--judge-api-key-env", "MY_JUDGE_KEY"])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 401" in err and "$MY_JUDGE_KEY" in err and err.count("\n") == 1
    assert len(server.requests) == 1 and "once for" not in err  # the model never loaded
    assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_an_undecodable_video_stops_the_run_unless_skipped(tmp_path, video_llava_ckpt, capsys):
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=2, per_video=1)
    (videos / "clip0.mp4").write_bytes(b"\x00not a video" * 100)
    args = ["eval", "--benchmark", "msvd_qa", "--annotations", str(q_path), "--videos", str(videos),
            "--model", video_llava_ckpt, "--frames", "2", "--budgets", "16", "--max-new-tokens", "2",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "clip0.mp4" in err and "--skip-missing-videos" in err and "Traceback" not in err
    assert main([*args, "--skip-missing-videos"]) == 0
    assert "its 1 question(s) left out" in capsys.readouterr().err
    assert {r["sample_id"] for r in _records(tmp_path / "out")} == {"clip1_0"}


def test_resuming_with_other_pipeline_options_is_refused(tmp_path, video_llava_ckpt):
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=1, per_video=1)
    common = dict(benchmarks=_sources(q_path, videos), budgets="64", out=str(tmp_path / "out"))
    SweepRunner(resolve_settings(**common, options={"model": video_llava_ckpt, "frames": 2})).setup()
    with pytest.raises(ConfigError, match="holds answers of a run with other options \\(frames differ\\)"):
        SweepRunner(resolve_settings(**common, options={"model": video_llava_ckpt, "frames": 4})).setup()
    # more methods, budgets or benchmarks into the same folder are fine
    SweepRunner(resolve_settings(**{**common, "budgets": "64,32"}, methods=["vispruner", "random"],
                                 options={"model": video_llava_ckpt, "frames": 2})).setup()


@pytest.mark.parametrize("path", EVAL_PRESETS)
def test_eval_presets_validate_and_plan_their_table(path, tiny_checkpoints):
    text = get_preset(path).text()
    assert text.startswith("#") and "#   vidprune eval --config " + path + " " in text
    settings = resolve_settings(path, data_root="/data")
    assert settings.options["model"] in ("LanguageBind/Video-LLaVA-7B-hf", "llava-hf/LLaVA-NeXT-Video-7B-hf")
    assert all(s.annotations.startswith("/data/") for s in settings.benchmarks)
    family = "video_llava" if "Video-LLaVA" in settings.options["model"] else "llava_next_video"
    stand_in = {**settings.options, "model": tiny_checkpoints[family]}  # same geometry, no hub access
    from vidprune.eval.methods import plan_arms
    from vidprune.qa import VideoQA

    counts = token_counts(VideoQA.resolve_config(config={k: v for k, v in stand_in.items()}))
    arms = plan_arms(settings.methods, settings.budgets, counts, settings.ivtp)
    for arm in arms:  # every arm's options are valid for the model
        VideoQA.resolve_config(config={**stand_in, **arm.options})
    if path == PAPER_PRESET:
        assert counts == TokenCounts(full=2048, stream=2056)
        assert [a.label for a in arms] == ["full", "fastv@455", "vispruner@455", "fastv@227", "vispruner@227",
                                           "fastv@114", "vispruner@114"]
        assert [b.name for b in settings.benchmarks] == ["tgif_qa", "msvd_qa", "msrvtt_qa"]
        assert settings.judge.model == "gpt-3.5-turbo"
        assert resolve_settings(path, data_root="/data", no_judge=True).judge is None  # --no-judge
        for a in arms:
            if a.method == "fastv":
                assert math.ceil(a.options["ivtp_keep"] * counts.stream) == a.budget
    else:
        assert counts.full == 32 * 144 and len(arms) == 1 + 4 * 3


def test_list_shows_benchmarks_and_methods(capsys):
    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("videomme", "mvbench", "egoschema", "nextqa", "msvd_qa", "msrvtt_qa", "tgif_qa", "activitynet_qa",
                 "vispruner", "random", "uniform", "fastv", "full"):
        assert f"  {name} " in out


def _sources(q_path, videos):
    from vidprune.eval.settings import BenchmarkSource

    return [BenchmarkSource("msvd_qa", str(q_path), str(videos))]


def test_eval_hands_the_pipeline_options_to_every_arm(tmp_path, video_llava_ckpt, capsys):
    """`vidprune eval` with the options that do not vary per arm (seed, dedup's, IVTP's) set on the command
    line: each arm's kept tokens, IVTP's count and the answer's ids are VideoQA's with the arm's options."""
    from vidprune import VideoQA
    from vidprune.eval.benchmarks import load_benchmark

    d, out = tmp_path / "data", tmp_path / "out"
    write_clip(d / "videomme" / "data" / "vm1.mp4", num_frames=24)
    write_json(d / "videomme" / "videomme.json", [{"videoID": "vm1", "question_id": "001-1", "question": "What moves?",
                                                   "options": ["A. a square", "B. a dog", "C. a car", "D. a cat"],
                                                   "answer": "A", "duration": "short", "task_type": "Counting"}])
    assert main(["eval", "--model", video_llava_ckpt, "--frames", "4", "--max-new-tokens", "3", "--data-root", str(d),
                 "--no-progress", "--benchmark", "videomme", "--annotations", "videomme/videomme.json", "--videos",
                 "videomme", "--budgets", "60", "--methods", "random,vispruner_dedup", "--seed", "3",
                 "--dedup-threshold", "0.8", "--dedup-reference", "previous", "--ivtp-layer", "2", "--ivtp-keep", "0.5",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    recs = {r["arm"]: r for r in _records(out)}
    video = str(d / "videomme" / "data" / "vm1.mp4")
    prompt = load_benchmark("videomme", d / "videomme" / "videomme.json", d / "videomme").samples[0].prompt
    for arm, options in (("random@60", dict(pruner="random", dedup=False)),
                         ("vispruner_dedup@60", dict(pruner="vispruner", dedup=True))):
        qa = VideoQA.from_pretrained(video_llava_ckpt, frames=4, budget=60, seed=3, dedup_threshold=0.8,
                                     dedup_reference="previous", ivtp_layer=2, ivtp_keep=0.5, max_new_tokens=3,
                                     **options)
        want = qa.ask(video, prompt)
        rec = recs[arm]
        assert rec["tokens"]["to_llm"] == want.report["tokens"]["to_llm"]
        assert rec["tokens"]["after_dedup"] == want.report["tokens"]["after_dedup"]
        assert rec["tokens"]["after_ivtp"] == want.report["ivtp"]["visual_tokens_kept"] < rec["tokens"]["to_llm"]
        assert rec["prediction_ids"] == want.token_ids, arm

