"""``VideoQA``: ask questions about videos with a pruned visual token stream.

    qa = VideoQA.from_pretrained("LanguageBind/Video-LLaVA-7B-hf", budget=227, device="cuda", dtype="bfloat16")
    ans = qa.ask("clip.mp4", "What happens?", max_new_tokens=64)
    ans.text, ans.report

It chains the plain stages of :mod:`vidprune.pipeline.stages` in-process. Options are
validated (and the checkpoint's family checked from its config) before any weights load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .config import VidpruneConfig, resolve_config
from .errors import ConfigError
from .pipeline.build import build_stages
from .pipeline.report import answer_report
from .pipeline.stages import PrunedVideo
from .video_models.base import VideoLLM
from .video_models.checkpoint import CheckpointInfo

__all__ = ["VideoQA", "Answer", "check_question", "summarize"]

# Questions longer than this many characters are refused (they would crowd out the video).
MAX_QUESTION_CHARS = 4000


@dataclass
class Answer:
    """The answer text and the pruning report (a JSON-serialisable dict, the CLI's ``--json``)."""

    text: str
    report: dict[str, Any]
    token_ids: list[int]  # the generated ids (prompt removed, stopped before EOS)


def check_question(question: Any) -> str:
    """Return the question stripped, or raise :class:`ConfigError` for an empty / non-text / huge one."""
    if question is not None and not isinstance(question, str):
        raise ConfigError(f"the question must be text, got a {type(question).__name__}; pass the question as a string")
    if question is None or not question.strip():
        raise ConfigError("the question is empty; pass the text to ask about the video")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"the question has a lone surrogate (U+{ord(question[exc.start]):04X} at character "
                          f"{exc.start + 1}); pass valid Unicode text") from None
    if len(question) > MAX_QUESTION_CHARS:
        raise ConfigError(f"the question has {len(question)} characters, more than {MAX_QUESTION_CHARS}; shorten it")
    return question.strip()


