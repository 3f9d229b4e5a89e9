"""The budget sweep: every benchmark sample under every (method, budget) arm, resumable.

    runner = SweepRunner(settings)     # settings: vidprune.eval.settings.resolve_settings(...)
    runner.setup()                     # validate options, read annotations, find videos, open results
    summary = runner.run()             # load the model once, answer, score, write the report

Order of work: the model loads once. For each video (questions about the same video and
clip are grouped) the frames are decoded and run through the vision tower once; every
arm then selects its tokens from those features and answers. Selection and generation
are the only per-arm work, so a sweep over 4 budgets x 3 methods costs little more than
13 generate calls per question.

Results: ``<out>/samples.jsonl`` gets one line per (benchmark, arm, question) as soon as
it is answered and scored, written and fsync-ed at once (the jobs' results store,
:class:`vidprune.results.ResultsFile`). A rerun of the same command reads the file,
drops a partial last line left by an interruption, and skips every answer already there;
``<out>/run.json`` records the options, and a rerun with different pipeline options into
the same folder is refused. Arms, benchmarks and a judge may be added on a rerun.

With ``settings.address`` the answers come from a Ray cluster instead
(:mod:`vidprune.eval.ray_sweep`); scoring and records are the same.

Latency per record: decode and vision-tower time of its video (shared by the arms, as a
standalone run would pay it), its own selection time and its own generate time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..config import VidpruneConfig
from ..errors import ConfigError, VideoDecodeError
from ..results import RESUMABLE_CHANGES, ResultsFile, check_run_options
from .benchmarks import BenchmarkData, Sample, load_benchmark, MULTIPLE_CHOICE
from .methods import FULL, Arm, TokenCounts, plan_arms
from .scoring import JudgeClient, JudgeError, Judgment, contains_answer, exact_match, extract_option_letter
from .settings import IVTP_KEYS, EvalSettings

__all__ = ["SweepRunner", "ResultStore", "record_key", "load_clip", "token_counts", "rebuild_report", "SAMPLES_FILE",
           "RUN_FILE"]

SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"

# The question of the one judge request sent before the model loads.
PREFLIGHT_QUESTION = "Is this judge endpoint reachable? (a vidprune preflight check)"

# Options that differ between arms by design; everything else must match on a resume.
_PER_ARM_OPTIONS = ("budget", "pruner", "dedup") + IVTP_KEYS
# Options that say where and in what chunks the work runs, not what is computed: a resume may change them.
_PLACEMENT_OPTIONS = RESUMABLE_CHANGES


def record_key(benchmark: str, arm_label: str, sample_id: str) -> str:
    """The identity of one answer in ``samples.jsonl``."""
    return json.dumps([benchmark, arm_label, sample_id])


class ResultStore:
    """``samples.jsonl`` (one JSON record per answer, append-only) and ``run.json`` in the output folder.

    The records are kept in the resumable results store of the jobs
    (:class:`~vidprune.results.ResultsFile`: each line one ``write`` + ``fsync``, a torn
    last line dropped on resume, the file locked while a sweep writes it), keyed by
    ``record["key"]`` (:func:`record_key`).
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir)
        self.path = self.dir / SAMPLES_FILE
        self.run_path = self.dir / RUN_FILE
        self.file = ResultsFile(self.path, key=_record_key_of, writer="vidprune eval")

    @property
    def dropped_partial(self) -> bool:
        return self.file.dropped_torn_line

    def load(self) -> dict[str, dict[str, Any]]:
        """Records already written, by key (opens and locks an existing file). A partial last line is cut off.

        A missing file stays missing until the first answer is written (a run refused in
        setup leaves no ``samples.jsonl`` behind).
        """
        if not self.file.is_open and self.path.exists():
            self.file.open()
        return dict(self.file.records)

    def _open_for_writing(self) -> None:
        if not self.file.is_open:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.file.open()

    def check_run(self, run_info: dict[str, Any]) -> None:
        """Refuse to mix answers of a run with different pipeline options into one folder; record the run.

        A folder without answers (a run refused or failed before its first answer left only
        ``run.json``) takes the new options.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        check_run_options(self.run_path, run_info, has_answers=bool(self.load()), results=str(self.dir))

    def append(self, record: dict[str, Any]) -> None:
        self._open_for_writing()
        self.file.append(record)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file atomically (used to add judge verdicts to earlier answers)."""
        self._open_for_writing()
        self.file.rewrite(records)

    def close(self) -> None:
        self.file.close()


