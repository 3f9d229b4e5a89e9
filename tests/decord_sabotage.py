"""Test helper (not a test module): hooks that make decord misbehave inside the guarded child process.

Each function is passed as ``DecordProcess(init="decord_sabotage:<name>")``; the child
calls it before it serves requests, so it changes the real ``decord.VideoReader`` there.
"Many" means a ``get_batch`` call of at least :data:`MANY` frames: the decord checks at
open time ask for at most two frames per call, so they pass, and a later read fails.
"""

from __future__ import annotations

import os
import signal

__all__ = ["MANY", "crash_batches_of_many", "fail_batches_of_many", "hang_batches_of_many"]

MANY = 3


def _patch(action) -> None:
    import decord

    real = decord.VideoReader.get_batch

    def get_batch(self, indices):
        if len(indices) >= MANY:
            action()
        return real(self, indices)

    decord.VideoReader.get_batch = get_batch


def _raise() -> None:
    import decord

    raise decord.DECORDError("simulated failure")


def _hang() -> None:
    # Like decord's native hang: deaf to SIGTERM, spinning, never returning.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        pass


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def fail_batches_of_many() -> None:
    _patch(_raise)


def hang_batches_of_many() -> None:
    _patch(_hang)


def crash_batches_of_many() -> None:
    _patch(_crash)
