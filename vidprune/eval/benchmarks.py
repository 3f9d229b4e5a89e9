"""Video QA benchmarks read from their published annotation files: one reader per benchmark.

    from vidprune.eval.benchmarks import load_benchmark, list_benchmarks
    data = load_benchmark("msvd_qa", "MSVD_Zero_Shot_QA/test_q.json", "MSVD_Zero_Shot_QA/videos")
    data.samples[0].prompt, data.samples[0].answer, data.missing

Every reader is registered by name (``register_benchmark``) and documents, in its
docstring, the exact field layout it reads and where the videos are looked for. A
reader returns :class:`Sample` objects in annotation order; a sample whose video is
not found is reported in ``BenchmarkData.missing`` (the runner stops on those unless
told to skip them), never silently dropped.

Two kinds of benchmark:

* multiple choice (Video-MME, MVBench, EgoSchema, NExT-QA): ``Sample.options`` holds
  the option texts and ``Sample.answer`` the correct letter (``"A"``...), derived the way
  the benchmark's own scoring derives it (MVBench: the first candidate whose text equals
  the answer; EgoSchema, NExT-QA: the answer index; Video-MME: the letter). The prompt is
  built by :mod:`vidprune.prompts` (lmms-eval's, byte for byte, unless another
  style is asked for).
* open-ended (MSVD-QA, MSRVTT-QA, TGIF-QA, ActivityNet-QA): ``Sample.answer`` is the
  reference text and the prompt is the question as published, the Video-LLaVA /
  Video-ChatGPT zero-shot protocol the VisPruner paper evaluates with.

Annotation files may be JSON (a list of records), JSON Lines, CSV/TSV, or Parquet (the
Hugging Face copies lmms-eval loads; reading them needs ``pyarrow``).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .. import prompts
from ..prompts import DEFAULT_PROMPT_STYLE, LETTER_INSTRUCTION, check_prompt_style, multiple_choice_prompt

__all__ = [
    "Sample",
    "BenchmarkSpec",
    "BenchmarkData",
    "register_benchmark",
    "list_benchmarks",
    "get_benchmark",
    "load_benchmark",
    "OPTION_LETTERS",
    "MULTIPLE_CHOICE",
    "OPEN_ENDED",
]

MULTIPLE_CHOICE = "multiple_choice"
OPEN_ENDED = "open_ended"

# Benchmarks have at most 8 options (EgoSchema and NExT-QA 5, Video-MME 4, MVBench up to 5).
MAX_OPTIONS = 8
OPTION_LETTERS = prompts.OPTION_LETTERS[:MAX_OPTIONS]

# The letter instruction of the ``video_llava`` prompt style (kept under its old name).
MC_INSTRUCTION = LETTER_INSTRUCTION

# Extensions tried, in order, for a video named without one.
VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov", ".gif", ".m4v")

# MVBench's episodic_reasoning clips are folders of frames extracted at 3 fps
# (tvqa/frames_fps3_hq); their start/end bounds are seconds at that rate.
MVBENCH_FRAME_FPS = 3.0

# MVBench's published layout: json/<task>.json, videos under video/<folder>/ per task
# (the folders of the OpenGVLab/MVBench release, its main branch and the Ask-Anything
# mvbench.ipynb data_list). Clips of the bounded tasks are whole videos there, cut by start/end.
MVBENCH_VIDEO_FOLDERS = {
    "action_sequence": "star/Charades_v1_480",
    "action_prediction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_v1_480",
    "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation",
    "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video",
    "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd",
    "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/frames_fps3_hq",
    "counterfactual_inference": "clevrer/video_validation",
}

# The layout lmms-eval downloads (OpenGVLab/MVBench at revision "video"; lmms-eval 0.7.3
# tasks/mvbench/utils.py DATA_LIST): the bounded tasks' clips are already cut to their
# segment (``*_segment`` folders), so start/end are not applied again, as lmms-eval does not.
# lmms-eval also looks under data0613/<folder> for the clevrer and star folders.
MVBENCH_LMMS_EVAL_FOLDERS = {
    "object_interaction": "star/Charades_segment",
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation",
    "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos",
    "object_shuffle": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "moving_direction": "clevrer/video_validation",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "scene_transition": "scene_qa/video",
    "state_change": "perception/videos",
    "moving_attribute": "clevrer/video_validation",
    "action_antonym": "ssv2_video_mp4",
    "unexpected_action": "FunQA_test/test",
    "counterfactual_inference": "clevrer/video_validation",
    "object_existence": "clevrer/video_validation",
    "action_count": "perception/videos",
}


@dataclass(frozen=True)
class Sample:
    """One question about one video.

    Attributes:
        benchmark: registry name of the benchmark.
        sample_id: unique within the benchmark (the published question id where there is one).
        video: absolute path of the video file, or of a folder of frame images.
        question: the question as published.
        prompt: the text given to the model (question, options, instruction).
        answer: the correct letter (multiple choice) or the reference answer (open-ended).
        options: option texts without letters (multiple choice), else empty.
        clip_s: (start, end) seconds of the part of the video the question is about, or None.
        frames_fps: frame rate of a frame folder (used with ``clip_s``), else None.
        category: task / question type, for per-category breakdowns.
    """

    benchmark: str
    sample_id: str
    video: str
    question: str
    prompt: str
    answer: str
    options: tuple[str, ...] = ()
    clip_s: tuple[float, float] | None = None
    frames_fps: float | None = None
    category: str | None = None

    @property
    def kind(self) -> str:
        return MULTIPLE_CHOICE if self.options else OPEN_ENDED


@dataclass
class BenchmarkData:
    """What a reader found: the samples with a video, and the ones without (id, names looked for)."""

    spec: "BenchmarkSpec"
    samples: list[Sample]
    missing: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: its name, display title, kind, answer length and reader."""

    name: str
    title: str
    kind: str
    max_new_tokens: int  # the generation length the benchmark's protocol uses
    reader: Callable[["_Context"], list["_Row"]]

    @property
    def layout(self) -> str:
        """The first paragraph of the reader's docstring: the published layout it reads."""
        return (self.reader.__doc__ or "").strip().split("\n\n")[0]


_BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(name: str, *, title: str, kind: str, max_new_tokens: int):
    """Decorator: register ``reader(ctx) -> rows`` as the benchmark ``name``."""
    if kind not in (MULTIPLE_CHOICE, OPEN_ENDED):
        raise ValueError(f"kind must be {MULTIPLE_CHOICE!r} or {OPEN_ENDED!r}, got {kind!r}")

    def wrap(reader):
        if name in _BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is already registered")
        _BENCHMARKS[name] = BenchmarkSpec(name, title, kind, max_new_tokens, reader)
        return reader

    return wrap


def list_benchmarks() -> list[str]:
    """Registered benchmark names, sorted."""
    return sorted(_BENCHMARKS)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of ``name``; unknown names raise :class:`ConfigError` listing the known ones."""
    key = str(name).lower().replace("-", "_")
    if key not in _BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(list_benchmarks())}")
    return _BENCHMARKS[key]


# ---------------------------------------------------------------- file reading
def _read_table(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON / JSON Lines / CSV / TSV / Parquet annotation file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ConfigError(
                    f"reading {str(path)!r} needs pyarrow; install it (pip install pyarrow) or pass a JSON copy"
                ) from None
            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if suffix in (".csv", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" or text.split("\n", 1)[0].count("\t") else ","
            return list(csv.DictReader(text.splitlines(), delimiter=delimiter))
        data = json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read annotation file {str(path)!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"annotation file {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise ConfigError(f"annotation file {str(path)!r} must hold a list of records")
    return data


def _require(records: Sequence[dict], fields: Iterable[str], path: Path, title: str, layout: str) -> None:
    """Fail with one line if the first records lack a field the layout needs."""
    for i, rec in enumerate(records[:50]):
        if not isinstance(rec, dict):
            raise ConfigError(f"{str(path)!r}: record {i} is not an object; expected {title} records ({layout})")
        lacking = [f for f in fields if f not in rec]
        if lacking:
            raise ConfigError(
                f"{str(path)!r}: record {i} lacks {', '.join(repr(f) for f in lacking)}; "
                f"this is not a {title} annotation file (expected {layout})"
            )


class _VideoFinder:
    """Finds a video under a folder by relative name, with or without extension, or by stem anywhere below."""

    def __init__(self, root: Path):
        self.root = root
        self._by_stem: dict[str, str] | None = None

    def _index(self) -> dict[str, str]:
        if self._by_stem is None:
            self._by_stem = {}
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames.sort()
                for name in sorted(filenames):
                    self._by_stem.setdefault(os.path.splitext(name)[0], os.path.join(dirpath, name))
                for name in dirnames:  # frame folders are found by their name too
                    self._by_stem.setdefault(name, os.path.join(dirpath, name))
        return self._by_stem

    def find(self, names: Sequence[str]) -> str | None:
        """The first of ``names`` found (see :meth:`find_named`), or None."""
        found = self.find_named(names)
        return None if found is None else found[0]

    def find_named(self, names: Sequence[str]) -> tuple[str, str] | None:
        """(absolute path, the name it was found by) for the first of ``names`` found, or None.

        Each name is tried as a path below the folder (as given, then with each video
        extension); only when none exists is a file or frame folder of that stem looked
        for anywhere below.
        """
        for name in names:
            direct = self.root / name
            if direct.is_file() or (direct.is_dir() and any(direct.iterdir())):
                return str(direct.resolve()), name
            if not Path(name).suffix or Path(name).suffix.lower() not in {e.lower() for e in VIDEO_EXTENSIONS}:
                for ext in VIDEO_EXTENSIONS:
                    cand = self.root / f"{name}{ext}"
                    if cand.is_file():
                        return str(cand.resolve()), name
        index = self._index()
        for name in names:
            stem = Path(name).name
            stem = os.path.splitext(stem)[0] if Path(stem).suffix.lower() in {e.lower() for e in VIDEO_EXTENSIONS} else stem
            if stem in index:
                return str(Path(index[stem]).resolve()), name
        return None


@dataclass
class _Context:
    """What a reader gets: the annotation path, the video folder and a finder over it."""

    annotations: Path
    videos: Path
    finder: _VideoFinder
    spec_title: str


@dataclass
class _Row:
    """A reader's output before the video is resolved."""

    sample_id: str
    video_names: list[str]
    question: str
    answer: str
    options: tuple[str, ...] = ()
    clip_s: tuple[float, float] | None = None
    frames_fps: float | None = None
    category: str | None = None
    # names of ``video_names`` under which the file is already cut to ``clip_s`` (lmms-eval's
    # MVBench segments): found by one of these, the whole file is the clip.
    segment_names: tuple[str, ...] = ()


