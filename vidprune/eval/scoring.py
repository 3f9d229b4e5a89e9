"""Scoring answers as the papers do.

* Multiple choice: :func:`extract_option_letter` finds the option letter in a free-form
  answer (robust to ``"(B)"``, ``"B. a dog"``, ``"The answer is B"``, ``"**B**"``, an
  answer that repeats an option's text, ...), the way lmms-eval's extractors do, and the
  sample is correct when it equals the reference letter.
* Open-ended: an LLM judge through any OpenAI-compatible ``/v1/chat/completions``
  endpoint, with the Video-ChatGPT protocol that Video-LLaVA and the VisPruner paper use
  (a yes/no match and an integer 0-5 score per answer; accuracy = yes / (yes + no),
  score = mean). Beside it, judge-free: :func:`exact_match` on normalized text and
  :func:`contains_answer`.

The judge client uses only the standard library (``urllib``). Nothing here touches the
network unless a :class:`JudgeClient` is built with an endpoint URL.
"""

from __future__ import annotations

import ast
import json
import re
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, VidpruneError
from .benchmarks import OPTION_LETTERS

__all__ = [
    "extract_option_letter",
    "normalize_answer",
    "exact_match",
    "contains_answer",
    "Judgment",
    "JudgeClient",
    "JudgeError",
    "parse_judge_reply",
    "judge_messages",
    "chat_completions_url",
]


