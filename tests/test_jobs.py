"""``vidprune job``: manifest checks, the results file, and whole jobs on real Ray.

The Ray tests run the CLI as a separate process (the way users run it) against a
two-node loopback cluster, kill actor processes in the middle of a job, and compare
every answer with ``VideoQA`` run in this process on the same checkpoint and options.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_cluster import LoopbackCluster, make_ray_home, process_title, processes_with_marker, ray_env

from vidprune.cli import main
from vidprune.errors import ConfigError
from vidprune.jobs.manifest import JobItem, format_question, read_manifest
from vidprune.results import ResultsFile
from vidprune.jobs.runner import check_results_match
from vidprune.qa import VideoQA
from vidprune.samples import moving_square_frames, write_video

# Small and quick: 8 frames in 4 segments of 2, a budget that prunes, short answers.
FLAGS = ["--frames", "8", "--budget", "40", "--encoder-batch-size", "2", "--max-new-tokens", "6"]
OPTIONS = dict(frames=8, budget=40, encoder_batch_size=2, max_new_tokens=6)
JOB_TIMEOUT_S = 600
# Seconds a local Ray's processes may take to exit after the job's ray.shutdown().
LOCAL_RAY_EXIT_S = 20


def write_manifest(path: Path, entries: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def job_cmd(manifest: Path, out: Path, ckpt: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vidprune.cli", "job", str(manifest), "--out", str(out), "--model", ckpt,
            *FLAGS, "--no-progress", *extra]


# Every pruning option set to something other than its default (test_job_starts_ray_locally_...).
PRUNING_FLAGS = ["--pruner", "random", "--seed", "3", "--dedup-threshold", "0.8", "--dedup-reference", "previous",
                 "--ivtp-layer", "2", "--ivtp-keep", "0.5"]
PRUNING_OPTIONS = dict(pruner="random", seed=3, dedup_threshold=0.8, dedup_reference="previous", ivtp_layer=2,
                       ivtp_keep=0.5)


def expected_answers(ckpt: str, items: list[JobItem], **options) -> dict[tuple, list[int]]:
    """In-process answers, grouped per video as the job groups them: {(id, index): token ids}."""
    qa = VideoQA.from_pretrained(ckpt, **{**OPTIONS, **options})
    by_video: dict[str, list[JobItem]] = {}
    for it in items:
        by_video.setdefault(it.video, []).append(it)
    out = {}
    for video, group in by_video.items():
        answers = qa.answer(qa.prepare(video), [it.prompt for it in group])
        out.update({it.key: a.token_ids for it, a in zip(group, answers)})
    return out


# ----------------------------------------------------------------------- manifest
def test_format_question_letters_the_options():
    assert format_question("What?", None) == "What?"
    assert format_question("What happens?", ["A dog runs", "A car stops"]) == (
        "What happens?\nA. A dog runs\nB. A car stops\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_manifest_items_one_per_question(tmp_path):
    m = write_manifest(tmp_path / "m.jsonl", [
        {"id": "a", "video": "a.mp4", "question": " What? "},
        "",
        {"id": 7, "video": "/abs/b.mp4", "questions": ["One?", "Two?"], "options": ["x", "y", "z"]},
    ])
    items = read_manifest(m)
    assert [(it.id, it.index, it.question, it.line) for it in items] == [
        ("a", 0, "What?", 1), (7, 0, "One?", 3), (7, 1, "Two?", 3)]
    assert items[0].video == str(tmp_path / "a.mp4")  # relative to the manifest's folder
    assert items[1].video == "/abs/b.mp4"
    assert items[2].prompt.startswith("Two?\nA. x\nB. y\nC. z\n")
    assert items[1].key != JobItem("7", 0, "", "", "", None, 1).key  # 7 and "7" are different ids


@pytest.mark.parametrize("entries, message", [
    ([{"id": "a", "video": "a.mp4", "question": "Q?"}, '{"id": "b", "video": '], r"line 2: not valid JSON"),
    ([{"id": "a", "video": "a.mp4"}], r"line 1: give either 'question'"),
    ([{"id": "a", "video": "a.mp4", "question": "Q?"}, {"id": "a", "video": "b.mp4", "question": "Q?"}],
     r"line 2: id 'a' repeats line 1"),
    ([{"id": "a", "video": "a.mp4", "question": "   "}], r"line 1: question: the question is empty"),
    ([{"id": "a", "video": "a.mp4", "question": "Q?", "options": ["only one"]}], r"line 1: 'options' must be"),
    ([{"id": "a", "vid": "a.mp4", "question": "Q?"}], r"line 1: unknown key\(s\) vid .*line 1: 'video' must be"),
    ([["a", "b"]], r"line 1: expected a JSON object"),
    ([], r"has no items"),
])
def test_bad_manifest_is_one_line_exit_2_before_anything_starts(tmp_path, capsys, video_llava_ckpt, entries, message):
    m = write_manifest(tmp_path / "m.jsonl", entries)
    out = tmp_path / "out.jsonl"
    code = main(["job", str(m), "--out", str(out), "--model", video_llava_ckpt])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vidprune: error: manifest") and err.count("\n") == 1
    assert __import__("re").search(message, err), err
    assert not out.exists()  # nothing started, nothing written


def test_bad_options_exit_2_before_ray(tmp_path, capsys, video_llava_ckpt):
    m = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "video": "a.mp4", "question": "Q?"}])
    assert main(["job", str(m), "--out", str(tmp_path / "o.jsonl"), "--model", video_llava_ckpt,
                 "--encoders", "0"]) == 2
    assert "encoders must be an integer >= 1" in capsys.readouterr().err
    assert main(["job", str(m), "--out", str(tmp_path / "o.jsonl"), "--model", video_llava_ckpt,
                 "--budget", "3"]) == 2  # below the 8 [CLS] tokens of 8 frames
    assert "budget 3 is smaller" in capsys.readouterr().err


# ------------------------------------------------------------------------ results
def record(i: int, **extra) -> dict:
    return {"id": f"v{i}", "question_index": 0, "question": "Q?", "answer": f"a{i}", **extra}


def test_results_append_and_reopen(tmp_path):
    path = tmp_path / "r.jsonl"
    res = ResultsFile(path).open()
    res.append(record(1))
    res.append(record(2, report={"tokens": {"to_llm": 3}}))
    res.close()
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""  # two whole lines
    again = ResultsFile(path).open()
    assert set(again.records) == {('"v1"', 0), ('"v2"', 0)}
    assert again.records[('"v2"', 0)]["report"] == {"tokens": {"to_llm": 3}}
    assert not again.dropped_torn_line
    again.close()


def test_torn_last_line_is_dropped_and_its_item_runs_again(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes((json.dumps(record(1)) + "\n").encode() + json.dumps(record(2)).encode()[:17])
    res = ResultsFile(path).open()
    assert set(res.records) == {('"v1"', 0)}
    assert res.dropped_torn_line
    res.append(record(2))
    res.close()
    assert [r["id"] for r in read_results(path)] == ["v1", "v2"]


def test_results_that_are_not_ours_are_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("hello\n" + json.dumps(record(1)) + "\n")
    with pytest.raises(ConfigError, match="line 1 is not a vidprune result"):
        ResultsFile(path).open()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**record(1), "id": "a", "question": "Something else?"}) + "\n")
    m = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "video": "a.mp4", "question": "Q?"}])
    res = ResultsFile(other).open()
    with pytest.raises(ConfigError, match="belongs to another manifest"):
        check_results_match(res, read_manifest(m))
    res.close()


def test_one_job_per_results_file(tmp_path):
    path = tmp_path / "r.jsonl"
    first = ResultsFile(path).open()
    with pytest.raises(ConfigError, match="another vidprune job is writing"):
        ResultsFile(path).open()
    first.close()
    ResultsFile(path).open().close()


def test_drop_errors_rewrites_atomically(tmp_path):
    path = tmp_path / "r.jsonl"
    res = ResultsFile(path).open()
    res.append(record(1))
    res.append({"id": "v2", "question_index": 0, "question": "Q?", "error": "cannot decode video"})
    assert res.drop_errors() == 1
    res.append(record(3))
    res.close()
    assert [r["id"] for r in read_results(path)] == ["v1", "v3"]
    assert not list(tmp_path.glob(".r.jsonl.*"))


# ---------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(worker_nodes=1, num_cpus=4) as c:
        yield c


@pytest.fixture(scope="module")
def job_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("job-videos")
    paths = [str(write_video(root / f"v{i}.mp4", moving_square_frames(16 + 4 * i, seed=10 + i), fps=12))
             for i in range(6)]
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 200)
    return paths, str(broken), str(root / "missing.mp4")


def actor_pids(marker: str, actor_class: str) -> list[int]:
    return [p for p in processes_with_marker(marker) if process_title(p).startswith(f"ray::{actor_class}")]


def test_job_survives_killed_actors_resumes_and_answers_each_item_once(cluster, job_videos, video_llava_ckpt,
                                                                       tmp_path):
    videos, broken, missing = job_videos
    m = write_manifest(tmp_path / "manifest.jsonl", [
        {"id": "v0", "video": videos[0], "questions": ["What moves?", "Where?", "Is it square?"]},
        {"id": 1, "video": videos[1], "question": "What moves?", "options": ["a square", "a circle", "nothing"]},
        {"id": "missing", "video": missing, "question": "What?"},
        {"id": "v2", "video": videos[2], "question": "What color?"},
        {"id": "broken", "video": broken, "question": "What?"},
        {"id": "v3", "video": videos[3], "question": "What moves?"},
        {"id": "v4", "video": videos[4], "questions": ["One?", "Two?"]},
        {"id": "v5", "video": videos[5], "question": "What moves?"},
        {"id": "v0-again", "video": videos[0], "question": "Anything else?"},  # same file: same token stream
    ])
    items = read_manifest(m)
    want = expected_answers(video_llava_ckpt, [it for it in items if it.id not in ("missing", "broken")])
    out = tmp_path / "results.jsonl"
    # a previous run wrote one item, and was killed while writing the next
    done_before = {"id": "v5", "question_index": 0, "question": "What moves?", "answer": "(from before)"}
    out.write_text(json.dumps(done_before) + "\n" + '{"id": "v4", "question_index": 0, "quest')

    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    cmd = job_cmd(m, out, video_llava_ckpt, "--decoders", "1", "--encoders", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if len(out.read_text().splitlines()) >= 3:  # the job is answering: kill in the middle
                for cls in ("EncodeActor", "SelectActor"):
                    pid = actor_pids(cluster.marker, cls)[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                break
            time.sleep(0.1)
        lines_at_kill = len(out.read_text().splitlines())
        _, stderr = proc.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert len(killed) == 2, "the job ended before an actor could be killed"
    assert lines_at_kill < len(items), "the kill came after the last result"

    results = read_results(out)
    keys = [(json.dumps(r["id"]), r["question_index"]) for r in results]
    assert sorted(keys) == sorted(it.key for it in items)  # every item exactly once
    by_key = dict(zip(keys, results))
    assert by_key[('"v5"', 0)] == done_before  # resumed: kept, not redone
    for it in items:
        rec = by_key[it.key]
        assert rec["question"] == it.question
        if it.id in ("missing", "broken"):
            assert rec["error"].startswith("cannot decode video")
        elif it.id != "v5":
            assert "error" not in rec, rec
            assert rec["token_ids"] == want[it.key]  # ids: a random byte-level model decodes to look-alike text
            assert rec["report"]["tokens"]["to_llm"] <= OPTIONS["budget"]
            assert rec["report"]["question"] == it.prompt
    assert by_key[('1', 0)]["options"] == ["a square", "a circle", "nothing"]
    assert "11 new results (9 answered, 2 failed), 1 already in" in stderr

    # the same command again: nothing to do, nothing written, Ray not even needed
    before = out.read_bytes()
    again = subprocess.run(cmd, env=ray_env(make_ray_home(tmp_path)), capture_output=True, text=True,
                           timeout=JOB_TIMEOUT_S)
    assert again.returncode == 0, again.stderr
    assert "0 new results (0 answered, 0 failed), 12 already in" in again.stderr
    assert out.read_bytes() == before


def test_job_starts_ray_locally_without_an_address(job_videos, video_llava_ckpt, tmp_path):
    videos, _, _ = job_videos
    m = write_manifest(tmp_path / "m.jsonl", [{"id": "x", "video": videos[2], "questions": ["What?", "Why?"]}])
    out = tmp_path / "local.jsonl"
    marker = f"local-{os.getpid()}-{time.time_ns()}"
    env = ray_env(make_ray_home(tmp_path), marker)
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="vprt")  # short socket paths, away from other Ray sessions' /tmp/ray
    try:
        run = subprocess.run(job_cmd(m, out, video_llava_ckpt, "--node-ip-address", "127.0.0.2", "--decoders", "1",
                                     *PRUNING_FLAGS),
                             env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    finally:
        deadline = time.monotonic() + LOCAL_RAY_EXIT_S  # ray.shutdown() lets its helpers exit on their own
        while processes_with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = {pid: process_title(pid) for pid in processes_with_marker(marker)}
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert run.returncode == 0, run.stderr
    assert not leftovers, f"the local Ray was not shut down: {leftovers}"
    # every pruning option reached the actors: the ids are VideoQA's with the same options, IVTP ran
    want = expected_answers(video_llava_ckpt, read_manifest(m), **PRUNING_OPTIONS)
    results = read_results(out)
    assert {(json.dumps(r["id"]), r["question_index"]): r["token_ids"] for r in results} == want
    for r in results:
        assert r["report"]["options"]["pruner"] == "random" and r["report"]["options"]["dedup_reference"] == "previous"
        assert r["report"]["ivtp"]["visual_tokens_kept"] < r["report"]["tokens"]["to_llm"]


def test_job_with_no_layout_flags_fits_two_one_cpu_nodes_and_survives_a_killed_actor(job_videos, video_llava_ckpt,
                                                                                     tmp_path):
    """The issue's small cluster: two nodes of one CPU each, `vidprune job` with no layout flag at all."""
    videos, _, _ = job_videos
    m = write_manifest(tmp_path / "m.jsonl", [{"id": f"v{i}", "video": v, "questions": ["What moves?", "Where?"]}
                                              for i, v in enumerate(videos)])
    items = read_manifest(m)
    want = expected_answers(video_llava_ckpt, items)
    out = tmp_path / "small.jsonl"
    with LoopbackCluster(worker_nodes=1, num_cpus=1) as small:
        cmd = job_cmd(m, out, video_llava_ckpt)
        proc = subprocess.Popen(cmd, env={**small.env, "RAY_ADDRESS": small.address}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        killed = []
        try:
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and len(out.read_text().splitlines()) >= 2:
                    pid = actor_pids(small.marker, "EncodeActor")[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
                time.sleep(0.1)
            _, stderr = proc.communicate(timeout=JOB_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr
        assert killed, "the job ended before the encoder could be killed"
        layout = "decode 1x0.5 CPU, encode 1x0.5 CPU, select 1x0.5 CPU, answer 1x0.5 CPU"
        assert f"vidprune job: layout {layout} on 2 node(s), 2 CPUs, 0 GPUs" in stderr
        sidecar = json.loads((tmp_path / "small.jsonl.layout.json").read_text())
        assert sidecar["layout"] == layout and sidecar["stages"]["encode"] == {"actors": 1, "num_cpus": 0.5,
                                                                              "num_gpus": 0.0}
        assert sidecar["cluster"]["nodes"] == [{"cpus": 1.0, "gpus": 0.0}, {"cpus": 1.0, "gpus": 0.0}]
        results = read_results(out)
        keys = [(json.dumps(r["id"]), r["question_index"]) for r in results]
        assert sorted(keys) == sorted(it.key for it in items)  # every item exactly once
        assert {k: r["token_ids"] for k, r in zip(keys, results)} == want
        before = out.read_bytes()
        again = subprocess.run(cmd, env={**small.env, "RAY_ADDRESS": small.address}, capture_output=True, text=True,
                               timeout=JOB_TIMEOUT_S)
        assert again.returncode == 0 and "0 new results (0 answered, 0 failed), 12 already in" in again.stderr
        assert out.read_bytes() == before


# Two 1-CPU nodes and a layout of 1.75 CPUs (issue 24): losing a node leaves actors Ray cannot place again.
TOO_BIG_AFTER_A_LOSS = ["--decoders", "1", "--encoders", "1", "--decode-cpus", "0.5", "--encode-cpus", "0.5",
                        "--select-cpus", "0.25", "--answer-cpus", "0.5"]
PLACEMENT_TIMEOUT_S = 15


def test_a_job_whose_cluster_shrinks_below_its_layout_stops_in_one_line_keeping_its_answers(job_videos,
                                                                                         video_llava_ckpt, tmp_path):
    """The worker node of a two-node cluster is SIGKILLed mid-job: the restarted actors cannot be placed on the
    node left. The job ends by itself (no result for --placement-timeout s, the layout no longer fits) with one
    line naming the missing CPUs and the rerun that fits; every answer written before stays, once, correct."""
    videos, _, _ = job_videos
    m = write_manifest(tmp_path / "m.jsonl", [{"id": f"v{i}", "video": v, "questions": ["What moves?", "Where?"]}
                                              for i, v in enumerate(videos)])
    items = read_manifest(m)
    out = tmp_path / "shrunk.jsonl"
    with LoopbackCluster(worker_nodes=1, num_cpus=1) as small:
        cmd = job_cmd(m, out, video_llava_ckpt, *TOO_BIG_AFTER_A_LOSS, "--placement-timeout", str(PLACEMENT_TIMEOUT_S))
        proc = subprocess.Popen(cmd, env={**small.env, "RAY_ADDRESS": small.address}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        killed_at = None
        try:
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and len(out.read_text().splitlines()) >= 2:
                    small.kill_node("127.0.0.3")
                    killed_at = len(out.read_text().splitlines())
                    break
                time.sleep(0.1)
            _, stderr = proc.communicate(timeout=JOB_TIMEOUT_S)  # it must end by itself
        finally:
            if proc.poll() is None:
                proc.kill()
    assert killed_at is not None and killed_at < len(items), "the job ended before the node could be killed"
    assert proc.returncode == 2, stderr
    line = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and line.startswith("vidprune: error: "), stderr
    assert "the Ray cluster shrank below the pipeline's layout while it ran: it now has 1 node(s), 1 CPUs" in line
    assert "asks for 1.75 CPUs" in line and "0.75 CPU" in line and "are missing" in line
    assert "the Ray cluster has 1 CPUs but the pipeline asks for 1.75" in line  # what a rerun with these flags says
    assert "without the layout flags it is sized for the cluster: decode 1x" in line
    results = read_results(out)
    assert killed_at <= len(results) < len(items)
    keys = [(json.dumps(r["id"]), r["question_index"]) for r in results]
    assert len(set(keys)) == len(keys)  # each once
    want = expected_answers(video_llava_ckpt, [it for it in items if it.key in set(keys)])
    assert {k: r["token_ids"] for k, r in zip(keys, results)} == want
    assert f"{len(results)} results written so far are kept" in line
