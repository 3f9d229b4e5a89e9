"""The demo under load: memory, frame gaps under question load, time to first token.

    python benchmarks/bench_demo.py                       # tiny checkpoint, ~2 minutes
    python benchmarks/bench_demo.py --duration 60 --model /path/to/checkpoint

Each phase runs a real ``vidprune demo`` process on 127.0.0.1 (a free port) and drives it
over WebSockets as the page does (JPEG frames of a moving square, 320x240):

1. **Memory under a 10x producer**: the server at ``--fps F``, one tab sending ``10 F``
   frames a second for ``--duration`` seconds. The server's RSS (``VmRSS`` from /proc,
   every 0.25 s) from the first encoded frame on: min and max, and how many frames were
   received, encoded, over the rate and dropped.
2. **Frame gaps under question load**: the server at ``--tab-fps``, ``--tabs`` tabs each
   sending ``--tab-fps`` frames a second and asking a new question as soon as its answer
   ends, for ``--duration`` seconds. Per tab: the longest and the median gap between two
   of its frames being encoded (``frame`` messages), answers, and the answers' time to
   first token (measured by the server from the moment it received the question).
3. **Time to first token, quiet**: one tab streaming at ``--tab-fps`` and asking one
   question at a time, ``--questions`` times.

Prints a JSON report (``--output`` writes it too). The machine is whatever runs it: say
which (cores, load) next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
import numpy as np
from PIL import Image

from vidprune.samples import moving_square_frames

START_TIMEOUT_S = 180.0


def _jpegs() -> list[bytes]:
    out = []
    for rgb in moving_square_frames(num_frames=24):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


FRAMES = _jpegs()


class DemoProcess:
    """`vidprune demo` as a user starts it; ``url`` is the printed URL, ``ws_url`` its socket."""

    def __init__(self, model: str | None, *args: str):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "vidprune.cli", "demo", "--port", "0", *args]
        if model:
            cmd += ["--model", model]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        self.url = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = re.search(r"open (http://\S+)", self.proc.stdout.readline())
            if match:
                self.url = match.group(1)
                break
        if self.url is None:
            self.stop()
            raise SystemExit(f"vidprune demo did not start; log {self.log.name}")
        self.ws_url = self.url.replace("http://", "ws://").replace("/?", "/ws?")
        if self.ws_url.endswith("/"):
            self.ws_url += "ws"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()


async def _messages(ws):
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            yield json.loads(msg.data)


async def _stream(ws, fps: float, stop: asyncio.Event, offset: int = 0) -> None:
    """Send frames at ``fps`` on a fixed schedule (no drift) until ``stop``."""
    start, i = time.monotonic(), 0
    while not stop.is_set():
        await ws.send_bytes(FRAMES[(i + offset) % len(FRAMES)])
        i += 1
        await asyncio.sleep(max(0.0, start + i / fps - time.monotonic()))


async def memory_phase(server: DemoProcess, producer_fps: float, duration: float) -> dict:
    rss: list[float] = []
    last: dict = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        stop = asyncio.Event()
        sender = asyncio.ensure_future(_stream(ws, producer_fps, stop))
        started, first = time.monotonic(), None
        next_sample = started

        async def read():
            nonlocal first, last
            async for msg in _messages(ws):
                if msg["type"] == "frame":
                    first = first or time.monotonic()
                    last = msg["load"]

        reader = asyncio.ensure_future(read())
        while time.monotonic() - started < duration:
            await asyncio.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += 0.25
            if first is not None:
                rss.append(server.rss_mb())
        stop.set()
        await sender
        reader.cancel()
    return {"producer_fps": producer_fps, "duration_s": duration, "rss_samples": len(rss),
            "rss_min_mb": round(min(rss), 1), "rss_max_mb": round(max(rss), 1), "load": last}


async def question_phase(server: DemoProcess, tabs: int, fps: float, duration: float) -> dict:
    async def tab(http, index: int, stop_at: float) -> dict:
        frames_at: list[float] = []
        ttfts: list[float] = []
        async with http.ws_connect(server.ws_url) as ws:
            stop = asyncio.Event()
            sender = asyncio.ensure_future(_stream(ws, fps, stop, offset=index))
            asked = False
            async for msg in _messages(ws):
                now = time.monotonic()
                if msg["type"] == "frame":
                    frames_at.append(now)
                    if not asked:  # the first frame is in: start asking
                        await ws.send_str(json.dumps({"type": "ask", "question": f"tab {index}: what moves?"}))
                        asked = True
                elif msg["type"] == "answer_end":
                    ttfts.append(msg["ttft_s"])
                # the next question as soon as the last one ended (or was refused: memory_empty)
                if msg["type"] in ("answer_end", "error") and msg.get("code") != "frames_over_rate" \
                        and now < stop_at:
                    await ws.send_str(json.dumps({"type": "ask", "question": f"tab {index}: and now?"}))
                if now >= stop_at:
                    break
            stop.set()
            await sender
        during = [t for t in frames_at if t >= frames_at[0]]
        gaps = np.diff(during) if len(during) > 1 else np.array([float("nan")])
        return {"frames": len(frames_at), "answers": len(ttfts), "max_gap_s": round(float(gaps.max()), 3),
                "median_gap_s": round(float(np.median(gaps)), 3),
                "ttft_median_s": round(statistics.median(ttfts), 3) if ttfts else None}

    async with aiohttp.ClientSession() as http:
        stop_at = time.monotonic() + duration
        per_tab = await asyncio.gather(*(tab(http, i, stop_at) for i in range(tabs)))
    return {"tabs": tabs, "tab_fps": fps, "duration_s": duration, "per_tab": per_tab,
            "max_gap_s": max(t["max_gap_s"] for t in per_tab),
            "answers": sum(t["answers"] for t in per_tab)}


async def ttft_phase(server: DemoProcess, fps: float, questions: int) -> dict:
    ttfts, totals = [], []
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        stop = asyncio.Event()
        sender = asyncio.ensure_future(_stream(ws, fps, stop))
        messages = _messages(ws)
        async for msg in messages:
            if msg["type"] == "frame":
                break
        for _ in range(questions):
            await ws.send_str(json.dumps({"type": "ask", "question": "What is moving?"}))
            async for msg in messages:
                if msg["type"] == "answer_end":
                    ttfts.append(msg["ttft_s"])
                    totals.append(msg["generate_s"])
                    break
        stop.set()
        await sender
    return {"questions": questions, "ttft_median_s": round(statistics.median(ttfts), 3),
            "ttft_max_s": round(max(ttfts), 3), "generate_median_s": round(statistics.median(totals), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint directory (default: vidprune's tiny Video-LLaVA, random weights)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per load phase (default 30)")
    p.add_argument("--fps", type=float, default=4.0, help="server --fps of the memory phase (the producer sends 10x)")
    p.add_argument("--tabs", type=int, default=4)
    p.add_argument("--tab-fps", type=float, default=10.0, help="frames per second each tab sends (and server --fps)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--questions", type=int, default=10)
    p.add_argument("--output", help="also write the JSON report here")
    args = p.parse_args(argv)

    report = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
              "model": args.model or "tiny video_llava (random weights)", "max_new_tokens": args.max_new_tokens}
    common = ["--window", "10", "--budget", "1600", "--max-new-tokens", str(args.max_new_tokens)]
    logs = []
    server = DemoProcess(args.model, "--fps", str(args.fps), *common)
    try:
        report["memory"] = asyncio.run(memory_phase(server, 10 * args.fps, args.duration))
    finally:
        logs.append(server.stop())
    server = DemoProcess(args.model, "--fps", str(args.tab_fps), "--max-sessions", str(args.tabs), *common)
    try:
        report["question_load"] = asyncio.run(question_phase(server, args.tabs, args.tab_fps, args.duration))
        report["ttft_quiet"] = asyncio.run(ttft_phase(server, args.tab_fps, args.questions))
    finally:
        logs.append(server.stop())
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["tracebacks_in_server_logs"] = sum(log.count("Traceback") for log in logs)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
