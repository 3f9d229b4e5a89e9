"""GPU placement without GPUs: a loopback node declares 2 GPUs (``ray start --num-gpus 2``).

The default CUDA layout is planned for that cluster (one LLM replica per GPU, an encoder
beside each), then run with the math on CPU: each actor must hold the share it was
planned with, on the device Ray assigned it (``CUDA_VISIBLE_DEVICES`` read inside the
actor), and the answers must equal the in-process ones.
"""

from __future__ import annotations

import dataclasses

import pytest
from ray_cluster import LoopbackCluster, actor_info

from vidprune.pipeline.ray import ClusterShape, RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray
from vidprune.pipeline.ray.layout import ANSWER_GPU_SHARE, ENCODE_GPU_SHARE
from vidprune.qa import VideoQA
from vidprune.samples import moving_square_frames, write_video

OPTIONS = dict(budget=40, frames=8, encoder_batch_size=4, max_new_tokens=4)
GPU_NODE = "127.0.0.3"


@pytest.fixture(scope="module")
def gpu_cluster():
    import ray

    with LoopbackCluster(worker_nodes=1, num_cpus=2, worker_gpus=2) as cluster:
        connect_ray(cluster.address)
        try:
            yield cluster
        finally:
            ray.shutdown()


def test_declared_gpus_get_the_planned_placement(gpu_cluster, video_llava_ckpt, tmp_path):
    import ray

    cpu_cfg = VideoQA.resolve_config(video_llava_ckpt, **OPTIONS)
    shape = ClusterShape.current()
    assert shape.gpus == 2 and len(shape.nodes) == 2
    planned = RayPipelineOptions().resolved(dataclasses.replace(cpu_cfg, device="cuda"), shape)
    assert (planned.answerers, planned.encoders) == (2, 2)  # one LLM replica per GPU, an encoder beside each
    assert (planned.answer.num_gpus, planned.encode.num_gpus) == (ANSWER_GPU_SHARE, ENCODE_GPU_SHARE)
    assert planned.decode.num_gpus == planned.select.num_gpus == 0

    # the planned shares, explicit, with the model on the CPU (device cpu)
    explicit = RayPipelineOptions(decoders=planned.decoders, encoders=planned.encoders, answerers=planned.answerers,
                                  decode=planned.decode, encode=planned.encode, select=planned.select,
                                  answer=planned.answer)
    pipe = RayVideoPipeline(cpu_cfg, explicit)
    try:
        assert pipe.options.layout() == planned.layout()
        node_ip = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        info = {stage: [actor_info(a) for a in handles] for stage, handles in pipe.actors().items()}
        for stage in ("decode", "select"):
            for i in info[stage]:
                assert "GPU" not in i["resources"] and i["gpu_ids"] == []
        devices: dict[str, list[str]] = {}
        for stage, share in (("answer", ANSWER_GPU_SHARE), ("encode", ENCODE_GPU_SHARE)):
            for i in info[stage]:
                assert node_ip[i["node_id"]] == GPU_NODE  # only that node has GPUs
                assert i["resources"]["GPU"] == pytest.approx(share)
                assert len(i["gpu_ids"]) == 1 and i["cuda_visible_devices"] == i["gpu_ids"][0]
                devices.setdefault(i["gpu_ids"][0], []).append(stage)
        # each of the two GPUs holds one LLM replica and the encoder beside it, reserved as one bundle
        assert sorted(devices) == ["0", "1"]
        assert all(sorted(stages) == ["answer", "encode"] for stages in devices.values())
        assert len(pipe.placement_groups) == 2 and pipe.options.gpu_pairs() == 2
        bundles = [ray.util.placement_group_table(g)["bundles"][0] for g in pipe.placement_groups]
        assert all(b["GPU"] == pytest.approx(ANSWER_GPU_SHARE + ENCODE_GPU_SHARE) for b in bundles)

        # an encoder replica holds the vision tower's and projector's bytes only (the LLM never materialized)
        from vidprune.video_models import load_video_llm

        full = load_video_llm(video_llava_ckpt).model
        want = {}
        for name, tensor in (*full.named_parameters(), *full.named_buffers()):
            top = ".".join(name.split(".")[:2])
            if top in ("model.video_tower", "model.multi_modal_projector"):
                want[top] = want.get(top, 0) + tensor.numel() * tensor.element_size()
        for encoder in pipe.encoders:
            assert ray.get(encoder.weights.remote()) == want

        video = str(write_video(tmp_path / "v.mp4", moving_square_frames(16, seed=5), fps=8))
        (result,) = list(pipe.run([VideoRequest("v", video, ["What moves?"])]))
        reference = VideoQA.from_pretrained(video_llava_ckpt, **OPTIONS)
        want = reference.answer(reference.prepare(video), ["What moves?"])
        assert result.error is None, result.error
        assert result.answers[0]["token_ids"] == want[0].token_ids  # the math ran on the CPU
    finally:
        pipe.shutdown()

