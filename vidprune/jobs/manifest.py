"""The job manifest: one JSON object per line, checked whole before anything starts.

    {"id": "clip1", "video": "videos/clip1.mp4", "question": "What is the man holding?"}
    {"id": "clip2", "video": "/data/clip2.mp4", "questions": ["Who enters?", "What color is the car?"]}
    {"id": "mc1", "video": "clip3.mp4", "question": "What happens?", "options": ["A dog runs", "A car stops"]}

``id`` (string or integer, unique), ``video`` (a path; relative paths are taken from the
manifest's folder), and ``question`` or ``questions``; ``options`` (2 to 26 strings) makes
every question of the line multiple choice, asked as :func:`format_question` shows.
Problems are reported in one line with their line numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..pipeline.decode.byte_source import is_remote
from ..qa import check_question

__all__ = ["JobItem", "read_manifest", "format_question", "MANIFEST_KEYS", "OPTION_LETTERS", "MC_INSTRUCTION"]

MANIFEST_KEYS = ("id", "video", "question", "questions", "options")
# Multiple-choice options are lettered A, B, C, ...: at most 26.
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The instruction after the options (the Video-LLaVA / lmms-eval multiple-choice prompt).
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Problems listed in the one-line manifest error (the count says how many more there are).
_MAX_LISTED_PROBLEMS = 5


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
    from ..prompts import multiple_choice_prompt  # the one multiple-choice formatter (its video_llava style)

    return multiple_choice_prompt(question, options, style="video_llava") if options else question


def read_manifest(path: str | os.PathLike) -> list[JobItem]:
    """Parse and check a whole manifest; one :class:`JobItem` per question, in manifest order.

    Raises:
        ConfigError: the file is missing or any line is bad (one message, line numbers included).
    """
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
        video_path = video if os.path.isabs(video) or is_remote(video) else str(base / video)  # s3://, https://: as given
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
