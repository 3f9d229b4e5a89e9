"""Options of a vidprune run: one flat dataclass, YAML presets, whole-config validation.

Every entry point (Python ``VideoQA.from_pretrained``, ``vidprune ask``, jobs) builds a
:class:`VidpruneConfig` and calls :meth:`VidpruneConfig.validate` before anything heavy
starts. Validation collects every problem and raises one :class:`ConfigError` whose
message is a single line. Presets in ``configs/*.yaml`` hold the same keys; CLI flags
and keyword arguments override them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["VidpruneConfig", "load_preset", "DEFAULT_DEDUP_THRESHOLD"]

# Cosine similarity (pre-projector CLIP features) above which a token repeats what an
# earlier frame gave. CLIP layer -2 features of an unchanged patch in consecutive
# frames of real video sit well above 0.9 (codec noise only); a changed patch drops below.
DEFAULT_DEDUP_THRESHOLD = 0.9

# dtype names users may give -> the torch dtype attribute they mean
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DECODE_BACKENDS = ("pyav", "decord")


@dataclass
class VidpruneConfig:
    """All options of a run. ``None`` means "the model family's default" where noted."""

    # --- model
    model: str | None = None  # hub id or checkpoint directory
    device: str = "cpu"
    dtype: str | None = None  # None: float32 on CPU, the checkpoint's dtype on GPU
    # --- frames
    frames: int | None = None  # uniform sampling of N frames; None: the family's default (docs/models.md)
    fps: float | None = None  # sample at this rate instead (with max_frames as a cap)
    max_frames: int | None = None
    decode_backend: str = "pyav"
    encoder_batch_size: int | None = None  # frames per vision-tower call; None: all frames of a clip at once
    # --- per-frame pruning
    budget: int | None = None  # total visual tokens handed to the LLM per video; None: no limit
    pruner: str = "vispruner"
    important_ratio: float = 0.5
    seed: int = 0  # for the random pruner and sampling
    keep_cls: bool = True  # Video-LLaVA: hand on each frame's [CLS] token (counts against the budget)
    prune_pooled: bool = True  # LLaVA-NeXT-Video: prune the 2x2-pooled 144 tokens (False: the 576 unpooled)
    # --- cross-frame dedup
    dedup: bool = True
    dedup_threshold: float = DEFAULT_DEDUP_THRESHOLD
    dedup_reference: str = "kept"
    dedup_window: int | None = None
    # --- IVTP: prune again inside the LLM, conditioned on the question (off by default)
    ivtp_layer: int | None = None  # k: score after layer k-1, layers >= k run on the kept tokens
    ivtp_keep: float | None = None  # share of visual tokens kept at layer k (ceil)
    ivtp_schedule: list | None = None  # progressive form: [[k1, r1], [k2, r2], ...] instead of layer/keep
    ivtp_fusion: Any = None  # "none" | "mean" | [w_0..w_k] | {layer: weight}: scores fused over layers <= k
    # --- generation
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    # ------------------------------------------------------------------ build
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "options") -> "VidpruneConfig":
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} in {source}; allowed: {', '.join(cls.field_names())}"
            )
        return cls(**values)

    def replace(self, **overrides: Any) -> "VidpruneConfig":
        """A copy with ``overrides`` applied; ``None`` values in overrides are ignored."""
        values = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(values) - set(self.field_names()))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # --------------------------------------------------------------- validate
    def problems(self) -> list[str]:
        """Every problem with these options, as short phrases (empty when valid)."""
        p: list[str] = []

        def positive_int(name: str, value: Any, allow_none: bool = True) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                p.append(f"{name} must be a positive integer, got {value!r}")

        positive_int("budget", self.budget)
        positive_int("frames", self.frames)
        positive_int("max_frames", self.max_frames)
        positive_int("encoder_batch_size", self.encoder_batch_size)
        positive_int("max_new_tokens", self.max_new_tokens, allow_none=False)
        positive_int("dedup_window", self.dedup_window)
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and self.fps > 0 and math.isfinite(self.fps)):
            p.append(f"fps must be a positive number, got {self.fps!r}")
        if self.frames is not None and self.fps is not None:
            p.append("give either frames (uniform sampling) or fps (rate sampling), not both")
        if not isinstance(self.important_ratio, (int, float)) or not 0.0 <= self.important_ratio <= 1.0:
            p.append(f"important_ratio must be in [0, 1], got {self.important_ratio!r}")
        if not isinstance(self.dedup_threshold, (int, float)) or not 0.0 < self.dedup_threshold <= 1.0:
            p.append(f"dedup_threshold must be in (0, 1], got {self.dedup_threshold!r}")
        from .pruners import DEDUP_REFERENCES, list_pruners

        if self.dedup_reference not in DEDUP_REFERENCES:
            p.append(f"dedup_reference must be one of {', '.join(DEDUP_REFERENCES)}, got {self.dedup_reference!r}")
        elif self.dedup_reference == "previous" and self.dedup_window is not None:
            p.append("dedup_window has no effect with dedup_reference 'previous' (it compares with the previous frame only)")
        if self.decode_backend not in _DECODE_BACKENDS:
            p.append(f"decode_backend must be one of {', '.join(_DECODE_BACKENDS)}, got {self.decode_backend!r}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            p.append(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            p.append(f"temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            p.append(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.pruner not in list_pruners():
            p.append(f"pruner must be one of {', '.join(list_pruners())}, got {self.pruner!r}")
        elif self.pruner == "none" and self.budget is not None:
            p.append("pruner 'none' keeps every token: drop the budget or choose another pruner")
        try:
            self.ivtp()
        except ConfigError as exc:
            p.append(str(exc))
        if self.model is not None and not isinstance(self.model, str):
            p.append(f"model must be a hub id or a directory, got {self.model!r}")
        return p

    def validate(self) -> "VidpruneConfig":
        """Raise one :class:`ConfigError` listing every problem; return self when valid."""
        problems = self.problems()
        if problems:
            raise ConfigError("invalid options: " + "; ".join(problems))
        return self

    # ------------------------------------------------------------- derived
    def ivtp(self):
        """The IVTP schedule these options describe (None when IVTP is off). Layer range is
        checked against the model by ``IVTPSchedule.validate(num_layers)``."""
        from .pruners.ivtp import IVTPSchedule

        schedule = IVTPSchedule.from_options(self.ivtp_layer, self.ivtp_keep, self.ivtp_schedule, self.ivtp_fusion)
        if schedule is not None:
            problems = [q for q in schedule.problems(num_layers=10**9) if "out of range" not in q]
            if any(k <= 0 for k in schedule.prune_layers):
                problems.insert(0, f"ivtp layer must be >= 1, got {min(schedule.prune_layers)}")
            if problems:
                raise ConfigError("; ".join(problems))
        return schedule

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


def load_preset(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML preset into a dict of option values (not yet validated).

    ``path`` may name a file, or a preset in the repository's ``configs/`` folder by stem
    (e.g. ``video_llava_227``).
    """
    import yaml

    candidate = Path(path)
    if not candidate.is_file():
        repo_configs = Path(__file__).resolve().parent.parent / "configs" / f"{path}.yaml"
        if repo_configs.is_file():
            candidate = repo_configs
        else:
            raise ConfigError(f"config file {str(path)!r} not found; pass a YAML file path")
    try:
        data = yaml.safe_load(candidate.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(candidate)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(candidate)!r} must hold a mapping of option: value")
    return data
