"""The ``vidprune`` model for lmms-eval: lmms-eval's own tasks, answered with vidprune's pruning.

    pip install 'vidprune[eval]'
    lmms-eval --model vidprune --model_args pretrained=LanguageBind/Video-LLaVA-7B-hf,budget=227 --tasks videomme

Registration: vidprune declares the entry point ``vidprune`` in the ``lmms_eval.models``
group, pointing at :func:`manifest`; lmms-eval's model registry loads every entry point
of that group at start-up and resolves ``--model vidprune`` to :class:`VidpruneLMM`.
(``lmms-eval models`` lists lmms-eval's built-in models only; ``--model vidprune`` is still
found through the entry point.)

``--model_args`` (the same names and meanings as ``vidprune eval``'s arms, ``vidprune ask``
and presets):

* ``pretrained``: hub id or checkpoint directory.
* ``budget``: total visual tokens handed to the LLM per video (an integer), or ``none``
  (also ``full`` / ``off``): no cap. Default ``none``.
* ``dedup``: cross-frame dedup. Default **off** here, as in every arm of ``vidprune eval``
  except ``vispruner_dedup`` (``vidprune ask`` and ``job`` default to on): so
  ``budget=227`` is eval's ``vispruner@227`` arm, ``budget=227,dedup=true`` its
  ``vispruner_dedup@227`` arm, and ``budget=none`` is the unpruned model (eval's ``full``
  arm). A ``config`` preset that sets ``dedup`` counts as asking for it.
* ``pruner``: per-frame selection (default ``vispruner``).
* ``config``: a shipped preset's name (e.g. ``video_llava_227``) or a YAML file; model_args override it (a preset's ``budget`` applies
  unless ``budget`` is given).
* ``report_file``: write one JSON line per answer to this path (task, doc_id, the generated
  token ids, the text before and after the ``until`` cut, and vidprune's pruning report:
  tokens at each stage, FLOPs), appended in request order.
* any other :class:`~vidprune.config.VidpruneConfig` field (``frames``, ``ivtp_layer``,
  ``ivtp_keep``, ``dtype``, ...). lmms-eval's ``--device`` and ``--batch_size`` are honoured.

Requests: ``generate_until`` tasks whose ``doc_to_visual`` gives one video (a file path,
a folder of frame images, or a list of PIL frames). The task's generation kwargs are
mapped to vidprune's (``max_new_tokens``, ``temperature`` > 0 or ``do_sample`` ->
sampling, ``top_p``) and the answer is cut at the first ``until`` string.
``loglikelihood`` (the ``*_mcppl`` task variants) is not supported. After each task's
generation one line on stderr says what ran: pruner, dedup, budget, and the visual tokens
and LLM prefill FLOPs share that resulted.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
from lmms_eval.api.model import lmms

from ..config import VidpruneConfig, load_preset
from ..errors import ConfigError

__all__ = ["VidpruneLMM", "manifest", "summarize_reports", "MODEL_ID", "DEFAULT_DEDUP"]

MODEL_ID = "vidprune"
# Cross-frame dedup unless asked for: the plugin's budgets are the arms of `vidprune eval` (methods.py).
DEFAULT_DEDUP = False

# lmms-eval hands every model these besides --model_args; vidprune reads device and batch_size.
_HARNESS_ARGS = ("device", "batch_size", "max_batch_size")
_PRUNE_OFF = ("none", "full", "off")


def manifest():
    """The ``lmms_eval.models`` entry point: how lmms-eval finds ``--model vidprune``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.VidpruneLMM")


def _video_input(visuals: Any, num_frames: int) -> Any:
    """A task's visuals -> what ``VideoQA.prepare`` takes: a file path or a (T, H, W, 3) uint8 array."""
    from PIL import Image

    from ..pipeline.decode import uniform_indices

    items = []
    for v in visuals if isinstance(visuals, (list, tuple)) else [visuals]:
        items.extend(v if isinstance(v, (list, tuple)) else [v])
    if not items:
        raise ConfigError("the task gave no visual for this question; vidprune answers questions about a video")
    if all(isinstance(v, Image.Image) for v in items):  # frames as images
        picked = [items[i] for i in uniform_indices(len(items), num_frames)]
        size = picked[0].size
        return np.stack([np.asarray(im.convert("RGB").resize(size)) for im in picked])
    if len(items) != 1:
        raise ConfigError(f"vidprune answers about one video per question; the task gave {len(items)} visuals")
    visual = items[0]
    if isinstance(visual, (str, os.PathLike)) and os.path.isdir(visual):
        from .benchmarks import Sample
        from .runner import load_clip

        return load_clip(Sample("lmms-eval", "", str(visual), "", "", ""), num_frames).frames
    if isinstance(visual, (str, os.PathLike)):
        return str(visual)
    raise ConfigError(f"vidprune cannot read a {type(visual).__name__} visual; give a video path or PIL frames")


