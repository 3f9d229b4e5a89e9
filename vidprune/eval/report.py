"""The sweep's report: aggregate JSON, a paper-shaped table (markdown + CSV) and PNG plots.

    write_report(out_dir, records, arms=..., benchmarks=..., counts=...)
    # -> out/aggregate.json, out/table.md, out/table.csv,
    #    out/accuracy_vs_tokens.png, out/latency_vs_tokens.png

Per (arm, benchmark) the aggregate holds the number of answers, the benchmark's primary
metric and the metrics beside it, mean visual tokens, FLOPs and latency. The primary
metric is accuracy for multiple choice; for open-ended benchmarks it is the judge's
accuracy when every answer of the benchmark has a verdict, else normalized exact match.
``relative_to_full`` is the metric as a percentage of the unpruned model's; an arm's
overall relative score is the mean over benchmarks, as the papers' "Avg." column.

The table has one row per arm (method x budget, the unpruned model first) and per
benchmark the columns of its metric (open-ended with a judge: accuracy and 0-5 score),
then the relative score.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .benchmarks import MULTIPLE_CHOICE, BenchmarkSpec
from .methods import FULL, Arm, TokenCounts, get_method

__all__ = ["aggregate", "markdown_table", "csv_table", "write_plots", "write_report",
           "AGGREGATE_FILE", "TABLE_MD", "TABLE_CSV", "ACCURACY_PLOT", "LATENCY_PLOT"]

AGGREGATE_FILE = "aggregate.json"
TABLE_MD = "table.md"
TABLE_CSV = "table.csv"
ACCURACY_PLOT = "accuracy_vs_tokens.png"
LATENCY_PLOT = "latency_vs_tokens.png"

# Plot panels per row before wrapping.
_PLOT_COLUMNS = 3


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _pct(flags: Sequence[bool]) -> float | None:
    return 100.0 * sum(bool(f) for f in flags) / len(flags) if flags else None


def _bench_metrics(recs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    m: dict[str, Any] = {"n": len(recs)}
    if kind == MULTIPLE_CHOICE:
        m["accuracy"] = _pct([r["correct"] for r in recs])
        m["no_answer_rate"] = _pct([r.get("extracted", "") == "" for r in recs])
    else:
        m["exact_match"] = _pct([r["exact_match"] for r in recs])
        m["contains_answer"] = _pct([r["contains_answer"] for r in recs])
        judged = [r["judge"] for r in recs if r.get("judge")]
        m["judged"] = len(judged)
        m["judge_accuracy"] = _pct([j["correct"] for j in judged])
        m["judge_score"] = _mean([j["score"] for j in judged])
    m["visual_tokens_mean"] = _mean([r["visual_tokens"] for r in recs])
    m["tokens_to_llm_mean"] = _mean([r["tokens"]["to_llm"] for r in recs])
    m["llm_tflops_mean"] = _mean([r["flops"]["llm_prefill_pruned"] / 1e12 for r in recs])
    m["llm_flops_ratio_mean"] = _mean([r["flops"]["llm_ratio"] for r in recs])
    latency_keys = sorted({k for r in recs for k in r["latency_s"]})
    m["latency_s_mean"] = {k: _mean([r["latency_s"][k] for r in recs if k in r["latency_s"]]) for k in latency_keys}
    return m


def aggregate(records: Sequence[dict[str, Any]], *, arms: Sequence[Arm], benchmarks: Sequence[BenchmarkSpec],
              counts: TokenCounts | None = None, judge: dict[str, Any] | None = None,
              model: str | None = None) -> dict[str, Any]:
    """The aggregate dict (what ``aggregate.json`` holds) from per-answer records."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_cell.setdefault((r["arm"], r["benchmark"]), []).append(r)
    primary: dict[str, str] = {}
    for spec in benchmarks:
        if spec.kind == MULTIPLE_CHOICE:
            primary[spec.name] = "accuracy"
        else:
            recs = [r for a in arms for r in by_cell.get((a.label, spec.name), [])]
            primary[spec.name] = "judge_accuracy" if recs and all(r.get("judge") for r in recs) else "exact_match"
    out_arms = []
    for arm in arms:
        results = {}
        for spec in benchmarks:
            recs = by_cell.get((arm.label, spec.name), [])
            if not recs:
                continue
            m = _bench_metrics(recs, spec.kind)
            m["metric"] = primary[spec.name]
            m["value"] = m[primary[spec.name]]
            results[spec.name] = m
        out_arms.append({"arm": arm.label, "method": arm.method, "method_title": get_method(arm.method).title,
                         "budget": arm.budget, "results": results})
    full = next((a for a in out_arms if a["method"] == FULL), None)
    for a in out_arms:
        rels = []
        for name, m in a["results"].items():
            base = full["results"].get(name, {}).get("value") if full else None
            rel = 100.0 * m["value"] / base if base and m["value"] is not None else None
            m["relative_to_full"] = rel
            if rel is not None:
                rels.append(rel)
        a["relative_to_full"] = _mean(rels) if len(rels) == len(a["results"]) and rels else None
    return {
        "model": model,
        "judge": judge,
        "token_counts": None if counts is None else {"full": counts.full, "stream": counts.stream},
        "benchmarks": {s.name: {"title": s.title, "kind": s.kind, "metric": primary[s.name]} for s in benchmarks},
        "arms": out_arms,
    }


