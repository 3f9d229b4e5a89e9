"""Benchmark: frames that repeat skip the vision tower; long videos are fetched by the byte ranges decoding needs.

    python benchmarks/bench_skip_and_fetch.py                               # all three tables, printed
    python benchmarks/bench_skip_and_fetch.py --write docs/performance.md   # and put them into the docs
    python benchmarks/bench_skip_and_fetch.py --only skip --frames 8,32     # one table, fewer frames

``skip``: ``ask`` time at a fixed budget on a static clip (a still scene with camera noise), a
doubled-frame clip (a 12 fps animation stored at 24 fps) and a moving clip, with 8, 32 and 128
frames (every frame of a clip that long, so a doubled frame is sampled twice), encoding every frame
(``reuse_frames=False``), with exact reuse (the default) and with ``skip_static``. The checkpoint
is Video-LLaVA's real tower shapes (ViT-L/14 at 224 px) with ``--layers`` Vicuna-7B decoder layers,
random bf16 weights (``seven_b.build_checkpoint``).

``agreement``: how far ``skip_static`` moves the result from full processing, per threshold: the
share of answers with the same ids and the mean Jaccard overlap of each frame's kept set, on the
generated videos the tests use (a moving square, scrolling texture, noise) and on static and
doubled-frame clips; the tiny Video-LLaVA checkpoint (fast; random weights).

``fetch``: 32 frames of 1-, 10- and 20-minute H.264 files (a keyframe every 10 s): from the local
disk at a cold cache (the file's pages dropped with ``POSIX_FADV_DONTNEED``; physical reads from
``/proc/self/io``), with the kernel's read-ahead as before and with the reader's fadvise hints;
from moto's S3 server and over HTTP (tests/range_server.py) on 127.0.0.1: bytes fetched and time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # range_server.py: the local HTTP and S3 servers of the tests

from bench_decode import make_video  # noqa: E402  benchmarks/bench_decode.py
from machine import describe  # noqa: E402  benchmarks/machine.py
from seven_b import build_checkpoint, write_into  # noqa: E402  benchmarks/seven_b.py

from vidprune import VideoQA  # noqa: E402
from vidprune.pipeline.decode import byte_source, read_video  # noqa: E402
from vidprune.samples import moving_square_frames, write_video  # noqa: E402

QUESTION = "What is moving?"
MODES = {"every frame": {"reuse_frames": False}, "exact reuse": {}, "skip_static": {"skip_static": True}}


# ----------------------------------------------------------------------------------------- clips
def clip_frames(kind: str, n: int, height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8: ``static`` (a still scene + camera noise of ±2 levels), ``doubled`` (n/2
    moving-square frames, each twice), ``moving`` (a moving square)."""
    rng = np.random.default_rng(seed)
    if kind == "static":
        still = moving_square_frames(1, height, width, seed=seed)[0].astype(np.int16)
        return np.stack([np.clip(still + rng.integers(-2, 3, still.shape), 0, 255) for _ in range(n)]).astype(np.uint8)
    if kind == "doubled":
        return np.repeat(moving_square_frames(max(1, n // 2), height, width, seed=seed), 2, axis=0)[:n]
    if kind == "moving":
        return moving_square_frames(n, height, width, seed=seed)
    raise ValueError(kind)


def clip_file(folder: Path, kind: str, n: int) -> str:
    """The clip as H.264 at 24 fps (what the decoder gives back is what is compared and encoded)."""
    path = folder / f"{kind}_{n}.mp4"
    if not path.exists():
        write_video(path, clip_frames(kind, n), fps=24)
    return str(path)


# ------------------------------------------------------------------------------------------ skip
def run_skip(frame_counts: list[int], budget: int, layers: int, rounds: int, folder: Path) -> str:
    ckpt = build_checkpoint("video_llava", folder / "ckpt", layers, vit_l=True)
    base = VideoQA.from_pretrained(str(ckpt), budget=budget, dtype="bfloat16", frames=frame_counts[0],
                                   max_new_tokens=4, encoder_batch_size=16)
    rows = []
    for n in frame_counts:
        for kind in ("static", "doubled", "moving"):
            path = clip_file(folder, kind, n)
            times: dict[str, list[float]] = {m: [] for m in MODES}
            reports: dict[str, dict] = {}
            for _ in range(rounds):
                for mode, options in MODES.items():  # interleaved
                    qa = VideoQA(base.llm, base.config.replace(frames=n, **options), base.checkpoint_info)
                    start = time.perf_counter()
                    answer = qa.ask(path, QUESTION)
                    times[mode].append(time.perf_counter() - start)
                    reports[mode] = answer.report
            best = {m: min(v) for m, v in times.items()}
            full = reports["every frame"]
            rows.append((n, kind, best, {m: r["encoder"]["encoded"] for m, r in reports.items()},
                         {m: [f["kept"] for f in r["frames"]] == [f["kept"] for f in full["frames"]]
                          for m, r in reports.items()}))
            print(f"{n:>4d} frames, {kind:>7s}: " + ", ".join(f"{m} {best[m]:.2f} s ({rows[-1][3][m]} encoded)"
                                                               for m in MODES), flush=True)
    lines = ["| frames | clip | every frame: ask | tower runs | exact reuse: ask | tower runs | speedup "
             "| skip_static: ask | tower runs | speedup | kept sets as every frame (exact / skip_static) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, kind, best, encoded, same in rows:
        e, x, s = best["every frame"], best["exact reuse"], best["skip_static"]
        lines.append(f"| {n} | {kind} | {e:.2f} s | {encoded['every frame']} | {x:.2f} s | {encoded['exact reuse']} "
                     f"| {e / x:.2f}x | {s:.2f} s | {encoded['skip_static']} | {e / s:.2f}x "
                     f"| {'yes' if same['exact reuse'] else 'NO'} / {'yes' if same['skip_static'] else 'no'} |")
    lines += ["", (f"`ask` (decode + encode + select + generate 4 tokens) at budget {budget}, Video-LLaVA's tower "
                   f"(ViT-L/14, 224 px) and {layers} Vicuna-7B decoder layer(s), random bf16 weights; each clip is "
                   f"N frames of 320x240 H.264 at 24 fps and all N are sampled; fastest of {rounds} interleaved "
                   f"round(s) on {describe('cpu')}. static: a still scene with ±2 levels of camera noise per frame "
                   "(x264 keeps some of it); doubled: a moving square at 12 fps, each frame stored twice; moving: "
                   f"the square moves every frame. skip_static at its default threshold.")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- agreement
def run_agreement(thresholds: list[float], folder: Path) -> str:
    from videos import make_moving_square_video, make_noise_video, make_video as make_stamped_video

    from vidprune.video_models.tiny import ensure_tiny_checkpoint

    clips = {
        "moving square (tests' sample)": clip_file(folder, "moving", 48),
        "scrolling texture (test_decode)": str(make_stamped_video(folder / "scroll.mp4", 48, 24, (160, 120), "libx264",
                                                                  moving=True)),
        "noise (long-file tests)": str(make_noise_video(folder / "noise.mp4", 48, 24, (128, 96), gop=24)),
        "square, pauses, lossless (dedup tests)": str(make_moving_square_video(
            folder / "square.mp4", 48, static_frames=range(10, 30)).path),
        "static + camera noise": clip_file(folder, "static", 48),
        "doubled frames": clip_file(folder, "doubled", 48),
    }
    base = VideoQA.from_pretrained(str(ensure_tiny_checkpoint("video_llava")), budget=120, frames=16, max_new_tokens=8)
    lines = ["| clip | exact reuse: reused / same ids / kept overlap | "
             + " | ".join(f"skip_static {t:g}: reused / same ids / kept overlap" for t in thresholds) + " |",
             "|---|---|" + "---|" * len(thresholds)]
    totals = {t: [0, 0, 0.0, 0] for t in [None, *thresholds]}  # reused units, same ids, overlap sum, clips
    for name, path in clips.items():
        full = VideoQA(base.llm, base.config.replace(reuse_frames=False), base.checkpoint_info).ask(path, QUESTION)
        cells = []
        for t in [None, *thresholds]:
            options = {} if t is None else {"skip_static": True, "skip_static_threshold": t}
            got = VideoQA(base.llm, base.config.replace(**options), base.checkpoint_info).ask(path, QUESTION)
            overlap = statistics.mean(  # two empty kept sets (a frame dedup dropped whole) agree
                len(set(a["kept"]) & set(b["kept"])) / len(set(a["kept"]) | set(b["kept"]))
                if a["kept"] or b["kept"] else 1.0 for a, b in zip(got.report["frames"], full.report["frames"]))
            same = got.token_ids == full.token_ids
            reused = got.report["encoder"]["reused"]
            cells.append(f"{reused}/16 / {'yes' if same else 'no'} / {overlap:.3f}")
            totals[t][0] += reused
            totals[t][1] += same
            totals[t][2] += overlap
            totals[t][3] += 1
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines.append("| **all** | " + " | ".join(f"{v[1]}/{v[3]} same ids, mean overlap {v[2] / v[3]:.3f}"
                                            for v in totals.values()) + " |")
    lines += ["", ("16 frames sampled uniformly from each 48-frame clip, budget 120 with dedup, the tiny random "
                   "Video-LLaVA checkpoint (tests' `tiny_checkpoints`), greedy 8 tokens. reused: frames that took "
                   "an earlier frame's features instead of running the tower (exact repeats included); same ids: "
                   "the answer's ids equal full processing's (`reuse_frames=False`, every frame through the tower); kept overlap: the mean over "
                   f"frames of |kept ∩ kept_full| / |kept ∪ kept_full| (1 where both are empty: dedup dropped the whole frame). On {describe('cpu')}.")]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- fetch
def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes"))


def _drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_fetch(minutes: list[int], size: tuple[int, int], rounds: int, cache: Path) -> str:
    from range_server import LocalS3, RangeHTTPServer

    files = {m: make_video(cache / f"fetch_{m}min_{size[0]}x{size[1]}_gop10s_grain12.mp4", 60 * m, size, 250, 12)
             for m in minutes}
    rows = []
    no_hints = byte_source._LocalFile.need
    with RangeHTTPServer(cache) as http, LocalS3() as s3:
        urls = {m: s3.put(p, p.name) for m, p in files.items()}
        for m, path in files.items():
            size_b = path.stat().st_size
            got: dict[str, list[tuple[float, int, int]]] = {k: [] for k in ("readahead", "hints", "s3", "http")}
            for _ in range(rounds):
                for mode in ("readahead", "hints"):
                    if mode == "readahead":  # the reader as before: no hints, the kernel's read-ahead on
                        byte_source._LocalFile.need = lambda self, spans: None
                    _drop_from_cache(path)
                    before, start = _read_bytes(), time.perf_counter()
                    clip = read_video(path, num_frames=32)
                    got[mode].append((time.perf_counter() - start, _read_bytes() - before, clip.stats["bytes_read"]))
                    byte_source._LocalFile.need = no_hints
                before_f, start = byte_source.bytes_fetched(urls[m]), time.perf_counter()
                clip = read_video(urls[m], num_frames=32)
                got["s3"].append((time.perf_counter() - start, byte_source.bytes_fetched(urls[m]) - before_f,
                                  clip.stats["bytes_read"]))
                before_h, start = http.bytes_sent, time.perf_counter()
                clip = read_video(http.url(path.name), num_frames=32)
                got["http"].append((time.perf_counter() - start, http.bytes_sent - before_h, clip.stats["bytes_read"]))
            med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in got.items()}
            rows.append((m, size_b, med))
            print(f"{m:>3d} min ({size_b / 1e6:.0f} MB): " + ", ".join(
                f"{k} {t:.2f} s {b / 1e6:.1f} MB ({100 * b / size_b:.1f} %)" for k, (t, b, _) in med.items()), flush=True)
    lines = ["| video | file | logical reads | disk, read-ahead (before): physical / time | disk, fadvise hints: "
             "physical / time | physical vs logical | local S3: fetched / time | HTTP: fetched / time |",
             "|---|---|---|---|---|---|---|---|"]
    for m, size_b, med in rows:
        logical = med["hints"][2]

        def cell(k: str) -> str:
            t, b, _ = med[k]
            return f"{b / 1e6:.1f} MB ({100 * b / size_b:.1f} %) / {t:.2f} s"

        lines.append(f"| {m} min | {size_b / 1e6:.0f} MB | {logical / 1e6:.1f} MB ({100 * logical / size_b:.1f} %) "
                     f"| {cell('readahead')} | {cell('hints')} | {med['hints'][1] / logical:.2f}x "
                     f"| {cell('s3')} | {cell('http')} |")
    lines += ["", (f"32 uniformly spaced frames (`read_video`, the index's table), H.264 {size[0]}x{size[1]} at 25 fps, "
                   "x264 ultrafast, grain 12, a keyframe every 10 s (benchmarks/bench_decode.py's long files); median of "
                   f"{rounds} round(s) on {describe('cpu')}. Disk: the file's pages dropped before each read "
                   "(POSIX_FADV_DONTNEED), physical reads from /proc/self/io; logical: the bytes FFmpeg and the index "
                   "readers asked for. S3: moto's server on 127.0.0.1 (bytes the reader fetched); HTTP: "
                   "tests/range_server.py on 127.0.0.1 (bytes it sent).")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated subset of: skip, agreement, fetch")
    parser.add_argument("--frames", default="8,32,128")
    parser.add_argument("--budget", type=int, default=227)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--thresholds", default="0.5,1,2,4")
    parser.add_argument("--minutes", default="1,10,20")
    parser.add_argument("--size", default="256x144", help="the long files' frame size, WxH")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vidprune-bench-fetch")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    todo = args.only.split(",") if args.only else ["skip", "agreement", "fetch"]
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "agreement" in todo:
            text = run_agreement([float(t) for t in args.thresholds.split(",")], folder)
            print(text)
            if args.write:
                write_into(args.write, "bench_skip_agreement", text)
        if "skip" in todo:
            text = run_skip([int(n) for n in args.frames.split(",")], args.budget, args.layers, args.rounds, folder)
            print(text)
            if args.write:
                write_into(args.write, "bench_skip", text)
    if "fetch" in todo:
        w, h = (int(x) for x in args.size.lower().split("x"))
        text = run_fetch([int(m) for m in args.minutes.split(",")], (w, h), args.rounds, args.cache)
        print(text)
        if args.write:
            write_into(args.write, "bench_fetch", text)


if __name__ == "__main__":
    main()