_LETTER_PREFIX = re.compile(r"^\s*(?:\(([A-H])\)|([A-H])[.:)])\s*")


def _strip_letter(option: str, index: int) -> str:
    """``"B. a dog"`` / ``"(B) a dog"`` -> ``"a dog"`` when the prefix is this option's own letter."""
    text = str(option).strip()
    m = _LETTER_PREFIX.match(text)
    if m and (m.group(1) or m.group(2)) == OPTION_LETTERS[index]:
        return text[m.end():].strip()
    return text


TEXT, INDEX, LETTER = "text", "index", "letter"


def _letter_of(answer: Any, options: Sequence[str], where: str, encoding: str = TEXT) -> str:
    """The correct letter, read the way the benchmark's own scoring reads its ``answer`` field.

    ``encoding``: ``"text"`` (MVBench: the first candidate whose text equals the answer,
    as MVBench's mvbench.ipynb and lmms-eval's ``mvbench_process_results`` compare; a
    digit answer such as ``"3"`` among candidates ``["3", "2", "4"]`` is that candidate,
    never an index), ``"index"`` (EgoSchema, NExT-QA: 0-based, int or digit string) or
    ``"letter"`` (Video-MME: ``"C"``, also ``"(C)"`` / ``"C."``).
    """
    if isinstance(answer, bool) or answer is None:
        raise ConfigError(f"{where}: answer {answer!r} is not a valid {encoding} answer")
    if encoding == TEXT:
        text = str(answer)
        for exact in (True, False):
            for i, opt in enumerate(options):
                if (opt == text) if exact else (opt.strip() == text.strip()):
                    return OPTION_LETTERS[i]
        raise ConfigError(f"{where}: answer {text!r} is not one of the candidates {list(options)!r}")
    if encoding == INDEX:
        text = str(answer).strip()
        if isinstance(answer, int) or text.isdigit():
            idx = int(answer) if isinstance(answer, int) else int(text)
            if 0 <= idx < len(options):
                return OPTION_LETTERS[idx]
            raise ConfigError(f"{where}: answer index {idx} is out of range for {len(options)} options")
        raise ConfigError(f"{where}: answer {answer!r} is not an option index (0-{len(options) - 1})")
    if encoding == LETTER:
        text = str(answer).strip()
        m = _LETTER_PREFIX.match(text)
        letter = text.upper() if len(text) == 1 else (m.group(1) or m.group(2)) if m else None
        if letter and letter in OPTION_LETTERS[: len(options)]:
            return letter
        raise ConfigError(f"{where}: answer {text!r} is not one of the option letters {OPTION_LETTERS[: len(options)]}")
    raise ValueError(f"unknown answer encoding {encoding!r}")


