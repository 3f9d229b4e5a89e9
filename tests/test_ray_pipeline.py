"""The stages on a real two-node Ray cluster (loopback) against the in-process path.

The module starts one cluster (head 127.0.0.2 + worker nodes 127.0.0.3 and 127.0.0.4)
and one pipeline on it: 2 decoders, 2 encoder replicas, the select actor and an LLM
actor. The last test kills a worker node. Every
Ray result is compared with ``VideoQA`` run in this process on the same checkpoint with
the same options (same encoder batch size), which is the reference.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from ray_cluster import LoopbackCluster, actor_info, on_actor

from vidprune.errors import ConfigError, VideoDecodeError
from vidprune.pipeline.ray import (
    RayPipelineOptions,
    RayVideoPipeline,
    StageResources,
    VideoRequest,
    connect_ray,
)
from vidprune.pipeline.segments import SegmentDecoder, batches_from_clip, plan_frames, split_segments
from vidprune.pipeline.stages import VideoSelection
from vidprune.qa import VideoQA
from vidprune.samples import moving_square_frames, write_video

# A budget below the stock 24 x 257 tokens, so VisPruner, dedup and the carry-over all act.
OPTIONS = dict(budget=100, frames=24, encoder_batch_size=4, max_new_tokens=6)
SEGMENTS_IN_FLIGHT = 3
QUESTIONS = ["What is moving?", "Where does the square go?", "What color is it?"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A 10 s video (240 frames) and two short ones with different content."""
    root = tmp_path_factory.mktemp("ray-videos")
    return {
        "long": str(write_video(root / "long.mp4", moving_square_frames(240, seed=1), fps=24)),
        "short1": str(write_video(root / "short1.mp4", moving_square_frames(30, seed=2), fps=12)),
        "short2": str(write_video(root / "short2.mp4", moving_square_frames(40, seed=3, square=64), fps=12)),
    }


@pytest.fixture(scope="module")
def reference(video_llava_ckpt):
    return VideoQA.from_pretrained(video_llava_ckpt, **OPTIONS)


@pytest.fixture(scope="module")
def pipeline(video_llava_ckpt):
    import ray

    with LoopbackCluster(worker_nodes=2, num_cpus=4) as cluster:
        connect_ray(cluster.address)
        try:
            cfg = VideoQA.resolve_config(video_llava_ckpt, **OPTIONS)
            # explicit shares that leave room to restart a dead node's actors on the other two
            pipe = RayVideoPipeline(cfg, RayPipelineOptions(decoders=2, encoders=2,
                                                            max_segments_in_flight=SEGMENTS_IN_FLIGHT,
                                                            decode=StageResources(1), encode=StageResources(1),
                                                            select=StageResources(0.5), answer=StageResources(1)))
            pipe.cluster = cluster
            yield pipe
            pipe.shutdown()
        finally:
            ray.shutdown()


def assert_same_pruned(got, want):
    assert [f["kept"] for f in got.frames] == [f["kept"] for f in want.frames]
    assert got.frames == want.frames
    assert got.tokens_count == want.tokens_count
    assert got.tokens.shape == want.tokens.shape
    torch.testing.assert_close(got.tokens, want.tokens, rtol=1e-5, atol=1e-6)
    assert got.decode == want.decode
    assert got.warnings == want.warnings


# ------------------------------------------------------------------ in-process pieces
def test_split_segments_cover_every_frame_once_in_order():
    segs = split_segments(10, 4)
    assert [list(s) for s in segs] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_segments(3, 8) == [range(3)]
    with pytest.raises(ConfigError, match="segment_frames"):
        split_segments(3, 0)


@pytest.mark.parametrize("stream_frames, sampling, noted", [
    (30, dict(num_frames=40), True),  # fewer frames than asked: all of them, with a note
    (1, dict(num_frames=8), True),
    (30, dict(fps=30.0), True),  # a rate above the video's: every frame, with a note
    (30, dict(fps=5.0, max_frames=4), False),
])
def test_plan_picks_what_read_video_picks(tmp_path, stream_frames, sampling, noted):
    from vidprune.pipeline.decode import read_video
    from vidprune.pipeline.stages import DecodeStage

    video = str(write_video(tmp_path / "v.mp4", moving_square_frames(stream_frames, seed=4), fps=12))
    clip = read_video(video, **sampling)
    plan = plan_frames(DecodeStage(**sampling), video)
    assert (plan.indices, plan.times_s, plan.num_stream_frames) == (clip.indices, clip.times_s, clip.num_stream_frames)
    assert plan.reader_warnings + plan.notes == clip.warnings
    assert bool(plan.notes) == noted


