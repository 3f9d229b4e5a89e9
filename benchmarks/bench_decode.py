"""Benchmark: time and bytes read to sample 32 frames from videos of increasing length.

    python benchmarks/bench_decode.py                            # print both tables
    python benchmarks/bench_decode.py --write docs/decoding.md   # and put them into the docs

Two tables. **Long files** (``--minutes 1,10,20``): H.264 files of 1, 10 and 20 minutes
with a keyframe every 10 s (``--long-size``, default 512x288: 720p takes too long to
encode on the 2 shared cores here), as MP4 and as MKV (``--long-containers``),
read with ``read_video`` (the frame table from the MP4 sample table, or from the MKV's
cues and constant frame duration; decoding from the keyframe before each wanted frame) and with the
reader that builds its table from a demux pass over every packet (``VideoReader``
without ``use_index``, what ``read_video`` did before): time, bytes read from the file
(counted by the reader's file wrapper) and packets demuxed. Files are in the page cache
after generation, so times are CPU time; the bytes are what network storage would serve.

Videos are generated once (H.264, 25 fps, a keyframe every 2 s like phone and streaming
encoders, 320x240 so that generation stays quick) and cached. For each length, three
ways of getting the same 32 uniformly spaced frames run interleaved, several rounds,
median reported:

- ``seek``: ``VideoReader`` as ``read_video`` uses it (seeks to the keyframe before a
  wanted frame when that skips at least 32 frames);
- ``sequential``: the same reader with seeking off (decodes everything up to the last
  wanted frame);
- ``decord``: ``read_video(..., backend="decord")``, i.e. decord in its guarded child
  process, with the checks against PyAV (omitted with ``--no-decord``).

Every strategy's time includes building the frame table (a demux pass over the whole
file, no decoding), which is also reported alone. The seek and sequential frames are
checked to be identical. Ratios compare strategies within one run; the machines are
shared and noisy, absolute seconds are not comparable across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from machine import describe  # benchmarks/machine.py
from vidprune.pipeline.decode import VideoReader, read_video, uniform_indices

MARK_BEGIN = "<!-- bench_decode:begin -->"
MARK_END = "<!-- bench_decode:end -->"
LONG_BEGIN = "<!-- bench_decode_long:begin -->"
LONG_END = "<!-- bench_decode_long:end -->"
LONG_GOP_S = 10  # a keyframe every 10 s, as in issue 16's 20-minute 720p file
LONG_GRAIN = 12  # sensor-like noise: P-frames about a quarter of a keyframe, as in camera footage
FPS = 25
GOP = 50  # keyframe every 2 s
SIZE = (320, 240)
NUM_FRAMES = 32


def make_video(path: Path, seconds: int, size: tuple[int, int] = SIZE, gop: int = GOP, grain: int = 0,
               bframes: int = 0) -> Path:
    """A ``seconds``-long H.264 file of a scrolling random texture (cached by path; the container follows
    its suffix, ``.mp4`` or ``.mkv``).

    ``grain``: amplitude of fresh noise added to every frame (like a camera's sensor noise), so
    that P-frames carry as many bytes, relative to keyframes, as in camera footage. ``bframes``:
    B-frames between references (x264's ``ultrafast`` has none; with them its default B-pyramid).
    """
    if path.exists():
        return path
    w, h = size
    rng = np.random.default_rng(seconds)
    background = np.kron(rng.integers(0, 255, (h // 8, 2 * w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    noise = [rng.integers(-grain, grain + 1, (h, w, 3), dtype=np.int16) for _ in range(16)] if grain else []
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop)}
    if bframes:
        options["x264-params"] = f"bframes={bframes}"
    with av.open(str(tmp), "w", format={".mkv": "matroska"}.get(path.suffix, "mp4")) as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS), options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * FPS):
            x = (2 * i) % w
            img = background[:, x : x + w]
            if noise:
                img = np.clip(img + noise[int(rng.integers(16))], 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def time_table(path: Path) -> float:
    start = time.perf_counter()
    with VideoReader(path) as reader:
        len(reader)
    return time.perf_counter() - start


def time_reader(path: Path, seek_threshold: int | None) -> tuple[float, int, list[np.ndarray]]:
    """Seconds to open, build the table and decode 32 uniform frames; frames decoded; the frames."""
    start = time.perf_counter()
    with VideoReader(path, seek_threshold=seek_threshold) as reader:
        frames = [f.rgb for f in reader.iter_frames(uniform_indices(len(reader), NUM_FRAMES))]
        decoded = reader.stats["decoded_frames"]
    return time.perf_counter() - start, decoded, frames


def time_decord(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    clip = read_video(path, num_frames=NUM_FRAMES, backend="decord")
    return time.perf_counter() - start, clip.backend


def run(lengths: list[int], rounds: int, cache: Path, with_decord: bool) -> list[dict]:
    rows = []
    for seconds in lengths:
        path = make_video(cache / f"bench_{seconds}s_{SIZE[0]}x{SIZE[1]}_gop{GOP}.mp4", seconds)
        times: dict[str, list[float]] = {"table": [], "seek": [], "sequential": [], "decord": []}
        decoded = {}
        backend = "-"
        if with_decord:
            time_decord(path)  # start the decord process once, outside the timings
        for _ in range(rounds):
            times["table"].append(time_table(path))
            t, decoded["seek"], seek_frames = time_reader(path, 32)
            times["seek"].append(t)
            t, decoded["sequential"], seq_frames = time_reader(path, None)
            times["sequential"].append(t)
            assert all(np.array_equal(a, b) for a, b in zip(seek_frames, seq_frames, strict=True))
            if with_decord:
                t, backend = time_decord(path)
                times["decord"].append(t)
        med = {k: statistics.median(v) for k, v in times.items() if v}
        rows.append({"seconds": seconds, "frames": seconds * FPS, "decoded": decoded, "backend": backend, **med})
        print(f"{seconds:>5d} s: " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()), flush=True)
    return rows


def table(rows: list[dict], rounds: int, with_decord: bool) -> str:
    head = ("| video | frames | frame table (demux) | seek: time | seek: frames decoded | sequential: time "
            "| sequential: frames decoded | sequential / seek |")
    sep = "|---|---|---|---|---|---|---|---|"
    if with_decord:
        head += " decord (guarded): time | decord / seek |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['seconds']} s | {r['frames']} | {r['table']:.3f} s | {r['seek']:.3f} s | {r['decoded']['seek']} "
                f"| {r['sequential']:.3f} s | {r['decoded']['sequential']} | {r['sequential'] / r['seek']:.1f}x |")
        if with_decord:
            note = "" if r["backend"] == "decord" else f" (ran {r['backend']})"
            line += f" {r['decord']:.3f} s{note} | {r['decord'] / r['seek']:.1f}x |"
        lines.append(line)
    first, last = rows[0], rows[-1]
    summary = (
        f"{NUM_FRAMES} uniformly spaced frames, H.264 {SIZE[0]}x{SIZE[1]} at {FPS} fps with a keyframe every "
        f"{GOP // FPS} s, median of {rounds} rounds on {describe()}. From {first['seconds']} s to {last['seconds']} s of video "
        f"({last['seconds'] // first['seconds']}x longer), sequential decoding's time grows "
        f"{last['sequential'] / first['sequential']:.1f}x and the seek strategy's "
        f"{last['seek'] / first['seek']:.1f}x: once the wanted frames are more than a keyframe interval apart it "
        "decodes from the keyframe before each wanted frame, half a keyframe interval on average "
        f"({last['decoded']['seek']} frames at {last['seconds']} s), and what still grows with length is the "
        f"demux pass of the frame table ({100 * last['table'] / last['seek']:.0f} % of its time at "
        f"{last['seconds']} s)."
    )
    lines += ["", summary]
    return "\n".join(lines)


def run_long(minutes: list[int], rounds: int, cache: Path, size: tuple[int, int], bframes: int = 0,
             container: str = "mp4") -> list[dict]:
    """32 frames from long files: read_video (index) vs a demux-pass table, time / bytes / packets.

    ``container``: ``"mp4"`` or ``"mkv"`` (the same frames and encoder settings; PyAV cannot remux into an
    MKV with a DefaultDuration, as ``ffmpeg -c copy`` would, so the MKV is encoded too)."""
    rows = []
    for m in minutes:
        name = f"long_{m}min_{size[0]}x{size[1]}_gop{LONG_GOP_S}s_grain{LONG_GRAIN}" + (f"_bf{bframes}" if bframes else "")
        path = make_video(cache / f"{name}.{container}", 60 * m, size, LONG_GOP_S * FPS, LONG_GRAIN, bframes)
        times: dict[str, list[float]] = {"index": [], "full": [], "index_cpu": [], "full_cpu": []}
        for _ in range(rounds):
            start, cpu = time.perf_counter(), time.process_time()
            clip = read_video(path, num_frames=NUM_FRAMES)
            times["index"].append(time.perf_counter() - start)
            times["index_cpu"].append(time.process_time() - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            with VideoReader(path) as reader:
                frames = [f.rgb for f in reader.iter_frames(uniform_indices(len(reader), NUM_FRAMES))]
                full = dict(reader.stats)
            times["full"].append(time.perf_counter() - start)
            times["full_cpu"].append(time.process_time() - cpu)
            assert clip.stats["frame_table"] == "index"
            assert all(np.array_equal(a, b) for a, b in zip(clip.frames, frames, strict=True))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"minutes": m, "file_bytes": clip.stats["file_bytes"], "index": clip.stats, "full": full,
                     "frames": m * 60 * FPS, **{f"{k}_s": v for k, v in med.items()}})
        print(f"{m:>3d} min: read_video {med['index']:.3f} s, {clip.stats['bytes_read'] / 1e6:.1f} of "
              f"{clip.stats['file_bytes'] / 1e6:.1f} MB; demux-pass table {med['full']:.3f} s", flush=True)
    return rows


def long_table(rows: list[dict], rounds: int, size: tuple[int, int], bframes: int = 0, container: str = "mp4") -> str:
    lines = [
        f"**{container.upper()}, {'no B-frames' if not bframes else f'{bframes} B-frames (B-pyramid)'}**",
        "",
        "| video | frames | file | read_video: time (CPU) | bytes read | packets demuxed | frames decoded "
        "| demux-pass table: time (CPU) | bytes read | packets demuxed | read_video vs the 1st file: time (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base, base_cpu = rows[0]["index_s"], rows[0]["index_cpu_s"]
    for r in rows:
        i, f, size_b = r["index"], r["full"], r["file_bytes"]
        lines.append(
            f"| {r['minutes']} min | {r['frames']} | {size_b / 1e6:.0f} MB | {r['index_s']:.2f} s ({r['index_cpu_s']:.2f} s) "
            f"| {i['bytes_read'] / 1e6:.1f} MB ({100 * i['bytes_read'] / size_b:.1f} %) | {i['packets_demuxed']} "
            f"| {i['decoded_frames']} ({i['packets_skipped']} not decoded) | {r['full_s']:.2f} s ({r['full_cpu_s']:.2f} s) "
            f"| {f['bytes_read'] / 1e6:.0f} MB "
            f"({100 * f['bytes_read'] / size_b:.0f} %) | {f['packets_demuxed']} "
            f"| {r['index_s'] / base:.2f}x ({r['index_cpu_s'] / base_cpu:.2f}x) |"
        )
    last = rows[-1]
    lines += ["", (
        f"{NUM_FRAMES} uniformly spaced frames, H.264 {size[0]}x{size[1]} at {FPS} fps (x264 ultrafast"
        + (f" with {bframes} B-frames" if bframes else ": no B-frames") + f", grain {LONG_GRAIN}"
        + ("" if container == "mp4" else f"; in {container.upper()}") + "), "
        f"a keyframe every {LONG_GOP_S} s, median of {rounds} rounds on {describe()}, files in the page cache; time is wall-clock, "
        "(CPU) the process's CPU time over all its threads (steadier than wall-clock on a loaded machine). The "
        f"{last['minutes']}-minute file: read_video reads {100 * last['index']['bytes_read'] / last['file_bytes']:.1f} % "
        f"of it and takes {last['index_s'] / rows[0]['index_s']:.2f}x the time "
        f"({last['index_cpu_s'] / rows[0]['index_cpu_s']:.2f}x the CPU time) of the {rows[0]['minutes']}-minute "
        f"file; the demux-pass table reads {100 * last['full']['bytes_read'] / last['file_bytes']:.0f} % of it "
        f"(the demux pass, then the decoding) and takes {last['full_s'] / last['index_s']:.2f}x read_video's time."
    )]
    return "\n".join(lines)


def write_into(doc: Path, text: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    content = doc.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{doc} has no {begin} ... {end} section to fill")
    before, rest = content.split(begin, 1)
    _, after = rest.split(end, 1)
    doc.write_text(f"{before}{begin}\n{text}\n{end}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="10,60,300,1800", help="video lengths in seconds, comma-separated")
    parser.add_argument("--minutes", default="1,10,20", help="long-file lengths in minutes, comma-separated")
    parser.add_argument("--long-size", default="512x288", help="long files' frame size, WxH")
    parser.add_argument("--long-bframes", default="0,3", help="B-frame settings of the long files, comma-separated")
    parser.add_argument("--long-containers", default="mp4,mkv",
                        help="containers of the long files, comma-separated (mp4, mkv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vidprune-bench-decode")
    parser.add_argument("--no-decord", action="store_true", help="skip the decord column")
    parser.add_argument("--only", choices=("seek", "long"), help="run one of the two tables")
    parser.add_argument("--write", type=Path, help="put the tables into this markdown file between the markers")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.only != "long":
        lengths = [int(x) for x in args.lengths.split(",")]
        rows = run(lengths, args.rounds, args.cache, not args.no_decord)
        text = table(rows, args.rounds, not args.no_decord)
        print(text)
        if args.write:
            write_into(args.write, text)
    if args.only != "seek":
        w, h = (int(x) for x in args.long_size.lower().split("x"))
        parts = []
        for container in args.long_containers.split(","):
            for bframes in (int(x) for x in args.long_bframes.split(",")):
                rows = run_long([int(x) for x in args.minutes.split(",")], args.rounds, args.cache, (w, h), bframes,
                                container)
                parts.append(long_table(rows, args.rounds, (w, h), bframes, container))
                print(parts[-1], flush=True)
        text = "\n\n".join(parts)
        if args.write:
            write_into(args.write, text, LONG_BEGIN, LONG_END)


if __name__ == "__main__":
    main()