def _options_from(values: Sequence[Any], where: str, strip_letters: bool = True) -> tuple[str, ...]:
    """Option texts; ``strip_letters``: drop an ``"A. "`` / ``"(A) "`` prefix that is the option's own letter."""
    opts = tuple(_strip_letter(str(v), i) if strip_letters else str(v) for i, v in enumerate(values))
    if not 2 <= len(opts) <= len(OPTION_LETTERS):
        raise ConfigError(f"{where}: a multiple-choice question needs 2 to {len(OPTION_LETTERS)} options, got {len(opts)}")
    return opts


# ---------------------------------------------------------------- readers
def _youtube_id(url: Any) -> str | None:
    m = re.search(r"[?&]v=([\w-]{6,})", str(url or ""))
    return m.group(1) if m else None


def _videomme_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat question records: the Video-MME repository's per-video form (``{"video_id", "duration",
    "domain", "sub_category", "questions": [...]}``, the layout its eval_your_results.py reads)
    is flattened, each question taking its video's fields."""
    flat = []
    for rec in records:
        if isinstance(rec, dict) and isinstance(rec.get("questions"), list):
            video = {k: v for k, v in rec.items() if k != "questions"}
            video.setdefault("videoID", _youtube_id(rec.get("url")) or rec.get("video_id"))
            flat.extend({**video, **q} for q in rec["questions"])
        else:
            flat.append(rec)
    return flat


@register_benchmark("videomme", title="Video-MME", kind=MULTIPLE_CHOICE, max_new_tokens=16)
def _read_videomme(ctx: _Context) -> list[_Row]:
    """Video-MME in either published form: the Hugging Face release lmms-eval loads
    (``videomme/test-00000-of-00001.parquet``, or a JSON / JSON Lines copy), one record per
    question with ``videoID``, ``question_id``, ``question``, ``options`` (four ``"A. text"``
    strings) and ``answer`` (a letter), plus ``duration`` / ``domain`` / ``task_type``; or the
    Video-MME repository's per-video JSON (``video_id``, ``duration``, ``domain``, ``url``,
    ``questions``: the same question fields).

    Videos: ``<videos>/<videoID>.mp4`` (also ``.MP4`` / ``.mkv``), or ``<videos>/data/<videoID>.*``
    (the unzipped release, where lmms-eval looks).
    """
    layout = "videoID, question_id, question, options, answer"
    records = _videomme_records(_read_table(ctx.annotations))
    _require(records, ("videoID", "question_id", "question", "options", "answer"), ctx.annotations, ctx.spec_title, layout)
    rows = []
    for rec in records:
        where = f"{ctx.annotations.name} question {rec['question_id']}"
        opts = _options_from(list(rec["options"]), where)
        vid = str(rec["videoID"])
        rows.append(_Row(str(rec["question_id"]), [vid, f"data/{vid}"], str(rec["question"]),
                         _letter_of(rec["answer"], opts, where, LETTER), opts,
                         category=rec.get("task_type") or rec.get("duration")))
    return rows


def _mvbench_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json"))
        if not files:
            raise ConfigError(f"{str(path)!r} holds no MVBench task files (json/<task>.json)")
        return files
    return [path]


