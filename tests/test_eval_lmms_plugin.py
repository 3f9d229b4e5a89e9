"""The lmms-eval plugin, tested against the real lmms-eval package: its CLI runs a task defined with
lmms-eval's own task YAML (--include_path) over generated videos, with `--model vidprune`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eval_helpers import write_clip

TASK = "vidprune_tiny_mc"
QUESTION = "What moves across the video?"
OPTIONS = ["a white square", "a dog", "a car", "nothing"]

# lmms-eval's own task format: a local JSON Lines dataset, functions from utils.py beside the YAML.
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = '''\
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    letters = "ABCD"
    options = "\\n".join(f"{letters[i]}. {o}" for i, o in enumerate(doc["options"]))
    return f"{doc['question']}\\n{options}\\nAnswer with the option's letter from the given choices directly."


def process_results(doc, results):
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    return {"accuracy": float(extract_mcq_answer(results[0], ["A", "B", "C", "D"]) == doc["answer"])}
'''


def _prompt() -> str:
    options = "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(OPTIONS))
    return f"{QUESTION}\n{options}\nAnswer with the option's letter from the given choices directly."


def test_entry_point_resolves_vidprune_in_lmms_evals_registry():
    from lmms_eval.models import get_model, list_available_models

    from vidprune.eval.lmms_plugin import VidpruneLMM

    assert "vidprune" in list_available_models() and get_model("vidprune") is VidpruneLMM


def _run_lmms_eval(args: list[str], tmp_path: Path, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(hf_home),
           "TOKENIZERS_PARALLELISM": "false"}
    lmms_eval = Path(sys.executable).with_name("lmms-eval")
    result = subprocess.run([str(lmms_eval), "--model", "vidprune", *args, "--device", "cpu", "--batch_size", "1"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=hf_home)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def _reports(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run_tiny_task(tmp_path: Path, checkpoint: str, num_videos: int, model_args: str,
                   *extra: str) -> tuple[list[str], subprocess.CompletedProcess, Path, Path]:
    """The task above over ``num_videos`` generated clips, through the lmms-eval CLI with ``--model vidprune``.

    Returns (the videos, the finished process, lmms-eval's output folder, vidprune's report file).
    """
    videos = [str(write_clip(tmp_path / "videos" / f"clip{i}.mp4", seed=i)) for i in range(num_videos)]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "video": v, "question": QUESTION, "options": OPTIONS, "answer": "A"})
                            + "\n" for i, v in enumerate(videos)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(TASK_YAML.format(task=TASK, docs=docs))
    (tasks / "utils.py").write_text(TASK_UTILS)
    out, report_file = tmp_path / "out", tmp_path / "answers.jsonl"
    (tmp_path / "hf").mkdir()
    result = _run_lmms_eval(["--model_args", f"pretrained={checkpoint},{model_args},report_file={report_file}",
                             "--tasks", TASK, "--include_path", str(tasks), "--output_path", str(out), *extra],
                            tmp_path, tmp_path / "hf")
    return videos, result, out, report_file


def test_lmms_eval_cli_runs_its_own_task_with_vidprune_pruning(tmp_path, video_llava_ckpt):
    videos, result, out, report_file = _run_tiny_task(tmp_path, video_llava_ckpt, 3, "budget=64,frames=4",
                                                      "--log_samples")
    # the summary line says what ran, and that every answer was pruned to the budget
    summary = next(line for line in result.stderr.splitlines() if line.startswith("vidprune: 3 answers"))
    assert "(pruner vispruner, dedup off, budget 64)" in summary and "of 1028;" in summary
    mean_tokens = float(summary.split("mean ")[1].split(",")[0])
    assert 0 < mean_tokens <= 64
    results = json.loads(next(out.rglob("*_results.json")).read_text())["results"][TASK]
    samples = [json.loads(line) for line in next(out.rglob(f"*_samples_{TASK}.jsonl")).read_text().splitlines()]
    assert len(samples) == 3
    answers = sorted(_reports(report_file), key=lambda r: r["doc_id"])
    responses = [s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
                 for s in sorted(samples, key=lambda s: s["doc_id"])]
    assert [a["response"] for a in answers] == responses  # the report file is what lmms-eval scored
    # lmms-eval's answers are vidprune's: the same model, options and prompt give the same greedy token ids
    from vidprune.qa import VideoQA

    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=64, frames=4, dedup=False)
    direct = [qa.ask(v, _prompt(), max_new_tokens=4, do_sample=False) for v in videos]
    assert [a["token_ids"] for a in answers] == [d.token_ids for d in direct]
    assert [a["report"]["tokens"]["to_llm"] for a in answers] == [d.report["tokens"]["to_llm"] for d in direct]
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    expected = sum(extract_mcq_answer(r, ["A", "B", "C", "D"]) == "A" for r in responses) / 3
    assert results["accuracy,none"] == pytest.approx(expected)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_lmms_eval_cli_runs_the_new_families(tmp_path, tiny_checkpoints, family):
    ckpt = tiny_checkpoints[family]
    videos, result, _, report_file = _run_tiny_task(tmp_path, ckpt, 2, "budget=40,frames=4")
    summary = next(line for line in result.stderr.splitlines() if line.startswith("vidprune: 2 answers"))
    assert "(pruner vispruner, dedup off, budget 40)" in summary, summary  # budget=N names eval's vispruner arm
    from vidprune.qa import VideoQA

    qa = VideoQA.from_pretrained(ckpt, budget=40, frames=4, dedup=False)
    direct = [qa.ask(v, _prompt(), max_new_tokens=4, do_sample=False) for v in videos]
    answers = sorted(_reports(report_file), key=lambda r: r["doc_id"])
    assert [a["token_ids"] for a in answers] == [d.token_ids for d in direct]
    assert all(0 < a["report"]["tokens"]["to_llm"] <= 40 for a in answers)


def test_model_args_are_checked_in_one_line(video_llava_ckpt):
    from vidprune.errors import ConfigError
    from vidprune.eval.lmms_plugin import VidpruneLMM

    with pytest.raises(ConfigError, match="unknown vidprune model_args bugdet"):
        VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},bugdet=64")
    with pytest.raises(ConfigError, match="budget must be an integer or 'none'"):
        VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},budget=lots")
    lm = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},budget=none,frames=2,dedup=false",
                                            {"device": "cpu", "batch_size": 2})
    assert lm.qa.config.budget is None and lm.qa.config.dedup is False and lm.batch_size == 2
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood([])
    with pytest.raises(ConfigError, match="report_file .*its folder does not exist"):
        VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},report_file=/nonexistent/dir/a.jsonl")


def test_budget_names_the_same_arm_as_vidprune_eval(tmp_path, video_llava_ckpt):
    """budget=227 is eval's vispruner@227 arm, budget=227,dedup=true its vispruner_dedup@227 arm, budget=none (or
    no budget) its full arm: the unpruned model, every visual token of every frame to the LLM."""
    from vidprune.eval.lmms_plugin import VidpruneLMM, summarize_reports
    from vidprune.eval.methods import plan_arms
    from vidprune.eval.runner import token_counts
    from vidprune.qa import VideoQA

    base = VideoQA.resolve_config(video_llava_ckpt, frames=2)
    arms = {a.label: VideoQA.resolve_config(config={**base.to_dict(), **a.options})
            for a in plan_arms(["vispruner", "vispruner_dedup"], [227], token_counts(base))}
    meaning = ("budget", "pruner", "dedup", "ivtp_layer", "ivtp_keep")
    for args, arm in (("budget=227", "vispruner@227"), ("budget=227,dedup=true", "vispruner_dedup@227"),
                      ("budget=none", "full"), ("", "full")):
        lm = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=2" + (f",{args}" if args else ""))
        assert {k: getattr(lm.qa.config, k) for k in meaning} == {k: getattr(arms[arm], k) for k in meaning}, args
    video = str(write_clip(tmp_path / "clip.mp4"))
    unpruned = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=2,budget=none")
    answer = unpruned.qa.ask(video, QUESTION, max_new_tokens=1)
    assert answer.report["tokens"]["to_llm"] == answer.report["tokens"]["full"] == 2 * 257
    assert answer.report["flops"]["llm_ratio"] == 1.0
    line = summarize_reports([answer.report], unpruned.qa.config)
    assert "(pruner none, dedup off, budget none (unpruned))" in line
    # a preset that sets dedup asks for it; its budget applies unless budget is given
    preset = tmp_path / "p.yaml"
    preset.write_text("budget: 300\ndedup: true\n")
    lm = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=2,config={preset}")
    assert (lm.qa.config.budget, lm.qa.config.dedup) == (300, True)
    lm = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=2,config={preset},budget=none")
    assert (lm.qa.config.budget, lm.qa.config.dedup) == (None, True)


# ------------------------------------------------------------------ lmms-eval's own Video-MME and MVBench tasks
DATA = Path(__file__).resolve().parent / "data" / "benchmarks"


def _local_yaml(text: str, task: str | None, dataset_path: str | None, dataset_kwargs: dict | None) -> str:
    """lmms-eval's task YAML with only its data source replaced (local files instead of the hub) and its
    task renamed; every other line (prompt kwargs, generation kwargs, scoring functions) as shipped."""
    import yaml

    out, skipping = [], False
    for line in text.splitlines(True):
        if skipping and line[:1] in (" ", "\t"):
            continue
        skipping = False
        if line.startswith("dataset_path:") and dataset_path is not None:
            line = f"dataset_path: {dataset_path}\n"
        elif line.startswith("dataset_kwargs:") and dataset_kwargs is not None:
            skipping = True
            line = yaml.safe_dump({"dataset_kwargs": dataset_kwargs})
        elif line.startswith("task:") and task is not None:
            line = f"task: {task}\n"
        out.append(line)
    if dataset_kwargs is not None and not any(line.startswith("dataset_kwargs:") for line in text.splitlines()):
        out.append(("" if text.endswith("\n") else "\n") + yaml.safe_dump({"dataset_kwargs": dataset_kwargs}))
    return "".join(out)


def _lmms_eval_task_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module("lmms_eval.tasks").__file__).parent / name


def test_lmms_eval_cli_runs_its_own_videomme_and_mvbench_tasks(tmp_path, video_llava_ckpt):
    """Local copies of lmms-eval 0.7.3's videomme.yaml and mvbench_{action_count,moving_count}.yaml (with their
    utils.py), over the released rows of tests/data/benchmarks and videos where those tasks look for them.
    lmms-eval's prompts and videos give the same token ids as `vidprune eval`'s reader and prompts do."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidprune.eval.benchmarks import load_benchmark
    from vidprune.qa import VideoQA

    hf = tmp_path / "hf"
    tasks = tmp_path / "tasks"
    (tasks / "videomme").mkdir(parents=True)
    (tasks / "mvbench").mkdir()
    # Video-MME: lmms-lab/Video-MME's columns as a local parquet; videos in <HF_HOME>/videomme/data
    rows = json.loads((DATA / "videomme" / "videomme_rows.json").read_text())
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "videomme.parquet")
    write_clip(hf / "videomme" / "data" / "fFjv93ACGo8.mp4")
    src = _lmms_eval_task_dir("videomme")
    shutil.copy(src / "utils.py", tasks / "videomme" / "utils.py")
    (tasks / "videomme" / "videomme.yaml").write_text(_local_yaml(
        (src / "videomme.yaml").read_text(), "vidprune_local_videomme", "parquet",
        {"cache_dir": "videomme", "data_files": {"test": str(tmp_path / "videomme.parquet")}}))
    # MVBench: the release's json/<task>.json rows; videos in <HF_HOME>/mvbench_video/<lmms-eval's folder>
    src = _lmms_eval_task_dir("mvbench")
    shutil.copy(src / "utils.py", tasks / "mvbench" / "utils.py")
    (tasks / "mvbench" / "_default_template_yaml").write_text(_local_yaml(
        (src / "_default_template_yaml").read_text(), None, "json", {"cache_dir": "mvbench_video"}))
    mv_tasks = {"action_count": "perception/videos", "moving_count": "clevrer/video_validation"}
    for i, (task, folder) in enumerate(mv_tasks.items()):
        for rec in json.loads((DATA / "mvbench" / "json" / f"{task}.json").read_text()):
            write_clip(hf / "mvbench_video" / folder / rec["video"], seed=i + 1)
        (tasks / "mvbench" / f"mvbench_{task}.yaml").write_text(_local_yaml(
            (src / f"mvbench_{task}.yaml").read_text(), f"vidprune_local_mvbench_{task}", None,
            {"cache_dir": "mvbench_video", "data_files": {"train": str(DATA / "mvbench" / "json" / f"{task}.json")}}))
    names = ["vidprune_local_videomme"] + [f"vidprune_local_mvbench_{t}" for t in mv_tasks]
    out, report_file = tmp_path / "out", tmp_path / "answers.jsonl"
    result = _run_lmms_eval(["--model_args", f"pretrained={video_llava_ckpt},budget=64,frames=4,report_file={report_file}",
                             "--tasks", ",".join(names), "--include_path", str(tasks), "--output_path", str(out),
                             "--log_samples"], tmp_path, hf)
    assert any(line.startswith("vidprune: ") and "(pruner vispruner, dedup off, budget 64)" in line
               for line in result.stderr.splitlines()), result.stderr[-4000:]
    answers = {(a["task"], a["doc_id"]): a for a in _reports(report_file)}
    assert len(answers) == 4  # 2 Video-MME questions, 1 + 1 MVBench

    # the same questions through vidprune eval's readers and prompts (lmms_eval style), asked directly
    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=64, frames=4, dedup=False)
    hf_mv = hf / "mvbench_video"
    direct = {("vidprune_local_videomme", i): s for i, s in enumerate(load_benchmark(
        "videomme", tmp_path / "videomme.parquet", hf / "videomme").samples)}
    for task in mv_tasks:
        data = load_benchmark("mvbench", DATA / "mvbench" / "json" / f"{task}.json", hf_mv)
        direct.update({(f"vidprune_local_mvbench_{task}", i): s for i, s in enumerate(data.samples)})
    assert set(direct) == set(answers)
    for key, sample in direct.items():
        ours = qa.ask(sample.video, sample.prompt, max_new_tokens=16, do_sample=False)  # the tasks' 16 tokens
        assert answers[key]["token_ids"] == ours.token_ids, key
    results = json.loads(next(out.rglob("*_results.json")).read_text())["results"]
    assert set(names) <= set(results)


