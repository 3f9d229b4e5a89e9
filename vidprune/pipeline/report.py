"""The report of an answer: token counts at each stage, FLOPs, timings and the options that ran.

One implementation for every path that answers (``VideoQA`` in-process, the Ray answer actor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..flops import llm_flops, llm_layer_flops
from .stages import PrunedVideo

if TYPE_CHECKING:
    from ..config import VidpruneConfig
    from ..video_models.base import VideoLLM
    from .stages import SelectStage

__all__ = ["answer_report", "encoder_counts"]


def encoder_counts(video: PrunedVideo, frames_per_unit: int = 1) -> dict[str, int]:
    """How many units (frames; Qwen2.5-VL: temporal patches) ran the vision tower and how many reused features.

    ``{"units", "encoded", "reused", "frames_per_unit"}``; a unit not checked for reuse counts as encoded.
    """
    reused = sum(1 for f in video.frames if f.get("reused"))
    return {"units": len(video.frames), "encoded": len(video.frames) - reused, "reused": reused,
            "frames_per_unit": frames_per_unit}


def answer_report(cfg: "VidpruneConfig", llm: "VideoLLM", select_stage: "SelectStage", ivtp_schedule: Any,
                  video: PrunedVideo, question: str, out: dict[str, Any]) -> dict[str, Any]:
    """The report of one answer (the CLI's ``--json``): tokens at each stage, FLOPs, timings, options.

    ``out`` is one item of :meth:`AnswerStage.answer_tokens`; the in-process ``VideoQA`` and the Ray
    answer actor both build their reports here.
    """
    text_tokens = out["prompt_tokens"] - video.tokens_count["to_llm"]
    full_seq = text_tokens + video.tokens_count["full"]
    pruned_seq = out["prompt_tokens"]
    flops_full = llm_flops(llm.config.text_config, full_seq)
    ivtp_info = out.get("ivtp")
    if ivtp_info is not None:
        per_layer = [llm_layer_flops(llm.config.text_config, i, n) for i, n in enumerate(ivtp_info["tokens_per_layer"])]
        flops_pruned = sum(per_layer)
        schedule = ivtp_schedule
        ivtp_report = {"schedule": [list(st) for st in schedule.stages],
                       "fusion": schedule.fusion if isinstance(schedule.fusion, str) else dict(schedule.fusion),
                       "kept": ivtp_info["kept"], "visual_tokens_in": video.tokens_count["to_llm"],
                       "visual_tokens_kept": len(ivtp_info["kept"]),
                       "tokens_per_layer": ivtp_info["tokens_per_layer"], "flops_per_layer": per_layer}
    else:
        flops_pruned = llm_flops(llm.config.text_config, pruned_seq)
        ivtp_report = None
    num_frames = len(video.frames)
    return {
        "answer": out["text"],
        "question": question,
        "model": llm.name_or_path,
        "family": llm.model_type,
        "frames": video.frames,
        "sampled_frames": video.sampled_frames or len(video.frames),
        "tokens": {**video.tokens_count, "budget": cfg.budget, "text": text_tokens},
        "flops": {
            "llm_prefill_full": flops_full,
            "llm_prefill_pruned": flops_pruned,
            "llm_ratio": round(flops_pruned / flops_full, 6),
            "vision_tower": llm.tower_flops(llm.config, num_frames,
                                            grid=None if video.layout is None else video.layout["grid"]),
        },
        "encoder": encoder_counts(video, llm.geometry.frames_per_unit),
        "timings_s": {**{k: round(v, 4) for k, v in video.timings_s.items()}, "generate": round(out["generate_s"], 4)},
        "decode": video.decode,
        "ivtp": ivtp_report,
        "warnings": video.warnings,
        "options": {"pruner": select_stage.pruner.name,
                    **{k: getattr(cfg, k) for k in ("budget", "important_ratio", "dedup", "dedup_threshold",
                                                 "dedup_reference", "keep_cls", "prune_pooled", "ivtp_layer",
                                                 "ivtp_keep", "ivtp_schedule", "ivtp_fusion",
                                                 "reuse_frames", "skip_static", "skip_static_threshold")}},
    }