def _record_key_of(record: dict[str, Any]) -> str:
    return record["key"]


def token_counts(config: VidpruneConfig) -> TokenCounts:
    """The unpruned model's visual token counts for ``config.frames`` frames, from the checkpoint's config only."""
    from ..video_models.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(config.model, keep_cls=config.keep_cls, prune_pooled=config.prune_pooled)
    if info.geometry.dynamic:  # the grid comes from each video (Qwen2.5-VL): no count before decoding
        return TokenCounts(full=None, stream=None)
    frames = config.frames or info.family.default_num_frames
    return TokenCounts(full=info.geometry.prunable_per_frame * frames, stream=info.geometry.full_tokens(frames))


# ------------------------------------------------------------------ clips
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _numbered_frames(files: list[Path]) -> tuple[list[Path], list[int]]:
    """A frame folder's images in frame order, with their frame numbers: the number each name
    carries when every name is one (MVBench's ``00001.jpg``... are numbered from 1: frame N is
    at N / fps s, as the release's mvbench.ipynb reads them with ``first_idx=1``), else the
    position in name order from 0."""
    if files and all(p.stem.isdigit() for p in files):
        files = sorted(files, key=lambda p: int(p.stem))
        return files, [int(p.stem) for p in files]
    files = sorted(files)
    return files, list(range(len(files)))


