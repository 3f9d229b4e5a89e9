"""`vidprune demo` started as a user starts it, for the tests that drive a real server process."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest


@contextlib.contextmanager
def running_demo(checkpoint: str, log: Path, *flags: str, start_timeout_s: float = 120.0):
    """``vidprune demo --model CHECKPOINT --port 0 --token FLAGS...`` on 127.0.0.1 (a free port), its stderr in ``log``.

    Yields (the page URL it printed, with the access token; the process); stops it on exit.
    """
    cmd = [sys.executable, "-m", "vidprune.cli", "demo", "--model", checkpoint, "--port", "0", "--token", *flags]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        url = None
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", proc.stdout.readline())
            if match:
                url = match.group(1)
                break
        if url is None:
            proc.kill()
            pytest.fail(f"`vidprune demo --token` did not print a URL with its token; log:\n{log.read_text()}")
        try:
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
