"""Eight declared GPUs (``ray start --num-gpus 8`` on a CPU loopback node), eight LLM replicas.

The default CUDA layout for that cluster has one LLM replica per GPU, an encoder paired with each
in one placement-group bundle, in-flight bounds and select actors sized for eight replicas; run
(the math on CPU, fewer encoders to stay small) with eight videos, every LLM replica answers.
"""

from __future__ import annotations

import dataclasses

from ray_cluster import LoopbackCluster, actor_info

from vidprune.pipeline.ray import ClusterShape, RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray
from vidprune.pipeline.ray.layout import ANSWER_GPU_SHARE, ENCODE_GPU_SHARE
from vidprune.qa import VideoQA


def test_eight_gpus_eight_answer_actors_every_one_answers(video_llava_ckpt):
    """8 declared GPUs: the default CUDA layout has 8 LLM replicas, bounds and select actors sized for them,
    and with 8 videos every LLM replica answers one (run with the math on CPU, fewer encoders to stay small)."""
    import numpy as np
    import ray

    from vidprune.pipeline.ray import StageResources
    from vidprune.pipeline.ray.options import ANSWERERS_PER_SELECTOR

    with LoopbackCluster(worker_nodes=1, num_cpus=4, worker_gpus=8) as cluster:
        connect_ray(cluster.address)
        try:
            cpu_cfg = VideoQA.resolve_config(video_llava_ckpt, budget=40, frames=4, encoder_batch_size=4,
                                             max_new_tokens=2)
            planned = RayPipelineOptions().resolved(dataclasses.replace(cpu_cfg, device="cuda"), ClusterShape.current())
            assert (planned.answerers, planned.encoders, planned.gpu_pairs()) == (8, 8, 8)
            assert planned.selectors == 8 // ANSWERERS_PER_SELECTOR == 2
            assert (planned.max_videos_in_flight, planned.max_answers_queued) == (8, 16)  # not 2 and 4

            small = RayPipelineOptions(answerers=8, encoders=2, decoders=1,
                                       answer=StageResources(0.25, ANSWER_GPU_SHARE),
                                       encode=StageResources(0.25, ENCODE_GPU_SHARE), select=StageResources(0.25, 0.0),
                                       decode=StageResources(0.25, 0.0))
            pipe = RayVideoPipeline(cpu_cfg, small)
            try:
                assert len(pipe.selectors) == 2 and len(pipe.placement_groups) == 2
                rng = np.random.default_rng(0)
                videos = [rng.integers(0, 256, (4, 48, 64, 3), dtype=np.uint8) for _ in range(8)]
                results = list(pipe.run([VideoRequest(i, v, ["What moves?"]) for i, v in enumerate(videos)]))
                assert all(r.error is None for r in results), [r.error for r in results]
                assert sorted(r.answerer for r in results) == list(range(8))  # every LLM replica answered
                gpus = {}
                for i in range(8):
                    gpu_ids = actor_info(pipe.answerers[i])["gpu_ids"]
                    assert len(gpu_ids) == 1
                    gpus[gpu_ids[0]] = gpus.get(gpu_ids[0], 0) + 1
                assert len(gpus) == 8  # one replica per declared GPU
                reference = VideoQA.from_pretrained(video_llava_ckpt, budget=40, frames=4, max_new_tokens=2)
                by_key = {r.key: r for r in results}
                for k in (0, 7):
                    want = reference.answer(reference.prepare(videos[k]), ["What moves?"])
                    assert by_key[k].answers[0]["token_ids"] == want[0].token_ids
            finally:
                pipe.shutdown()
        finally:
            ray.shutdown()
