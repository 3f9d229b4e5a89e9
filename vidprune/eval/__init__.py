"""Benchmark evaluation: video QA benchmarks, scoring, budget sweeps, reports, an lmms-eval plugin.

    vidprune eval --benchmark msvd_qa --annotations test_q.json --videos videos/ --model M --budgets 2048,227

Modules: ``benchmarks`` (one reader per published annotation layout; prompts come from
``vidprune.prompts``, shared with ``vidprune job``), ``scoring``
(option-letter extraction, exact match, the LLM judge), ``methods`` (methods as VideoQA
options, arms of a sweep), ``settings`` (eval presets and flags, validated whole),
``runner`` (the resumable sweep), ``ray_sweep`` (its answers on a Ray cluster through the
job machinery), ``report`` (aggregate, tables, plots), ``cli`` (``vidprune eval``) and
``lmms_plugin`` (the ``vidprune`` model for lmms-eval).

Importing this package loads no model and no lmms-eval.
"""

from .benchmarks import Sample, list_benchmarks, load_benchmark
from .methods import list_methods
from .scoring import JudgeClient, contains_answer, exact_match, extract_option_letter

__all__ = [
    "Sample",
    "list_benchmarks",
    "load_benchmark",
    "list_methods",
    "JudgeClient",
    "extract_option_letter",
    "exact_match",
    "contains_answer",
]
