"""Ray Data: `VideoQAPredictor` in `map_batches` on a loopback cluster, the example writing Parquet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ray_cluster import LoopbackCluster

from vidprune.qa import VideoQA
from vidprune.samples import moving_square_frames, write_video

OPTIONS = dict(budget=40, frames=8, max_new_tokens=4)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_data_answers.py"


def test_ray_data_example_answers_a_manifest_into_parquet(video_llava_ckpt, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    videos = [str(write_video(tmp_path / f"v{i}.mp4", moving_square_frames(12 + 4 * i, seed=40 + i), fps=8))
              for i in range(2)]
    rows = [{"id": "a", "video": videos[0], "question": "What moves?"},
            {"id": "b", "video": videos[1], "question": "What moves?"},
            {"id": "c", "video": videos[0], "question": "Where does it go?"},
            {"id": "bad", "video": str(tmp_path / "missing.mp4"), "question": "What?"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "answers"
    with LoopbackCluster(worker_nodes=1, num_cpus=2) as cluster:
        run = subprocess.run([sys.executable, str(EXAMPLE), str(manifest), str(out), "--model", video_llava_ckpt,
                              "--budget", "40", "--frames", "8", "--max-new-tokens", "4", "--concurrency", "2",
                              "--batch-size", "2", "--address", cluster.address],
                             env=cluster.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pq.read_table(out).to_pylist()
    by_id = {r["id"]: r for r in table}
    assert sorted(by_id) == ["a", "b", "bad", "c"]
    qa = VideoQA.from_pretrained(video_llava_ckpt, **OPTIONS)
    for key in ("a", "b", "c"):
        r = by_id[key]
        want = qa.answer(qa.prepare(r["video"]), [r["question"]])[0]
        assert r["error"] == "" and r["answer"] == want.text
        assert r["tokens_to_llm"] == want.report["tokens"]["to_llm"] <= OPTIONS["budget"]
        assert r["tokens_full"] == want.report["tokens"]["full"] and r["num_frames"] == 8
        assert 0 < r["llm_flops_ratio"] < 1
    assert by_id["bad"]["error"].startswith("cannot decode video") and by_id["bad"]["answer"] == ""
