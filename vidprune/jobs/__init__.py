"""``vidprune job``: many questions about many videos on Ray, resumable, each answered exactly once.

    vidprune job questions.jsonl --out answers.jsonl --model ckpt/ --budget 227            # local Ray
    vidprune job questions.jsonl --out answers.jsonl --model ckpt/ --address HEAD:6379    # a cluster
    ray job submit --address http://HEAD:8265 -- vidprune job questions.jsonl --out answers.jsonl --model ckpt/

An application on top of :class:`~vidprune.VideoQA` and :mod:`vidprune.pipeline.ray`:
:mod:`.manifest` (the questions), :mod:`.results` (the resumable results store, also
used by ``vidprune eval``), :mod:`.runner` (``run_job``), :mod:`.command` (the CLI).
Manual: docs/ray.md.
"""

import importlib

__all__ = ["JobItem", "read_manifest", "format_question", "ResultsFile", "JobSummary", "run_job",
           "check_results_match"]

# Where each public name lives; imported when first asked for (``vidprune --help`` needs none of them).
_HOME = {"JobItem": "manifest", "read_manifest": "manifest", "format_question": "manifest",
         "ResultsFile": "results", "JobSummary": "runner", "run_job": "runner", "check_results_match": "runner"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