def _generation(gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """lmms-eval generation kwargs -> (vidprune generate overrides, stop strings)."""
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    out: dict[str, Any] = {}
    if gen_kwargs.get("max_new_tokens") is not None:
        out["max_new_tokens"] = int(gen_kwargs["max_new_tokens"])
    temperature = gen_kwargs.get("temperature") or 0
    sample = bool(gen_kwargs.get("do_sample")) or float(temperature) > 0
    out["do_sample"] = sample
    if sample:
        out["temperature"] = float(temperature) if float(temperature) > 0 else 1.0
        if gen_kwargs.get("top_p") is not None:
            out["top_p"] = float(gen_kwargs["top_p"])
    return out, [u for u in until if u]


def summarize_reports(reports: list[dict[str, Any]], config: VidpruneConfig | None = None) -> str:
    """One line on what ran and what pruning did over the answers so far (printed after each task's generation).

    ``config``: the options the answers ran with; the line names its pruner, dedup and budget.
    """
    to_llm = [r["tokens"]["to_llm"] for r in reports]
    full = [r["tokens"]["full"] for r in reports]
    ratio = [r["flops"]["llm_ratio"] for r in reports]
    budget = config.budget if config is not None else reports[-1]["tokens"].get("budget")
    what = f"budget {budget if budget is not None else 'none'}"
    if config is not None:
        pruned = config.budget is not None or config.dedup or config.ivtp() is not None
        what = (f"pruner {config.pruner if config.budget is not None else 'none'}, "
                f"dedup {'on' if config.dedup else 'off'}, {what}"
                + (f", ivtp {[list(st) for st in config.ivtp().stages]}" if config.ivtp() is not None else "")
                + ("" if pruned else " (unpruned)"))
    return (f"vidprune: {len(reports)} answers ({what}): visual tokens to the LLM: mean "
            f"{sum(to_llm) / len(to_llm):.1f}, max {max(to_llm)} of {max(full)}; "
            f"LLM prefill FLOPs {100 * sum(ratio) / len(ratio):.1f}% of unpruned")


def _cut(text: str, until: list[str]) -> str:
    for stop in until:
        pos = text.find(stop)
        if pos != -1:
            text = text[:pos]
    return text.strip()


class VidpruneLMM(lmms):
    """lmms-eval model: a :class:`vidprune.VideoQA` (model + pruning options) behind lmms-eval's API."""

    is_simple = True

    def __init__(self, pretrained: str, budget: Any = None, config: str | None = None, report_file: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        from ..qa import VideoQA

        harness = {k: kwargs.pop(k) for k in _HARNESS_ARGS if k in kwargs}
        unknown = sorted(set(kwargs) - set(VidpruneConfig.field_names()))
        if unknown:
            raise ConfigError(f"unknown vidprune model_args {', '.join(unknown)}; allowed: pretrained, budget, config, "
                              f"report_file, {', '.join(VidpruneConfig.field_names())}")
        self.report_file = str(report_file) if report_file else None
        if self.report_file and not os.path.isdir(os.path.dirname(os.path.abspath(self.report_file))):
            raise ConfigError(f"report_file {self.report_file!r}: its folder does not exist")
        preset = load_preset(config) if config else {}
        if budget is not None:  # not given: the preset's budget, else none
            if isinstance(budget, str):
                if budget.lower() not in _PRUNE_OFF:
                    try:
                        budget = int(budget)
                    except ValueError:
                        raise ConfigError(f"budget must be an integer or 'none', got {budget!r}") from None
                else:
                    budget = None
            kwargs["budget"] = budget
        dedup_defaulted = "dedup" not in kwargs and "dedup" not in preset
        if dedup_defaulted:
            kwargs["dedup"] = DEFAULT_DEDUP
        if harness.get("device"):  # lmms-eval's --device (or device= in --model_args)
            kwargs["device"] = str(harness["device"])
        batch = harness.get("batch_size") or 1
        try:
            self.batch_size_per_gpu = max(1, int(batch))
        except (TypeError, ValueError):
            raise ConfigError(f"vidprune takes an integer --batch_size, got {batch!r}") from None
        self.qa = VideoQA.from_pretrained(str(pretrained), config=config, **kwargs)
        if dedup_defaulted and self.rank == 0:  # the one default that differs from VideoQA / ask / job: said aloud
            print(f"vidprune: cross-frame dedup {'on' if DEFAULT_DEDUP else 'off'} (the lmms-eval plugin's default, as "
                  "in vidprune eval's arms; VideoQA, ask and job default to on): give dedup=true to turn it on",
                  file=sys.stderr, flush=True)
        self.num_frames = self.qa.config.frames or self.qa.llm.default_num_frames
        self.reports: list[dict[str, Any]] = []  # the pruning report of every answer, in request order

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests) -> list[str]:
        from tqdm import tqdm

        results: list[str] = []
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="vidprune answering")
        i = 0
        while i < len(requests):
            chunk = [requests[i]]
            while (len(chunk) < self.batch_size_per_gpu and i + len(chunk) < len(requests)
                   and requests[i + len(chunk)].args[1] == requests[i].args[1]):
                chunk.append(requests[i + len(chunk)])
            gen, until = _generation(dict(chunk[0].args[1] or {}))
            items = []
            for req in chunk:
                context, _, doc_to_visual, doc_id, task, split = req.args
                visuals = doc_to_visual(self.task_dict[task][split][doc_id])
                items.append((_video_input(visuals, self.num_frames), context))
            answers = self.qa.ask_batch(items, **gen)
            for req, ans in zip(chunk, answers):
                text = _cut(ans.text, until)
                self.reports.append(ans.report)
                if self.report_file:
                    self._write_report(req, ans, text)
                self.cache_hook.add_partial("generate_until", (req.args[0], req.args[1]), text)
                results.append(text)
            bar.update(len(chunk))
            i += len(chunk)
        bar.close()
        if self.reports and self.rank == 0:
            print(summarize_reports(self.reports, self.qa.config), file=sys.stderr, flush=True)
        return results

    def _write_report(self, req, ans, text: str) -> None:
        _, _, _, doc_id, task, split = req.args
        line = {"task": task, "split": split, "doc_id": doc_id, "token_ids": list(ans.token_ids),
                "generated": ans.text, "response": text, "report": ans.report}
        with open(self.report_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "vidprune's lmms-eval model answers generate_until tasks; this is a loglikelihood task "
            "(e.g. a *_mcppl variant): run the task's generation variant instead"
        )

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("vidprune's lmms-eval model answers single-round generate_until tasks")
