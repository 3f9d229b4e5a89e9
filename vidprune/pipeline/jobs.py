"""``vidprune job``: many questions about many videos on Ray, resumable, each answered exactly once.

    vidprune job questions.jsonl --out answers.jsonl --model ckpt/ --budget 227            # local Ray
    vidprune job questions.jsonl --out answers.jsonl --model ckpt/ --address HEAD:6379    # a cluster
    ray job submit --address http://HEAD:8265 -- vidprune job questions.jsonl --out answers.jsonl --model ckpt/

**Manifest** (JSON Lines, one object per line, blank lines allowed)::

    {"id": "clip1", "video": "videos/clip1.mp4", "question": "What is the man holding?"}
    {"id": "clip2", "video": "/data/clip2.mp4", "questions": ["Who enters?", "What color is the car?"]}
    {"id": "mc1", "video": "clip3.mp4", "question": "What happens?", "options": ["A dog runs", "A car stops"]}

``id`` (string or integer, unique), ``video`` (a path; relative paths are taken from the
manifest's folder), and ``question`` or ``questions``; ``options`` (2 to 26 strings) makes
every question of the line multiple choice, asked as :func:`format_question` shows.
The whole manifest is checked before anything starts; problems are reported in one line
with their line numbers.

**Results** (JSON Lines, one line per question)::

    {"id": ..., "question_index": 0, "question": ..., "video": ..., "answer": ..., "token_ids": [...], "attempts": 1, "report": {...}}
    {"id": ..., "question_index": 0, "question": ..., "video": ..., "error": "cannot decode video ..."}

An item is ``(id, question_index)``. Each line is appended with one ``write`` on a file
opened ``O_APPEND`` and then ``fsync``-ed, so a line is in the file whole or (after a
crash mid-write) as a torn last line, which the next run drops. Rerunning the same
command skips every item already in the results, so each item ends up there exactly
once. An item whose video failed to decode gets an error line and counts as done
(``--retry-errors`` runs those again). A video's token stream is computed once for all
its questions (lines that name the same file share it).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["JobItem", "read_manifest", "format_question", "ResultsFile", "JobSummary", "run_job", "add_command",
           "OPTION_LETTERS"]

MANIFEST_KEYS = ("id", "video", "question", "questions", "options")
# Multiple-choice options are lettered A, B, C, ...: at most 26.
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The instruction after the options (the Video-LLaVA / lmms-eval multiple-choice prompt).
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Problems listed in the one-line manifest error (the count says how many more there are).
_MAX_LISTED_PROBLEMS = 5


# ----------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class JobItem:
    """One question of the manifest: what to ask about which video, and where it came from."""

    id: Any
    index: int  # position of the question in its manifest line
    question: str  # as given
    prompt: str  # what the model is asked (the question with its lettered options)
    video: str  # absolute or as given if it was absolute
    options: tuple[str, ...] | None
    line: int

    @property
    def key(self) -> tuple[str, int]:
        return (json.dumps(self.id), self.index)


def format_question(question: str, options: list[str] | tuple[str, ...] | None) -> str:
    """The prompt for a question; with options, each on its own line as ``A. text`` and an instruction.

    >>> format_question("What happens?", ["A dog runs", "A car stops"])
    "What happens?\\nA. A dog runs\\nB. A car stops\\nAnswer with the option's letter from the given choices directly."
    """
    from ..eval.prompts import multiple_choice_prompt  # the one multiple-choice formatter (its video_llava style)

    return multiple_choice_prompt(question, options, style="video_llava") if options else question


def read_manifest(path: str | os.PathLike) -> list[JobItem]:
    """Parse and check a whole manifest; one :class:`JobItem` per question, in manifest order.

    Raises:
        ConfigError: the file is missing or any line is bad (one message, line numbers included).
    """
    from ..qa import check_question

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"manifest {str(path)!r} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"manifest {str(path)!r} cannot be read ({exc}); pass a UTF-8 JSON Lines file") from None
    base = path.resolve().parent
    problems: list[str] = []
    items: list[JobItem] = []
    first_line_of: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(entry, dict):
            problems.append(f"line {line_no}: expected a JSON object, got {type(entry).__name__}")
            continue
        line_problems: list[str] = []
        unknown = sorted(set(entry) - set(MANIFEST_KEYS))
        if unknown:
            line_problems.append(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(MANIFEST_KEYS)})")
        item_id = entry.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or (isinstance(item_id, str) and not item_id):
            line_problems.append(f"'id' must be a non-empty string or an integer, got {item_id!r}")
            item_id = None
        else:
            id_key = json.dumps(item_id)
            if id_key in first_line_of:
                line_problems.append(f"id {item_id!r} repeats line {first_line_of[id_key]}; ids must be unique")
            else:
                first_line_of[id_key] = line_no
        video = entry.get("video")
        if not isinstance(video, str) or not video.strip():
            line_problems.append(f"'video' must be a path, got {video!r}")
        if ("question" in entry) == ("questions" in entry):
            line_problems.append("give either 'question' (a string) or 'questions' (a list of strings)")
            questions: list[Any] = []
        elif "question" in entry:
            questions = [entry["question"]]
        else:
            questions = entry["questions"]
            if not isinstance(questions, list) or not questions:
                line_problems.append("'questions' must be a non-empty list of strings")
                questions = []
        checked: list[str] = []
        for qi, q in enumerate(questions):
            try:
                checked.append(check_question(q))
            except ConfigError as exc:
                where = "" if "question" in entry else f" {qi}"
                line_problems.append(f"question{where}: {exc}")
        options = entry.get("options")
        if options is not None:
            if (not isinstance(options, list) or not 2 <= len(options) <= len(OPTION_LETTERS)
                    or not all(isinstance(o, str) and o.strip() for o in options)):
                line_problems.append(f"'options' must be a list of 2 to {len(OPTION_LETTERS)} non-empty strings")
                options = None
            else:
                options = tuple(o.strip() for o in options)
        if line_problems:
            problems += [f"line {line_no}: {p}" for p in line_problems]
            continue
        video_path = video if os.path.isabs(video) else str(base / video)
        for qi, q in enumerate(checked):
            items.append(JobItem(id=item_id, index=qi, question=q, prompt=format_question(q, options),
                                 video=video_path, options=options, line=line_no))
    if problems:
        listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
        more = f" (and {len(problems) - _MAX_LISTED_PROBLEMS} more)" if len(problems) > _MAX_LISTED_PROBLEMS else ""
        raise ConfigError(f"manifest {str(path)!r}: {listed}{more}; fix these lines and run again")
    if not items:
        raise ConfigError(f"manifest {str(path)!r} has no items; add lines like "
                          '{"id": "a", "video": "a.mp4", "question": "What happens?"}')
    return items


# ------------------------------------------------------------------------------ results
class ResultsFile:
    """An append-only JSON Lines results file, locked for one job at a time.

    ``open()`` locks it (a second job on the same file fails at once), drops a torn last
    line, and reads the records already there; ``append(record)`` writes one line with a
    single ``write`` under ``O_APPEND`` and ``fsync``s it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd: int | None = None
        self.records: dict[tuple[str, int], dict[str, Any]] = {}
        self.dropped_torn_line = False

    def open(self) -> ResultsFile:
        if self.path.is_dir():
            raise ConfigError(f"--out {str(self.path)!r} is a directory; pass a file path for the results")
        if not self.path.parent.is_dir():
            raise ConfigError(f"the folder of --out {str(self.path)!r} does not exist; create it first")
        self.fd = self._open_locked(self.path)
        data = b""
        while chunk := os.read(self.fd, 1 << 20):
            data += chunk
        if data and not data.endswith(b"\n"):  # a write cut short by a crash: the item runs again
            keep = data.rfind(b"\n") + 1
            os.ftruncate(self.fd, keep)
            os.fsync(self.fd)
            data = data[:keep]
            self.dropped_torn_line = True
        for line_no, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                key = (json.dumps(rec["id"]), int(rec["question_index"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                self.close()
                raise ConfigError(f"{str(self.path)!r} line {line_no} is not a vidprune result; "
                                  "pass a new --out file or the results of this manifest") from None
            self.records.setdefault(key, rec)
        return self

    @staticmethod
    def _open_locked(path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another vidprune job is writing {str(path)!r}; wait for it or pass another --out") from None
        return fd

    def drop_errors(self) -> int:
        """Remove the error records (atomically: a new file replaces the old); returns how many."""
        errors = [k for k, r in self.records.items() if "error" in r]
        if not errors:
            return 0
        for k in errors:
            del self.records[k]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in self.records.values():
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        new_fd = self._open_locked(tmp)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        os.close(self.fd)
        self.fd = new_fd
        return len(errors)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line: a single write under O_APPEND, then fsync."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self.fd, data)
        while written < len(data):  # regular files take it whole; this only guards a short write
            written += os.write(self.fd, data[written:])
        os.fsync(self.fd)
        self.records[(json.dumps(record["id"]), int(record["question_index"]))] = record

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- run
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
    from ..qa import VideoQA
    from .ray_actors import RayPipelineOptions, RayVideoPipeline, VideoRequest, connect_ray

    items = read_manifest(manifest)
    cfg = VideoQA.resolve_config(config=config, **options)
    ray_opts = (ray_options or RayPipelineOptions()).resolved(cfg)
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
                    num_cpus=max(os.cpu_count() or 1, math.ceil(ray_opts.required()["CPU"])))
        pipe = None
        try:
            pipe = RayVideoPipeline(cfg, ray_opts)
            requests = [VideoRequest(video, video, [it.prompt for it in group]) for video, group in by_video.items()]
            bar = _progress_bar(len(items), summary.already_done, enabled=progress)
            try:
                for result in pipe.run(requests):
                    group = by_video[result.key]
                    if result.error is not None:
                        records = [_record(it, error=result.error, attempts=result.attempts) for it in group]
                    else:
                        records = [
                            _record(it, error=a["error"], attempts=result.attempts) if "error" in a else
                            _record(it, answer=a["text"], token_ids=a["token_ids"], attempts=result.attempts, report=a["report"])
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


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="q", desc="vidprune job", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)


# ---------------------------------------------------------------------------------- CLI
def add_command(subparsers) -> None:
    """Register ``vidprune job`` (called by :func:`vidprune.cli.build_parser`)."""
    from ..cli import add_pipeline_options

    p = subparsers.add_parser(
        "job", help="answer a JSONL manifest of questions about videos on Ray (resumable)",
        description="Answer every question of a JSONL manifest on Ray (local, or a cluster with --address or "
                    "RAY_ADDRESS). Results are appended to --out; rerunning resumes.",
    )
    p.add_argument("manifest", help='JSONL: {"id", "video", "question" | "questions", ["options"]} per line')
    p.add_argument("--out", required=True, help="JSONL results file (appended; rerun to resume)")
    p.add_argument("--retry-errors", action="store_true", help="run again the items whose result is an error")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g = p.add_argument_group("ray")
    g.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start Ray locally)")
    g.add_argument("--node-ip-address", help="IP a local Ray binds to (also $VIDPRUNE_RAY_NODE_IP), e.g. 127.0.0.2")
    g.add_argument("--decoders", type=int, default=2, help="decoder actors; a video's time segments spread over them")
    g.add_argument("--encoders", type=int, default=1, help="vision-tower replicas")
    g.add_argument("--answerers", type=int, default=1, help="LLM replicas")
    g.add_argument("--segment-frames", type=int,
                   help="frames per time segment and encoder call (default: --encoder-batch-size, else 8)")
    g.add_argument("--max-segments-in-flight", type=int, help="bound on segments between decode and select")
    g.add_argument("--max-videos-in-flight", type=int, default=2, help="videos streaming at once")
    g.add_argument("--questions-per-call", type=int, default=8, help="questions per LLM generate() call")
    g.add_argument("--video-attempts", type=int, default=3, help="times a video is started over after lost work")
    for stage, cpus in (("decode", 1.0), ("encode", 1.0), ("select", 0.5), ("answer", 1.0)):
        g.add_argument(f"--{stage}-cpus", type=float, help=f"CPUs per {stage} actor (default {cpus:g})")
        if stage in ("encode", "answer"):
            g.add_argument(f"--{stage}-gpus", type=float, help=f"GPUs per {stage} actor (fractions allowed; "
                                                               "default 1 with --device cuda, else 0)")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def _stage_resources(args: argparse.Namespace, stage: str, default_cpus: float):
    from .ray_actors import StageResources

    cpus = getattr(args, f"{stage}_cpus", None)
    gpus = getattr(args, f"{stage}_gpus", None)
    if cpus is None and gpus is None:
        return None
    gpu_default = 1.0 if str(getattr(args, "device", None) or "").startswith("cuda") and stage in ("encode", "answer") else 0.0
    return StageResources(num_cpus=default_cpus if cpus is None else cpus, num_gpus=gpu_default if gpus is None else gpus)


def run(args: argparse.Namespace) -> int:
    from ..cli import options_from_args
    from .ray_actors import RayPipelineOptions

    ray_options = RayPipelineOptions(
        decoders=args.decoders, encoders=args.encoders, answerers=args.answerers, segment_frames=args.segment_frames,
        max_segments_in_flight=args.max_segments_in_flight, max_videos_in_flight=args.max_videos_in_flight,
        questions_per_call=args.questions_per_call, video_attempts=args.video_attempts,
        decode=_stage_resources(args, "decode", 1.0), encode=_stage_resources(args, "encode", 1.0),
        select=_stage_resources(args, "select", 0.5), answer=_stage_resources(args, "answer", 1.0),
    )
    start = time.perf_counter()
    summary = run_job(args.manifest, args.out, options_from_args(args), config=args.config, ray_options=ray_options,
                      address=args.address, node_ip_address=args.node_ip_address, retry_errors=args.retry_errors,
                      progress=args.progress)
    line = summary.line(args.out)
    if summary.new:
        line += f" in {time.perf_counter() - start:.1f} s"
    if summary.retried_videos:
        line += f"; {summary.retried_videos} video(s) started over after a worker failure"
    print(line, file=sys.stderr)
    return 0
