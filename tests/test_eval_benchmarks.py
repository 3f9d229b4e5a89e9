"""Benchmark readers: each published annotation layout, over real generated video files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_helpers import qa_pair_benchmark, write_clip, write_csv, write_json

from vidprune.errors import ConfigError
from vidprune.eval.benchmarks import (
    MC_INSTRUCTION,
    MULTIPLE_CHOICE,
    OPEN_ENDED,
    get_benchmark,
    list_benchmarks,
    load_benchmark,
)
from vidprune.prompts import VIDEOMME_PREAMBLE
from vidprune.eval.runner import load_clip


def test_registry_lists_every_benchmark_with_its_layout():
    assert list_benchmarks() == ["activitynet_qa", "egoschema", "msrvtt_qa", "msvd_qa", "mvbench", "nextqa",
                                 "tgif_qa", "videomme"]
    for name in list_benchmarks():
        spec = get_benchmark(name)
        assert spec.layout and spec.kind in (MULTIPLE_CHOICE, OPEN_ENDED)
    assert get_benchmark("Video-MME".replace("Video-MME", "videomme")).title == "Video-MME"
    with pytest.raises(ConfigError, match="unknown benchmark 'vmme'.*videomme"):
        get_benchmark("vmme")


def test_videomme_parquet_as_lmms_eval_loads_it(tmp_path):
    write_clip(tmp_path / "videos" / "data" / "fFjv93ACGo8.mp4")
    write_clip(tmp_path / "videos" / "abc.MP4", seed=1)
    rows = [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy",
             "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
             "task_type": "Counting Problem", "question": "How many planets are shown?",
             "options": ["A. 3.", "B. 4.", "C. 5.", "D. 6."], "answer": "C"},
            {"video_id": "002", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "",
             "videoID": "abc", "question_id": "002-1", "task_type": "OCR Problems", "question": "What is written?",
             "options": ["A. yes", "B. no", "C. maybe", "D. none"], "answer": "A"}]
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = load_benchmark("videomme", path, tmp_path / "videos")
    s = data.samples[0]
    assert [x.sample_id for x in data.samples] == ["001-1", "002-1"] and not data.missing
    assert s.options == ("3.", "4.", "5.", "6.") and s.answer == "C" and s.kind == MULTIPLE_CHOICE
    assert s.prompt == (f"{VIDEOMME_PREAMBLE}\nHow many planets are shown?\nA. 3.\nB. 4.\nC. 5.\nD. 6.\n\n"
                        f"{MC_INSTRUCTION}")  # lmms-eval's Video-MME prompt (tests/test_eval_published.py)
    assert s.video.endswith("data/fFjv93ACGo8.mp4") and data.samples[1].video.endswith("abc.MP4")
    assert s.category == "Counting Problem"


def test_mvbench_task_folder_with_clip_bounds_and_frame_folders(tmp_path):
    vids = tmp_path / "video"
    write_clip(vids / "star" / "Charades_v1_480" / "6H78U.mp4", num_frames=24)
    frames = vids / "tvqa" / "frames_fps3_hq" / "castle_s01e01_seg02_clip_00"
    from PIL import Image

    for i in range(9):  # 3 s at 3 fps
        frames.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (20 * i, 0, 0)).save(frames / f"{i + 1:05d}.jpg")
    write_json(tmp_path / "json" / "action_sequence.json", [
        {"video": "6H78U.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle."],
         "answer": "Put down the cup/glass/bottle.", "start": 1.0, "end": 2.5}])
    write_json(tmp_path / "json" / "episodic_reasoning.json", [
        {"video": "castle_s01e01_seg02_clip_00", "question": "Who enters?", "candidates": ["Beckett", "Castle"],
         "answer": "Castle", "start": 1.0, "end": 2.0}])
    data = load_benchmark("mvbench", tmp_path / "json", vids)
    seq, epi = sorted(data.samples, key=lambda s: s.sample_id)
    assert seq.sample_id == "action_sequence/0" and seq.answer == "C" and seq.clip_s == (1.0, 2.5)
    assert seq.category == "action_sequence" and seq.frames_fps is None
    assert epi.answer == "B" and epi.frames_fps == 3.0 and epi.video.endswith("castle_s01e01_seg02_clip_00")
    clip = load_clip(seq, 4)  # decoded only inside the bounds: frames at 1.0 .. 2.5 s of a 6 fps video
    assert len(clip.frames) == 4 and min(clip.times_s) >= 1.0 and max(clip.times_s) <= 2.5
    clip = load_clip(epi, 2)  # frame folder numbered from 1: images 00003..00006 are 1.0 .. 2.0 s at 3 fps
    assert clip.indices == [3, 6] and clip.frames.shape == (2, 30, 40, 3) and clip.frames[0, 0, 0, 0] == 40
    one_task = load_benchmark("mvbench", tmp_path / "json" / "action_sequence.json", vids)
    assert len(one_task.samples) == 1


def test_egoschema_release_files_keep_only_the_answered_subset(tmp_path):
    uids = ["0074f737-11cb-497d-8d07-77c3a8127391", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "unanswered-uid"]
    for i, u in enumerate(uids):
        write_clip(tmp_path / "videos" / f"{u}.mp4", seed=i)
    write_json(tmp_path / "questions.json", [
        {"q_uid": u, "google_drive_id": "x", "question": f"What is c's goal {i}?",
         **{f"option {k}": f"option text {k}" for k in range(5)}} for i, u in enumerate(uids)])
    write_json(tmp_path / "subset_answers.json", {uids[0]: 3, uids[1]: 0})
    data = load_benchmark("egoschema", tmp_path / "questions.json", tmp_path / "videos")
    assert [s.sample_id for s in data.samples] == uids[:2]
    assert [s.answer for s in data.samples] == ["D", "A"] and len(data.samples[0].options) == 5
    also = load_benchmark("egoschema", tmp_path / "subset_answers.json", tmp_path / "videos")
    assert [s.sample_id for s in also.samples] == uids[:2]


def test_egoschema_lmms_eval_subset_records(tmp_path):
    write_clip(tmp_path / "v" / "vid1.mp4")
    write_json(tmp_path / "subset.json", [{"question_idx": "q1", "video_idx": "vid1", "question": "Why?",
                                           "option": ["A. a", "B. b", "C. c", "D. d", "E. e"], "answer": "4"}])
    s = load_benchmark("egoschema", tmp_path / "subset.json", tmp_path / "v").samples[0]
    assert s.answer == "E" and s.options == ("a", "b", "c", "d", "e") and s.sample_id == "q1"


def test_nextqa_csv_through_the_video_mapping(tmp_path):
    write_clip(tmp_path / "NExTVideo" / "1150" / "2440175990.mp4")
    write_json(tmp_path / "NExTVideo" / "map_vid_vidorID.json", {"2440175990": "1150/2440175990"})
    write_csv(tmp_path / "test.csv", [
        {"video": "2440175990", "frame_count": "1000", "width": "640", "height": "480",
         "question": "why did the boy pick up one present", "answer": "1", "qid": "6", "type": "CW",
         "a0": "share with the girl", "a1": "approach lady sitting there", "a2": "unwrap it",
         "a3": "playing with toy train", "a4": "gesture something"}])
    s = load_benchmark("nextqa", tmp_path / "test.csv", tmp_path / "NExTVideo").samples[0]
    assert s.sample_id == "2440175990_6" and s.answer == "B" and s.category == "CW"
    assert s.video.endswith("1150/2440175990.mp4") and s.options[4] == "gesture something"


@pytest.mark.parametrize("name, ext", [("msvd_qa", ".avi"), ("msrvtt_qa", ".mp4"), ("tgif_qa", ".gif"),
                                       ("activitynet_qa", ".mp4")])
def test_open_ended_question_answer_pairs(tmp_path, name, ext):
    prefix = "v_clip" if name == "activitynet_qa" else "clip"
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=2, per_video=2, ext=ext, video_prefix=prefix)
    if name == "activitynet_qa":  # the release names videos without the "v_" of the file names
        import json

        qs = json.loads(q_path.read_text())
        for q in qs:
            q["video_name"] = q["video_name"][2:]
        q_path.write_text(json.dumps(qs))
    data = load_benchmark(name, tmp_path / "test_a.json", videos)  # either file of the pair
    assert len(data.samples) == 4 and not data.missing
    s = data.samples[1]
    assert s.kind == OPEN_ENDED and s.answer == "square" and s.prompt == s.question == "what is moving here"
    assert s.video.endswith(f"{prefix}0{ext}")


def test_msvd_qa_release_with_youtube_mapping(tmp_path):
    # a released val_qa.json row and its youtube_mapping.txt line (tests/data/benchmarks/msvd_qa names the sources)
    write_clip(tmp_path / "YouTubeClips" / "bQJQGoJF7_k_162_169.avi")
    (tmp_path / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\r\nbQJQGoJF7_k_162_169 vid1201\r\n")
    write_json(tmp_path / "val_qa.json", [{"answer": "someone", "id": 30933, "question": "who pours liquid from a "
                                           "plastic container into a ziploc bag containing meat pieces?",
                                           "video_id": 1201}])
    s = load_benchmark("msvd_qa", tmp_path / "val_qa.json", tmp_path / "YouTubeClips").samples[0]
    assert s.sample_id == "30933" and s.video.endswith("bQJQGoJF7_k_162_169.avi") and s.answer == "someone"


def test_msrvtt_qa_release_and_tgif_frameqa_tsv(tmp_path):
    write_clip(tmp_path / "video" / "video7010.mp4")
    # the release's first test row (tests/data/benchmarks/msrvtt_qa names its source)
    write_json(tmp_path / "test_qa.json", [{"answer": "regard", "category_id": 10, "id": 170859,
                                            "question": "what is the video doing?", "video_id": 7010}])
    s = load_benchmark("msrvtt_qa", tmp_path / "test_qa.json", tmp_path / "video").samples[0]
    assert s.video.endswith("video7010.mp4") and s.category == "10" and s.sample_id == "170859"
    assert s.answer == "regard"
    write_clip(tmp_path / "gifs" / "tumblr_nk172bbdPI1u1lr18o1_250.gif")
    write_csv(tmp_path / "Test_frameqa_question.csv", [
        {"gif_name": "tumblr_nk172bbdPI1u1lr18o1_250", "question": "what does a man hold?", "answer": "gun",
         "vid_id": "gif17830", "key": "17830", "type": "0", "description": "a man holds a gun"}], delimiter="\t")
    s = load_benchmark("tgif_qa", tmp_path / "Test_frameqa_question.csv", tmp_path / "gifs").samples[0]
    assert s.sample_id == "gif17830" and s.answer == "gun" and s.video.endswith(".gif")  # vid_id: the question id
    assert load_clip(s, 3).frames.shape[0] == 3  # the GIF decodes


def test_missing_videos_are_reported_not_dropped(tmp_path):
    q_path, videos = qa_pair_benchmark(tmp_path, n_videos=2, per_video=1)
    (videos / "clip1.mp4").unlink()
    data = load_benchmark("msvd_qa", q_path, videos, limit=2)
    assert [s.sample_id for s in data.samples] == ["clip0_0"]
    assert data.missing == [("clip1_0", ["clip1"])]


def test_layout_errors_name_the_field_and_the_expected_layout(tmp_path):
    (tmp_path / "v").mkdir()
    write_json(tmp_path / "bad.json", [{"videoID": "x", "question": "q", "options": ["A. a", "B. b"]}])
    with pytest.raises(ConfigError, match=r"record 0 lacks 'question_id', 'answer'; this is not a Video-MME"):
        load_benchmark("videomme", tmp_path / "bad.json", tmp_path / "v")
    write_json(tmp_path / "test_q.json", [{"video_name": "a", "question": "q", "question_id": "1"}])
    with pytest.raises(ConfigError, match="test_a.json must lie next to test_q.json"):
        load_benchmark("msvd_qa", tmp_path / "test_q.json", tmp_path / "v")
    with pytest.raises(ConfigError, match="do not exist"):
        load_benchmark("msvd_qa", tmp_path / "nope.json", tmp_path / "v")
    with pytest.raises(ConfigError, match="not a directory"):
        load_benchmark("msvd_qa", tmp_path / "test_q.json", tmp_path / "nope")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_benchmark("msrvtt_qa", tmp_path / "broken.json", tmp_path / "v")
    write_json(tmp_path / "mc.json", [{"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "z"}])
    with pytest.raises(ConfigError, match=r"answer 'z' is not one of the candidates \['x', 'y'\]"):
        load_benchmark("mvbench", tmp_path / "mc.json", tmp_path / "v")
