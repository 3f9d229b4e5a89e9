"""Benchmarks as published: rows copied from the released annotation files (tests/data/benchmarks, each
folder's README names the source), real small videos laid out as each release lays them out, read by
the readers and run through `vidprune eval`. Gold letters and multiple-choice prompts are checked
against lmms-eval 0.7.3's own task utilities (its doc_to_text and process_results), imported here."""

from __future__ import annotations

import csv
import importlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from eval_helpers import write_clip

from vidprune.cli import main
from vidprune.errors import ConfigError
from vidprune.eval.benchmarks import (
    MVBENCH_LMMS_EVAL_FOLDERS,
    MVBENCH_VIDEO_FOLDERS,
    load_benchmark,
)
from vidprune.prompts import multiple_choice_prompt

DATA = Path(__file__).resolve().parent / "data" / "benchmarks"
LETTERS = "ABCDEFGH"


def _json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(autouse=True)
def _hf_home(tmp_path, monkeypatch):
    """lmms-eval's task utils read HF_HOME (their video cache) at import; an empty one, offline."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _lmms_task(name: str):
    """lmms-eval's task utilities module for ``name`` (its tasks/<name>/utils.py)."""
    return importlib.import_module(f"lmms_eval.tasks.{name}.utils")


def _lmms_kwargs(yaml_name: str, task: str, model: str = "default") -> dict:
    """The lmms_eval_specific_kwargs[model] of one of lmms-eval's task YAMLs (its !function lines dropped, as
    lmms-eval's own utils read their YAMLs), following ``include:``."""
    folder = Path(importlib.import_module("lmms_eval.tasks").__file__).parent / task
    text = "".join(line for line in (folder / yaml_name).read_text().splitlines(True) if "!function" not in line)
    cfg = yaml.safe_load(text) or {}
    if "lmms_eval_specific_kwargs" not in cfg and cfg.get("include"):
        return _lmms_kwargs(cfg["include"], task, model)
    return (cfg.get("lmms_eval_specific_kwargs") or {}).get(model)


# ------------------------------------------------------------------ release layouts with real videos
def _mvbench_release(root: Path, lmms_eval_layout: bool = False) -> Path:
    """json/ as released + videos under video/<task folder>/ (or lmms-eval's download folders)."""
    shutil.copytree(DATA / "mvbench" / "json", root / "json")
    folders = MVBENCH_LMMS_EVAL_FOLDERS if lmms_eval_layout else MVBENCH_VIDEO_FOLDERS
    for i, f in enumerate(sorted((root / "json").glob("*.json"))):
        for rec in _json(f):
            write_clip(root / "video" / folders[f.stem] / rec["video"], seed=i)
    return root


def _videomme_release(root: Path, form: str) -> Path:
    rows = _json(DATA / "videomme" / "videomme_rows.json")
    write_clip(root / "data" / "fFjv93ACGo8.mp4")
    if form == "parquet":  # lmms-lab/Video-MME as lmms-eval loads it
        path = root / "videomme" / "test-00000-of-00001.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    # the Video-MME repository's per-video JSON (eval_your_results.py's input)
    video = {k: rows[0][k] for k in ("video_id", "duration", "domain", "sub_category", "url")}
    video["questions"] = [{k: r[k] for k in ("question_id", "task_type", "question", "options", "answer")} for r in rows]
    path = root / "videomme.json"
    path.write_text(json.dumps([video]))
    return path


def _egoschema_release(root: Path, form: str) -> Path:
    for name in ("questions.json", "subset_answers.json"):
        shutil.copy(DATA / "egoschema" / name, root / name)
    q = _json(root / "questions.json")
    for rec in q:
        write_clip(root / "videos" / f"{rec['q_uid']}.mp4")
    if form == "release":
        return root / "questions.json"
    answers = _json(root / "subset_answers.json")
    rows = [{"question_idx": str(i), "question": r["question"], "video_idx": r["q_uid"],
             "option": [f"{LETTERS[k]}. {r[f'option {k}']}" for k in range(5)], "answer": str(answers[r["q_uid"]])}
            for i, r in enumerate(q)]
    path = root / "Subset" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _nextqa_release(root: Path, form: str) -> Path:
    mapping = _json(DATA / "nextqa" / "map_vid_vidorID.json")
    for i, rel in enumerate(mapping.values()):
        write_clip(root / "NExTVideo" / f"{rel}.mp4", seed=i)
    shutil.copy(DATA / "nextqa" / "map_vid_vidorID.json", root / "NExTVideo" / "map_vid_vidorID.json")
    if form == "csv":
        shutil.copy(DATA / "nextqa" / "test.csv", root / "test.csv")
        return root / "test.csv"
    rows = list(csv.DictReader((DATA / "nextqa" / "test.csv").open()))
    for r in rows:  # lmms-eval/NExTQA MC: the same columns, integer answer and ids
        for k in ("answer", "qid", "frame_count", "width", "height"):
            r[k] = int(r[k])
        r["video"] = int(r["video"])
    path = root / "MC" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _tgif_release(root: Path) -> Path:
    shutil.copy(DATA / "tgif_qa" / "Test_frameqa_question.csv", root / "Test_frameqa_question.csv")
    names = {r["gif_name"] for r in csv.DictReader((root / "Test_frameqa_question.csv").open(newline=""),
                                                   delimiter="\t")}
    for i, name in enumerate(sorted(names)):
        write_clip(root / "gifs" / f"{name}.gif", seed=i)
    return root / "Test_frameqa_question.csv"


