"""Running a sweep's answers on Ray (``vidprune eval --address``) through vidprune's job machinery.

Each (benchmark, arm) with questions left becomes one ``vidprune job``
(:func:`vidprune.jobs.runner.run_job`): a manifest of its pending questions (the
benchmark's prompt, the sample id as job id) and a results file under
``<out>/ray/<benchmark>/<arm>/``. The job answers on the cluster (decoders, encoders,
answerers as Ray actors, resumable by itself); its results are then scored and appended
to the sweep's ``samples.jsonl`` exactly as a local run's. One Ray connection serves
every job. Unlike the local sweep, each arm's job starts its own actors (and so loads the
model per arm); what a job already answered before an interruption is taken from its
results file, not asked again.

Not on Ray: questions about part of a video (MVBench's bounded tasks) and frame folders;
the manifest format takes whole video files. They are refused before Ray starts.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, VideoDecodeError

if TYPE_CHECKING:
    from .benchmarks import BenchmarkData, Sample
    from .methods import Arm
    from .runner import SweepRunner

__all__ = ["answer_on_ray", "check_ray_samples", "RAY_DIR"]

RAY_DIR = "ray"


def check_ray_samples(work: list[tuple["BenchmarkData", "Sample", list["Arm"]]]) -> None:
    """Refuse, before Ray starts, questions that a job manifest cannot carry."""
    for data, sample, _ in work:
        if sample.clip_s is not None or os.path.isdir(sample.video):
            what = "a part of its video (start/end)" if sample.clip_s is not None else "a folder of frames"
            raise ConfigError(f"{data.spec.title} question {sample.sample_id} is about {what}, which runs only "
                              "locally; drop --address for this benchmark")


def _job_dir(out: Path, benchmark: str, arm: "Arm") -> Path:
    return out / RAY_DIR / benchmark / arm.label.replace("@", "_")


def answer_on_ray(runner: "SweepRunner", work: list[tuple["BenchmarkData", "Sample", list["Arm"]]],
                  address: str | None, node_ip_address: str | None = None) -> None:
    """Answer ``work`` (benchmark, sample, pending arms) with one Ray job per (benchmark, arm) and record the results."""
    import ray

    from ..jobs.runner import run_job
    from ..pipeline.ray import RayPipelineOptions, connect_ray

    check_ray_samples(work)
    jobs: dict[tuple[str, str], tuple["BenchmarkData", "Arm", list["Sample"]]] = {}
    for data, sample, arms in work:
        for arm in arms:
            jobs.setdefault((data.spec.name, arm.label), (data, arm, []))[2].append(sample)
    started_here = not ray.is_initialized()
    first = runner.arm_configs[runner.arms[0].label]
    connect_ray(address, node_ip_address=node_ip_address,
                num_cpus=max(os.cpu_count() or 1, math.ceil(RayPipelineOptions().resolved(first).required()["CPU"])))
    explicit_len = runner.settings.options.get("max_new_tokens")
    out = Path(runner.settings.out)
    try:
        for (bench, label), (data, arm, samples) in jobs.items():
            folder = _job_dir(out, bench, arm)
            folder.mkdir(parents=True, exist_ok=True)
            manifest, results = folder / "manifest.jsonl", folder / "results.jsonl"
            manifest.write_text("".join(json.dumps({"id": s.sample_id, "video": s.video, "question": s.prompt}) + "\n"
                                        for s in samples))
            options: dict[str, Any] = {**runner.arm_configs[label].to_dict(),
                                       "max_new_tokens": explicit_len or data.spec.max_new_tokens}
            runner.say(f"{data.spec.title} / {label}: {len(samples)} questions as a Ray job ({folder})")
            run_job(manifest, results, options, address=address, node_ip_address=node_ip_address,
                    progress=runner.progress)
            by_id = {s.sample_id: s for s in samples}
            for line in results.read_text().splitlines():
                rec = json.loads(line)
                sample = by_id.get(str(rec["id"]))
                if sample is None:
                    continue  # answered and recorded by an earlier run
                if "error" in rec:
                    if not runner.settings.skip_missing_videos:
                        raise VideoDecodeError(f"{rec['error']} (pass --skip-missing-videos to leave such questions "
                                               "out; rerun to resume)")
                    runner.say(f"warning: {rec['error']}; question {sample.sample_id} left out (--skip-missing-videos)")
                    continue
                runner.keep(runner.make_record(data, sample, arm, rec["answer"], rec["report"]))
    finally:
        if started_here:
            ray.shutdown()
