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
from .errors import ConfigError, VidpruneError
from .pipeline.build import build_stages
from .pipeline.report import answer_report
from .pipeline.segments import IN_PROCESS_SEGMENT_FRAMES, prune_in_segments
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
    error: str | None = None  # ask_batch: why this item has no answer (one line; text "", report {})

    @classmethod
    def failed(cls, exc: BaseException) -> "Answer":
        """An item that could not be answered: its error as one line, as ``vidprune job`` writes it."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, VidpruneError):
            text = f"{type(exc).__name__}: {text}"
        return cls(text="", report={}, token_ids=[], error=text[:500])


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
        self.progress: bool | None = None  # a progress bar while preparing a file: None = when stderr is a terminal

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
        return cls.from_resolved(*resolve_config(model, config, **options))

    @classmethod
    def from_resolved(cls, cfg: VidpruneConfig, info: CheckpointInfo) -> "VideoQA":
        """Load the model of options already resolved (:func:`~vidprune.config.resolve_config`'s pair)."""
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
        """Decode, encode and prune one video (path or (T, H, W, 3) uint8 array): its token stream.

        A file goes through in time segments (:func:`~vidprune.pipeline.segments.prune_in_segments`):
        its frame plan is checked against the options before any frame is decoded, and memory holds
        one segment's frames at a time however long the video (a progress bar on a terminal).
        """
        if isinstance(video, (str, bytes)) or hasattr(video, "__fspath__"):
            segment = (None if self.llm.sizes_frames_by_clip  # Qwen3-VL: the processor needs the whole clip
                       else max(IN_PROCESS_SEGMENT_FRAMES, self.config.encoder_batch_size or 0))
            return prune_in_segments(self.decode_stage, self.encode_stage, self.select_stage, video,
                                     segment_frames=segment, progress=self.progress)
        return self._prepare_whole(video)  # an array (or what DecodeStage refuses, by name)

    def _prepare_whole(self, video: Any) -> PrunedVideo:
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
        return [Answer(text=o["text"], report=self._report(v, q, o, gen), token_ids=o["token_ids"])
                for (v, q), o in zip(items, outs)]

    def ask(self, video: Any, question: str, **generate_overrides: Any) -> Answer:
        """Answer one question about one video. ``generate_overrides``: e.g. ``max_new_tokens=64``."""
        check_question(question)
        return self.answer_batch([(self.prepare(video), question)], **generate_overrides)[0]

    def ask_batch(self, items: list[tuple[Any, str]], **generate_overrides: Any) -> list[Answer]:
        """Answer several (video, question) pairs in one generate batch (kept counts may differ).

        One answer per item, in order. An item that fails (a video that cannot be read, a refused
        question) does not fail the batch: its :class:`Answer` has ``error`` set (one line, as
        ``vidprune job`` writes an error line), empty ``text`` and ``report``; check ``error``. If
        the generate call itself fails, every item of the batch gets that error.
        """
        answers: list[Answer | None] = [None] * len(items)
        prepared, which = [], []
        for n, (video, question) in enumerate(items):
            try:
                question = check_question(question)
                prepared.append((self.prepare(video), question))
                which.append(n)
            except Exception as exc:  # noqa: BLE001 - the item's error, as the job records it
                answers[n] = Answer.failed(exc)
        if prepared:
            try:
                for n, answer in zip(which, self.answer_batch(prepared, **generate_overrides)):
                    answers[n] = answer
            except Exception as exc:  # noqa: BLE001 - one failed generate batch fails its items only
                for n in which:
                    answers[n] = Answer.failed(exc)
        return answers  # type: ignore[return-value]

    # ------------------------------------------------------------ report
    def _report(self, video: PrunedVideo, question: str, out: dict[str, Any],
                generate: dict[str, Any] | None = None) -> dict[str, Any]:
        return answer_report(self.config, self.llm, self.select_stage, self.ivtp_schedule, video, question, out,
                             generate)


def summarize(report: dict[str, Any]) -> str:
    """The short pruning report the CLI prints under the answer; each number says what it counts.

    ``frames``: frames sampled (and the temporal patches they pair into, for Qwen2.5-VL);
    ``proposed by <pruner>``: tokens the per-frame pruner proposed, each frame up to its share
    plus what dedup left unused in earlier frames (so it may exceed the budget); ``after dedup``:
    proposals that do not repeat an earlier frame, the tokens kept; without a budget no
    pruner runs and the line says so.
    """
    tok, fl, opts = report["tokens"], report["flops"], report["options"]
    units = len(report["frames"])
    sampled = report.get("sampled_frames") or units
    frames = f"frames: {sampled}" + (f" ({units} temporal patches of {-(-sampled // units)})" if units != sampled else "")
    full = f"{tok['full']} full" if tok["full"] is not None else "all"
    if tok["budget"] is None:
        flow = f"{full}, no budget: no pruner ran"
    else:
        flow = f"{full} -> {tok['after_vispruner']} proposed by {opts['pruner']}"
    if opts.get("dedup", True):
        flow += f" -> {tok['after_dedup']} after dedup"
    flow += f" -> {tok['to_llm']} to the LLM" + (f" (budget {tok['budget']})" if tok["budget"] is not None else "")
    lines = [
        f"{frames}  visual tokens: {flow}",
        f"LLM prefill: {fl['llm_prefill_pruned'] / 1e12:.3g} of {fl['llm_prefill_full'] / 1e12:.3g} TFLOPs "
        f"({_percent(fl['llm_ratio'])})",
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


def _percent(ratio: float) -> str:
    """A share as a percentage that never rounds a small one to 0.0% (0.0014% stays 0.0014%)."""
    pct = 100 * ratio
    return f"{pct:.1f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"

