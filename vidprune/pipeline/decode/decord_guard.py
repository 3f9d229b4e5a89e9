"""decord in a child process, with a time limit on every call.

decord 0.6 can hang forever inside native code on some ordinary files
(``get_batch`` spinning at 100 % CPU: dmlc/decord issues #269, #373, #375), holding
the GIL, deaf to signals other than SIGKILL; and native crashes take the whole
process down. A thread or ``signal.alarm`` cannot stop that. So every decord call
runs in a separate process that is killed when a call overruns its time limit:

- :class:`DecordProcess` is one long-lived child (``_decord_child.py``, run by path
  so that it imports only numpy and decord: about 0.3 s to start, paid once). It
  answers one request at a time; requests from several threads are serialized.
  A call that overruns its limit, or a child that dies, raises
  :class:`DecordFailure`; the child is then killed (SIGKILL) and the next call
  starts a fresh one.
- :class:`DecordReader` is one ``decord.VideoReader`` living in that child:
  ``len()``, ``timestamps()``, ``get_batch(indices)``. A reader does not survive a
  restart of its child (the next call raises :class:`DecordFailure`).
- :func:`shared_process` is the process-wide child that
  :class:`~vidprune.pipeline.decode.VideoReader` uses; it is stopped at exit.

Frames come back through a pipe (one copy; about 10 ms per 1080p frame).
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._decord_child import HEADER, read_exact  # the child's message framing (length-prefixed pickles)

__all__ = ["DecordFailure", "DecordProcess", "DecordReader", "shared_process"]

# Starting the child imports numpy and decord: seconds on a cold, busy machine, never a minute.
_START_TIMEOUT_S = 60.0
# Opening a file (decord reads the whole index) and listing frame times: seconds even for hours of video.
_OPEN_TIMEOUT_S = 60.0
# get_batch: a fixed allowance plus this much per frame (a 4K HEVC frame after a seek is ~1 s on one core).
_BATCH_BASE_TIMEOUT_S = 30.0
_BATCH_FRAME_TIMEOUT_S = 5.0
# After asking the child to exit, wait this long before killing it.
_STOP_GRACE_S = 2.0
_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_decord_child.py")


class DecordFailure(Exception):
    """decord failed, hung past its time limit, or its process died; ``str()`` is one line."""


class DecordProcess:
    """A child process that runs decord calls, each under a time limit.

    ``DecordProcess(*, open_timeout_s=60, batch_base_timeout_s=30, batch_frame_timeout_s=5,
    start_timeout_s=60, init=None)``. ``init``: ``"module:function"`` called in the
    child before decord is imported (a hook, e.g. for tests); its module must be
    importable from this process's ``sys.path``, which the child inherits.

    The child starts on the first call. ``restarts`` counts children killed after a
    time-out or found dead; ``generation`` increments with every new child.
    """

    def __init__(
        self,
        *,
        open_timeout_s: float = _OPEN_TIMEOUT_S,
        batch_base_timeout_s: float = _BATCH_BASE_TIMEOUT_S,
        batch_frame_timeout_s: float = _BATCH_FRAME_TIMEOUT_S,
        start_timeout_s: float = _START_TIMEOUT_S,
        init: str | None = None,
    ) -> None:
        self.open_timeout_s = float(open_timeout_s)
        self.batch_base_timeout_s = float(batch_base_timeout_s)
        self.batch_frame_timeout_s = float(batch_frame_timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.init = init
        self.generation = 0
        self.restarts = 0
        self.version: str | None = None
        self._start_error: str | None = None  # decord cannot run here (e.g. it fails to import): do not retry
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any] = queue.Queue()
        self._reader_thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()  # a forked copy of this object must not use the parent's pipes

    # ------------------------------------------------------------------ child lifecycle

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when no child runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _start(self) -> None:
        if self._start_error is not None:
            raise DecordFailure(self._start_error)
        env = dict(os.environ)
        # The child sees the same modules as this process (a source checkout, a test folder).
        paths = [p or os.getcwd() for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        cmd = [sys.executable, _CHILD_SCRIPT] + (["--init", self.init] if self.init else [])
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
            )
        except OSError as e:
            raise DecordFailure(f"the decord process cannot start ({e})") from None
        replies: queue.Queue[Any] = queue.Queue()
        thread = threading.Thread(
            target=_pump_replies, args=(proc.stdout, replies), name="vidprune-decord-replies", daemon=True
        )
        thread.start()
        self._proc, self._replies, self._reader_thread = proc, replies, thread
        self.generation += 1
        kind, value = self._wait(self.start_timeout_s, "starting")
        if kind != "ready":
            self._kill()
            self._start_error = f"the decord process cannot start ({value})"
            raise DecordFailure(self._start_error)
        self.version = value

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.kill()  # SIGKILL: a hung decord ignores anything gentler
        except OSError:
            pass
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        if self._reader_thread is not None:
            self._reader_thread.join(timeout=_STOP_GRACE_S)

    def stop(self) -> None:
        """Ask the child to exit (end of input), kill it if it does not; a later call starts a new one."""
        if os.getpid() != self._owner_pid:
            return  # the parent's child: not ours to stop
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=_STOP_GRACE_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill()

    # ------------------------------------------------------------------ requests

    def _wait(self, timeout_s: float, what: str) -> tuple[str, Any]:
        try:
            reply = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            self.restarts += 1
            self._kill()
            raise DecordFailure(
                f"decord did not answer within {timeout_s:g} s while {what} (it hangs on some files); "
                "its process was killed"
            ) from None
        if reply is None:  # end of the reply stream: the child died
            try:
                code = self._proc.wait(timeout=_STOP_GRACE_S) if self._proc is not None else None
            except subprocess.TimeoutExpired:
                code = None
            self.restarts += 1
            self._kill()
            raise DecordFailure(f"the decord process died while {what} (exit code {code})")
        return reply

    def call(self, op: str, args: tuple, timeout_s: float, generation: int | None = None) -> Any:
        """Run request ``(op, args)`` in the child and return its result within ``timeout_s``.

        ``generation``: the child that must answer (a reader's); DecordFailure if it
        was replaced. Raises DecordFailure on a time-out, a dead child or a decord error.
        """
        self._check_owner()
        with self._lock:
            if generation is not None and (generation != self.generation or self._proc is None):
                raise DecordFailure("the decord process was restarted after a failure, so this reader is gone")
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self.restarts += 1
                    self._kill()
                self._start()
            data = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                assert self._proc is not None and self._proc.stdin is not None
                self._proc.stdin.write(HEADER.pack(len(data)) + data)
                self._proc.stdin.flush()
            except (OSError, ValueError):
                self.restarts += 1
                self._kill()
                raise DecordFailure(f"the decord process died before the '{op}' request") from None
            kind, value = self._wait(timeout_s, f"answering '{op}'")
            if kind != "ok":
                raise DecordFailure(str(value))
            return value

    def _check_owner(self) -> None:
        if os.getpid() != self._owner_pid:  # checked before taking the lock, which a fork may have left held
            raise DecordFailure("the decord process belongs to the parent of this forked process")

    def open(self, path: str, threads: int = 0) -> DecordReader:
        """A :class:`DecordReader` for ``path`` in the child (``threads``: decoder threads, 0 = auto)."""
        self._check_owner()
        with self._lock:
            reader_id, num_frames = self.call("open", (path, threads), self.open_timeout_s)
            return DecordReader(self, reader_id, int(num_frames), self.generation)


class DecordReader:
    """One ``decord.VideoReader`` in a :class:`DecordProcess`. Not thread-safe."""

    def __init__(self, process: DecordProcess, reader_id: int, num_frames: int, generation: int) -> None:
        self._process = process
        self._id = reader_id
        self._n = num_frames
        self._generation = generation

    def __len__(self) -> int:
        return self._n

    def timestamps(self) -> np.ndarray:
        """``(N, 2)`` float64: decord's start and end time (seconds) of every frame."""
        return self._process.call("timestamps", (self._id,), self._process.open_timeout_s, self._generation)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """``(K, H, W, 3)`` uint8 RGB frames at ``indices`` (decord's own order and seeking)."""
        p = self._process
        timeout = p.batch_base_timeout_s + p.batch_frame_timeout_s * len(indices)
        return p.call("batch", (self._id, [int(i) for i in indices]), timeout, self._generation)

    def close(self) -> None:
        """Free the reader in the child (a no-op once the child was replaced)."""
        p = self._process
        if os.getpid() != p._owner_pid:
            return
        with p._lock:
            if p._proc is not None and p.generation == self._generation:
                try:
                    p.call("close", (self._id,), p.open_timeout_s, self._generation)
                except DecordFailure:
                    pass


def _pump_replies(stdout: Any, replies: queue.Queue[Any]) -> None:
    """Reader thread: each reply message from the child into ``replies``; None at end of stream."""
    try:
        while True:
            header = read_exact(stdout, HEADER.size)
            if header is None:
                break
            body = read_exact(stdout, HEADER.unpack(header)[0])
            if body is None:
                break
            replies.put(pickle.loads(body))
    except (OSError, ValueError, pickle.UnpicklingError, EOFError):
        pass
    replies.put(None)


_shared: DecordProcess | None = None
_shared_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # it may have been held by another thread at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def shared_process() -> DecordProcess:
    """The process-wide :class:`DecordProcess` (created on first use, stopped at interpreter exit).

    A forked process gets its own (its parent's stays the parent's)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._owner_pid != os.getpid():
            _shared = DecordProcess()
            atexit.register(_stop_shared)
        return _shared


def _stop_shared() -> None:
    if _shared is not None:
        _shared.stop()  # a no-op in a forked process that did not start its own