def _msvd_release(root: Path) -> Path:
    """val_qa.json + youtube_mapping.txt, clips renamed video/vid<N>.avi (the release's preprocessing)."""
    shutil.copy(DATA / "msvd_qa" / "val_qa.json", root / "val_qa.json")
    shutil.copy(DATA / "msvd_qa" / "youtube_mapping.txt", root / "youtube_mapping.txt")
    write_clip(root / "video" / "vid1201.avi")
    return root / "val_qa.json"


def _activitynet_release(root: Path, form: str = "release") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("test_q.json", "test_a.json"):
        shutil.copy(DATA / "activitynet_qa" / name, root / name)
    questions = _json(root / "test_q.json")
    for i, q in enumerate(questions):
        write_clip(root / "videos" / f"v_{q['video_name']}.mp4", seed=i)
    if form == "release":
        return root / "test_q.json"
    answers = {a["question_id"]: a for a in _json(root / "test_a.json")}  # lmms-lab/ActivityNetQA: one record each
    rows = [{**q, "answer": answers[q["question_id"]]["answer"], "type": answers[q["question_id"]]["type"]}
            for q in questions]
    path = root / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _msrvtt_release(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "msrvtt_qa" / "test_qa.json", root / "test_qa.json")
    for i, vid in enumerate(sorted({r["video_id"] for r in _json(root / "test_qa.json")})):
        write_clip(root / "video" / f"video{vid}.mp4", seed=i)
    return root / "test_qa.json"


# ------------------------------------------------------------------ gold answers as the benchmarks score
def _mvbench_docs() -> list[tuple[str, int, dict]]:
    return [(f.stem, i, rec) for f in sorted((DATA / "mvbench" / "json").glob("*.json"))
            for i, rec in enumerate(_json(f))]


def _mvbench_gold_by_lmms_eval() -> dict[str, str]:
    utils = _lmms_task("mvbench")
    return {f"{task}/{i}": utils.mvbench_process_results(doc, ["(A)"])["mvbench_accuracy"]["gt_answer"]
            for task, i, doc in _mvbench_docs()}


def test_mvbench_gold_is_the_candidate_text_as_lmms_eval_scores_it(tmp_path):
    root = _mvbench_release(tmp_path)
    data = load_benchmark("mvbench", root / "json", root / "video")
    assert not data.missing and len(data.samples) == len(_mvbench_docs())
    gold = {s.sample_id: s.answer for s in data.samples}
    assert gold == _mvbench_gold_by_lmms_eval()
    # the rows of issue 11: a digit answer is a candidate's text, never an index
    assert gold["action_count/0"] == "A" and gold["moving_count/0"] == "D"
    assert gold["character_order/0"] == "B" and gold["character_order/1"] == "A"
    # the release's folders: action_count under perception/videos, moving_count under clevrer
    by_id = {s.sample_id: s for s in data.samples}
    assert by_id["action_count/0"].video.endswith("video/perception/videos/video_6480.mp4")
    assert by_id["moving_count/0"].video.endswith("video/clevrer/video_validation/video_11123.mp4")


