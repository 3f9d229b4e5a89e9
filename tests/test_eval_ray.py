"""`vidprune eval --address`: the sweep answered on a real Ray cluster on loopback, all arms through one pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from eval_helpers import qa_pair_benchmark, write_clip, write_json
from ray_cluster import LoopbackCluster

from vidprune.cli import main

RAY_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(worker_nodes=0, num_cpus=4) as c:  # the layout is sized from the node
        yield c


def _records(path):
    return {json.loads(line)["key"]: json.loads(line) for line in path.read_text().splitlines()}


def test_sweep_on_a_ray_cluster_matches_the_local_sweep(tmp_path, cluster, video_llava_ckpt, capsys):
    q_path, videos = qa_pair_benchmark(tmp_path / "msvd", n_videos=2, per_video=1)
    args = ["eval", "--benchmark", "msvd_qa", "--annotations", str(q_path), "--videos", str(videos),
            "--model", video_llava_ckpt, "--frames", "2", "--methods", "vispruner", "--max-new-tokens", "3",
            "--no-progress"]
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    # the unpruned answers locally first; the two pruned arms are then the work left: one pipeline on the cluster
    assert main([*args, "--budgets", "full", "--out", str(ray_out)]) == 0
    run = subprocess.run([sys.executable, "-m", "vidprune.cli", *args, "--budgets", "16,8", "--out", str(ray_out),
                          "--address", cluster.address], env=cluster.env, capture_output=True, text=True,
                         timeout=RAY_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming: 2 of 6 answers already" in run.stderr
    assert "4 answers (2 questions x arms vispruner@16, vispruner@8) through one Ray pipeline" in run.stderr
    assert run.stderr.count("through one Ray pipeline") == 1  # both arms: one set of actors, the model loaded once
    assert main([*args, "--budgets", "16,8", "--out", str(local_out)]) == 0
    on_ray, local = _records(ray_out / "samples.jsonl"), _records(local_out / "samples.jsonl")
    assert sorted(on_ray) == sorted(local) and len(on_ray) == 6  # 2 questions x (full, vispruner@16, vispruner@8)
    for key, rec in on_ray.items():
        assert rec["prediction_ids"] == local[key]["prediction_ids"]  # the same answers as the in-process sweep (ids)
        assert len(rec["prediction_ids"]) > 0 and rec["prediction"] == local[key]["prediction"]
        assert rec["tokens"]["to_llm"] == local[key]["tokens"]["to_llm"] <= (rec["budget"] or 2 * 257)
    assert (ray_out / "table.md").read_text() == (local_out / "table.md").read_text()
    capsys.readouterr()
    assert main([*args, "--budgets", "16,8", "--out", str(ray_out), "--address", cluster.address]) == 0
    assert "resuming: 6 of 6" in capsys.readouterr().err  # all done: Ray is not needed


def test_questions_about_part_of_a_video_are_refused_before_ray_starts(tmp_path, video_llava_ckpt, capsys):
    write_clip(tmp_path / "video" / "v.mp4")
    write_json(tmp_path / "json" / "action_sequence.json", [
        {"video": "v.mp4", "question": "What next?", "candidates": ["a", "b"], "answer": "a", "start": 0.0, "end": 1.0}])
    code = main(["eval", "--benchmark", "mvbench", "--annotations", str(tmp_path / "json"), "--videos",
                 str(tmp_path / "video"), "--model", video_llava_ckpt, "--budgets", "16", "--frames", "2",
                 "--out", str(tmp_path / "out"), "--address", "127.0.0.2:1"])
    err = capsys.readouterr().err
    assert code == 2 and "is about a part of its video (start/end), which runs only locally" in err