def test_lanes_decode_the_same_frames_as_read_video(reference, videos):
    clip = reference.decode_stage.process(videos["long"])
    decoder = SegmentDecoder(reference.decode_stage)
    plan = plan_frames(reference.decode_stage, videos["long"])
    assert plan.indices == clip.indices and plan.times_s == clip.times_s
    assert plan.num_stream_frames == clip.num_stream_frames == 240
    segments = split_segments(len(plan), 4)
    batches = [decoder.decode(videos["long"], plan, s, 4, 3, "v") for s in range(len(segments))]
    assert [b.seq for b in batches] == list(range(len(segments)))
    np.testing.assert_array_equal(np.concatenate([b.frames for b in batches]), clip.frames)
    assert not decoder._streams  # every lane ran to its end and was closed
    # a lane reopened at a later segment (a restarted decoder) gives the same frames
    again = SegmentDecoder(reference.decode_stage).decode(videos["long"], plan, 4, 4, 3, "v")
    np.testing.assert_array_equal(again.frames, batches[4].frames)


@pytest.mark.parametrize("family, options", [
    ("video_llava", dict(budget=100, frames=24)),
    ("llava_next_video", dict(budget=300, frames=12, dedup_reference="kept_any", dedup_window=3)),
    ("llava_onevision", dict(budget=300, frames=12)),  # + the newline once, after the last segment
])
def test_selection_stream_equals_select_stage(tiny_checkpoints, videos, family, options):
    qa = VideoQA.from_pretrained(tiny_checkpoints[family], **options)
    clip = qa.decode_stage.process(videos["long"])
    encoded = qa.encode_stage.process(clip.frames)
    want = qa.select_stage.process(encoded, clip)
    stream = VideoSelection(qa.select_stage, len(clip.indices))
    for batch in batches_from_clip(clip, 5):  # the segments' features, cut from the same encoder call
        part = encoded[batch.seq * 5 : batch.seq * 5 + len(batch)]
        stream.add(part, batch.indices, batch.times_s)
    got = stream.finish({"backend": clip.backend, "num_stream_frames": clip.num_stream_frames}, clip.warnings)
    assert_same_pruned(got, want)
    assert torch.equal(got.tokens, want.tokens)
    assert got.tokens.shape[0] <= options["budget"]
    assert any(f["duplicates"] for f in got.frames)  # dedup acted, so the carry-over was exercised


# ------------------------------------------------------------------------- on Ray
def test_actors_spread_over_all_nodes(pipeline):
    actors = pipeline.decoders + pipeline.encoders + [pipeline.selector] + pipeline.answerers
    nodes = {actor_info(a)["node_id"] for a in actors}
    assert len(nodes) == 3


def test_long_video_equals_in_process_with_parallel_decoders(pipeline, reference, videos):
    before = list(pipeline.stats["segments_per_decoder"])
    got = pipeline.prepare(videos["long"])
    assert_same_pruned(got, reference.prepare(videos["long"]))
    used = [a - b for a, b in zip(pipeline.stats["segments_per_decoder"], before)]
    assert used == [3, 3]  # 6 segments of 4 frames, alternating over the 2 decoders
    assert set(got.timings_s) == {"decode", "encode", "select"}


def test_segments_in_flight_stay_bounded(pipeline, videos):
    start = pipeline.stats["segments"]
    list(pipeline.run([VideoRequest(k, videos[k]) for k in ("long", "short1", "short2", "long")]))
    assert pipeline.stats["segments"] - start == 6 + 6 + 6 + 6
    assert pipeline.stats["max_segments_in_flight"] == SEGMENTS_IN_FLIGHT


def test_array_input_equals_in_process(pipeline, reference):
    frames = moving_square_frames(18, seed=7)
    assert_same_pruned(pipeline.prepare(frames), reference.prepare(frames))


def test_repeated_frames_reuse_features_per_segment_with_the_in_process_result(pipeline, reference):
    # runs of 3 equal frames across segments of 4: the encoder replicas see a video's segments in
    # parallel, so the last encoded frame is the segment's and each segment's first frame runs the tower
    frames = np.repeat(moving_square_frames(8, seed=9), 3, axis=0)  # (24, H, W, 3)
    got, want = pipeline.prepare(frames), reference.prepare(frames)
    segment = OPTIONS["encoder_batch_size"]
    assert [f["reused"] for f in want.frames] == [i % 3 != 0 for i in range(24)]
    assert [f["reused"] for f in got.frames] == [i % 3 != 0 and i % segment != 0 for i in range(24)]
    strip = lambda frames: [{k: v for k, v in f.items() if k != "reused"} for f in frames]  # noqa: E731
    assert strip(got.frames) == strip(want.frames)
    assert got.tokens_count == want.tokens_count
    torch.testing.assert_close(got.tokens, want.tokens, rtol=1e-5, atol=1e-6)