def test_mvbench_prompts_equal_lmms_evals_for_every_task(tmp_path):
    utils = _lmms_task("mvbench")
    root = _mvbench_release(tmp_path)
    data = load_benchmark("mvbench", root / "json", root / "video")
    docs = {f"{task}/{i}": (task, doc) for task, i, doc in _mvbench_docs()}
    for s in data.samples:
        task, doc = docs[s.sample_id]
        expected = utils.mvbench_doc_to_text(doc, _lmms_kwargs(f"mvbench_{task}.yaml", "mvbench"))
        assert s.prompt == expected
    # every one of lmms-eval's 20 MVBench tasks uses the post prompt the module mirrors
    for task in MVBENCH_VIDEO_FOLDERS:
        doc = {"question": "Q?", "candidates": ["x", "y"]}
        assert multiple_choice_prompt("Q?", ["x", "y"], "mvbench") == utils.mvbench_doc_to_text(
            doc, _lmms_kwargs(f"mvbench_{task}.yaml", "mvbench"))


def test_mvbench_lmms_eval_download_layout_uses_its_cut_segments(tmp_path):
    """lmms-eval's MVBench download (revision "video"): other folders, bounded clips already cut."""
    root = _mvbench_release(tmp_path, lmms_eval_layout=True)
    (root / "json" / "action_sequence.json").write_text(json.dumps([
        {"video": "6H78U.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle."],
         "answer": "Put down the cup/glass/bottle.", "start": 11.1, "end": 19.6}]))
    write_clip(root / "video" / "star" / "Charades_segment" / "6H78U.mp4")
    data = load_benchmark("mvbench", root / "json", root / "video")
    assert not data.missing
    seg = next(s for s in data.samples if s.sample_id == "action_sequence/0")
    assert seg.clip_s is None and seg.video.endswith("star/Charades_segment/6H78U.mp4") and seg.answer == "C"
    # the release's layout of the same row cuts the whole video to start/end
    write_clip(root / "video" / "star" / "Charades_v1_480" / "6H78U.mp4")
    seg = next(s for s in load_benchmark("mvbench", root / "json", root / "video").samples
               if s.sample_id == "action_sequence/0")
    assert seg.clip_s == (11.1, 19.6) and "Charades_v1_480" in seg.video


def test_mvbench_answer_not_among_candidates_is_one_line(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "moving_count.json").write_text(json.dumps(
        [{"video": "a.mp4", "question": "q", "candidates": ["3", "5"], "answer": "0"}]))
    with pytest.raises(ConfigError, match=r"moving_count.json record 0: answer '0' is not one of the candidates"):
        load_benchmark("mvbench", tmp_path / "moving_count.json", tmp_path / "v")


def test_mvbench_frame_folders_are_numbered_from_one_as_released(tmp_path):
    """episodic_reasoning's frame folders: 00001.jpg is frame 1, at 1/3 s (mvbench.ipynb: first_idx=1)."""
    from PIL import Image

    from vidprune.eval.runner import load_clip

    frames = tmp_path / "video" / "tvqa" / "frames_fps3_hq" / "castle_s01e01_seg02_clip_00"
    frames.mkdir(parents=True)
    for n in range(1, 13):  # 4 s at 3 fps
        Image.new("RGB", (40, 30), (10 * n, 0, 0)).save(frames / f"{n:05d}.jpg")
    (tmp_path / "episodic_reasoning.json").write_text(json.dumps([
        {"video": "castle_s01e01_seg02_clip_00", "question": "Who enters?", "candidates": ["Beckett", "Castle"],
         "answer": "Castle", "start": 2.0, "end": 3.0}]))
    s = load_benchmark("mvbench", tmp_path / "episodic_reasoning.json", tmp_path / "video").samples[0]
    clip = load_clip(s, 4)
    # frames 6..9 are at 2.0 .. 3.0 s; the images are read by their own numbers
    assert clip.indices == [6, 7, 8, 9] and clip.times_s == [2.0, 7 / 3, 8 / 3, 3.0]
    assert [round(int(v), -1) for v in clip.frames[:, 0, 0, 0]] == [60, 70, 80, 90]  # (JPEG: +-1)


@pytest.mark.parametrize("form", ["parquet", "repository_json"])
def test_videomme_both_forms_gold_and_prompt_equal_lmms_evals(tmp_path, form):
    utils = _lmms_task("videomme")
    path = _videomme_release(tmp_path, form)
    data = load_benchmark("videomme", path, tmp_path)
    rows = _json(DATA / "videomme" / "videomme_rows.json")
    assert not data.missing and [s.sample_id for s in data.samples] == [r["question_id"] for r in rows]
    kwargs = _lmms_kwargs("videomme.yaml", "videomme")
    for s, doc in zip(data.samples, rows):
        assert s.video.endswith("data/fFjv93ACGo8.mp4")
        assert s.answer == doc["answer"]  # lmms-eval: score = pred == doc["answer"]
        assert utils.videomme_process_results(doc, [s.answer])["videomme_perception_score"]["score"] == 1.0
        assert s.prompt == utils.videomme_doc_to_text(doc, kwargs)
    assert data.samples[0].prompt.startswith("Select the best answer to the following multiple-choice question "
                                             "based on the video")


