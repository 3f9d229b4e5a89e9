"""Running a job: every question of a manifest not yet in the results file, answered on Ray.

Results (JSON Lines, one line per question, in the order they finish)::

    {"id": ..., "question_index": 0, "question": ..., "video": ..., "answer": ..., "token_ids": [...], "attempts": 1, "report": {...}}
    {"id": ..., "question_index": 0, "question": ..., "video": ..., "error": "cannot decode video ..."}

An item is ``(id, question_index)``. Rerunning the same command skips every item already
in the results (:class:`~vidprune.results.ResultsFile`), so each item ends up there
exactly once. An item whose video failed to decode gets an error line and counts as done
(``retry_errors`` runs those again). A video's token stream is computed once for all its
questions (lines that name the same file share it).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..pipeline.ray import RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray
from ..config import resolve_config
from .manifest import JobItem, read_manifest
from ..results import ResultsFile

__all__ = ["JobSummary", "run_job", "check_results_match", "layout_path", "LAYOUT_SUFFIX"]

# The layout sidecar: ``answers.jsonl`` → ``answers.jsonl.layout.json``.
LAYOUT_SUFFIX = ".layout.json"


@dataclass
class JobSummary:
    """What a run did: items answered and failed now, and those already in the results."""

    total: int
    already_done: int
    answered: int = 0
    failed: int = 0
    retried_videos: int = 0

    @property
    def new(self) -> int:
        return self.answered + self.failed

    def line(self, out: str | os.PathLike) -> str:
        return (f"vidprune job: {self.new} new results ({self.answered} answered, {self.failed} failed), "
                f"{self.already_done} already in {str(out)!r}, {self.total} questions in the manifest")


def _record(item: JobItem, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": item.id, "question_index": item.index, "question": item.question}
    if item.options:
        rec["options"] = list(item.options)
    rec["video"] = item.video
    rec.update(fields)
    return rec


def check_results_match(results: ResultsFile, items: list[JobItem]) -> None:
    """Refuse a results file that holds other questions under this manifest's item keys."""
    for item in items:
        rec = results.records.get(item.key)
        if rec is not None and rec.get("question") != item.question:
            raise ConfigError(
                f"{str(results.path)!r} holds a different question for id {item.id!r} #{item.index} "
                f"({rec.get('question')!r}); it belongs to another manifest: pass another --out"
            )


def run_job(manifest: str | os.PathLike, out: str | os.PathLike, options: dict[str, Any], *,
            config: str | None = None, ray_options=None, address: str | None = None,
            node_ip_address: str | None = None, retry_errors: bool = False, progress: bool = True) -> JobSummary:
    """Answer every question of ``manifest`` not yet in ``out``; returns what was done.

    ``options``: VidpruneConfig overrides (as ``vidprune ask`` takes them); ``config``: a preset.
    Everything (manifest, options, results file) is checked before Ray starts.
    """

    items = read_manifest(manifest)
    cfg, _checkpoint = resolve_config(config=config, **options)
    ray_opts = ray_options or RayPipelineOptions()
    fixed = ray_opts.resolved(cfg)  # checked whole now; the flags left out are sized once Ray is up
    results = ResultsFile(out).open()
    try:
        check_results_match(results, items)
        if retry_errors:
            results.drop_errors()
        pending = [it for it in items if it.key not in results.records]
        summary = JobSummary(total=len(items), already_done=len(items) - len(pending))
        if results.dropped_torn_line:
            print(f"vidprune job: dropped a torn last line of {str(out)!r} (an interrupted write); "
                  "its item runs again", file=sys.stderr)
        if not pending:
            return summary
        by_video: dict[str, list[JobItem]] = {}
        for it in pending:  # one token stream per video file, for all its questions
            by_video.setdefault(it.video, []).append(it)
        import ray

        started_here = not ray.is_initialized()
        connect_ray(address, node_ip_address=node_ip_address,
                    num_cpus=max(os.cpu_count() or 1, math.ceil(fixed.required()["CPU"])))
        pipe = None
        try:
            pipe = RayVideoPipeline(cfg, ray_opts)
            write_layout(out, pipe)
            requests = [VideoRequest(video, video, [it.prompt for it in group]) for video, group in by_video.items()]
            bar = _progress_bar(len(items), summary.already_done, enabled=progress)
            try:
                results_so_far = pipe.run(requests)
                for result in _stop_if_the_cluster_shrank(results_so_far, cfg, ray_opts, summary, out):
                    group = by_video[result.key]
                    if result.error is not None:
                        records = [_record(it, error=result.error, attempts=result.attempts) for it in group]
                    else:
                        records = [
                            _record(it, error=a["error"], attempts=result.attempts) if "error" in a else
                            _record(it, answer=a["text"], token_ids=a["token_ids"], attempts=result.attempts,
                                    report=a["report"])
                            for it, a in zip(group, result.answers)
                        ]
                    for rec in records:
                        results.append(rec)
                        if "error" in rec:
                            summary.failed += 1
                        else:
                            summary.answered += 1
                        bar.update(1)
                    bar.set_postfix(failed=summary.failed, refresh=False)
            finally:
                bar.close()
            summary.retried_videos = pipe.stats["restarted_videos"]
        finally:
            if pipe is not None:
                pipe.shutdown()
            if started_here:
                ray.shutdown()
        return summary
    finally:
        results.close()


def _stop_if_the_cluster_shrank(results, cfg, ray_opts, summary: JobSummary, out):
    """``results`` as they come; a :class:`ClusterShrunk` becomes one line that also says what was kept and
    the rerun that fits the cluster as it is now (the same command, its layout sized or refused as at start)."""
    from ..pipeline.ray.placement import ClusterShrunk

    try:
        yield from results
    except ClusterShrunk as exc:
        try:
            rerun = ray_opts.resolved(cfg, exc.cluster)
            fix = f"rerun the same command to resume on it (its layout would be {rerun.layout()})"
        except ConfigError as refused:  # the same flags do not fit: what the rerun's own check says, and what fits
            fix = f"a rerun with the same flags would stop with: {refused}"
            try:
                sized = type(ray_opts)(max_videos_in_flight=ray_opts.max_videos_in_flight,
                                       questions_per_call=ray_opts.questions_per_call).resolved(cfg, exc.cluster)
                fix += f"; without the layout flags it is sized for the cluster: {sized.layout()}"
            except ConfigError:
                pass
        raise ConfigError(f"{exc}; stopped, the {summary.answered + summary.failed} results written so far are "
                          f"kept in {str(out)!r}; {fix}") from None


def layout_path(out: str | os.PathLike) -> Path:
    """The sidecar file beside the results that records the layout of the job's last run."""
    out = Path(out)
    return out.with_name(out.name + LAYOUT_SUFFIX)


def write_layout(out: str | os.PathLike, pipe: RayVideoPipeline) -> None:
    """Print the layout the job runs with and record it beside the results (``<out>.layout.json``)."""
    print(f"vidprune job: layout {pipe.options.layout()} on {pipe.cluster.describe()}", file=sys.stderr)
    info = {"layout": pipe.options.layout(), **pipe.options.to_dict(), "cluster": pipe.cluster.to_dict(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = layout_path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="q", desc="vidprune job", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)