def load_clip(sample: Sample, num_frames: int, backend: str = "pyav"):
    """Sample ``num_frames`` frames of the sample's video (within ``clip_s`` when set) -> DecodedClip.

    Handles video files (through :mod:`vidprune.pipeline.decode`) and folders of frame
    images (sorted by name, at ``sample.frames_fps``; numbered names keep their numbers:
    ``DecodedClip.indices`` are those numbers and frame N is at N / fps seconds).
    """
    from ..pipeline.decode import DecodedClip, FrameSampling, read_video

    start_s, end_s = sample.clip_s if sample.clip_s is not None else (None, None)
    if os.path.isdir(sample.video):
        from PIL import Image

        files = sorted(p for p in Path(sample.video).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise VideoDecodeError(f"cannot decode video {sample.video!r}: the folder holds no frame images; "
                                   "pass a video file or a folder of .jpg/.png frames")
        fps = sample.frames_fps or 1.0
        files, numbers = _numbered_frames(files)
        times = [n / fps for n in numbers]
        positions, _ = FrameSampling(num_frames=num_frames, start_s=start_s, end_s=end_s).choose(times)
        indices = [numbers[i] for i in positions]
        images = [np.asarray(Image.open(files[i]).convert("RGB")) for i in positions]
        size = images[0].shape
        warnings = []
        if any(im.shape != size for im in images):
            images = [im if im.shape == size else np.asarray(Image.fromarray(im).resize((size[1], size[0])))
                      for im in images]
            warnings.append("frame images differ in size: resized to the first one's")
        return DecodedClip(frames=np.stack(images), indices=indices, times_s=[times[i] for i in positions],
                           num_stream_frames=len(files), backend="frames", warnings=warnings)
    return read_video(sample.video, num_frames=num_frames, backend=backend, start_s=start_s, end_s=end_s)


# ------------------------------------------------------------------ runner
class SweepRunner:
    """Runs a validated :class:`EvalSettings`: ``setup()`` (cheap, fails fast), then ``run()``."""

    def __init__(self, settings: EvalSettings, *, progress: bool = True, log: TextIO | None = None):
        self.settings = settings
        self.progress = progress
        self.log = log or sys.stderr
        self.store = ResultStore(settings.out)
        self.data: list[BenchmarkData] = []
        self.arms: list[Arm] = []
        self.arm_configs: dict[str, VidpruneConfig] = {}
        self.arm_checkpoints: dict[str, Any] = {}  # label → the arm's CheckpointInfo (family, HF config, geometry)
        self.records: dict[str, dict[str, Any]] = {}
        self.judge: JudgeClient | None = None
        self.base: VidpruneConfig | None = None
        self.counts: TokenCounts | None = None
        self._ready = False

    def say(self, message: str) -> None:
        print(message, file=self.log, flush=True)

    # -------------------------------------------------------------- setup
    def setup(self) -> None:
        """Validate every arm's options, read every benchmark, check the videos, open the results. No model loads."""
        from ..config import resolve_config

        s = self.settings
        base_options = {k: v for k, v in s.options.items() if k not in _PER_ARM_OPTIONS}
        self.base, _ = resolve_config(config=base_options)
        self.counts = token_counts(self.base)
        self.arms = plan_arms(s.methods, s.budgets, self.counts, s.ivtp)
        base_dict = {k: v for k, v in self.base.to_dict().items() if k not in _PER_ARM_OPTIONS}
        for arm in self.arms:
            self.arm_configs[arm.label], self.arm_checkpoints[arm.label] = resolve_config(
                config={**base_dict, **arm.options})

        for src in s.benchmarks:
            data = load_benchmark(src.name, src.annotations, src.videos, limit=s.limit, prompt_style=s.prompt)
            if data.missing:
                first_id, names = data.missing[0]
                what = (f"{len(data.missing)} of {len(data.missing) + len(data.samples)} {data.spec.title} questions "
                        f"have no video under {src.videos} (first: question {first_id}, looked for "
                        f"{', '.join(names)})")
                if not s.skip_missing_videos:
                    raise ConfigError(f"{what}; check --videos, or pass --skip-missing-videos to leave them out")
                self.say(f"warning: {what}; left out (--skip-missing-videos)")
            if not data.samples:
                raise ConfigError(f"no {data.spec.title} question has its video under {src.videos}; check --videos")
            self.data.append(data)

        run_info = {"model": self.base.model,
                    # the prompt style is part of what is computed: a resume with another one is refused
                    "options": {**{k: v for k, v in base_dict.items() if k not in _PLACEMENT_OPTIONS},
                                "prompt": s.prompt},
                    "token_counts": dataclasses.asdict(self.counts)}
        self.store.check_run(run_info)
        self.records = self.store.load()
        if self.store.dropped_partial:
            self.say(f"dropped a partial last line of {self.store.path} (an interrupted write); redoing that answer")
        if s.judge is not None:
            self.judge = JudgeClient(s.judge.url, s.judge.model, s.judge.api_key(), timeout_s=s.judge.timeout_s)
            if any(d.spec.kind != MULTIPLE_CHOICE for d in self.data):
                self._preflight_judge()
            for rec in self.records.values():
                if rec.get("judge"):
                    j = rec["judge"]
                    self.judge.remember(rec["question"], rec["answer"], rec["prediction"],
                                        Judgment(j["correct"], j["score"], j["reply"], j["model"]))
        self._ready = True

    def _preflight_judge(self) -> None:
        """One verdict before the model loads, so a wrong URL, model name or key fails now, not mid-run."""
        try:
            self.judge.judge(PREFLIGHT_QUESTION, "yes", "yes")
        except JudgeError as exc:
            raise ConfigError(f"{exc} (checked before loading the model; the API key is read from "
                              f"${self.settings.judge.api_key_env})") from None

    # ---------------------------------------------------------------- run
    def pending(self) -> list[tuple[BenchmarkData, Sample, list[Arm]]]:
        """(benchmark, sample, arms still to answer) for every sample with work left."""
        work = []
        for data in self.data:
            for sample in data.samples:
                arms = [a for a in self.arms if record_key(data.spec.name, a.label, sample.sample_id) not in self.records]
                if arms:
                    work.append((data, sample, arms))
        return work

    def run(self) -> dict[str, Any]:
        """Answer everything not yet in ``samples.jsonl``, fill missing judge verdicts, write the report."""
        try:
            return self._run()
        finally:
            self.store.close()

    def _run(self) -> dict[str, Any]:
        from .report import write_report

        if not self._ready:
            self.setup()
        work = self.pending()
        total = sum(len(d.samples) for d in self.data) * len(self.arms)
        todo = sum(len(arms) for _, _, arms in work)
        if todo < total:
            self.say(f"resuming: {total - todo} of {total} answers already in {self.store.path}")
        if work and self.settings.address:
            from .ray_sweep import answer_on_ray

            address = None if self.settings.address == "local" else self.settings.address
            answer_on_ray(self, work, address, self.settings.node_ip_address)
        elif work:
            self._answer_all(work, todo)
        self._fill_judgments()
        order = [r for d in self.data for a in self.arms for s in d.samples
                 if (r := self.records.get(record_key(d.spec.name, a.label, s.sample_id))) is not None]
        return write_report(self.settings.out, order, arms=self.arms, benchmarks=[d.spec for d in self.data],
                            counts=self.counts, judge=self.settings.judge.describe() if self.settings.judge else None,
                            model=self.base.model)

    def _answer_all(self, work: list[tuple[BenchmarkData, Sample, list[Arm]]], todo: int) -> None:
        from tqdm import tqdm

        from ..pipeline.build import build_stages
        from ..pipeline.report import answer_report

        first = self.arm_configs[self.arms[0].label]
        info = self.arm_checkpoints[self.arms[0].label]
        self.say(f"loading {first.model} once for {len(self.arms)} arms: {', '.join(a.label for a in self.arms)}")
        llm = info.family.from_pretrained(**first.section("model"), ivtp=first.ivtp())
        # every arm's stages over the one model; each answer stage hands its own IVTP schedule to generate()
        stages = {a.label: build_stages(self.arm_configs[a.label], self.arm_checkpoints[a.label], llm)
                  for a in self.arms}
        encode = stages[self.arms[0].label].encode  # the frames are encoded once for every arm
        num_frames = first.frames or llm.default_num_frames
        explicit_len = self.settings.options.get("max_new_tokens")
        groups: dict[tuple[str, Any], list[tuple[BenchmarkData, Sample, list[Arm]]]] = {}
        for item in work:  # questions about the same clip share one decode + encode
            groups.setdefault((item[1].video, item[1].clip_s), []).append(item)
        bar = tqdm(total=todo, unit="answer", desc="eval", disable=not self.progress, file=self.log,
                   dynamic_ncols=True)
        try:
            for (video, _clip), items in groups.items():
                t0 = time.perf_counter()
                try:
                    clip = load_clip(items[0][1], num_frames, first.decode_backend)
                except VideoDecodeError as exc:
                    if not self.settings.skip_missing_videos:
                        raise VideoDecodeError(f"{exc} (pass --skip-missing-videos to leave such questions out; "
                                               "rerun to resume)") from None
                    bar.write(f"warning: {exc}; its {len(items)} question(s) left out (--skip-missing-videos)",
                              file=self.log)
                    bar.update(sum(len(arms) for _, _, arms in items))
                    continue
                t1 = time.perf_counter()
                encoded = encode.process(clip.frames, clip.times_s)
                t2 = time.perf_counter()
                shared = {"decode": t1 - t0, "encode": t2 - t1}
                for arm in self.arms:  # per arm: select the clip once, answer its questions together
                    asked = [(data, sample) for data, sample, arms in items if arm in arms]
                    if not asked:
                        continue
                    cfg, arm_stages = self.arm_configs[arm.label], stages[arm.label]
                    t3 = time.perf_counter()
                    pruned = arm_stages.select.process(encoded, clip)
                    pruned.timings_s = {**shared, "select": time.perf_counter() - t3}
                    by_length: dict[int, list[tuple[BenchmarkData, Sample]]] = {}
                    for data, sample in asked:  # one generate call per answer length (benchmarks differ)
                        by_length.setdefault(explicit_len or data.spec.max_new_tokens, []).append((data, sample))
                    for max_new, batch in by_length.items():
                        bar.set_description(f"{batch[0][0].spec.title}")
                        # several questions about the clip: its prefix is prefilled once (reuse_prefix)
                        outs = arm_stages.answer.process_batch([(pruned, sample.prompt) for _, sample in batch],
                                                               max_new_tokens=max_new)
                        for (data, sample), out in zip(batch, outs):
                            report = answer_report(cfg, llm, arm_stages.select, arm_stages.answer.ivtp, pruned,
                                                   sample.prompt, out)
                            self.keep(self.make_record(data, sample, arm, out["text"], report, out["token_ids"]))
                        bar.update(len(batch))
        finally:
            bar.close()

    def keep(self, record: dict[str, Any]) -> None:
        """Write one scored answer to ``samples.jsonl`` (durably) and count it as done."""
        self.store.append(record)
        self.records[record["key"]] = record

    def make_record(self, data: BenchmarkData, sample: Sample, arm: Arm, text: str, report: dict[str, Any],
                    token_ids: list[int] | None = None) -> dict[str, Any]:
        tokens = dict(report["tokens"])
        if report.get("ivtp"):
            tokens["after_ivtp"] = report["ivtp"]["visual_tokens_kept"]
        timings = dict(report["timings_s"])
        rec: dict[str, Any] = {
            "key": record_key(data.spec.name, arm.label, sample.sample_id),
            "benchmark": data.spec.name, "sample_id": sample.sample_id, "arm": arm.label, "method": arm.method,
            "budget": arm.budget, "kind": sample.kind, "category": sample.category, "video": sample.video,
            "question": sample.question, "answer": sample.answer, "options": list(sample.options),
            "prediction": text, "prediction_ids": None if token_ids is None else list(token_ids),  # ids: two runs compare exactly
            "tokens": tokens,
            "visual_tokens": tokens.get("after_ivtp", tokens["to_llm"]),
            "flops": report["flops"],
            "latency_s": {**{k: round(float(v), 4) for k, v in timings.items()},
                          "total": round(float(sum(timings.values())), 4)},
            "num_frames": report["sampled_frames"],
            "warnings": report["warnings"],
        }
        rec.update(self._score(sample, text))
        return rec

    def _score(self, sample: Sample, text: str) -> dict[str, Any]:
        if sample.kind == MULTIPLE_CHOICE:
            letter = extract_option_letter(text, sample.options)
            return {"extracted": letter, "correct": letter == sample.answer}
        scores: dict[str, Any] = {"exact_match": exact_match(text, sample.answer),
                                  "contains_answer": contains_answer(text, sample.answer), "judge": None,
                                  "correct": None}
        if self.judge is not None:
            verdict = self.judge.judge(sample.question, sample.answer, text)
            scores.update(judge=verdict.to_dict(), correct=verdict.correct)
        return scores

    def _fill_judgments(self) -> None:
        """Judge earlier open-ended answers that have no verdict yet (a judge added on a rerun)."""
        if self.judge is None:
            return
        missing = [r for r in self.records.values() if r["kind"] != MULTIPLE_CHOICE and not r.get("judge")]
        if not missing:
            return
        from tqdm import tqdm

        self.say(f"judging {len(missing)} earlier answers with {self.judge.model}")
        try:
            for rec in tqdm(missing, unit="answer", desc="judge", disable=not self.progress, file=self.log):
                verdict = self.judge.judge(rec["question"], rec["answer"], rec["prediction"])
                rec.update(judge=verdict.to_dict(), correct=verdict.correct)
        finally:
            self.store.rewrite(self.records.values())


def rebuild_report(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Rewrite the report of an earlier sweep from its ``samples.jsonl`` and ``run.json`` (no model, no judge)."""
    from .benchmarks import get_benchmark
    from .report import write_report

    store = ResultStore(out_dir)
    if not store.path.exists():
        raise ConfigError(f"{store.path} does not exist; --out must name the folder of an earlier sweep")
    try:
        records = list(store.load().values())
    finally:
        store.close()
    if not records:
        raise ConfigError(f"{store.path} holds no answers yet; run the sweep first")
    run_info = json.loads(store.run_path.read_text()) if store.run_path.exists() else {}
    counts = TokenCounts(**run_info["token_counts"]) if run_info.get("token_counts") else None
    arms: list[Arm] = []
    for rec in records:
        arm = Arm(rec["method"], rec["budget"], {})
        if arm not in arms:
            arms.append(arm)
    arms.sort(key=lambda a: (a.method != FULL, -(a.budget or 0)))
    benchmarks = [get_benchmark(name) for name in dict.fromkeys(r["benchmark"] for r in records)]
    judges = [r["judge"] for r in records if r.get("judge")]
    judge = {"model": judges[0]["model"]} if judges else None
    return write_report(out_dir, records, arms=arms, benchmarks=benchmarks, counts=counts, judge=judge,
                        model=run_info.get("model"))