@pytest.mark.parametrize("form", ["release", "lmms_eval"])
def test_egoschema_both_forms_gold_and_prompt_equal_lmms_evals(tmp_path, form):
    utils = _lmms_task("egoschema")
    path = _egoschema_release(tmp_path, form)
    data = load_benchmark("egoschema", path, tmp_path / "videos")
    assert not data.missing and len(data.samples) == 1  # the two answered uids without a question row: none
    s = data.samples[0]
    assert s.sample_id in ("0074f737-11cb-497d-8d07-77c3a8127391", "0") and s.answer == "D"  # subset_answers: 3
    doc = {"question": s.question, "option": [f"{LETTERS[k]}. {o}" for k, o in enumerate(s.options)],
           "video_idx": "x", "answer": "3"}
    result = utils.egoschema_process_results_generation(doc, [s.answer])["score"]
    assert LETTERS[result["pred"]] == s.answer and int(result["ground_truth"]) == result["pred"]
    assert s.prompt == utils.egoschema_doc_to_text(doc, _lmms_kwargs("egoschema_subset.yaml", "egoschema"))


@pytest.mark.parametrize("form", ["csv", "lmms_eval_parquet"])
def test_nextqa_both_forms_gold_and_prompt_equal_lmms_evals(tmp_path, form):
    utils = _lmms_task("nextqa")
    path = _nextqa_release(tmp_path, form)
    data = load_benchmark("nextqa", path, tmp_path / "NExTVideo")
    rows = list(csv.DictReader((DATA / "nextqa" / "test.csv").open()))
    assert not data.missing and len(data.samples) == len(rows)
    for s, row in zip(data.samples, rows):
        doc = {**row, "answer": int(row["answer"])}
        assert utils.nextqa_mc_process_results(doc, [s.answer])["exact_match"]  # OPTIONS[doc["answer"]]
        assert s.prompt == utils.nextqa_doc_to_text_mc(doc, _lmms_kwargs("nextqa_mc_test.yaml", "nextqa"))
        assert s.video.endswith(f"{_json(DATA / 'nextqa' / 'map_vid_vidorID.json')[row['video']]}.mp4")


def test_tgif_qa_release_ids_are_vid_id_and_keys_name_gifs(tmp_path):
    path = _tgif_release(tmp_path)
    assert b"\r\n" in path.read_bytes() and b"\t" in path.read_bytes()  # the release's bytes
    rows = list(csv.DictReader(path.open(newline=""), delimiter="\t"))
    data = load_benchmark("tgif_qa", path, tmp_path / "gifs")
    assert not data.missing and [s.sample_id for s in data.samples] == [r["vid_id"] for r in rows]
    assert len({r["key"] for r in rows}) == 2 < len(rows)  # several questions per GIF
    for s, r in zip(data.samples, rows):
        assert s.answer == r["answer"] and s.video.endswith(f"{r['gif_name']}.gif") and s.category == r["type"]
        assert s.prompt == r["question"]


def test_msvd_qa_release_with_renamed_clips_and_with_youtube_names(tmp_path):
    path = _msvd_release(tmp_path)
    data = load_benchmark("msvd_qa", path, tmp_path / "video")
    assert not data.missing and [s.sample_id for s in data.samples] == ["30933", "30934"]
    assert all(s.video.endswith("video/vid1201.avi") for s in data.samples) and data.samples[1].answer == "man"
    # the same rows over the YouTube clip names of MSVD's YouTubeClips, through the mapping's line
    # "bQJQGoJF7_k_162_169 vid1201"
    write_clip(tmp_path / "YouTubeClips" / "bQJQGoJF7_k_162_169.avi")
    data = load_benchmark("msvd_qa", path, tmp_path / "YouTubeClips")
    assert not data.missing and [s.answer for s in data.samples] == ["someone", "man"]
    assert all(s.video.endswith("YouTubeClips/bQJQGoJF7_k_162_169.avi") for s in data.samples)
    # Video-LLaVA's test_q.json names the YouTube clip; renamed clips are found through the mapping too
    # (a constructed pair in that form: no quoted row of Video-LLaVA's MSVD copy was found)
    (tmp_path / "test_q.json").write_text(json.dumps([{"video_name": "-4wsuPCjDBc_5_15", "question": "q?",
                                                       "question_id": "v1_0"}]))
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "a", "question_id": "v1_0"}]))
    write_clip(tmp_path / "renamed" / "vid1.avi")
    s = load_benchmark("msvd_qa", tmp_path / "test_q.json", tmp_path / "renamed").samples[0]
    assert s.video.endswith("renamed/vid1.avi")


