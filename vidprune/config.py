"""Options of a vidprune run, declared once: their sections, stage arguments, CLI flags and help.

Every option is one field of :class:`VidpruneConfig` (the keyword of
``VideoQA.from_pretrained``, the key of a YAML preset) with an :class:`Option` declaration
in its metadata: the section it belongs to and the keyword it is in that section's
constructor, its help text and CLI flag. Everything else is generated from that one
declaration:

* the CLI flags of ``vidprune ask`` / ``job`` / ``eval`` / ``demo``
  (:func:`add_option_flags`, :func:`options_from_args`),
* the keyword arguments of each stage (:meth:`VidpruneConfig.section`): ``decode`` →
  :class:`~vidprune.pipeline.stages.DecodeStage`, ``encode`` → ``EncodeStage``, ``select``
  → ``SelectStage``, ``generate`` → ``AnswerStage``, ``model`` → ``VideoLLM.from_pretrained``,
  ``ivtp`` → :meth:`~vidprune.pruners.ivtp.IVTPSchedule.from_options`.

:func:`resolve_config` turns a preset + overrides into a validated config plus the
checkpoint's :class:`~vidprune.video_models.checkpoint.CheckpointInfo` (config alone, no weights):
the one place the family's defaults (frames) and the budget-vs-geometry checks are applied.
Validation collects every problem and raises one :class:`ConfigError` whose message is a
single line, before anything heavy starts. Presets (``vidprune/configs/*.yaml``,
:mod:`vidprune.presets`) hold the same keys; CLI flags and keyword arguments override them.

Layering: this module sits above ``pruners`` and ``video_models`` (it validates against
their registries) and below ``pipeline`` (whose stages it configures). It imports them
inside the functions that need them, so parsing a command line imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .devices import DTYPE_NAMES, device_problems
from .errors import ConfigError
from .presets import load_preset
from .validators import problem_in_range, problem_positive_int, problem_positive_number

__all__ = ["VidpruneConfig", "Option", "OPTIONS", "SECTIONS", "load_preset", "resolve_config",
           "add_option_flags", "options_from_args", "check_pruner_runs", "DEFAULT_DEDUP_THRESHOLD",
           "DEFAULT_SKIP_STATIC_THRESHOLD", "DTYPE_NAMES", "DECODE_BACKENDS", "DEVICE_MAP_STRATEGIES",
           "ATTN_IMPLEMENTATIONS", "QUANTIZATIONS"]

# Cosine similarity (pre-projector CLIP features) above which a token repeats what an
# earlier frame gave. CLIP layer -2 features of an unchanged patch in consecutive
# frames of real video sit well above 0.9 (codec noise only); a changed patch drops below.
DEFAULT_DEDUP_THRESHOLD = 0.9

# Mean absolute pixel difference (0–255 levels) under which --skip-static reuses a frame's
# features (vidprune.pipeline.frame_reuse): about H.264's noise on a still scene, while an
# object moving over a tenth of the frame changes the mean by several levels.
# Its agreement with full processing: docs/performance.md.
DEFAULT_SKIP_STATIC_THRESHOLD = 1.0

DECODE_BACKENDS = ("pyav", "decord")
# vidprune.engines.ENGINES, spelled here so that declaring the flags imports no torch (tests check they are equal)
ENGINES = ("hf", "vllm")
# the engine settings that only the vLLM engine takes (the ``engine`` section less ``engine`` and ``dtype``)
VLLM_SETTINGS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "enforce_eager", "vllm_options")
# vidprune.pruners.DEDUP_REFERENCES, spelled here so that declaring the flags imports no torch
# (tests/test_configs.py checks they are equal)
DEDUP_REFERENCES = ("kept", "previous", "kept_any")

# section -> (CLI group title, what the section configures)
SECTIONS = {
    "model": ("model", "VideoLLM.from_pretrained"),
    "decode": ("frames", "DecodeStage"),
    "encode": ("frames", "EncodeStage"),
    "select": ("pruning", "SelectStage"),
    "ivtp": ("IVTP (pruning inside the LLM, conditioned on the question; off by default)", "IVTPSchedule.from_options"),
    "generate": ("generation", "AnswerStage"),
    "engine": ("LLM engine (hf: transformers generate(); vllm: a vLLM engine, docs/vllm.md)", "create_engine"),
}


# ----------------------------------------------------------------------------- CLI value parsers
def _parse_json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"enable_chunked_prefill\": false}}', got {value!r}")
    return parsed


def _parse_budget(value: str) -> int | str:
    if value.lower() in ("none", "off", "full"):
        return "none"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be an integer or 'none', got {value!r}") from None


def _parse_ivtp_schedule(value: str) -> list[list[float]]:
    try:
        return [[int(k), float(r)] for k, r in (pair.split(":") for pair in value.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ivtp schedule must look like '2:0.5,8:0.5', got {value!r}") from None


def _parse_ivtp_fusion(value: str) -> str | list[float]:
    if value in ("none", "mean"):
        return value
    try:
        return [float(w) for w in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ivtp fusion must be none, mean or comma-separated weights, got {value!r}") from None


# device_map values transformers/accelerate compute themselves (else: a {module: device} map)
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
QUANTIZATIONS = ("8bit", "4bit")  # bitsandbytes, the LLM only


def _parse_device_map(value: str) -> str | dict:
    if value in DEVICE_MAP_STRATEGIES:
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"device map must be one of {', '.join(DEVICE_MAP_STRATEGIES)} or a JSON "
                                         f"object of module -> device, got {value!r}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"device map must be a JSON object of module -> device, got {value!r}")
    return parsed


def _parse_max_memory(value: str) -> dict:
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    else:
        try:
            return {k.strip(): v.strip() for k, v in (pair.split("=") for pair in value.split(","))}
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"max memory must look like '0=20GiB,1=20GiB,cpu=60GiB', got {value!r}")


@dataclass(frozen=True)
class Option:
    """The declaration of one option (one :class:`VidpruneConfig` field).

    Attributes:
        sections: the sections whose constructors take it (``SECTIONS`` keys).
        arg: its keyword in those constructors (default: the field's name).
        help: the CLI help text (and the docs' description).
        parse: CLI value parser (``int``, ``float``, a function), None for str.
        choices: the allowed values, when they are a closed list.
        true_flag / false_flag: for booleans, the flags that set True / False.
        flag: the CLI flag (default ``--field-name``); None with ``cli=False``.
    """

    sections: tuple[str, ...]
    help: str
    arg: str | None = None
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    true_flag: str | None = None
    false_flag: str | None = None
    flag: str | None = None
    metavar: str | None = None


def _option(default: Any, *sections: str, help: str, factory: Callable | None = None, **kw: Any):
    metadata = {"option": Option(sections=sections, help=help, **kw)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class VidpruneConfig:
    """All options of a run. ``None`` means "the model family's default" where noted.

    Fields are grouped by section; :meth:`section` gives one section as the keyword
    arguments of the stage it configures.
    """

    # --- model loading (VideoLLM.from_pretrained)
    model: str | None = _option(None, "model", arg="name_or_path",
                                help="hub id or checkpoint directory (Video-LLaVA, LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2.5-VL)")
    device: str = _option("cpu", "model", help="cpu, cuda, cuda:1, ... (default cpu)")
    dtype: str | None = _option(None, "model", "engine",
                                help="float32, float16 or bfloat16, or a torch dtype in Python (default: float32 on CPU); "
                                     "the vLLM engine's too")
    device_map: Any = _option(None, "model", parse=_parse_device_map, metavar="MAP",
                              help="split the model over devices: auto (balanced, sequential) or a JSON map "
                                   "'{\"model.language_model.layers.20\": 1, ...}' (devices: 0, cuda:1, cpu, disk); "
                                   "--device is then not used for placement")
    max_memory: dict | None = _option(None, "model", parse=_parse_max_memory, metavar="MEM",
                                      help="with --device-map auto: memory per device, e.g. '0=20GiB,1=20GiB,cpu=60GiB'")
    offload_folder: str | None = _option(None, "model", metavar="DIR",
                                         help="where a device map's 'disk' modules are kept (needed with disk offload)")
    attn_implementation: str | None = _option(None, "model", choices=ATTN_IMPLEMENTATIONS,
                                              help="the LLM's and tower's attention: sdpa (transformers' default), "
                                                   "eager or flash_attention_2 (needs flash-attn and a GPU)")
    revision: str | None = _option(None, "model", help="hub revision (branch, tag or commit) of --model")
    trust_remote_code: bool = _option(False, "model", true_flag="--trust-remote-code",
                                      help="let transformers run the checkpoint's own code (hub ids only)")
    quantization: Any = _option(None, "model", choices=QUANTIZATIONS,
                                help="bitsandbytes 8bit or 4bit weights for the LLM (vision side stays in --dtype); "
                                     "needs bitsandbytes")
    keep_cls: bool = _option(True, "model", false_flag="--drop-cls",
                             help="Video-LLaVA: do not hand on each frame's [CLS] token")
    prune_pooled: bool = _option(True, "model", false_flag="--prune-unpooled",
                                 help="LLaVA-NeXT-Video: prune the 576 unpooled tokens instead of the 144 pooled ones")
    # --- frames (DecodeStage, EncodeStage)
    frames: int | None = _option(None, "decode", arg="num_frames", parse=int,
                                 help="sample N frames uniformly (default: the family's, see docs/models.md; even for Qwen2.5-VL)")
    fps: float | None = _option(None, "decode", parse=float,
                                help="sample at F frames per second instead (cap with --max-frames)")
    max_frames: int | None = _option(None, "decode", parse=int, help="at most this many frames with --fps")
    decode_backend: str = _option("pyav", "decode", arg="backend", choices=DECODE_BACKENDS,
                                  help="pyav (default) or decord (falls back to PyAV when it cannot read a file)")
    encoder_batch_size: int | None = _option(None, "encode", arg="batch_size", parse=int,
                                             help="frames per vision-tower call (default: all)")
    reuse_frames: bool = _option(True, "encode", true_flag="--reuse-frames", false_flag="--no-reuse-frames",
                                 help="a frame (Qwen2.5-VL: temporal patch) whose pixels equal the last encoded one "
                                      "reuses its features instead of running the vision tower (default on; the same ids)")
    skip_static: bool = _option(False, "encode", true_flag="--skip-static",
                                help="also reuse the last encoded frame's features when the mean absolute pixel "
                                     "difference to it is at most --skip-static-threshold (default off; changes "
                                     "results slightly, see docs/performance.md)")
    skip_static_threshold: float = _option(DEFAULT_SKIP_STATIC_THRESHOLD, "encode", parse=float,
                                           help=f"mean absolute pixel difference, in 0-255 levels, under which "
                                                f"--skip-static reuses a frame ({DEFAULT_SKIP_STATIC_THRESHOLD})")
    # --- per-frame pruning, cross-frame dedup and the budget (SelectStage)
    budget: int | None = _option(None, "select", parse=_parse_budget,
                                 help="total visual tokens handed to the LLM per video, or 'none'")
    pruner: str = _option("vispruner", "select", help="per-frame pruner (see `vidprune pruners`; default vispruner)")
    important_ratio: float = _option(0.5, "select", parse=float,
                                     help="VisPruner's share of important tokens (default 0.5)")
    dedup: bool = _option(True, "select", true_flag="--dedup", false_flag="--no-dedup",
                          help="cross-frame dedup on (default) / off")
    dedup_threshold: float = _option(DEFAULT_DEDUP_THRESHOLD, "select", parse=float,
                                     help=f"cosine similarity at which a token is a duplicate ({DEFAULT_DEDUP_THRESHOLD})")
    dedup_reference: str = _option("kept", "select", choices=DEDUP_REFERENCES,
                                   help="what a token is compared with: kept tokens of earlier frames (default), "
                                        "the previous frame, or any kept token at the same position")
    dedup_window: int | None = _option(None, "select", parse=int, help="frames back that dedup compares with (default: all)")
    seed: int = _option(0, "select", parse=int, help="seed of the random pruner (its draw per frame depends on the "
                                                    "seed and the frame alone)")
    # --- IVTP: prune again inside the LLM, conditioned on the question (off by default)
    ivtp_layer: int | None = _option(None, "ivtp", arg="layer", parse=int,
                                     help="k: score after layer k-1, run layers >= k on the kept tokens")
    ivtp_keep: float | None = _option(None, "ivtp", arg="keep", parse=float,
                                      help="share of visual tokens kept at layer k, in (0, 1]")
    ivtp_schedule: list | None = _option(None, "ivtp", arg="schedule", parse=_parse_ivtp_schedule,
                                         help="progressive pruning instead of --ivtp-layer/--ivtp-keep, e.g. '2:0.5,8:0.5'")
    ivtp_fusion: Any = _option(None, "ivtp", arg="fusion", parse=_parse_ivtp_fusion,
                               help="score fusion over layers <= k: 'none' (default), 'mean', or weights "
                                    "'0.5,0,2' for layers 0..k")
    # --- generation (AnswerStage)
    max_new_tokens: int = _option(64, "generate", parse=int, help="tokens generated at most (default 64)")
    do_sample: bool = _option(False, "generate", true_flag="--sample", help="sample instead of greedy")
    temperature: float = _option(1.0, "generate", parse=float, help="sampling temperature (with --sample)")
    top_p: float = _option(1.0, "generate", parse=float, help="nucleus sampling mass (with --sample)")
    sample_seed: int = _option(0, "generate", arg="seed", parse=int,
                               help="seed of the answer's own sampling stream (with --sample): the same seed and the "
                                    "same questions in the same order give the same samples; successive answers "
                                    "differ; the caller's global torch RNG is never touched")
    reuse_prefix: bool = _option(True, "generate", true_flag="--prefix-reuse", false_flag="--no-prefix-reuse",
                                 help="several questions about one video: prefill the video once and reuse its KV "
                                      "cache (the same ids; greedy, without IVTP); default on")
    # --- the LLM engine (vidprune.engines.create_engine); the vision side runs the same with either
    engine: str = _option("hf", "engine", arg="name", choices=ENGINES,
                          help="hf (transformers generate(), default) or vllm (a vLLM engine: continuous batching, "
                               "prefix caching, tensor parallelism; docs/vllm.md)")
    tensor_parallel_size: int | None = _option(None, "engine", parse=int, help="vLLM: GPUs one engine spans (default 1)")
    gpu_memory_utilization: float | None = _option(None, "engine", parse=float,
                                                   help="vLLM: its share of the GPU's memory, in (0, 1] (the vision "
                                                        "tower in this process is outside it; default vLLM's 0.9)")
    max_model_len: int | None = _option(None, "engine", parse=int,
                                        help="vLLM: the longest prompt + answer in tokens (default: the model's)")
    enforce_eager: bool | None = _option(None, "engine", true_flag="--enforce-eager",
                                         help="vLLM: no CUDA graphs / compilation (slower decode, quicker start)")
    vllm_options: dict | None = _option(None, "engine", parse=_parse_json_object, metavar="JSON",
                                        help="vLLM: further vllm.LLM keywords as a JSON object, e.g. "
                                             "'{\"enable_chunked_prefill\": false}'")

    def __post_init__(self) -> None:
        # a torch dtype (torch.bfloat16) is held by its name, so a config stays plain data (YAML, JSON, Ray)
        if type(self.dtype).__module__ == "torch" and str(self.dtype).startswith("torch."):
            self.dtype = str(self.dtype)[len("torch."):]

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

    def section(self, name: str) -> dict[str, Any]:
        """The options of one section as the keyword arguments of what it configures (``SECTIONS``)."""
        if name not in SECTIONS:
            raise ConfigError(f"Unknown option section {name!r}. Has to be one of {list(SECTIONS)}")
        return {opt.arg or key: getattr(self, key) for key, opt in OPTIONS.items() if name in opt.sections}

    # --------------------------------------------------------------- validate
    def problems(self) -> list[str]:
        """Every problem with these options, as short phrases (empty when valid)."""
        p: list[str] = []

        def add(problem: str | None) -> None:
            if problem is not None:
                p.append(problem)

        for name in ("budget", "frames", "max_frames", "encoder_batch_size", "dedup_window"):
            if getattr(self, name) is not None:
                add(problem_positive_int(name, getattr(self, name)))
        add(problem_positive_int("max_new_tokens", self.max_new_tokens))
        for name in ("seed", "sample_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                p.append(f"{name} must be an integer, got {value!r}")
        if self.fps is not None:
            add(problem_positive_number("fps", self.fps))
        if self.frames is not None and self.fps is not None:
            p.append("give either frames (uniform sampling) or fps (rate sampling), not both")
        add(problem_in_range("important_ratio", self.important_ratio, 0.0, 1.0))
        add(problem_in_range("dedup_threshold", self.dedup_threshold, 0.0, 1.0, low_open=True))
        add(problem_in_range("skip_static_threshold", self.skip_static_threshold, 0.0, 255.0))
        if self.dedup_reference not in DEDUP_REFERENCES:
            p.append(f"dedup_reference must be one of {', '.join(DEDUP_REFERENCES)}, got {self.dedup_reference!r}")
        elif self.dedup_reference == "previous" and self.dedup_window is not None:
            p.append("dedup_window has no effect with dedup_reference 'previous' (it compares with the previous frame only)")
        if self.decode_backend not in DECODE_BACKENDS:
            p.append(f"decode_backend must be one of {', '.join(DECODE_BACKENDS)}, got {self.decode_backend!r}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            p.append(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")
        p += device_problems(self.device, DTYPE_NAMES.get(self.dtype), hardware=False)  # this machine: at load
        if problem_positive_number("temperature", self.temperature):
            p.append(f"temperature must be > 0, got {self.temperature!r}")
        add(problem_in_range("top_p", self.top_p, 0.0, 1.0, low_open=True))
        from .pruners import list_pruners

        if self.pruner not in list_pruners():
            p.append(f"pruner must be one of {', '.join(list_pruners())}, got {self.pruner!r}")
        elif self.pruner == "none" and self.budget is not None:
            p.append("pruner 'none' keeps every token: drop the budget or choose another pruner")
        try:
            self.ivtp()
        except ConfigError as exc:
            p.append(str(exc))
        p += self.loading_problems()
        if self.model is not None and not isinstance(self.model, str):
            p.append(f"model must be a hub id or a directory, got {self.model!r}")
        p += self.engine_problems()
        return p

    def engine_problems(self) -> list[str]:
        """Problems with the ``engine`` section (no vLLM import: whether it is installed is checked at resolve)."""
        p: list[str] = []
        if self.engine not in ENGINES:
            return [f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"]
        given = [name for name in VLLM_SETTINGS if getattr(self, name) is not None]
        if self.engine != "vllm":
            return [f"{name} is a vLLM engine setting: add engine 'vllm' (--engine vllm) or drop it" for name in given]
        for name in ("tensor_parallel_size", "max_model_len"):
            if getattr(self, name) is not None:
                problem = problem_positive_int(name, getattr(self, name))
                if problem:
                    p.append(problem)
        if self.gpu_memory_utilization is not None:
            problem = problem_in_range("gpu_memory_utilization", self.gpu_memory_utilization, 0.0, 1.0, low_open=True)
            if problem:
                p.append(problem)
        if self.enforce_eager is not None and not isinstance(self.enforce_eager, bool):
            p.append(f"enforce_eager must be true or false, got {self.enforce_eager!r}")
        if self.vllm_options is not None:
            from .engines.vllm_plugin import VLLM_RESERVED_OPTIONS

            if not isinstance(self.vllm_options, dict) or not all(isinstance(k, str) for k in self.vllm_options):
                p.append(f"vllm_options must be a mapping of vllm.LLM keywords, got {self.vllm_options!r}")
            else:
                for key in sorted(set(self.vllm_options) & set(VLLM_RESERVED_OPTIONS)):
                    p.append(f"vllm_options may not set {key!r}: vidprune sets it"
                             + (f" (use the {key} option)" if key in OPTIONS else ""))
        if self.ivtp_layer is not None or self.ivtp_schedule is not None:
            p.append("IVTP needs the attention rows of the LLM's layers, which vLLM's paged attention does not "
                     "expose: use engine 'hf' for IVTP")
        return p

    def loading_problems(self) -> list[str]:
        """Problems with the loading options (``device_map`` ... ``quantization``) and what they are combined with."""
        p: list[str] = []
        dm = self.device_map
        if dm is not None:
            if isinstance(dm, str) and dm not in DEVICE_MAP_STRATEGIES:
                p.append(f"device_map must be one of {', '.join(DEVICE_MAP_STRATEGIES)} or a map of module -> device, "
                         f"got {dm!r}")
            elif isinstance(dm, dict):
                bad = [k for k, v in dm.items() if not isinstance(k, str) or isinstance(v, bool)
                       or not isinstance(v, (str, int))]
                if bad or not dm:
                    p.append(f"device_map must map module names to devices (0, 'cuda:1', 'cpu', 'disk'), got {dm!r}")
                elif "disk" in dm.values() and not self.offload_folder:
                    p.append("device_map sends modules to 'disk' but no offload_folder is given; add --offload-folder DIR")
            elif not isinstance(dm, (str, dict)):
                p.append(f"device_map must be a strategy name or a map of module -> device, got {dm!r}")
        if self.max_memory is not None:
            if not isinstance(self.max_memory, dict) or not self.max_memory:
                p.append(f"max_memory must map devices to sizes, e.g. {{0: '20GiB', 'cpu': '60GiB'}}, got {self.max_memory!r}")
            elif dm is None:
                p.append("max_memory bounds a device_map: add --device-map auto")
        if self.offload_folder is not None and dm is None:
            p.append("offload_folder holds a device_map's 'disk' modules: add --device-map")
        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            p.append(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                     f"got {self.attn_implementation!r}")
        elif self.attn_implementation == "flash_attention_2" and (self.ivtp_layer is not None
                                                                  or self.ivtp_schedule is not None):
            p.append("IVTP with attn_implementation 'flash_attention_2' is not supported (its re-padded layouts and "
                     "masks are tested with sdpa and eager only); use --attn-implementation sdpa or turn IVTP off")
        if not isinstance(self.trust_remote_code, bool):
            p.append(f"trust_remote_code must be true or false, got {self.trust_remote_code!r}")
        q = self.quantization
        if q is not None:
            if not (q in QUANTIZATIONS or isinstance(q, dict)):
                p.append(f"quantization must be one of {', '.join(QUANTIZATIONS)} (or BitsAndBytesConfig keywords), "
                         f"got {q!r}")
            else:
                import importlib.util

                if importlib.util.find_spec("bitsandbytes") is None:
                    p.append(f"quantization {q!r} needs bitsandbytes, which is not installed; pip install "
                             "bitsandbytes (CUDA), or drop --quantization")
        return p

    def validate(self) -> "VidpruneConfig":
        """Raise one :class:`ConfigError` listing every problem; return self when valid."""
        problems = self.problems()
        if problems:
            raise ConfigError("invalid options: " + "; ".join(problems))
        return self

    # ------------------------------------------------------------- derived
    def ivtp(self):
        """The :class:`~vidprune.pruners.ivtp.IVTPSchedule` these options describe (None when IVTP
        is off). Layer range is checked against the model by ``IVTPSchedule.validate(num_layers)``."""
        from .pruners.ivtp import IVTPSchedule

        schedule = IVTPSchedule.from_options(**self.section("ivtp"))
        if schedule is not None:
            problems = [q for q in schedule.problems(num_layers=10**9) if "out of range" not in q]
            if any(k <= 0 for k in schedule.prune_layers):
                problems.insert(0, f"ivtp layer must be >= 1, got {min(schedule.prune_layers)}")
            if problems:
                raise ConfigError("; ".join(problems))
        return schedule

    def generate_kwargs(self) -> dict[str, Any]:
        """``generate()`` keywords: the sampling ones only when sampling."""
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


# key -> its declaration, in field order
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(VidpruneConfig)}


# ----------------------------------------------------------------------------------- CLI
def add_option_flags(parser: argparse.ArgumentParser, *, exclude: tuple[str, ...] = (),
                     hide: tuple[str, ...] = ()) -> None:
    """Add one flag per option (grouped by section, help from the declaration), plus ``--config``.

    ``exclude``: options without a flag; ``hide``: options whose flags parse but stay out of
    ``--help`` (an entry point that refuses them in its own words).

    A flag not given leaves its ``dest`` None, so :func:`options_from_args` hands on only what
    the user set and the preset's value stays.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(title: str):
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    for key, opt in OPTIONS.items():
        if key in exclude:
            continue
        g = group(SECTIONS[opt.sections[0]][0])
        if key == "model":
            g.add_argument("--model", help=opt.help)
            g.add_argument("--config", help="YAML preset: a file or a shipped preset's name (`vidprune presets`); flags override it")
            continue
        if opt.true_flag or opt.false_flag:
            if opt.true_flag:
                g.add_argument(opt.true_flag, dest=key, action="store_true", default=None, help=opt.help)
            if opt.false_flag:
                g.add_argument(opt.false_flag, dest=key, action="store_false", default=None,
                               help=None if opt.true_flag else opt.help)
            continue
        kwargs: dict[str, Any] = {"dest": key, "help": argparse.SUPPRESS if key in hide else opt.help}
        if opt.parse is not None:
            kwargs["type"] = opt.parse
        if opt.choices is not None:
            kwargs["choices"] = list(opt.choices)
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        g.add_argument(opt.flag or "--" + key.replace("_", "-"), **kwargs)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The option flags the user gave, as :class:`VidpruneConfig` overrides (flags not given are left out)."""
    opts = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    if opts.get("budget") == "none":
        opts["budget"] = None
    return opts


# ------------------------------------------------------------------------------ resolve
# Options whose ``None`` is a choice ("no budget", "the family's frames"), not "not given".
_NONE_IS_A_CHOICE = ("budget", "dedup", "frames", "fps")


def check_pruner_runs(cfg: VidpruneConfig, options: dict[str, Any]) -> None:
    """Refuse a pruner asked for (``options``: what the user set) that would not run: no budget, no pruning.

    Entry points without a budget of their own call it (``ask``, ``job``); the demo sizes a
    default budget instead.
    """
    if "pruner" in options and cfg.pruner != "none" and cfg.budget is None:
        raise ConfigError(f"pruner {cfg.pruner!r} prunes to a budget, and no budget was given, so every token "
                          "would reach the LLM unpruned; pass a budget (--budget N) or drop --pruner")


def resolve_config(model: str | None = None, config: str | os.PathLike | dict | None = None, *,
                   hf_config: Any = None, **options: Any) -> tuple[VidpruneConfig, Any]:
    """Preset (file, preset name or dict) + keyword overrides → (validated config, checkpoint info).

    The checkpoint's :class:`~vidprune.video_models.checkpoint.CheckpointInfo` (family, HF config,
    visual geometry) is read from its config alone: no weights load. ``hf_config``: the config of a
    model already loaded (``VideoQA.from_model``), used instead of reading the checkpoint's. The returned config has
    the family's frame count filled in (``frames``) unless ``fps`` sampling was asked for.

    Raises:
        ConfigError / ModelLoadError: one line, before anything heavy starts.
    """
    from .plan import plan_tokens
    from .video_models.checkpoint import inspect_checkpoint
    from .video_models.hf_internals import check_ivtp_internals

    preset = load_preset(config) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    cfg = VidpruneConfig.from_dict(preset, source=str(config) if config else "options")
    explicit = {k: v for k, v in options.items() if k in _NONE_IS_A_CHOICE}
    cfg = cfg.replace(model=model, **{k: v for k, v in options.items() if k not in explicit})
    cfg = dataclasses.replace(cfg, **explicit)  # budget=None / frames=None are meaningful: "no budget"
    if "frames" in options and "fps" not in options:  # an explicit sampling choice replaces the preset's
        cfg = dataclasses.replace(cfg, fps=None)
    elif "fps" in options and "frames" not in options:
        cfg = dataclasses.replace(cfg, frames=None)
    if cfg.model is None and hf_config is None:
        raise ConfigError("no model given; pass a hub id or a checkpoint directory (--model)")
    cfg.validate()
    from .pruners import check_pruner_grid
    from .video_models.checkpoint import checkpoint_info_from_config

    if hf_config is not None:
        info = checkpoint_info_from_config(hf_config, keep_cls=cfg.keep_cls, prune_pooled=cfg.prune_pooled)
    else:
        info = inspect_checkpoint(cfg.model, keep_cls=cfg.keep_cls, prune_pooled=cfg.prune_pooled,  # no weights
                                  revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    check_pruner_grid(cfg.pruner, info.geometry.dynamic)
    if cfg.engine == "vllm":
        _check_vllm_engine(info.family.model_type)
    per_unit = info.geometry.frames_per_unit  # Qwen2.5-VL pairs frames into temporal patches
    if cfg.frames is not None and cfg.frames % per_unit:
        raise ConfigError(
            f"frames={cfg.frames}: {info.family.model_type} pairs frames into temporal patches of {per_unit}, "
            f"so the frame count must be a multiple of {per_unit}; use {cfg.frames - cfg.frames % per_unit or per_unit} "
            f"or {cfg.frames + per_unit - cfg.frames % per_unit}"
        )
    if cfg.fps is None:
        if cfg.frames is None:
            cfg = dataclasses.replace(cfg, frames=info.family.default_num_frames)
        # budget vs the tokens kept outside pruning ([CLS], newline)
        plan_tokens(info.geometry, info.geometry.units(cfg.frames), cfg.budget)
    schedule = cfg.ivtp()
    if schedule is not None:
        schedule.validate(info.config.get_text_config().num_hidden_layers)
        info.family.check_ivtp_schedule(info.config, schedule)  # e.g. Qwen3-VL: not inside the DeepStack layers
        check_ivtp_internals()  # an untested transformers is refused here, before any weights load
    return cfg, info


def _check_vllm_engine(model_type: str) -> None:
    """engine 'vllm': the family has a vLLM class and vLLM (with vidprune's plugin) is installed; one line if not."""
    from .engines.vllm_plugin import VLLM_ARCHITECTURES

    if model_type not in VLLM_ARCHITECTURES:
        why = ("vLLM has no model class for it" if model_type == "video_llava"
               else "vidprune's vLLM engine does not run it yet")
        raise ConfigError(f"engine 'vllm' cannot run {model_type}: {why}; use engine 'hf' "
                          f"(engine 'vllm' runs {', '.join(sorted(VLLM_ARCHITECTURES))})")
    from .engines.vllm_plugin import vllm_problem

    problem = vllm_problem()
    if problem is not None:
        raise ConfigError(problem)
