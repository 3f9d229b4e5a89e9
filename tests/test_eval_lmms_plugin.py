"""The lmms-eval plugin, tested against the real lmms-eval package: its CLI runs a task defined with
lmms-eval's own task YAML (--include_path) over generated videos, with `--model vidprune`."""

from __future__ import annotations

import json
import os
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


def test_lmms_eval_cli_runs_its_own_task_with_vidprune_pruning(tmp_path, video_llava_ckpt):
    videos = [str(write_clip(tmp_path / "videos" / f"clip{i}.mp4", seed=i)) for i in range(3)]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "video": v, "question": QUESTION, "options": OPTIONS, "answer": "A"})
                            + "\n" for i, v in enumerate(videos)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(TASK_YAML.format(task=TASK, docs=docs))
    (tasks / "utils.py").write_text(TASK_UTILS)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}
    lmms_eval = Path(sys.executable).with_name("lmms-eval")
    result = subprocess.run(
        [str(lmms_eval), "--model", "vidprune", "--model_args", f"pretrained={video_llava_ckpt},budget=64,frames=4",
         "--tasks", TASK, "--include_path", str(tasks), "--device", "cpu", "--batch_size", "1",
         "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # vidprune pruned every answer to the budget (its summary line after generation)
    summary = next(line for line in result.stderr.splitlines() if line.startswith("vidprune: 3 answers"))
    assert "of 1028 (budget 64)" in summary
    mean_tokens = float(summary.split("mean ")[1].split(",")[0])
    assert 0 < mean_tokens <= 64
    results_file = next(out.rglob("*_results.json"))
    results = json.loads(results_file.read_text())["results"][TASK]
    samples = [json.loads(line) for line in next(out.rglob(f"*_samples_{TASK}.jsonl")).read_text().splitlines()]
    assert len(samples) == 3
    responses = [s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
                 for s in sorted(samples, key=lambda s: s["doc_id"])]
    # lmms-eval's answers are vidprune's: the same model, options and prompt give the same greedy text here
    from vidprune.qa import VideoQA

    qa = VideoQA.from_pretrained(video_llava_ckpt, budget=64, frames=4)
    direct = [qa.ask(v, _prompt(), max_new_tokens=4, do_sample=False).text for v in videos]
    assert responses == direct
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    expected = sum(extract_mcq_answer(r, ["A", "B", "C", "D"]) == "A" for r in direct) / 3
    assert results["accuracy,none"] == pytest.approx(expected)


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