def test_the_plugins_pruning_options_reach_the_llm(tmp_path, video_llava_ckpt):
    """model_args with every pruning option set: lmms-eval's own request objects through generate_until give the
    tokens kept per frame, IVTP's count and the ids of VideoQA built with the same options in this process."""
    from lmms_eval.api.instance import Instance

    from vidprune.eval.lmms_plugin import VidpruneLMM
    from vidprune.qa import VideoQA

    options = dict(budget=60, pruner="random", seed=3, dedup=True, dedup_threshold=0.8, dedup_reference="previous",
                   ivtp_layer=2, ivtp_keep=0.5)
    video = str(write_clip(tmp_path / "clip.mp4"))
    report_file = tmp_path / "answers.jsonl"
    lm = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=4,report_file={report_file},"
                                            + ",".join(f"{k}={v}" for k, v in options.items()))
    lm.task_dict = {TASK: {"test": [{"video": video}]}}
    request = Instance("generate_until", (QUESTION, {"max_new_tokens": 4, "until": []}, lambda doc: [doc["video"]],
                                          0, TASK, "test"), idx=0, metadata={"task": TASK, "doc_id": 0, "repeats": 1})
    lm.generate_until([request])
    got = json.loads(report_file.read_text().splitlines()[0])
    want = VideoQA.from_pretrained(video_llava_ckpt, frames=4, max_new_tokens=4, **options).ask(video, QUESTION)
    assert [f["kept"] for f in got["report"]["frames"]] == [f["kept"] for f in want.report["frames"]]
    assert got["report"]["ivtp"]["visual_tokens_kept"] == want.report["ivtp"]["visual_tokens_kept"] \
        < got["report"]["tokens"]["to_llm"]
    assert got["token_ids"] == want.token_ids


def test_the_plugins_own_dedup_default_is_said_aloud(video_llava_ckpt, capsys):
    from vidprune.eval.lmms_plugin import VidpruneLMM

    lm = VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=2,budget=100")
    err = capsys.readouterr().err
    assert lm.qa.config.dedup is False
    assert "cross-frame dedup off (the lmms-eval plugin's default" in err and "dedup=true" in err
    VidpruneLMM.create_from_arg_string(f"pretrained={video_llava_ckpt},frames=2,budget=100,dedup=false")
    assert "cross-frame dedup" not in capsys.readouterr().err  # asked for: nothing to say