def _columns(agg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(benchmark, metric key, header) per table column."""
    cols = []
    for name, b in agg["benchmarks"].items():
        if b["metric"] == "judge_accuracy":
            cols += [(name, "judge_accuracy", f"{b['title']} Acc"), (name, "judge_score", f"{b['title']} Score")]
        elif b["metric"] == "exact_match":
            cols.append((name, "exact_match", f"{b['title']} EM"))
        else:
            cols.append((name, "accuracy", f"{b['title']} Acc"))
    return cols


def _budget_cell(arm: dict[str, Any], counts: dict[str, Any] | None) -> str:
    full = counts["full"] if counts else None
    if arm["method"] == FULL:
        return f"{full} (100%)" if full else "full"
    share = f" ({100.0 * arm['budget'] / full:.1f}%)" if full else ""
    return f"{arm['budget']}{share}"


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key == "judge_score" else f"{value:.1f}"


def _mean_tokens(arm: dict[str, Any]) -> float | None:
    return _mean([m["visual_tokens_mean"] for m in arm["results"].values() if m["visual_tokens_mean"] is not None])


def markdown_table(agg: dict[str, Any]) -> str:
    """Rows = method x budget (unpruned first), columns = benchmarks' metrics, then relative to full."""
    cols = _columns(agg)
    header = ["Method", "Budget", "Visual tokens"] + [c[2] for c in cols] + ["Rel. to full"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in agg["arms"]:
        tokens = _mean_tokens(arm)
        row = [arm["method_title"], _budget_cell(arm, agg["token_counts"]), "-" if tokens is None else f"{tokens:.0f}"]
        row += [_fmt(arm["results"].get(b, {}).get(k), k) for b, k, _ in cols]
        rel = arm["relative_to_full"]
        row.append("-" if rel is None else f"{rel:.1f}%")
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for name, b in agg["benchmarks"].items():
        if b["metric"] == "exact_match":
            notes.append(f"{b['title']}: no judge configured, normalized exact match shown (judge-free).")
    if agg.get("judge"):
        notes.append(f"Judge: {agg['judge']['model']} (Video-ChatGPT protocol: accuracy %, score 0-5).")
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def csv_table(agg: dict[str, Any]) -> str:
    """The table as CSV, numbers unformatted, one column per (benchmark, metric)."""
    cols = _columns(agg)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "arm", "budget", "visual_tokens_mean"] + [f"{b}_{k}" for b, k, _ in cols]
               + ["relative_to_full"])
    for arm in agg["arms"]:
        w.writerow([arm["method"], arm["arm"], "" if arm["budget"] is None else arm["budget"],
                    _mean_tokens(arm)] + [arm["results"].get(b, {}).get(k) for b, k, _ in cols]
                   + [arm["relative_to_full"]])
    return buf.getvalue()


def write_plots(agg: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Accuracy vs visual tokens and latency vs visual tokens, one panel per benchmark, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(agg["benchmarks"])
    ncols = min(_PLOT_COLUMNS, len(names))
    nrows = math.ceil(len(names) / ncols)
    written = []
    for filename, ylabel, pick in (
        (ACCURACY_PLOT, None, lambda m: m["value"]),
        (LATENCY_PLOT, "latency per answer (s)", lambda m: m["latency_s_mean"].get("total")),
    ):
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            bench = agg["benchmarks"][name]
            methods: dict[str, list[tuple[float, float]]] = {}
            full_point = None
            for arm in agg["arms"]:
                m = arm["results"].get(name)
                if not m or pick(m) is None or m["visual_tokens_mean"] is None:
                    continue
                point = (m["visual_tokens_mean"], pick(m))
                if arm["method"] == FULL:
                    full_point = point
                else:
                    methods.setdefault(arm["method_title"], []).append(point)
            for title, points in methods.items():
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=title)
            if full_point is not None:
                ax.axhline(full_point[1], color="gray", linestyle="--", linewidth=1)
                ax.plot([full_point[0]], [full_point[1]], marker="*", markersize=12, color="black", linestyle="none",
                        label="Full")
            metric = {"accuracy": "accuracy (%)", "judge_accuracy": "judge accuracy (%)",
                      "exact_match": "exact match (%)"}[bench["metric"]]
            ax.set_title(bench["title"])
            ax.set_xscale("log", base=2)  # budgets halve from row to row: even spacing
            ax.set_xlabel("visual tokens per video")
            ax.set_ylabel(ylabel or metric)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        path = Path(out_dir) / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def write_report(out_dir: str | os.PathLike, records: Sequence[dict[str, Any]], *, arms: Sequence[Arm],
                 benchmarks: Sequence[BenchmarkSpec], counts: TokenCounts | None = None,
                 judge: dict[str, Any] | None = None, model: str | None = None) -> dict[str, Any]:
    """Write aggregate.json, table.md, table.csv and the plots into ``out_dir``; return the aggregate."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(records, arms=arms, benchmarks=benchmarks, counts=counts, judge=judge, model=model)
    (out / AGGREGATE_FILE).write_text(json.dumps(agg, indent=2))
    (out / TABLE_MD).write_text(markdown_table(agg))
    (out / TABLE_CSV).write_text(csv_table(agg))
    try:
        write_plots(agg, out)
    except ImportError:
        print("vidprune: plots skipped: matplotlib is not installed (pip install 'vidprune[eval]')", file=sys.stderr)
    return agg
