"""LLaVA-OneVision, Qwen2.5-VL and Qwen3-VL through the Ray pipeline (real loopback cluster) equal the in-process answers.

Segments of 4 frames: Qwen2.5-VL's temporal patches (pairs) stay whole; OneVision's newline
follows the last segment.
"""

from __future__ import annotations

import pytest
from ray_cluster import LoopbackCluster

from vidprune.pipeline.ray import RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray
from vidprune.qa import VideoQA
from vidprune.samples import moving_square_frames, write_video

OPTIONS = dict(budget=60, frames=8, max_new_tokens=4)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_ray_job_equals_in_process(tiny_checkpoints, tmp_path, family):
    import ray

    ckpt = tiny_checkpoints[family]
    video = str(write_video(tmp_path / "v.mp4", moving_square_frames(48, seed=1), fps=12))
    reference = VideoQA.from_pretrained(ckpt, **OPTIONS).ask(video, "What is moving?")
    with LoopbackCluster(worker_nodes=0, num_cpus=4) as cluster:
        connect_ray(cluster.address)
        try:
            pipe = RayVideoPipeline(VideoQA.resolve_config(ckpt, **OPTIONS),
                                    RayPipelineOptions(decoders=1, encoders=1, segment_frames=4))
            result = list(pipe.run([VideoRequest(key=0, video=video, questions=["What is moving?"])]))[0]
            pipe.shutdown()
        finally:
            ray.shutdown()
    assert result.error is None
    answer = result.answers[0]
    assert answer["token_ids"] == reference.token_ids
    assert answer["report"]["frames"] == reference.report["frames"]
    assert answer["report"]["tokens"] == reference.report["tokens"]