@register_benchmark("mvbench", title="MVBench", kind=MULTIPLE_CHOICE, max_new_tokens=16)
def _read_mvbench(ctx: _Context) -> list[_Row]:
    """MVBench as released (OpenGVLab/MVBench): one ``json/<task>.json`` per task (pass the file,
    or the ``json`` folder for all 20), each a list of ``{"video", "question", "candidates",
    "answer"}`` where ``answer`` is the text of the correct candidate (the gold letter is the
    first candidate equal to it, as MVBench's notebook and lmms-eval score); the bounded tasks
    add ``start`` / ``end`` (seconds) of the part of the video the question is about.

    Videos, in either published layout under ``<videos>`` (the release's ``video/`` folder, or
    lmms-eval's download): the release's folders (``star/Charades_v1_480/<video>``, cut to
    start/end; episodic_reasoning's clips are frame folders ``00001.jpg``... at 3 fps, numbered
    from 1), or lmms-eval's (``star/Charades_segment/<video>``, ``data0613/...``: already cut,
    used whole), or ``<videos>/<video>``.
    """
    layout = "video, question, candidates, answer"
    rows = []
    for path in _mvbench_files(ctx.annotations):
        task = path.stem
        records = _read_table(path)
        _require(records, ("video", "question", "candidates", "answer"), path, ctx.spec_title, layout)
        release, lmms = MVBENCH_VIDEO_FOLDERS.get(task), MVBENCH_LMMS_EVAL_FOLDERS.get(task)
        for i, rec in enumerate(records):
            where = f"{path.name} record {i}"
            opts = _options_from(list(rec["candidates"]), where, strip_letters=False)
            video = str(rec["video"])
            names = [f"{release}/{video}"] if release else []
            segments = []
            if lmms and lmms != release:
                segments = [f"{lmms}/{video}", f"data0613/{lmms}/{video}"]
            names += segments + [video]
            clip = None
            if rec.get("start") is not None and rec.get("end") is not None:
                clip = (float(rec["start"]), float(rec["end"]))
            rows.append(_Row(f"{task}/{i}", names, str(rec["question"]), _letter_of(rec["answer"], opts, where, TEXT),
                             opts, clip_s=clip, frames_fps=MVBENCH_FRAME_FPS, category=task,
                             segment_names=tuple(segments)))
    return rows