# ------------------------------------------------------------ multiple choice
# Words that announce the chosen option: "the answer is B", "Answer: (C)", "best option:(A".
# Group 1 is the keyword, group 2 the letter (case-sensitive: "the answer is a dog" has none).
_ANNOUNCED = re.compile(
    r"([Aa]nswer|ANSWER|[Oo]ption|OPTION|[Cc]hoice|CHOICE)\s*(?:is|would be|:|-)?\s*[:\-]?\s*[\(\[]?\s*"
    r"([A-Z])(?![A-Za-z])"
)
# A letter that opens the answer followed by a delimiter: "B.", "(C)", "D:", "[A]", "E)".
_LEADING = re.compile(r"^[\(\[]?\s*([A-Z])\s*(?:[\)\]][.:,]?|[.:,])(?:\s|$)")
# A letter that opens the answer followed by a space: "B the dog" (but "A man ..." is an article).
_LEADING_BARE = re.compile(r"^([A-Z])\s+(\S+)")
_PARENTHESIZED = re.compile(r"\(([A-Z])\)")
_STANDALONE = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")
# Markup around a short answer: quotes, markdown emphasis, code ticks.
_WRAPPERS = " \t\r\n*_`'\""


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _contains_words(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _option_text_match(response: str, options: Sequence[str]) -> str:
    """The letter of the one option whose text the response repeats (whole words), else ``""``.

    When several match, options contained in a longer matching option are dropped
    ("red" vs "red car"); if more than one remains the response is ambiguous.
    """
    words = _words(response)
    matched = [i for i, opt in enumerate(options) if _contains_words(words, _words(opt))]
    matched = [i for i in matched
               if not any(j != i and _contains_words(_words(options[j]), _words(options[i]))
                          and len(_words(options[j])) > len(_words(options[i])) for j in matched)]
    return OPTION_LETTERS[matched[0]] if len(matched) == 1 else ""


def extract_option_letter(response: str, options: Sequence[str] | int) -> str:
    """The option letter a free-form answer chose, or ``""`` when it chose none (or several).

    Args:
        response: the model's answer text.
        options: the option texts (enables matching an answer that repeats an option's
            text) or just their number.

    Returns:
        An uppercase letter among the first ``len(options)`` letters, or ``""``.

    Rules, first match wins: (1) the whole answer is a letter, possibly wrapped
    (``"b"``, ``"(B)"``, ``"**B.**"``); (2) an announced choice (``"the answer is C"``,
    ``"Answer: (C)"``, ``"Best option:(C"``), the last one, "answer" before
    "option"/"choice"; (3) a leading letter with a
    delimiter (``"C. a dog"``, ``"(C) a dog"``); (4) a leading bare letter followed by a
    word, except ``"A"`` followed by a lowercase word, read as the article;
    (5) the last parenthesized letter (``"... so (D)"``); (6) the text of exactly one
    option; (7) exactly one distinct standalone capital letter, ``"A"`` before a
    lowercase word excluded. A letter beyond the options never counts.
    """
    letters = OPTION_LETTERS[: options if isinstance(options, int) else len(options)]
    texts: Sequence[str] = () if isinstance(options, int) else options
    if not isinstance(response, str):
        return ""
    core = response.strip().strip(_WRAPPERS).rstrip(".!,;").strip(_WRAPPERS)
    if not core:
        return ""
    whole = re.fullmatch(r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?[.:]?", core)
    if whole:
        return whole.group(1).upper() if whole.group(1).upper() in letters else ""
    announced = [(m.group(1).lower(), m.group(2)) for m in _ANNOUNCED.finditer(core) if m.group(2) in letters]
    stated = [letter for keyword, letter in announced if keyword == "answer"] or [letter for _, letter in announced]
    if stated:
        return stated[-1]  # "answer" outranks "option"/"choice"; the last statement wins
    m = _LEADING.match(core)
    if m and m.group(1) in letters:
        return m.group(1)
    m = _LEADING_BARE.match(core)
    if m and m.group(1) in letters and not (m.group(1) == "A" and m.group(2)[:1].islower()):
        return m.group(1)
    paren = [x for x in _PARENTHESIZED.findall(core) if x in letters]
    if paren:
        return paren[-1]
    if texts:
        by_text = _option_text_match(core, texts)
        if by_text:
            return by_text
    standalone = set()
    for m in _STANDALONE.finditer(core):
        letter = m.group(1)
        following = core[m.end():].lstrip()
        if letter == "A" and following[:1].islower():
            continue  # the article
        if letter in letters:
            standalone.add(letter)
    return standalone.pop() if len(standalone) == 1 else ""


# ------------------------------------------------------------ open-ended, judge-free
_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, number words as digits, single spaces."""
    words = _PUNCTUATION.sub(" ", str(text).lower()).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES)


def exact_match(prediction: str, answer: str) -> bool:
    """Normalized prediction equals normalized reference (both non-empty)."""
    p, a = normalize_answer(prediction), normalize_answer(answer)
    return bool(a) and p == a


def contains_answer(prediction: str, answer: str) -> bool:
    """The normalized reference appears in the normalized prediction as whole words."""
    return _contains_words(normalize_answer(prediction).split(), normalize_answer(answer).split())


# ------------------------------------------------------------ the LLM judge
class JudgeError(VidpruneError):
    """The judge endpoint failed or answered in an unusable way (after retries)."""

    exit_code = 1


@dataclass(frozen=True)
class Judgment:
    """One judge verdict: ``correct`` (the judge's yes/no), ``score`` (integer 0-5) and its raw reply."""

    correct: bool
    score: int
    reply: str
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "score": self.score, "reply": self.reply, "model": self.model}


# The Video-ChatGPT zero-shot QA judge prompt (mbzuai-oryx/Video-ChatGPT,
# quantitative_evaluation/evaluate_activitynet_qa.py), used unchanged by Video-LLaVA and
# the VisPruner paper. Reproduced word for word: the scores are only comparable to
# published ones with exactly this prompt.
_JUDGE_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
    "if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
_JUDGE_USER = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
    "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
    "value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only "
    "provide the Python dictionary string. For example, your response should look like this: "
    "{{'pred': 'yes', 'score': 4.8}}."
)

# Reply length the judge needs for "{'pred': 'yes', 'score': 4}" (lmms-eval asks for 64).
JUDGE_MAX_TOKENS = 64
# Seconds to wait for one judge reply; a slow local model can take a while.
JUDGE_TIMEOUT_S = 60.0
# Attempts per verdict (network hiccups, rate limits, an unparsable reply), and the
# first back-off between them in seconds (doubled each time).
JUDGE_ATTEMPTS = 4
JUDGE_BACKOFF_S = 1.0


def judge_messages(question: str, answer: str, prediction: str) -> list[dict[str, str]]:
    """The chat messages of the Video-ChatGPT protocol for one answer."""
    return [
        {"role": "system", "content": _JUDGE_SYSTEM},
        {"role": "user", "content": _JUDGE_USER.format(question=question, answer=answer, prediction=prediction)},
    ]


def parse_judge_reply(reply: str) -> tuple[bool, int]:
    """``"{'pred': 'yes', 'score': 4}"`` -> ``(True, 4)``.

    The score is truncated to an integer as the protocol's evaluation script does
    (``4.8`` -> 4) and clipped to [0, 5]; ``pred`` counts as yes when it contains "yes".
    A reply that is not a dictionary is read with a lenient pattern. Raises ``ValueError``
    when no verdict can be found.
    """
    text = str(reply).strip()
    verdict: Any = None
    score: Any = None
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        body = text[start : end + 1]
        for parse in (ast.literal_eval, json.loads):
            try:
                data = parse(body)
            except (ValueError, SyntaxError, TypeError, json.JSONDecodeError, MemoryError, RecursionError):
                continue
            if isinstance(data, dict):
                verdict, score = data.get("pred"), data.get("score")
                break
    if verdict is None:
        m = re.search(r"pred['\"]?\s*[:=]\s*['\"]?\s*(yes|no)", text, re.IGNORECASE)
        verdict = m.group(1) if m else None
    if score is None:
        m = re.search(r"score['\"]?\s*[:=]\s*['\"]?\s*(-?\d+(?:\.\d+)?)", text, re.IGNORECASE)
        score = m.group(1) if m else None
    if verdict is None or score is None:
        raise ValueError(f"no 'pred' and 'score' in the judge's reply {text[:120]!r}")
    try:
        score_int = int(float(score))
    except (TypeError, ValueError):
        raise ValueError(f"the judge's score {score!r} is not a number") from None
    verdict_text = str(verdict).lower()
    if "yes" not in verdict_text and "no" not in verdict_text:
        raise ValueError(f"the judge's pred {verdict!r} is neither yes nor no")
    return "yes" in verdict_text, max(0, min(5, score_int))


def chat_completions_url(url: str) -> str:
    """``http://host:8000/v1`` or ``http://host:8000`` -> ``.../v1/chat/completions`` (kept if already full)."""
    parsed = urllib.parse.urlparse(str(url).strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"judge URL {url!r} must be an http(s) URL such as http://localhost:8000/v1")
    path = parsed.path.rstrip("/")
    if path.endswith("/chat/completions"):
        pass
    elif path.endswith("/v1"):
        path += "/chat/completions"
    else:
        path += "/v1/chat/completions"
    return urllib.parse.urlunparse(parsed._replace(path=path))


class JudgeClient:
    """The LLM judge over an OpenAI-compatible chat-completions endpoint (stdlib ``urllib`` only).

    Args:
        url: the endpoint base (``http://host:8000/v1``) or the full ``.../chat/completions`` URL.
        model: the judge model name sent in the request (e.g. ``gpt-3.5-turbo``).
        api_key: sent as ``Authorization: Bearer``; None sends no header (local servers).
        timeout_s, attempts, backoff_s: per request; failed attempts are retried with
            doubling back-off, then :class:`JudgeError` is raised.

    Verdicts are cached per (question, answer, prediction): identical answers under
    different budgets are judged once.
    """

    def __init__(self, url: str, model: str, api_key: str | None = None, *, timeout_s: float = JUDGE_TIMEOUT_S,
                 attempts: int = JUDGE_ATTEMPTS, backoff_s: float = JUDGE_BACKOFF_S,
                 max_tokens: int = JUDGE_MAX_TOKENS):
        if not model or not isinstance(model, str):
            raise ConfigError("the judge needs a model name (--judge-model), e.g. gpt-3.5-turbo")
        self.url = chat_completions_url(url)
        self.model, self.api_key = model, api_key
        self.timeout_s, self.attempts, self.backoff_s, self.max_tokens = timeout_s, attempts, backoff_s, max_tokens
        self._cache: dict[tuple[str, str, str], Judgment] = {}

    def remember(self, question: str, answer: str, prediction: str, judgment: Judgment) -> None:
        """Seed the cache with a verdict from an earlier run (resumption)."""
        self._cache[(question, answer, prediction)] = judgment

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def judge(self, question: str, answer: str, prediction: str) -> Judgment:
        """Judge one answer; raises :class:`JudgeError` once every attempt has failed."""
        key = (question, answer, prediction)
        if key in self._cache:
            return self._cache[key]
        payload = {"model": self.model, "messages": judge_messages(question, answer, prediction),
                   "temperature": 0, "max_tokens": self.max_tokens}
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                data = self._post(payload)
                reply = data["choices"][0]["message"]["content"]
                correct, score = parse_judge_reply(reply)
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code} {exc.reason}"
                if exc.code in (400, 401, 403, 404):  # not going to get better by retrying
                    break
                continue
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
                problem = f"a reply without choices[0].message.content ({type(exc).__name__})"
                continue
            except ValueError as exc:
                problem = str(exc)
                continue
            judgment = Judgment(correct, score, str(reply), str(data.get("model") or self.model))
            self._cache[key] = judgment
            return judgment
        raise JudgeError(
            f"the judge at {self.url} failed ({problem}); check --judge-url / --judge-model and the endpoint, "
            "then rerun the same command to resume"
        )
