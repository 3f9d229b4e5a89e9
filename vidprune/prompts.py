"""Multiple-choice prompts: the one place a question and its options become the text a model reads.

    from vidprune.prompts import multiple_choice_prompt
    multiple_choice_prompt("What moves?", ["a dog", "a car"], benchmark="mvbench")           # lmms-eval's
    multiple_choice_prompt("What moves?", ["a dog", "a car"], style="video_llava")           # the paper's

Two named styles (``PROMPT_STYLES``):

* ``lmms_eval`` (the default of ``vidprune eval``): for a benchmark lmms-eval has a task for,
  the prompt its task utilities build, byte for byte, so scores are comparable with
  lmms-eval's and with the papers that report lmms-eval numbers. Mirrors lmms-eval 0.7.3:
  ``tasks/videomme/utils.py::videomme_doc_to_text`` with the ``default`` kwargs of
  ``videomme.yaml``; ``tasks/mvbench/utils.py::mvbench_doc_to_text`` with the per-task
  ``post_prompt`` of ``mvbench_<task>.yaml``; ``tasks/egoschema/utils.py::egoschema_doc_to_text``
  (``egoschema_subset.yaml``); ``tasks/nextqa/utils.py::nextqa_doc_to_text_mc``
  (``nextqa_mc_test.yaml``, which sets no pre/post prompt). A benchmark without an
  lmms-eval multiple-choice task falls back to ``video_llava``.
* ``video_llava``: the question, one ``A. option`` line per option, then "Answer with the
  option's letter from the given choices directly." (the LLaVA / Video-LLaVA
  multiple-choice instruction, the prompt the VisPruner paper's model family was tuned on).
  ``vidprune job`` manifests with ``options`` are asked this way.

Options are given without their letters (``"a dog"``, not ``"A. a dog"``); each style adds
the letters it uses. Where lmms-eval prints option strings as the dataset stores them
(Video-MME, EgoSchema: ``"A. text"``), the style rebuilds exactly that form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["PROMPT_STYLES", "DEFAULT_PROMPT_STYLE", "OPTION_LETTERS", "LETTER_INSTRUCTION", "VIDEOMME_PREAMBLE",
           "MVBENCH_POST_PROMPT", "multiple_choice_prompt", "check_prompt_style"]

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# LLaVA's multiple-choice instruction; also lmms-eval's post prompt for Video-MME and EgoSchema.
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# lmms-eval 0.7.3 tasks/videomme/utils.py::videomme_doc_to_text opens every Video-MME prompt with
# this line (the "and the subtitles" wording is lmms-eval's, used with and without subtitles).
VIDEOMME_PREAMBLE = ("Select the best answer to the following multiple-choice question based on the video and the "
                     "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
# lmms-eval 0.7.3 videomme.yaml, lmms_eval_specific_kwargs.default.post_prompt.
VIDEOMME_POST_PROMPT = "\n" + LETTER_INSTRUCTION
# lmms-eval 0.7.3 mvbench_<task>.yaml, lmms_eval_specific_kwargs.default.post_prompt (all 20 tasks).
MVBENCH_POST_PROMPT = "Only give the best option.\n"
# lmms-eval 0.7.3 egoschema_utils.egoschema_doc_to_text: the post prompt whenever the doc has options.
EGOSCHEMA_POST_PROMPT = "\n" + LETTER_INSTRUCTION


def _lettered(options: Sequence[str], template: str) -> list[str]:
    return [template.format(letter=OPTION_LETTERS[i], text=opt) for i, opt in enumerate(options)]


def _video_llava(question: str, options: Sequence[str]) -> str:
    return "\n".join([question, *_lettered(options, "{letter}. {text}"), LETTER_INSTRUCTION])


def _videomme(question: str, options: Sequence[str]) -> str:
    body = "\n".join([question, *_lettered(options, "{letter}. {text}")])
    return VIDEOMME_PREAMBLE + "\n" + body + "\n" + VIDEOMME_POST_PROMPT


def _mvbench(question: str, options: Sequence[str]) -> str:
    return "Question:" + question + "\nOption:\n" + "".join(_lettered(options, "({letter}) {text}\n")) \
        + MVBENCH_POST_PROMPT


def _egoschema(question: str, options: Sequence[str]) -> str:
    return question + "".join("\n" + line for line in _lettered(options, "{letter}. {text}")) + EGOSCHEMA_POST_PROMPT


def _nextqa(question: str, options: Sequence[str]) -> str:
    return "\n".join([question.strip(), *_lettered([o.strip() for o in options], "{letter}. {text}")])


# lmms-eval's multiple-choice prompt per vidprune benchmark name.
_LMMS_EVAL: dict[str, Callable[[str, Sequence[str]], str]] = {
    "videomme": _videomme,
    "mvbench": _mvbench,
    "egoschema": _egoschema,
    "nextqa": _nextqa,
}

PROMPT_STYLES = {
    "lmms_eval": "the prompt lmms-eval 0.7.3's task utilities build for the benchmark (byte for byte)",
    "video_llava": "question, 'A. option' lines, \"Answer with the option's letter from the given choices directly.\" "
                   "(LLaVA / Video-LLaVA; what vidprune job uses)",
}
DEFAULT_PROMPT_STYLE = "lmms_eval"


def check_prompt_style(style: str) -> str:
    """``style`` if it is a known prompt style, else :class:`~vidprune.errors.ConfigError` naming them."""
    if style not in PROMPT_STYLES:
        from .errors import ConfigError

        raise ConfigError(f"unknown prompt style {style!r}; choose one of: {', '.join(PROMPT_STYLES)}")
    return style


def multiple_choice_prompt(question: str, options: Sequence[str], benchmark: str | None = None,
                           style: str = DEFAULT_PROMPT_STYLE) -> str:
    """The prompt for a multiple-choice question (options without letters) in ``style``.

    ``benchmark`` (a vidprune benchmark name) selects lmms-eval's format under ``lmms_eval``;
    without one, or for a benchmark lmms-eval has no multiple-choice task for, the
    ``video_llava`` prompt is returned.
    """
    check_prompt_style(style)
    if len(options) > len(OPTION_LETTERS):
        from .errors import ConfigError

        raise ConfigError(f"a multiple-choice question takes at most {len(OPTION_LETTERS)} options, got {len(options)}")
    if style == "lmms_eval" and benchmark in _LMMS_EVAL:
        return _LMMS_EVAL[benchmark](question, options)
    return _video_llava(question, options)
