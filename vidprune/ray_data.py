"""Ray Data: ``VideoQAPredictor``, a callable class for ``Dataset.map_batches`` over videos and questions.

    import ray
    from vidprune.ray_data import VideoQAPredictor

    ds = ray.data.read_json("questions.jsonl")           # rows with "video" and "question"
    answers = ds.map_batches(VideoQAPredictor, fn_constructor_kwargs={"model": "ckpt/", "budget": 227},
                             concurrency=2, num_gpus=1, batch_size=8)
    answers.write_parquet("answers/")

Each Ray Data actor builds one :class:`~vidprune.VideoQA` (the same stages, built the
same way as ``vidprune ask`` and the job's actors: from one resolved config) and answers
a batch: the rows of one video share its pruned token stream. Output columns: the input
columns, ``answer``, ``error`` (one line, or empty), and the report's key figures
(``num_frames``, ``tokens_full``, ``tokens_after_vispruner``, ``tokens_after_dedup``,
``tokens_to_llm``, ``llm_flops_ratio``, ``decode_s``, ``encode_s``, ``select_s``,
``generate_s``). A bad video gives its rows an ``error``; the batch goes on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError, VidpruneError

__all__ = ["VideoQAPredictor", "REPORT_COLUMNS"]

# Output column → where it is in an answer's report.
REPORT_COLUMNS: dict[str, tuple[str, str]] = {
    "tokens_full": ("tokens", "full"),
    "tokens_after_vispruner": ("tokens", "after_vispruner"),
    "tokens_after_dedup": ("tokens", "after_dedup"),
    "tokens_to_llm": ("tokens", "to_llm"),
    "llm_flops_ratio": ("flops", "llm_ratio"),
    "decode_s": ("timings_s", "decode"),
    "encode_s": ("timings_s", "encode"),
    "select_s": ("timings_s", "select"),
    "generate_s": ("timings_s", "generate"),
}


class VideoQAPredictor:
    """``ds.map_batches(VideoQAPredictor, fn_constructor_kwargs={"model": ..., **options})``.

    Args:
        model / config / options: as :meth:`vidprune.VideoQA.from_pretrained` takes them
            (checked before the weights load).
        video_column / question_column: the input columns (default ``video`` / ``question``).
    """

    def __init__(self, model: str | None = None, *, config: Any = None, video_column: str = "video",
                 question_column: str = "question", **options: Any):
        from .qa import VideoQA

        self.qa = VideoQA.from_pretrained(model, config=config, **options)
        self.video_column, self.question_column = video_column, question_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for column in (self.video_column, self.question_column):
            if column not in batch:
                raise ConfigError(f"the dataset has no {column!r} column (columns: {', '.join(batch)}); "
                                  f"pass video_column= / question_column= in fn_constructor_kwargs")
        videos = [str(v) for v in batch[self.video_column]]
        questions = [str(q) for q in batch[self.question_column]]
        rows: list[dict[str, Any]] = [{} for _ in videos]
        by_video: dict[str, list[int]] = {}
        for i, v in enumerate(videos):
            by_video.setdefault(v, []).append(i)
        for video, idx in by_video.items():
            try:
                pruned = self.qa.prepare(video)
                answers = self.qa.answer(pruned, [questions[i] for i in idx])
            except VidpruneError as exc:
                for i in idx:
                    rows[i] = {"answer": "", "error": " ".join(str(exc).split()), "num_frames": 0}
                continue
            for i, a in zip(idx, answers):
                rows[i] = {"answer": a.text, "error": "", "num_frames": len(a.report["frames"]),
                           **{col: a.report[sec][key] for col, (sec, key) in REPORT_COLUMNS.items()}}
        out = {k: np.asarray(v) for k, v in batch.items()}
        out["answer"] = np.asarray([r["answer"] for r in rows], dtype=object)
        out["error"] = np.asarray([r["error"] for r in rows], dtype=object)
        out["num_frames"] = np.asarray([r["num_frames"] for r in rows], dtype=np.int64)
        for col in REPORT_COLUMNS:
            dtype = np.float64 if col.endswith("_s") or col == "llm_flops_ratio" else np.int64
            out[col] = np.asarray([r.get(col, 0) for r in rows], dtype=dtype)
        return out
