"""The options of a benchmark sweep: eval presets (``vidprune/configs/eval_*.yaml``, found by name) plus CLI
flags, validated whole.

An eval preset holds two kinds of keys:

* sweep keys: ``benchmarks`` (a list of ``{name, annotations, videos}``), ``budgets``,
  ``methods``, ``ivtp``, ``limit``, ``out``, ``judge`` (``{url, model, api_key_env,
  timeout_s}``), ``data_root``, ``skip_missing_videos``, ``prompt`` (the multiple-choice
  prompt style, :data:`vidprune.prompts.PROMPT_STYLES`: ``lmms_eval`` by default);
* pipeline keys: any :class:`~vidprune.config.VidpruneConfig` field (``model``,
  ``frames``, ``device``, ``dtype``, ``dedup_threshold``, ...), the same as ``vidprune ask``
  presets, so a plain pipeline preset works as an eval preset too. ``budget``, ``pruner``
  and ``dedup`` are set per arm by ``budgets`` and ``methods``; a preset's values of
  them are ignored.

CLI flags override the preset. :func:`resolve_settings` collects every problem and raises
one :class:`ConfigError` before anything heavy starts. Relative benchmark paths are read
against ``data_root`` (``--data-root``) when one is given.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import VidpruneConfig, load_preset
from ..errors import ConfigError
from ..validators import problem_positive_int
from ..prompts import DEFAULT_PROMPT_STYLE, check_prompt_style

__all__ = ["BenchmarkSource", "JudgeSettings", "EvalSettings", "resolve_settings", "parse_budgets", "parse_ivtp",
           "DEFAULT_OUT", "DEFAULT_METHODS", "SWEEP_KEYS", "IVTP_KEYS", "ARM_KEYS"]

DEFAULT_OUT = "vidprune-eval"
DEFAULT_METHODS = ("vispruner",)
# The environment variable the judge's API key is read from by default (never a flag:
# keys stay out of shell history and of the run's saved options).
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"

SWEEP_KEYS = ("benchmarks", "budgets", "methods", "ivtp", "limit", "out", "judge", "data_root", "skip_missing_videos",
              "prompt")
IVTP_KEYS = ("ivtp_layer", "ivtp_keep", "ivtp_schedule", "ivtp_fusion")
# Options the sweep sets per arm (from budgets and methods); a pipeline preset's values are ignored.
ARM_KEYS = ("budget", "pruner", "dedup")
_JUDGE_KEYS = ("url", "model", "api_key_env", "timeout_s")


@dataclass(frozen=True)
class BenchmarkSource:
    """One benchmark of the sweep: registry name, annotation file and video folder."""

    name: str
    annotations: str
    videos: str


@dataclass(frozen=True)
class JudgeSettings:
    """The LLM judge endpoint (OpenAI-compatible) and model; the key comes from ``api_key_env``."""

    url: str
    model: str
    api_key_env: str = DEFAULT_API_KEY_ENV
    timeout_s: float = 60.0

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model}


@dataclass
class EvalSettings:
    """Everything a sweep needs, validated. ``options`` are the pipeline (VidpruneConfig) options."""

    benchmarks: list[BenchmarkSource]
    budgets: list[int | None]
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    ivtp: dict[str, Any] | None = None
    limit: int | None = None
    out: str = DEFAULT_OUT
    judge: JudgeSettings | None = None
    skip_missing_videos: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    prompt: str = DEFAULT_PROMPT_STYLE  # multiple-choice prompt style (vidprune.prompts)
    address: str | None = None  # a Ray cluster: answer through vidprune's job machinery there
    node_ip_address: str | None = None  # the address a local Ray binds to (with address "local")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["judge"] = self.judge.describe() if self.judge else None
        return d


def parse_budgets(value: Any) -> list[int | None]:
    """``"2048,455,227"`` / ``[2048, 455]`` / ``"full,227"`` -> ``[2048, 455, 227]`` (``full`` -> None)."""
    items = value.split(",") if isinstance(value, str) else list(value if isinstance(value, (list, tuple)) else [value])
    budgets: list[int | None] = []
    for item in items:
        text = str(item).strip().lower()
        if text in ("full", "none", "off"):
            budgets.append(None)
            continue
        try:
            number = int(text)
        except ValueError:
            raise ConfigError(f"budgets must be integers or 'full', got {item!r}; e.g. --budgets 2048,455,227,114") from None
        if number <= 0:
            raise ConfigError(f"budgets must be positive, got {number}")
        budgets.append(number)
    if not budgets:
        raise ConfigError("give at least one budget, e.g. --budgets 455,227,114")
    return budgets


def parse_ivtp(value: Any) -> dict[str, Any] | None:
    """``"2:0.5"`` -> ``{"ivtp_layer": 2, "ivtp_keep": 0.5}``; a dict of ``ivtp_*`` keys passes through."""
    if value is None or value == {}:
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(IVTP_KEYS))
        if unknown:
            raise ConfigError(f"unknown ivtp key(s) {', '.join(unknown)}; allowed: {', '.join(IVTP_KEYS)}")
        return dict(value)
    text = str(value).strip()
    layer, sep, keep = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return {"ivtp_layer": int(layer), "ivtp_keep": float(keep)}
    except ValueError:
        raise ConfigError(f"--ivtp takes LAYER:KEEP_RATIO, e.g. 2:0.5, got {text!r}") from None


def _split_preset(preset: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pipeline_keys = set(VidpruneConfig.field_names())
    unknown = sorted(k for k in preset if k not in pipeline_keys and k not in SWEEP_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {source}; sweep keys: {', '.join(SWEEP_KEYS)}; "
            f"pipeline keys: any VidpruneConfig field ({', '.join(sorted(pipeline_keys))})"
        )
    sweep = {k: v for k, v in preset.items() if k in SWEEP_KEYS}
    pipeline = {k: v for k, v in preset.items() if k in pipeline_keys}
    return sweep, pipeline


def _benchmarks_from(value: Any, problems: list[str]) -> list[BenchmarkSource]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append("benchmarks must be a list of {name, annotations, videos}")
        return []
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not {"name", "annotations", "videos"} <= set(item):
            problems.append(f"benchmarks[{i}] must have name, annotations and videos, got {item!r}")
            continue
        extra = sorted(set(item) - {"name", "annotations", "videos"})
        if extra:
            problems.append(f"benchmarks[{i}] has unknown key(s) {', '.join(extra)}")
        out.append(BenchmarkSource(str(item["name"]), str(item["annotations"]), str(item["videos"])))
    return out


def resolve_settings(preset: str | os.PathLike | dict | None = None, *, benchmarks: list[BenchmarkSource] | None = None,
                     budgets: Any = None, methods: list[str] | None = None, ivtp: Any = None, limit: int | None = None,
                     out: str | None = None, judge_url: str | None = None, judge_model: str | None = None,
                     judge_api_key_env: str | None = None, no_judge: bool = False, data_root: str | None = None,
                     skip_missing_videos: bool | None = None, options: dict[str, Any] | None = None,
                     address: str | None = None, node_ip_address: str | None = None,
                     prompt: str | None = None) -> EvalSettings:
    """Preset + overrides -> validated :class:`EvalSettings` (no model, no video is touched).

    Keyword arguments left None keep the preset's value; ``no_judge`` drops the preset's judge.
    Raises one :class:`ConfigError` listing every problem.
    """
    from .benchmarks import get_benchmark
    from .methods import get_method

    if isinstance(preset, (str, os.PathLike)):
        sweep, pipeline = _split_preset(load_preset(preset), str(preset))
    else:
        sweep, pipeline = _split_preset(dict(preset or {}), "the settings")
    pipeline.update({k: v for k, v in (options or {}).items() if v is not None})
    problems: list[str] = []

    for k in ARM_KEYS:  # the sweep sets these per arm; a pipeline preset's own values do not apply
        pipeline.pop(k, None)
    if pipeline.get("fps") is not None:
        problems.append("a sweep samples a fixed number of frames per video (frames), not fps, so every arm sees "
                        "the same token counts; drop fps")
    ivtp_in_pipeline = {k: pipeline.pop(k) for k in IVTP_KEYS if pipeline.get(k) is not None}

    root = data_root if data_root is not None else sweep.get("data_root")
    sources = benchmarks if benchmarks else _benchmarks_from(sweep.get("benchmarks"), problems)
    if not sources and not problems:
        problems.append("no benchmark given: pass --benchmark NAME --annotations FILE --videos DIR, or a preset with "
                        "benchmarks")
    resolved_sources = []
    for src in sources:
        try:
            get_benchmark(src.name)
        except ConfigError as exc:
            problems.append(str(exc))
        ann, vids = Path(src.annotations).expanduser(), Path(src.videos).expanduser()
        if root and not ann.is_absolute():
            ann = Path(root).expanduser() / ann
        if root and not vids.is_absolute():
            vids = Path(root).expanduser() / vids
        resolved_sources.append(BenchmarkSource(src.name.lower().replace("-", "_"), str(ann), str(vids)))
    if len({s.name for s in resolved_sources}) != len(resolved_sources):
        problems.append("a benchmark is listed twice; list each once")

    budget_list: list[int | None] = []
    try:
        budget_list = parse_budgets(budgets if budgets is not None else sweep.get("budgets", []))
    except ConfigError as exc:
        problems.append(str(exc))
    method_list = list(methods if methods is not None else sweep.get("methods", DEFAULT_METHODS))
    for m in method_list:
        try:
            get_method(m)
        except ConfigError as exc:
            problems.append(str(exc))
    ivtp_opts = None
    try:
        ivtp_opts = parse_ivtp(ivtp if ivtp is not None else sweep.get("ivtp"))
    except ConfigError as exc:
        problems.append(str(exc))
    if ivtp_in_pipeline:
        if ivtp_opts:
            problems.append("give in-LLM pruning once: either ivtp (--ivtp) or the ivtp_* options")
        ivtp_opts = ivtp_in_pipeline
    if ivtp_opts:
        probe = VidpruneConfig(**ivtp_opts)
        try:
            probe.ivtp()
        except ConfigError as exc:
            problems.append(str(exc))

    lim = limit if limit is not None else sweep.get("limit")
    if lim is not None and (problem := problem_positive_int("limit", lim)) is not None:
        problems.append(problem)

    judge_cfg = dict(sweep.get("judge") or {})
    if not isinstance(sweep.get("judge") or {}, dict):
        problems.append("judge must be a mapping {url, model, api_key_env, timeout_s}")
        judge_cfg = {}
    extra = sorted(set(judge_cfg) - set(_JUDGE_KEYS))
    if extra:
        problems.append(f"unknown judge key(s) {', '.join(extra)}; allowed: {', '.join(_JUDGE_KEYS)}")
    for key, value in (("url", judge_url), ("model", judge_model), ("api_key_env", judge_api_key_env)):
        if value is not None:
            judge_cfg[key] = value
    judge = None
    if no_judge:
        judge_cfg = {}
    if judge_cfg.get("url"):
        from .scoring import chat_completions_url

        try:
            chat_completions_url(judge_cfg["url"])
        except ConfigError as exc:
            problems.append(str(exc))
        if not judge_cfg.get("model"):
            problems.append("a judge URL needs a judge model (--judge-model), e.g. gpt-3.5-turbo")
        timeout = judge_cfg.get("timeout_s", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            problems.append(f"judge timeout_s must be a positive number, got {timeout!r}")
            timeout = 60.0
        judge = JudgeSettings(str(judge_cfg["url"]), str(judge_cfg.get("model") or ""),
                              str(judge_cfg.get("api_key_env") or DEFAULT_API_KEY_ENV), float(timeout))
    elif judge_cfg.get("model") and judge_model is not None:
        problems.append("--judge-model needs --judge-url (the OpenAI-compatible endpoint)")

    prompt_style = str(prompt if prompt is not None else sweep.get("prompt") or DEFAULT_PROMPT_STYLE)
    try:
        check_prompt_style(prompt_style)
    except ConfigError as exc:
        problems.append(str(exc))
    skip = skip_missing_videos if skip_missing_videos is not None else bool(sweep.get("skip_missing_videos", False))
    out_dir = out if out is not None else str(sweep.get("out") or DEFAULT_OUT)
    if problems:
        raise ConfigError("invalid eval options: " + "; ".join(problems))
    return EvalSettings(benchmarks=resolved_sources, budgets=budget_list, methods=method_list, ivtp=ivtp_opts,
                        limit=lim, out=out_dir, judge=judge, skip_missing_videos=skip, options=pipeline,
                        address=address, node_ip_address=node_ip_address, prompt=prompt_style)