@pytest.mark.parametrize("form", ["release", "lmms_eval_parquet"])
def test_activitynet_both_forms_and_msrvtt_release_rows(tmp_path, form):
    path = _activitynet_release(tmp_path / "anet", form)
    data = load_benchmark("activitynet_qa", path, tmp_path / "anet" / "videos")
    answers = {a["question_id"]: a for a in _json(DATA / "activitynet_qa" / "test_a.json")}
    assert not data.missing and [s.sample_id for s in data.samples] == list(answers)
    for s in data.samples:
        assert s.answer == answers[s.sample_id]["answer"] and s.category == "3"
    path = _msrvtt_release(tmp_path / "msrvtt")
    data = load_benchmark("msrvtt_qa", path, tmp_path / "msrvtt" / "video")
    assert not data.missing and [s.sample_id for s in data.samples] == ["170859"]  # the release's first test row
    s = data.samples[0]
    assert s.answer == "regard" and s.category == "10" and s.prompt == s.question == "what is the video doing?"
    assert s.video.endswith("msrvtt/video/video7010.mp4")


def test_tgif_qa_in_video_llavas_test_q_and_test_a_form(tmp_path):
    """Video-LLaVA's GPT_Zero_Shot_QA/TGIF_Zero_Shot_QA: test_q.json + test_a.json, clips mp4/<video_name>.mp4."""
    root = tmp_path / "TGIF_Zero_Shot_QA"
    shutil.copytree(DATA / "tgif_qa" / "video_llava", root)
    write_clip(root / "mp4" / "tumblr_nk172bbdPI1u1lr18o1_250.mp4")
    for given in ("test_q.json", "test_a.json"):  # either file of the pair
        data = load_benchmark("tgif_qa", root / given, root / "mp4")
        assert not data.missing and len(data.samples) == 1
        s = data.samples[0]
        assert s.sample_id == "v_tumblr_nk172bbdPI1u1lr18o1_250_0" and s.answer == "flap wings" and s.category == "3"
        assert s.prompt == s.question == "What does the butterfly do 10 or more than 10 times ?"
        assert s.video.endswith("TGIF_Zero_Shot_QA/mp4/tumblr_nk172bbdPI1u1lr18o1_250.mp4")


def test_video_llava_prompt_style_is_the_named_paper_option(tmp_path):
    path = _videomme_release(tmp_path, "parquet")
    s = load_benchmark("videomme", path, tmp_path, prompt_style="video_llava").samples[0]
    assert s.prompt == (f"{s.question}\nA. Apples.\nB. Candles.\nC. Berries.\nD. The three kinds are of the same "
                        "number.\nAnswer with the option's letter from the given choices directly.")
    with pytest.raises(ConfigError, match="unknown prompt style 'paper'; choose one of: lmms_eval, video_llava"):
        load_benchmark("videomme", path, tmp_path, prompt_style="paper")
    from vidprune.jobs.manifest import format_question

    assert format_question(s.question, list(s.options)) == s.prompt  # vidprune job asks the same way


# ------------------------------------------------------------------ mini-benchmarks through `vidprune eval`
def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _expected_gold(form: str) -> dict[str, dict[str, str]]:
    """Gold answers per benchmark and question id, as each benchmark's own scoring reads them."""
    mvbench = _mvbench_gold_by_lmms_eval()
    videomme = {r["question_id"]: r["answer"] for r in _json(DATA / "videomme" / "videomme_rows.json")}
    ego_answers = _json(DATA / "egoschema" / "subset_answers.json")
    ego = {("0074f737-11cb-497d-8d07-77c3a8127391" if form == "a" else "0"):
           LETTERS[ego_answers["0074f737-11cb-497d-8d07-77c3a8127391"]]}
    nextqa = {f"{r['video']}_{r['qid']}": LETTERS[int(r["answer"])]
              for r in csv.DictReader((DATA / "nextqa" / "test.csv").open())}
    tgif = {r["vid_id"]: r["answer"] for r in csv.DictReader((DATA / "tgif_qa" / "Test_frameqa_question.csv")
                                                             .open(newline=""), delimiter="\t")}
    msvd = {str(r["id"]): r["answer"] for r in _json(DATA / "msvd_qa" / "val_qa.json")}
    anet = {a["question_id"]: a["answer"] for a in _json(DATA / "activitynet_qa" / "test_a.json")}
    msrvtt = {str(r["id"]): r["answer"] for r in _json(DATA / "msrvtt_qa" / "test_qa.json")}
    return {"mvbench": mvbench, "videomme": videomme, "egoschema": ego, "nextqa": nextqa, "tgif_qa": tgif,
            "msvd_qa": msvd, "activitynet_qa": anet, "msrvtt_qa": msrvtt}


