"""`ray job submit -- vidprune job ...` on a loopback head with the dashboard's job server (needs ray[default]).

The commands are the ones docs/ray.md gives: submit, status, logs, stop; a stopped job
leaves a results file that the same command resumes, every item answered once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import LoopbackCluster

from vidprune.samples import moving_square_frames, write_video

pytest.importorskip("aiohttp_cors", reason="ray job submit needs ray[default] (pip install 'vidprune[ray]')")

RAY = str(Path(sys.executable).with_name("ray"))
VIDPRUNE = str(Path(sys.executable).with_name("vidprune"))  # the console script, as a user types `vidprune`
FLAGS = ["--frames", "8", "--budget", "40", "--encoder-batch-size", "4", "--max-new-tokens", "4", "--no-progress"]
TIMEOUT_S = 600
# Videos of the job that is stopped: enough that it is still running when `ray job stop` arrives.
STOP_VIDEOS = 150


@pytest.fixture(scope="module")
def head():
    with LoopbackCluster(worker_nodes=0, num_cpus=4, dashboard=True) as cluster:
        yield cluster


def ray_job(cluster, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``ray job COMMAND --address http://127.0.0.2:PORT ARGS...`` (the address before a submit's ``--``)."""
    run = subprocess.run([RAY, "job", command, "--address", cluster.dashboard_url, *args], env=cluster.env,
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


def status(cluster, job_id: str) -> str:
    """The job's state from ``ray job status`` ("Job 'x' succeeded", "Status for job 'x': RUNNING", ...)."""
    run = ray_job(cluster, "status", job_id)
    text = (run.stdout + run.stderr).lower()
    found = [(text.find(w), w) for w in ("succeeded", "failed", "stopped", "running", "pending") if w in text]
    return min(found)[1].upper() if found else text[-500:]


def wait_for(cluster, job_id: str, states: set[str]) -> str:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        state = status(cluster, job_id)
        if state in states:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {state}")


def manifest(tmp_path: Path, n: int) -> Path:
    videos = [write_video(tmp_path / f"v{i}.mp4", moving_square_frames(12 + 2 * (i % 4), seed=30 + i), fps=8)
              for i in range(n)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"id": f"v{i}", "video": str(v), "questions": ["What moves?", "Where?"]}) + "\n"
                            for i, v in enumerate(videos)))
    return path


def submit(cluster, job_id: str, m: Path, out: Path, ckpt: str) -> None:
    ray_job(cluster, "submit", "--submission-id", job_id, "--no-wait", "--",
            VIDPRUNE, "job", str(m), "--out", str(out), "--model", ckpt, *FLAGS)


def test_ray_job_submit_runs_a_job_with_status_and_logs(head, video_llava_ckpt, tmp_path):
    m, out = manifest(tmp_path, 2), tmp_path / "answers.jsonl"
    submit(head, "vidprune-ok", m, out, video_llava_ckpt)
    assert wait_for(head, "vidprune-ok", {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED", \
        ray_job(head, "logs", "vidprune-ok").stdout[-3000:]
    logs = ray_job(head, "logs", "vidprune-ok").stdout  # the job's own output (Ray's notes go to stderr)
    assert "vidprune job: layout decode" in logs
    assert "4 new results (4 answered, 0 failed)" in logs
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["id"], r["question_index"]) for r in records) == [("v0", 0), ("v0", 1), ("v1", 0), ("v1", 1)]
    assert all("answer" in r for r in records)


def test_ray_job_stop_leaves_a_resumable_results_file(head, video_llava_ckpt, tmp_path):
    m, out = manifest(tmp_path, STOP_VIDEOS), tmp_path / "answers.jsonl"
    submit(head, "vidprune-stop", m, out, video_llava_ckpt)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
        time.sleep(0.2)
    ray_job(head, "stop", "vidprune-stop")
    assert wait_for(head, "vidprune-stop", {"STOPPED", "SUCCEEDED", "FAILED"}) == "STOPPED"
    whole = out.read_bytes().split(b"\n")[:-1]  # a torn last line (if any) is dropped by the next run
    assert 1 <= len(whole) < 2 * STOP_VIDEOS, "the job finished before it could be stopped"
    assert all(json.loads(line)["answer"] for line in whole)
    submit(head, "vidprune-resume", m, out, video_llava_ckpt)
    assert wait_for(head, "vidprune-resume", {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED", \
        ray_job(head, "logs", "vidprune-resume").stdout[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [(r["id"], r["question_index"]) for r in records]
    assert sorted(keys) == sorted((f"v{i}", q) for i in range(STOP_VIDEOS) for q in (0, 1))  # each item once
    assert "already in" in ray_job(head, "logs", "vidprune-resume").stdout
