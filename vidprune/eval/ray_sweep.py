"""Running a sweep's answers on Ray (``vidprune eval --address``) through one pipeline for all its arms.

One :class:`~vidprune.pipeline.ray.RayVideoPipeline` serves the whole sweep: its arms are
the pipeline's *variants* (they differ only in selection and IVTP options). Each video
with questions left is decoded and run through the vision tower once, on the cluster;
the select actor then selects every pending arm's tokens from those features and the
LLM actors (each loading the model once) answer every arm. Answers are scored and
appended to the sweep's ``samples.jsonl`` as each video finishes, exactly as a local
run's, so local and Ray runs resume each other.

Not on Ray: questions about part of a video (MVBench's bounded tasks) and frame folders;
the pipeline's decoders take whole video files. They are refused before Ray starts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, VideoDecodeError, VidpruneError

if TYPE_CHECKING:
    from .benchmarks import BenchmarkData, Sample
    from .methods import Arm
    from .runner import SweepRunner

__all__ = ["answer_on_ray", "check_ray_samples"]


def check_ray_samples(work: list[tuple["BenchmarkData", "Sample", list["Arm"]]]) -> None:
    """Refuse, before Ray starts, questions that the pipeline's decoders cannot read."""
    for data, sample, _ in work:
        if sample.clip_s is not None or os.path.isdir(sample.video):
            what = "a part of its video (start/end)" if sample.clip_s is not None else "a folder of frames"
            raise ConfigError(f"{data.spec.title} question {sample.sample_id} is about {what}, which runs only "
                              "locally; drop --address for this benchmark")


def answer_on_ray(runner: "SweepRunner", work: list[tuple["BenchmarkData", "Sample", list["Arm"]]],
                  address: str | None, node_ip_address: str | None = None) -> None:
    """Answer ``work`` (benchmark, sample, pending arms) through one Ray pipeline and record the results."""
    import ray
    from tqdm import tqdm

    from ..pipeline.ray import RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray

    check_ray_samples(work)
    first = runner.arm_configs[runner.arms[0].label]
    started_here = not ray.is_initialized()
    connect_ray(address, node_ip_address=node_ip_address)  # a local Ray gets the CPUs this machine has
    explicit_len = runner.settings.options.get("max_new_tokens")
    arms_by_label = {a.label: a for a in runner.arms}
    todo = sum(len(arms) for _, _, arms in work)
    pipe = None
    try:
        pipe = RayVideoPipeline(first, RayPipelineOptions(), variants=dict(runner.arm_configs))
        pending = sorted({a.label for _, _, arms in work for a in arms}, key=list(arms_by_label).index)
        runner.say(f"{todo} answers ({len(work)} questions x arms {', '.join(pending)}) through one Ray pipeline: "
                   f"{pipe.options.layout()}")
        by_key: dict[Any, tuple["BenchmarkData", "Sample", list["Arm"]]] = {}
        requests = []
        for data, sample, arms in work:
            key = (data.spec.name, sample.sample_id)
            by_key[key] = (data, sample, arms)
            requests.append(VideoRequest(key, sample.video, [sample.prompt], variants=[a.label for a in arms],
                                         generate={"max_new_tokens": explicit_len or data.spec.max_new_tokens}))
        bar = tqdm(total=todo, unit="answer", desc="eval on Ray", disable=not runner.progress, file=runner.log,
                   dynamic_ncols=True)
        try:
            for result in pipe.run(requests):
                data, sample, arms = by_key[result.key]
                if result.error is not None:
                    if not isinstance(result.exception, VideoDecodeError):
                        raise VidpruneError(f"{data.spec.title} question {sample.sample_id} failed on Ray: "
                                            f"{result.error}") from None
                    if not runner.settings.skip_missing_videos:
                        raise VideoDecodeError(f"{result.error} (pass --skip-missing-videos to leave such questions "
                                               "out; rerun to resume)")
                    runner.say(f"warning: {result.error}; question {sample.sample_id} left out (--skip-missing-videos)")
                    bar.update(len(arms))
                    continue
                for arm in arms:
                    (answer,) = result.by_variant[arm.label]
                    if "error" in answer:
                        raise VidpruneError(f"{data.spec.title} question {sample.sample_id} ({arm.label}) failed "
                                            f"on Ray: {answer['error']}")
                    runner.keep(runner.make_record(data, sample, arm, answer["text"], answer["report"], answer.get("token_ids")))
                    bar.update(1)
        finally:
            bar.close()
    finally:
        if pipe is not None:
            pipe.shutdown()
        if started_here:
            ray.shutdown()