@register_benchmark("egoschema", title="EgoSchema", kind=MULTIPLE_CHOICE, max_new_tokens=16)
def _read_egoschema(ctx: _Context) -> list[_Row]:
    """EgoSchema's public subset with answers, in either published form: the release's
    ``questions.json`` (``{"q_uid", "question", "option 0"`` ... ``"option 4"}``) with
    ``subset_answers.json`` (``{q_uid: index}``) beside it (pass either file; only the answered
    questions are read), or lmms-eval's ``Subset`` parquet / JSON (``video_idx``, ``question``,
    ``option`` list, ``answer`` index).

    Videos: ``<videos>/<q_uid>.mp4`` (lmms-eval: ``<video_idx>.mp4``).
    """
    path = ctx.annotations
    if path.name == "subset_answers.json" or path.name == "questions.json":
        questions_path = path.with_name("questions.json")
        answers_path = path.with_name("subset_answers.json")
        for p in (questions_path, answers_path):
            if not p.is_file():
                raise ConfigError(f"EgoSchema needs {p.name} next to {path.name}; {str(p)!r} does not exist")
        records = _read_table(questions_path)
        layout = "q_uid, question, option 0..option 4"
        _require(records, ("q_uid", "question", "option 0", "option 1"), questions_path, ctx.spec_title, layout)
        try:
            answers = json.loads(answers_path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{str(answers_path)!r} is not valid JSON ({exc.msg})") from None
        if not isinstance(answers, dict):
            raise ConfigError(f"{str(answers_path)!r} must map q_uid to the answer index")
        rows = []
        for rec in records:
            uid = str(rec["q_uid"])
            if uid not in answers:
                continue  # not in the public subset: no answer to score against
            values = [rec[f"option {i}"] for i in range(len(OPTION_LETTERS)) if f"option {i}" in rec]
            opts = _options_from(values, f"questions.json {uid}")
            rows.append(_Row(uid, [uid], str(rec["question"]),
                             _letter_of(answers[uid], opts, f"subset_answers {uid}", INDEX), opts))
        return rows
    records = _read_table(path)
    _require(records, ("video_idx", "question", "option", "answer"), path, ctx.spec_title,
             "video_idx, question, option, answer (lmms-eval Subset) or questions.json + subset_answers.json")
    rows = []
    for i, rec in enumerate(records):
        if rec["answer"] is None or str(rec["answer"]).strip() in ("", "None"):
            continue  # the full set ships without answers
        uid = str(rec.get("question_idx", rec["video_idx"]))
        opts = _options_from(list(rec["option"]), f"{path.name} record {i}")
        rows.append(_Row(uid, [str(rec["video_idx"])], str(rec["question"]),
                         _letter_of(rec["answer"], opts, f"{path.name} record {i}", INDEX), opts))
    return rows


def _nextqa_mapping(ctx: _Context) -> dict[str, str]:
    for folder in (ctx.videos, ctx.annotations.parent):
        p = folder / "map_vid_vidorID.json"
        if p.is_file():
            try:
                return {str(k): str(v) for k, v in json.loads(p.read_text()).items()}
            except (json.JSONDecodeError, AttributeError):
                raise ConfigError(f"{str(p)!r} must map video ids to video paths (NExT-QA's map_vid_vidorID.json)") from None
    return {}


@register_benchmark("nextqa", title="NExT-QA", kind=MULTIPLE_CHOICE, max_new_tokens=16)
def _read_nextqa(ctx: _Context) -> list[_Row]:
    """NExT-QA multiple choice as released (``val.csv`` / ``test.csv``, or lmms-eval's ``MC``
    parquet): ``video``, ``question``, ``answer`` (index 0-4), ``qid``, ``type`` and the five
    options ``a0`` ... ``a4``.

    Videos: ``<videos>/<video>.mp4``, through ``map_vid_vidorID.json`` (in the video or
    annotation folder) to ``<videos>/<folder>/<video>.mp4`` when present, else found by name below.
    """
    records = _read_table(ctx.annotations)
    layout = "video, question, answer, qid, a0..a4"
    _require(records, ("video", "question", "answer", "a0", "a1", "a2", "a3", "a4"), ctx.annotations, ctx.spec_title, layout)
    mapping = _nextqa_mapping(ctx)
    rows = []
    for i, rec in enumerate(records):
        video = str(rec["video"])
        where = f"{ctx.annotations.name} record {i}"
        opts = _options_from([rec[f"a{k}"] for k in range(5)], where)
        qid = f"{video}_{rec.get('qid', i)}"
        names = ([mapping[video]] if video in mapping else []) + [video]
        rows.append(_Row(qid, names, str(rec["question"]), _letter_of(rec["answer"], opts, where, INDEX), opts,
                         category=rec.get("type")))
    return rows


def _qa_pair_paths(path: Path) -> tuple[Path, Path] | None:
    """``test_q.json`` <-> ``test_a.json`` (ActivityNet-QA's layout, reused by Video-ChatGPT / Video-LLaVA)."""
    m = re.fullmatch(r"(.*)_([qa])\.json", path.name)
    if not m:
        return None
    q = path.with_name(f"{m.group(1)}_q.json")
    a = path.with_name(f"{m.group(1)}_a.json")
    return q, a


def _read_qa_pair(ctx: _Context, video_names: Callable[[str], list[str]]) -> list[_Row]:
    q_path, a_path = _qa_pair_paths(ctx.annotations)  # type: ignore[misc]
    for p in (q_path, a_path):
        if not p.is_file():
            raise ConfigError(f"{ctx.spec_title}: {p.name} must lie next to {ctx.annotations.name}; {str(p)!r} does not exist")
    questions, answers = _read_table(q_path), _read_table(a_path)
    _require(questions, ("video_name", "question", "question_id"), q_path, ctx.spec_title,
             "test_q.json: video_name, question, question_id")
    _require(answers, ("answer",), a_path, ctx.spec_title, "test_a.json: answer, question_id")
    if all("question_id" in a for a in answers):
        by_id = {str(a["question_id"]): a for a in answers}
        pairs = []
        for q in questions:
            a = by_id.get(str(q["question_id"]))
            if a is None:
                raise ConfigError(f"{a_path.name} has no answer for question_id {q['question_id']!r} of {q_path.name}")
            pairs.append((q, a))
    else:  # answers aligned by position (Video-LLaVA's copies)
        if len(answers) != len(questions):
            raise ConfigError(f"{q_path.name} has {len(questions)} questions but {a_path.name} {len(answers)} answers")
        pairs = list(zip(questions, answers))
    return [_Row(str(q["question_id"]), video_names(str(q["video_name"])), str(q["question"]), str(a["answer"]),
                 category=None if a.get("type") is None else str(a["type"])) for q, a in pairs]


def _msvd_mapping(ctx: _Context) -> dict[str, str]:
    """``youtube_mapping.txt`` lines ``<clip name> vid<N>`` -> {"N": clip name} ({} without the file)."""
    for folder in (ctx.annotations.parent, ctx.videos, ctx.videos.parent):
        p = folder / "youtube_mapping.txt"
        if p.is_file():
            mapping = {}
            for line in p.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].startswith("vid"):
                    mapping[parts[1][3:]] = parts[0]
            return mapping
    return {}