class VideoQA:
    """Video question answering with VisPruner + cross-frame dedup under a token budget.

    A facade over :func:`~vidprune.pipeline.build.build_stages`: the options come resolved
    (:func:`~vidprune.config.resolve_config`), the stages are built from their sections, and
    each call runs decode → encode → select → answer in-process.
    """

    def __init__(self, llm: VideoLLM, config: VidpruneConfig, checkpoint_info: CheckpointInfo | None = None):
        self.llm = llm
        if checkpoint_info is None:
            checkpoint_info = CheckpointInfo(type(llm), llm.config, llm.geometry)
        self.checkpoint_info = checkpoint_info
        stages = build_stages(config, checkpoint_info, llm)
        self.config = stages.config  # the family's frame count filled in where neither frames nor fps was set
        self.ivtp_schedule = self.config.ivtp()
        self.decode_stage, self.encode_stage = stages.decode, stages.encode
        self.select_stage, self.answer_stage = stages.select, stages.answer

    # ----------------------------------------------------------------- build
    @staticmethod
    def resolve_config(model: str | None = None, config: str | os.PathLike | dict | None = None,
                       **options: Any) -> VidpruneConfig:
        """Deprecated: use :func:`vidprune.config.resolve_config`, which also returns the checkpoint's info."""
        return resolve_config(model, config, **options)[0]

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, config: str | os.PathLike | dict | None = None,
                        **options: Any) -> "VideoQA":
        """Load a checkpoint (hub id or directory) of either family with pruning options.

        Args:
            model: hub id or checkpoint directory (or ``model:`` in the config).
            config: a YAML file, a shipped preset's name (:mod:`vidprune.presets`), or a dict of options.
            options: any :class:`VidpruneConfig` field, e.g. ``budget=227``, ``dedup=False``,
                ``device="cuda"``, ``dtype="bfloat16"``, ``frames=8``. ``budget=None`` with
                ``dedup=False`` runs exactly the stock model.
        """
        cfg, info = resolve_config(model, config, **options)
        # the model's default schedule equals this VideoQA's (tests and old callers read llm.ivtp);
        # the answer stage hands its schedule to every generate call explicitly
        llm = info.family.from_pretrained(**cfg.section("model"), ivtp=cfg.ivtp())
        return cls(llm, cfg, info)

    @classmethod
    def from_model(cls, model: Any, processor: Any, *, config: str | os.PathLike | dict | None = None,
                   **options: Any) -> "VideoQA":
        """Wrap a model and processor you already loaded (any supported family) with pruning options.

            model = LlavaNextVideoForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16).to("cuda")
            qa = VideoQA.from_model(model, AutoProcessor.from_pretrained(path), budget=227)

        The family and visual geometry come from ``model.config``; ``device`` and ``dtype`` are the
        model's own (loading options, ``model``/``device``/``dtype``, are refused: cast or move the
        model before wrapping it). ``options``: the pruning, frame, IVTP and generation options of
        :meth:`from_pretrained`. The model is used as it is (put in eval mode), not copied.
        """
        loading = sorted(k for k in ("model", "device", "dtype") if options.get(k) is not None)
        if loading:
            raise ConfigError(f"{', '.join(loading)} describe loading a checkpoint, but this model is already loaded; "
                              "move or cast it (model.to(...)) before VideoQA.from_model")
        if not hasattr(model, "config") or not hasattr(processor, "tokenizer"):
            raise ConfigError(f"VideoQA.from_model takes a transformers model and its processor, got a "
                              f"{type(model).__name__} and a {type(processor).__name__}")
        name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "") or "loaded model"
        cfg, info = resolve_config(None, config, hf_config=model.config, **options)
        param = next(model.parameters())
        cfg = cfg.replace(model=str(name), device=str(param.device), dtype=str(param.dtype).replace("torch.", ""))
        llm = info.family(model, processor, str(name), keep_cls=cfg.keep_cls, prune_pooled=cfg.prune_pooled,
                          ivtp=cfg.ivtp())
        return cls(llm, cfg, info)

    # -------------------------------------------------------------- run
    def prepare(self, video: Any) -> PrunedVideo:
        """Decode, encode and prune one video (path or (T, H, W, 3) uint8 array): its token stream."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        clip = self.decode_stage.process(video)
        t1 = time.perf_counter()
        encoded = self.encode_stage.process(clip.frames, clip.times_s)
        t2 = time.perf_counter()
        pruned = self.select_stage.process(encoded, clip)
        t3 = time.perf_counter()
        timings.update(decode=t1 - t0, encode=t2 - t1, select=t3 - t2)
        pruned.timings_s = timings
        return pruned

    def answer(self, pruned: PrunedVideo, questions: list[str], **generate_overrides: Any) -> list[Answer]:
        """Answer several questions about one prepared video (its token stream is reused)."""
        return self.answer_batch([(pruned, q) for q in questions], **generate_overrides)

    def answer_batch(self, items: list[tuple[PrunedVideo, str]], **generate_overrides: Any) -> list[Answer]:
        """Answer (prepared video, question) pairs in one batch."""
        items = [(v, check_question(q)) for v, q in items]
        gen = {k: v for k, v in generate_overrides.items() if v is not None}
        outs = self.answer_stage.process_batch(items, **gen)
        return [Answer(text=o["text"], report=self._report(v, q, o), token_ids=o["token_ids"]) for (v, q), o in zip(items, outs)]

    def ask(self, video: Any, question: str, **generate_overrides: Any) -> Answer:
        """Answer one question about one video. ``generate_overrides``: e.g. ``max_new_tokens=64``."""
        check_question(question)
        return self.answer_batch([(self.prepare(video), question)], **generate_overrides)[0]

    def ask_batch(self, items: list[tuple[Any, str]], **generate_overrides: Any) -> list[Answer]:
        """Answer several (video, question) pairs in one generate batch (kept counts may differ)."""
        for _, q in items:
            check_question(q)
        prepared = [(self.prepare(v), q) for v, q in items]
        return self.answer_batch(prepared, **generate_overrides)

    # ------------------------------------------------------------ report
    def _report(self, video: PrunedVideo, question: str, out: dict[str, Any]) -> dict[str, Any]:
        return answer_report(self.config, self.llm, self.select_stage, self.ivtp_schedule, video, question, out)


def summarize(report: dict[str, Any]) -> str:
    """The short pruning report the CLI prints under the answer."""
    tok, fl = report["tokens"], report["flops"]
    lines = [
        f"frames: {len(report['frames'])}  visual tokens: {tok['full']} full -> {tok['after_vispruner']} after "
        f"{report['options']['pruner']} -> {tok['after_dedup']} after dedup -> {tok['to_llm']} to the LLM"
        + (f" (budget {tok['budget']})" if tok["budget"] is not None else ""),
        f"LLM prefill: {fl['llm_prefill_pruned'] / 1e12:.3g} of {fl['llm_prefill_full'] / 1e12:.3g} TFLOPs "
        f"({100 * fl['llm_ratio']:.1f}%)",
        f"vision tower: ran on {report['encoder']['encoded']} of {report['encoder']['units']} "
        f"{'frames' if report['encoder']['frames_per_unit'] == 1 else 'temporal patches'}, "
        f"{report['encoder']['reused']} reused the features of an identical"
        + (" or near-identical" if report["options"].get("skip_static") else "") + " earlier one",
        "time: " + ", ".join(f"{k} {v:.2f}s" for k, v in report["timings_s"].items()),
    ]
    if report.get("ivtp"):
        iv = report["ivtp"]
        stages = ", ".join(f"layer {k} keeps {r:g}" for k, r in iv["schedule"])
        lines.insert(1, f"IVTP ({stages}): {iv['visual_tokens_kept']} of {iv['visual_tokens_in']} visual tokens "
                        "reach the last layers")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)