@pytest.mark.parametrize("form", ["a", "b"])
def test_every_benchmark_as_published_through_vidprune_eval(tmp_path, video_llava_ckpt, capsys, form):
    """Form a: the authors' releases (Video-MME parquet, MVBench's folders, EgoSchema's json, NExT-QA's csv);
    form b: the other published forms (Video-MME repository json, lmms-eval's MVBench download,
    EgoSchema, NExT-QA and ActivityNet-QA parquets). The other open-ended releases run in both."""
    root = tmp_path / "data"
    sources = {
        "videomme": (_videomme_release(root / "videomme", "parquet" if form == "a" else "repository_json"),
                     root / "videomme"),
        "mvbench": (_mvbench_release(root / "mvbench", lmms_eval_layout=form == "b") / "json", root / "mvbench" / "video"),
        "egoschema": (_egoschema_release(_mk(root / "egoschema"), "release" if form == "a" else "lmms_eval"),
                      root / "egoschema" / "videos"),
        "nextqa": (_nextqa_release(root / "nextqa", "csv" if form == "a" else "lmms_eval_parquet"),
                   root / "nextqa" / "NExTVideo"),
        "tgif_qa": (_tgif_release(_mk(root / "tgif")), root / "tgif" / "gifs"),
        "msvd_qa": (_msvd_release(_mk(root / "msvd")), root / "msvd" / "video"),
        "activitynet_qa": (_activitynet_release(root / "anet", "release" if form == "a" else "lmms_eval_parquet"),
                           root / "anet" / "videos"),
        "msrvtt_qa": (_msrvtt_release(_mk(root / "msrvtt")), root / "msrvtt" / "video"),
    }
    args = ["eval", "--model", video_llava_ckpt, "--frames", "2", "--budgets", "full", "--max-new-tokens", "2",
            "--out", str(tmp_path / "out"), "--no-progress"]
    for name, (ann, videos) in sources.items():
        args += ["--benchmark", name, "--annotations", str(ann), "--videos", str(videos)]
    code = main(args)  # no --skip-missing-videos: a question without its video would stop the run
    assert code == 0, capsys.readouterr().err
    recs = _records(tmp_path / "out")
    got: dict[str, dict[str, str]] = {}
    for r in recs:
        got.setdefault(r["benchmark"], {})[r["sample_id"]] = r["answer"]
    assert got == _expected_gold(form)  # every question read, with the benchmark's own gold answer
    for r in recs:
        if r["options"]:
            assert r["correct"] == (r["extracted"] == r["answer"])


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_prompt_style_is_validated_and_a_resume_with_another_is_refused(tmp_path, video_llava_ckpt, capsys):
    from vidprune.eval.settings import resolve_settings

    with pytest.raises(ConfigError, match="unknown prompt style 'lmms'"):
        resolve_settings({"benchmarks": [{"name": "mvbench", "annotations": "a", "videos": "v"}], "budgets": [16],
                          "prompt": "lmms"})
    root = _mvbench_release(tmp_path / "mv")
    args = ["eval", "--benchmark", "mvbench", "--annotations", str(root / "json" / "action_count.json"),
            "--videos", str(root / "video"), "--model", video_llava_ckpt, "--frames", "2", "--budgets", "full",
            "--max-new-tokens", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--prompt", "video_llava"]) == 0
    assert json.loads((tmp_path / "out" / "run.json").read_text())["options"]["prompt"] == "video_llava"
    capsys.readouterr()
    assert main(args) == 2  # the default lmms_eval prompt would mix two prompts in one table
    assert "(prompt: 'video_llava' before, 'lmms_eval' now)" in capsys.readouterr().err