@register_benchmark("msvd_qa", title="MSVD-QA", kind=OPEN_ENDED, max_new_tokens=64)
def _read_msvd(ctx: _Context) -> list[_Row]:
    """MSVD-QA, either as Video-LLaVA / Video-ChatGPT ship it (``test_q.json``: ``video_name``,
    ``question``, ``question_id``; ``test_a.json``: ``answer``, ``question_id``, same order) or as
    released (``test_qa.json``: ``{"answer", "id", "question", "video_id"}``, ``video_id`` the
    number N of ``vid<N>`` in ``youtube_mapping.txt``).

    Videos: ``<videos>/vid<N>.avi`` (the clips renamed by ``youtube_mapping.txt``, the layout of
    the release's preprocessing scripts) or ``<videos>/<clip name>.avi`` (the YouTube clip names
    of MSVD's ``YouTubeClips``; needs ``youtube_mapping.txt`` next to the annotations or in / above
    the video folder); any video extension.
    """
    if _qa_pair_paths(ctx.annotations):
        mapping = _msvd_mapping(ctx)
        by_clip = {clip: f"vid{n}" for n, clip in mapping.items()}
        return _read_qa_pair(ctx, lambda name: [name] + ([by_clip[name]] if name in by_clip else []))
    records = _read_table(ctx.annotations)
    _require(records, ("answer", "id", "question", "video_id"), ctx.annotations, ctx.spec_title,
             "test_q.json + test_a.json, or test_qa.json: answer, id, question, video_id")
    mapping = _msvd_mapping(ctx)
    rows = []
    for r in records:
        n = str(r["video_id"])
        rows.append(_Row(str(r["id"]), [f"vid{n}"] + ([mapping[n]] if n in mapping else []), str(r["question"]),
                         str(r["answer"])))
    return rows


@register_benchmark("msrvtt_qa", title="MSRVTT-QA", kind=OPEN_ENDED, max_new_tokens=64)
def _read_msrvtt(ctx: _Context) -> list[_Row]:
    """MSRVTT-QA, either as Video-LLaVA / Video-ChatGPT ship it (``test_q.json`` +
    ``test_a.json``, as for MSVD-QA) or as released (``test_qa.json``: ``{"answer",
    "category_id", "id", "question", "video_id"}``).

    Videos: ``<videos>/<video_name>.mp4``, or ``<videos>/video<video_id>.mp4``.
    """
    if _qa_pair_paths(ctx.annotations):
        return _read_qa_pair(ctx, lambda name: [name])
    records = _read_table(ctx.annotations)
    _require(records, ("answer", "id", "question", "video_id"), ctx.annotations, ctx.spec_title,
             "test_q.json + test_a.json, or test_qa.json: answer, id, question, video_id")
    return [_Row(str(r["id"]), [f"video{r['video_id']}", str(r["video_id"])], str(r["question"]), str(r["answer"]),
                 category=None if r.get("category_id") is None else str(r["category_id"])) for r in records]


@register_benchmark("tgif_qa", title="TGIF-QA", kind=OPEN_ENDED, max_new_tokens=64)
def _read_tgif(ctx: _Context) -> list[_Row]:
    """TGIF-QA FrameQA, either as Video-LLaVA / Video-ChatGPT ship it (``test_q.json`` +
    ``test_a.json``, as for MSVD-QA) or as released (YunseokJANG/tgif-qa
    ``dataset/Test_frameqa_question.csv``: tab-separated, CRLF, columns ``gif_name``, ``question``,
    ``answer``, ``type``, ``vid_id``, ``key``, ``description``). In the release ``vid_id``
    (``FRAMEQA1159``) is the question's id; ``key`` names the GIF (several questions share one).

    Videos: ``<videos>/<video_name or gif_name>`` with any video extension (``.gif`` or ``.mp4``).
    """
    if _qa_pair_paths(ctx.annotations):
        return _read_qa_pair(ctx, lambda name: [name])
    records = _read_table(ctx.annotations)
    _require(records, ("gif_name", "question", "answer", "vid_id"), ctx.annotations, ctx.spec_title,
             "test_q.json + test_a.json, or Test_frameqa_question.csv: gif_name, question, answer, type, vid_id, key")
    return [_Row(str(r["vid_id"]), [str(r["gif_name"])], str(r["question"]), str(r["answer"]),
                 category=None if r.get("type") in (None, "") else str(r["type"])) for r in records]


