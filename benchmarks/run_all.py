"""Run the benchmarks that fill docs/performance.md, one after another, with one command.

    python benchmarks/run_all.py                    # CPU: small layer counts, writes docs/performance.md
    python benchmarks/run_all.py --device cuda      # a GPU: the full 32 layers, absolute times too
    python benchmarks/run_all.py --only prefill,ask # a subset
    python benchmarks/run_all.py --device cuda --dry-run   # print the commands, check each parses them

``--families video_llava`` limits the benchmarks that take families to those (the GPU check,
``benchmarks/gpu_check.sh``, runs one family to stay inside its time). With
``$VIDPRUNE_BENCH_CHECKPOINTS`` set to a folder, the 7B-shape checkpoints are built once there and
reused by every benchmark (``seven_b.build_checkpoint``) instead of once per benchmark.

Each benchmark runs in its own process (its variants interleaved inside it, ratios from that
one run) and writes its table between its markers in ``--write``. The Ray pipeline runs on a
local Ray it starts on 127.0.0.2. The demo (``bench_demo.py``, a real server driven over
WebSockets) is run on its own; docs/performance.md links its figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commands(device: str, layers: int | None, write: Path, families: str | None = None) -> dict[str, list[str]]:
    """name → argv of each benchmark; ``layers`` None: each one's default for the device."""
    gpu = device != "cpu"
    fam = ["--families", families] if families else []

    def n(cpu_default: int) -> list[str]:
        return ["--layers", str(layers if layers is not None else (32 if gpu else cpu_default))]

    dev = ["--device", device]
    out = ["--write", str(write)]
    return {
        "prefill": ["bench_prefill.py", *n(1), *dev, *fam, *out],
        "ask": ["bench_ask.py", *n(4), *dev, *fam, *out],
        "prefix_reuse": ["bench_prefix_reuse.py", *n(2), *dev, *out],
        # CPU only (it builds the model on the CPU); k must be below the layer count
        "ivtp": ["bench_ivtp.py", *n(2), "--rounds", "3", *([] if gpu else ["--settings", "1:0.5,1:0.25"]), *out],
        "decode": ["bench_decode.py", "--only", "long", "--no-decord", *out],
        # frame reuse (the tower's real shapes) and bytes fetched from a cold disk, local S3 and HTTP
        "skip_and_fetch": ["bench_skip_and_fetch.py", *(["--layers", str(layers)] if layers is not None else []), *out],
        # a local Ray on 127.0.0.2 (HOME: a folder whose bootstrap config says "local", so Ray probes no cloud)
        "pipeline": ["bench_pipeline.py", "--node-ip-address", "127.0.0.2", *out],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, help="decoder layers for every LLM benchmark (default: 32 on a GPU, "
                                                   "a few on the CPU)")
    parser.add_argument("--only", help="comma-separated subset of: prefill, ask, prefix_reuse, ivtp, decode, skip_and_fetch, "
                                               "pipeline")
    parser.add_argument("--write", type=Path, default=HERE.parent / "docs" / "performance.md")
    parser.add_argument("--families", help="comma-separated families for prefill and ask (default: each one's own)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands and check that each benchmark parses its arguments; run nothing")
    args = parser.parse_args()
    todo = commands(args.device, args.layers, args.write, args.families)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - set(todo))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(todo)}")
        todo = {k: v for k, v in todo.items() if k in names}
    if args.dry_run:
        return _dry_run(todo)
    for i, (name, argv) in enumerate(todo.items(), 1):
        print(f"[{i}/{len(todo)}] {name}: python benchmarks/{' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        env = None
        if name == "pipeline":
            home = Path(tempfile.mkdtemp(prefix="vidprune-bench-home-"))
            (home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
            env = {**os.environ, "HOME": str(home)}
        done = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], env=env)
        if done.returncode != 0:
            print(f"run_all: {name} failed (exit {done.returncode}); the tables written so far stay in {args.write}",
                  file=sys.stderr)
            return 1
        print(f"[{i}/{len(todo)}] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def _dry_run(todo: dict[str, list[str]]) -> int:
    """Print each command; check that its script's parser takes its arguments (``parse_args`` only, nothing runs)."""
    check = ("import runpy, sys; sys.argv = sys.argv[1:]; import argparse\n"
             "parse = argparse.ArgumentParser.parse_args\n"
             "def stop(self, *a, **k):\n"
             "    parse(self, *a, **k); raise SystemExit(0)\n"
             "argparse.ArgumentParser.parse_args = stop\n"
             "runpy.run_path(sys.argv[0], run_name='__main__')")
    failed = []
    for i, (name, argv) in enumerate(todo.items(), 1):
        print(f"[{i}/{len(todo)}] {name}: python benchmarks/{' '.join(argv)}  (dry run)", flush=True)
        done = subprocess.run([sys.executable, "-c", check, str(HERE / argv[0]), *argv[1:]], cwd=HERE,
                              capture_output=True, text=True)
        if done.returncode != 0:
            failed.append(name)
            print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                  file=sys.stderr)
    if failed:
        print(f"run_all: dry run: {', '.join(failed)} do not take their arguments", file=sys.stderr)
        return 1
    print(f"run_all: dry run: {len(todo)} benchmark(s) take their arguments", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