def test_a_video_over_http_equals_the_local_file(pipeline, reference, videos):
    from range_server import RangeHTTPServer

    with RangeHTTPServer(os.path.dirname(videos["short2"])) as server:  # on 127.0.0.1: the worker nodes reach it
        got = pipeline.prepare(server.url(os.path.basename(videos["short2"])))
    assert_same_pruned(got, reference.prepare(videos["short2"]))


def _record_llm_inputs(answer_actor):
    """Test instrumentation, installed in the live actor: the token shapes handed to its answer stages."""

    def install(instance):
        for _cfg, stages, _schedule in instance.variants.values():
            stage = stages.answer
            seen = stage.__dict__.setdefault("_test_received", [])
            if "process_batch" not in stage.__dict__:
                original = stage.process_batch

                def process_batch(items, _original=original, _seen=seen, **kw):
                    _seen.append(tuple(items[0][0].tokens.shape))
                    return _original(items, **kw)

                stage.process_batch = process_batch
        return None

    on_actor(answer_actor, install)


def _stop_recording(answer_actor) -> None:
    def uninstall(instance):
        for _cfg, stages, _schedule in instance.variants.values():
            stages.answer.__dict__.pop("process_batch", None)
            stages.answer.__dict__.pop("_test_received", None)

    on_actor(answer_actor, uninstall)


def _llm_inputs(answer_actor) -> list[tuple[int, ...]]:
    return on_actor(answer_actor, lambda instance: [s for _c, stages, _s in instance.variants.values()
                                                    for s in stages.answer.__dict__.get("_test_received", [])])


def test_answers_equal_in_process_and_llm_gets_only_pruned_tokens(pipeline, reference, videos):
    pipeline.ensure_answerers()
    for a in pipeline.answerers:
        _record_llm_inputs(a)
    results = {r.key: r for r in pipeline.run([VideoRequest(k, videos[k], QUESTIONS) for k in ("short1", "long")])}
    assert set(results) == {"short1", "long"}
    for key, result in results.items():
        pruned = reference.prepare(videos[key])
        want = reference.answer(pruned, QUESTIONS)
        assert [a["token_ids"] for a in result.answers] == [w.token_ids for w in want]
        assert [a["text"] for a in result.answers] == [w.text for w in want]
        assert [a["report"]["frames"] for a in result.answers] == [w.report["frames"] for w in want]
        assert [a["report"]["tokens"] for a in result.answers] == [w.report["tokens"] for w in want]
    shapes = [s for a in pipeline.answerers for s in _llm_inputs(a)]
    for a in pipeline.answerers:
        _stop_recording(a)
    assert shapes and all(s[0] <= OPTIONS["budget"] for s in shapes)
    assert sorted(s[0] for s in shapes[-2:]) == sorted(r.answers[0]["report"]["tokens"]["to_llm"]
                                                      for r in results.values())


