"""``vidprune demo``: serve the streaming webcam QA page.

    vidprune demo                                    # tiny offline model (answers are nonsense)
    vidprune demo --model LanguageBind/Video-LLaVA-7B-hf --dtype bfloat16 --window 60 --fps 1
    vidprune demo --model M --source /dev/video0     # the camera is on the server
    vidprune demo --model M --source clip.mp4 --loop # a file played in real time

Every option is checked (and the memory sized) before the model loads.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import os
import socket
import sys
from typing import Any

from ..errors import ConfigError
from .access import is_loopback
from .limits import (DEFAULT_CLIENT_TIMEOUT_S, DEFAULT_FRAME_RATE, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_SESSIONS,
                     DEFAULT_PORT, DEFAULT_WINDOW_S, PLANNED_FRAME_SIZE)

__all__ = ["add_command", "run", "settings_from_args"]

_TINY_MARKER = "vidprune_tiny.json"

# Flags of the shared pipeline options that mean nothing for a live memory.
_NOT_FOR_DEMO = {"frames": "--frames", "max_frames": "--max-frames", "decode_backend": "--decode-backend",
                 "encoder_batch_size": "--encoder-batch-size"}


def add_command(subparsers) -> None:
    from ..config import add_option_flags as add_pipeline_options

    p = subparsers.add_parser(
        "demo", help="serve a page that answers questions about your webcam's last seconds",
        description="Serve a page: live webcam preview, questions answered from a rolling, pruned and "
                    "deduplicated token memory of the stream, with live stats. --fps is the rate frames enter "
                    "the memory; --budget the tokens it holds over the whole --window.",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    g.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                   help=f"browser tabs served at once, each with its own memory (default {DEFAULT_MAX_SESSIONS})")
    g.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the page may be opened under, besides the bound address and localhost "
                        "(repeatable; requests under any other name are refused, against DNS rebinding)")
    auth = g.add_mutually_exclusive_group()
    auth.add_argument("--token", dest="token", action="store_true", default=None,
                      help="require an access token (printed in the URL) also on loopback; "
                           "it is required by default whenever --host is not a loopback address")
    auth.add_argument("--no-token", dest="token", action="store_false",
                      help="serve without an access token, also beyond loopback (anyone who reaches the port can "
                           "use the page)")
    g.add_argument("--client-timeout", type=float, default=DEFAULT_CLIENT_TIMEOUT_S, metavar="S",
                   help=f"drop a tab that has not answered the server's pings for S seconds (default "
                        f"{DEFAULT_CLIENT_TIMEOUT_S:g})")
    g.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, metavar="S",
                   help=f"a tab that sent nothing for S seconds gives its place to a new tab when the server is "
                        f"full (default {DEFAULT_IDLE_TIMEOUT_S:g})")
    g = p.add_argument_group("memory")
    g.add_argument("--window", type=float, default=DEFAULT_WINDOW_S,
                   help=f"seconds of stream the memory keeps (default {DEFAULT_WINDOW_S:g})")
    g.add_argument("--frame-tokens", type=int,
                   help="patch tokens VisPruner keeps per frame before dedup (default: budget / frames in a window)")
    g = p.add_argument_group("source")
    g.add_argument("--source", help="read frames on the server instead of the browser: a video file (played in "
                                    "real time), a camera device (/dev/video0) or a stream URL (rtsp://...)")
    g.add_argument("--loop", action="store_true", help="with a --source file: play it again when it ends")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def _check_host_port(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number; pick one in 1..65535 (0: any free port)")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except socket.gaierror:
        raise ConfigError(f"--host {host!r} is not an address of this machine; use 127.0.0.1 or 0.0.0.0") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; pick another with --port (0: any free port)") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --host/--port") from None


def _check_allow_hosts(names: list[str]) -> tuple[str, ...]:
    for name in names:
        bare = name.strip("[]")
        if not bare or any(c in bare for c in "/?#@ :\t") and not _is_ip(bare):
            raise ConfigError(f"--allow-host {name!r} is not a host name; give a name such as box.lan or an address")
    return tuple(names)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """Check every option and size the memory, without loading weights. Returns (settings, VidpruneConfig)."""
    from ..config import load_preset, options_from_args, resolve_config
    from ..pipeline.memory import build_memory, plan_memory
    from .access import needs_token, new_token
    from .server import DemoSettings
    from .source import ServerSource, source_kind

    opts = options_from_args(args)
    given = [flag for key, flag in _NOT_FOR_DEMO.items() if key in opts]
    if given:
        raise ConfigError(f"{', '.join(given)} do not apply to the demo: it keeps the last --window seconds of the "
                          "stream, sampled at --fps frames per second")
    if "reuse_prefix" in opts:
        raise ConfigError("--prefix-reuse/--no-prefix-reuse do not apply to the demo: it answers one question at a "
                          "time, so there is no video prefix to share between questions")
    if not args.window > 0:
        raise ConfigError(f"--window {args.window:g} must be a positive number of seconds")
    if args.max_sessions < 1:
        raise ConfigError(f"--max-sessions {args.max_sessions} must be at least 1")
    for flag, value in (("--client-timeout", args.client_timeout), ("--idle-timeout", args.idle_timeout)):
        if not value > 0:
            raise ConfigError(f"{flag} {value:g} must be a positive number of seconds")
    allow_hosts = _check_allow_hosts(args.allow_host)
    wants_token = needs_token(args.host, args.token)
    preset = load_preset(args.config) if args.config else {}
    tiny = False
    if "model" not in opts and not preset.get("model"):
        from ..video_models.tiny import ensure_tiny_checkpoint

        opts["model"] = str(ensure_tiny_checkpoint("video_llava"))
        tiny = True
    opts["fps"] = opts.get("fps") or preset.get("fps") or DEFAULT_FRAME_RATE
    budget_given = "budget" in opts or "budget" in preset
    cfg, info = resolve_config(opts.pop("model", None), args.config, **opts)
    # vidprune's random-weight test checkpoints carry this marker file (video_models/tiny.py).
    tiny = tiny or os.path.isfile(os.path.join(cfg.model, _TINY_MARKER))
    family, geometry = info.family, info.geometry
    if geometry.dynamic:  # the grid comes from the frame size (Qwen2.5-VL): plan for the frames the page sends
        processor = family.video_processor_from_pretrained(cfg.model)
        geometry = family.frame_geometry(geometry, processor, *PLANNED_FRAME_SIZE)
    budget = cfg.budget
    if not budget_given:  # what a stock clip costs the LLM: the memory holds one clip's worth of tokens
        budget = geometry.units(family.default_num_frames) * geometry.stock_per_frame
    plan = plan_memory(geometry, budget=budget, window_s=args.window, frame_rate=cfg.fps,
                       frame_tokens=args.frame_tokens)
    # "none" is only valid without a budget; the memory then allows all N patches per frame, which VisPruner keeps.
    memory_options = {k: v for k, v in cfg.section("select").items() if k != "budget"}  # the plan holds the budget
    if memory_options["pruner"] == "none":
        memory_options["pruner"] = "vispruner"
    build_memory(plan, prune_grid=geometry.prune_grid, **memory_options)  # pruner / dedup options, no model
    if args.source is not None:
        if args.loop and source_kind(args.source) != "file":
            raise ConfigError("--loop only applies to a --source video file")
        # open (and close) the source now: a missing file or camera, or a dead URL, fails before the model loads
        ServerSource(args.source, cfg.fps, lambda rgb, t: None).stop()
    elif args.loop:
        raise ConfigError("--loop needs a --source video file")
    _check_host_port(args.host, args.port)
    settings = DemoSettings(plan=plan, memory_options=memory_options, generate_kwargs=cfg.section("generate"),
                            ivtp=cfg.ivtp(),
                            host=args.host, port=args.port, max_sessions=args.max_sessions, model_name=cfg.model,
                            tiny=tiny, source=args.source, loop_source=args.loop, allow_hosts=allow_hosts,
                            token=new_token() if wants_token else None, client_timeout_s=args.client_timeout,
                            idle_timeout_s=args.idle_timeout)
    return settings, cfg


def run(args: argparse.Namespace) -> int:
    from ..qa import VideoQA
    from .server import DemoServer

    settings, cfg = settings_from_args(args)
    if settings.tiny:
        print("demo: a tiny random-weight model; it runs everything but ANSWERS NONSENSE (give --model M for a real one).",
              file=sys.stderr)
    if not is_loopback(settings.host) and settings.token is None:
        print(f"demo: listening on {settings.host} without a token (--no-token): anyone who can reach this machine "
              "can use the page", file=sys.stderr)
    plan = settings.plan
    unit, units = (("frame", "frames") if plan.frames_per_unit == 1 else
                   (f"temporal patch of {plan.frames_per_unit} frames", "temporal patches"))
    sized = f" for {PLANNED_FRAME_SIZE[1]}x{PLANNED_FRAME_SIZE[0]} frames" if plan.dynamic else ""
    print(f"demo: memory of {plan.window_s:g} s at {plan.frame_rate:g} fps: at most {plan.max_frames} {units}, "
          f"{plan.budget} tokens ({plan.frame_allowance} patches per {unit} before dedup; the stock model would "
          f"use {plan.stock_tokens}{sized})", file=sys.stderr)
    if settings.ivtp is not None:
        stages = ", ".join(f"layer {k} keeps {r:g}" for k, r in settings.ivtp.stages)
        print(f"demo: IVTP on every answer ({stages} of the visual tokens)", file=sys.stderr)
    qa = VideoQA.from_pretrained(config=cfg.to_dict())
    server = DemoServer(qa.llm, settings)

    def announce(url: str) -> None:
        others = [u for u in server.urls if u != url]
        also = f" (or {', '.join(others)})" if others else ""
        print(f"vidprune demo: open {url}{also}  (Ctrl+C to stop)", flush=True)

    try:
        asyncio.run(server.serve_forever(announce))
    except KeyboardInterrupt:
        print("vidprune demo: stopped", file=sys.stderr)
    return 0