@register_benchmark("activitynet_qa", title="ActivityNet-QA", kind=OPEN_ENDED, max_new_tokens=64)
def _read_activitynet(ctx: _Context) -> list[_Row]:
    """ActivityNet-QA in either published form: the release (MILVLG/activitynet-qa
    ``dataset/test_q.json``: ``video_name``, ``question``, ``question_id``; ``test_a.json``:
    ``answer``, ``type``, ``question_id``; pass either file, the other must lie beside it), or
    lmms-eval's lmms-lab/ActivityNetQA parquet (one record per question with ``video_name``,
    ``question``, ``question_id``, ``answer``, ``type``).

    Videos: ``<videos>/v_<video_name>.mp4`` (the ActivityNet file names; ``.mkv`` / ``.webm`` too),
    or ``<videos>/<video_name>.*``.
    """
    def names(name: str) -> list[str]:
        return [name if name.startswith("v_") else f"v_{name}", name]

    if _qa_pair_paths(ctx.annotations):
        return _read_qa_pair(ctx, names)
    records = _read_table(ctx.annotations)
    _require(records, ("video_name", "question", "question_id", "answer"), ctx.annotations, ctx.spec_title,
             "test_q.json + test_a.json, or lmms-eval's parquet: video_name, question, question_id, answer, type")
    return [_Row(str(r["question_id"]), names(str(r["video_name"])), str(r["question"]), str(r["answer"]),
                 category=None if r.get("type") is None else str(r["type"])) for r in records]


# ---------------------------------------------------------------- front door
def load_benchmark(name: str, annotations: str | os.PathLike, videos: str | os.PathLike,
                   limit: int | None = None, prompt_style: str = DEFAULT_PROMPT_STYLE) -> BenchmarkData:
    """Read ``name``'s annotations and find each sample's video under ``videos``.

    ``limit`` keeps the first N samples (in annotation order). ``prompt_style`` names the
    multiple-choice prompt (:data:`vidprune.prompts.PROMPT_STYLES`; default lmms-eval's).
    Raises :class:`ConfigError` for a missing path, an unknown name or prompt style, or a
    file that does not have the published layout.
    """
    spec = get_benchmark(name)
    check_prompt_style(prompt_style)
    ann, vids = Path(annotations).expanduser(), Path(videos).expanduser()
    if not ann.exists():
        raise ConfigError(f"{spec.title} annotations {str(ann)!r} do not exist; check --annotations")
    if not vids.is_dir():
        raise ConfigError(f"{spec.title} video folder {str(vids)!r} is not a directory; check --videos")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    ctx = _Context(ann, vids, _VideoFinder(vids), spec.title)
    rows = spec.reader(ctx)
    if not rows:
        raise ConfigError(f"{str(ann)!r} holds no {spec.title} questions with answers")
    seen: set[str] = set()
    for row in rows:
        if row.sample_id in seen:
            raise ConfigError(f"{str(ann)!r}: question id {row.sample_id!r} appears twice; ids must be unique")
        seen.add(row.sample_id)
    if limit is not None:
        rows = rows[:limit]
    data = BenchmarkData(spec, [])
    for row in rows:
        found = ctx.finder.find_named(row.video_names)
        if found is None:
            data.missing.append((row.sample_id, row.video_names))
            continue
        video, by_name = found
        clip = None if by_name in row.segment_names else row.clip_s  # a cut segment is the clip itself
        prompt = (multiple_choice_prompt(row.question, row.options, spec.name, prompt_style) if row.options
                  else row.question.strip())
        data.samples.append(Sample(spec.name, row.sample_id, video, row.question, prompt, row.answer, row.options,
                                   clip, row.frames_fps if os.path.isdir(video) else None, row.category))
    return data