def test_bad_video_is_an_error_result_and_the_rest_go_on(pipeline, reference, videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    results = {r.key: r for r in pipeline.run([VideoRequest("missing", str(tmp_path / "nope.mp4"), QUESTIONS[:1]),
                                               VideoRequest("broken", str(broken), QUESTIONS[:1]),
                                               VideoRequest("ok", videos["short2"], QUESTIONS[:1])])}
    assert results["missing"].error.startswith("cannot decode video") and "does not exist" in results["missing"].error
    assert results["broken"].error.startswith("cannot decode video")
    assert results["missing"].attempts == results["broken"].attempts == 1  # a bad input is not retried
    want = reference.answer(reference.prepare(videos["short2"]), QUESTIONS[:1])
    assert results["ok"].answers[0]["token_ids"] == want[0].token_ids
    with pytest.raises(VideoDecodeError):
        pipeline.prepare(str(tmp_path / "nope.mp4"))


def test_killed_select_actor_restarts_and_videos_start_over(pipeline, reference, videos):
    requests = [VideoRequest(i, videos[k]) for i, k in enumerate(["short1", "long", "short2", "long"])]
    restarted_before = pipeline.stats["restarted_videos"]
    old_pid = actor_info(pipeline.selector)["pid"]
    results = {}
    for result in pipeline.run(requests):
        results[result.key] = result
        if len(results) == 1:  # the next videos are streaming through the select actor now
            os.kill(old_pid, signal.SIGKILL)
    assert sorted(results) == [0, 1, 2, 3]
    for i, k in enumerate(["short1", "long", "short2", "long"]):
        assert results[i].error is None
        assert_same_pruned(results[i].pruned, reference.prepare(videos[k]))
    assert pipeline.stats["restarted_videos"] > restarted_before
    assert max(r.attempts for r in results.values()) == 2
    assert actor_info(pipeline.selector)["pid"] != old_pid


def _held_by_actor(actor) -> dict:
    """What a live actor holds: gc-tracked objects, resident memory, and the length of every container it keeps."""

    def measure(instance):
        import gc

        gc.collect()
        rss_kib = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        containers = {}
        for holder in [instance] + [v for v in vars(instance).values() if hasattr(v, "__dict__")]:
            for name, value in vars(holder).items():
                if isinstance(value, (list, dict, set, tuple)):
                    containers[f"{type(holder).__name__}.{name}"] = len(value)
        return {"objects": len(gc.get_objects()), "rss_bytes": rss_kib * 1024, "containers": containers}

    return on_actor(actor, measure)


# Questions of the memory test: 100 videos x 2 questions, after a warm-up of 10 videos.
LONG_JOB_VIDEOS = 100


def test_nothing_in_an_actor_grows_per_call_over_a_200_question_job(pipeline, videos):
    names = ["short1", "short2"]
    warm = [VideoRequest(("warm", i), videos[names[i % 2]], QUESTIONS[:2]) for i in range(10)]
    assert all(r.error is None for r in pipeline.run(warm))
    actors = pipeline.actors()
    before = {stage: [_held_by_actor(a) for a in handles] for stage, handles in actors.items()}
    calls_before = pipeline.stats["segments"]
    job = [VideoRequest(i, videos[names[i % 2]], QUESTIONS[:2]) for i in range(LONG_JOB_VIDEOS)]
    answered = sum(len(r.answers) for r in pipeline.run(job) if r.error is None)
    assert answered == 2 * LONG_JOB_VIDEOS
    calls = pipeline.stats["segments"] - calls_before  # one decode, encode and select call each
    after = {stage: [_held_by_actor(a) for a in handles] for stage, handles in actors.items()}
    for stage in actors:
        for b, a in zip(before[stage], after[stage]):
            assert a["containers"] == b["containers"], (stage, b["containers"], a["containers"])
            # fewer new objects than calls or videos: nothing is kept per call
            assert a["objects"] - b["objects"] < min(calls, LONG_JOB_VIDEOS), (stage, b["objects"], a["objects"])
            assert a["rss_bytes"] - b["rss_bytes"] < 64 * 1024 * 1024, (stage, b["rss_bytes"], a["rss_bytes"])
    assert after["select"][0]["containers"]["SelectActor.videos"] == 0  # no selection left behind


def test_cluster_too_small_is_one_line_error(video_llava_ckpt, pipeline):
    cfg = VideoQA.resolve_config(video_llava_ckpt, **OPTIONS)
    with pytest.raises(ConfigError, match=r"the Ray cluster has 12 CPUs but the pipeline asks for 12.5"):
        RayVideoPipeline(cfg, RayPipelineOptions(decoders=10, decode=StageResources(num_cpus=1),
                                                 encode=StageResources(num_cpus=1), select=StageResources(0.5),
                                                 answer=StageResources(1)))


def test_dead_worker_node_its_actors_restart_elsewhere_and_work_is_redone(pipeline, reference, videos):
    """Runs last: it takes a node away from the module's cluster."""
    import ray

    doomed = "127.0.0.4"
    actors = pipeline.decoders + pipeline.encoders + [pipeline.selector] + pipeline.answerers
    node_ip = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    on_doomed = [a for a in actors if node_ip[actor_info(a)["node_id"]] == doomed]
    assert on_doomed  # SPREAD put some of the six actors there
    names = ["long", "short1", "short2", "long"]
    results = {}
    for result in pipeline.run([VideoRequest(i, videos[k], QUESTIONS[:2]) for i, k in enumerate(names)]):
        results[result.key] = result
        if len(results) == 1:
            pipeline.cluster.kill_node(doomed)
    assert sorted(results) == [0, 1, 2, 3]
    for i, k in enumerate(names):
        assert results[i].error is None, results[i].error
        want = reference.answer(reference.prepare(videos[k]), QUESTIONS[:2])
        assert [a["token_ids"] for a in results[i].answers] == [w.token_ids for w in want]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2
    assert {actor_info(a)["node_id"] for a in on_doomed} <= alive  # restarted on the surviving nodes
