"""Decoding damaged files ends in frames or a VideoDecodeError, in bounded time; decord runs guarded.

- A fuzz test mutates valid generated files (truncation, flipped bits, zeroed ranges,
  duplicated and deleted ranges) and reads each one with ``read_video`` in a *child
  process*, so a native crash or a hang fails the test instead of killing it.
- Cut files: what a user gets from an interrupted download or recording.
- The decord guard: a real hang (a spinning child deaf to SIGTERM) and a real crash
  (SIGSEGV) in the decord process become a PyAV fallback with a warning; the process is
  reused across reads, a forked process gets its own, one that cannot start is not retried.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from videos import (  # tests/videos.py
    BACKENDS_HERE,
    make_noise_video,
    make_video,
    needs_decord,
    read_stamp,
)

from vidprune.errors import VideoDecodeError
from vidprune.pipeline.decode import decord_guard
from vidprune.pipeline.decode import read_video

TESTS_DIR = Path(__file__).resolve().parent

# A read of a small damaged file takes well under a second; 20 s means it hangs.
READ_TIMEOUT_S = 20.0
# The child imports vidprune (and so torch) once: allow a slow, shared machine.
CHILD_START_TIMEOUT_S = 180.0
MUTATIONS_PER_FILE = 15
MUTATION_KINDS = ("truncate", "flip", "zero", "duplicate", "delete")
BASE_FRAMES = 60

# The child: reads one request per line (JSON), answers one "RESULT {json}" line each.
# Anything but frames or VideoDecodeError is reported as "other" with its traceback.
_CHILD = r"""
import resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash with torch loaded would spend seconds on a core dump
import json, sys, traceback
import numpy as np
from videos import read_stamp
from vidprune.errors import VideoDecodeError
from vidprune.pipeline.decode import VideoReader, read_video

def stamp(frame):
    try:
        return read_stamp(frame)
    except ValueError:
        return None

print("RESULT " + json.dumps({"outcome": "ready"}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        clip = read_video(req["path"], num_frames=req.get("num_frames"), fps=req.get("fps"), backend=req["backend"])
        f = clip.frames
        out = {
            "outcome": "frames", "indices": clip.indices, "times": clip.times_s, "n": clip.num_stream_frames,
            "warnings": clip.warnings, "backend": clip.backend, "stamps": [stamp(x) for x in f],
            "well_formed": bool(f.dtype == np.uint8 and f.ndim == 4 and f.shape[0] == len(clip.indices) >= 1
                                and f.shape[3] == 3 and len(clip.times_s) == len(clip.indices)),
            "frame_table": clip.stats["frame_table"],
        }
        if req.get("compare_demux"):  # the reader that builds its table from every packet, same indices
            with VideoReader(req["path"]) as full:
                fr = list(full.iter_frames([i for i in clip.indices if i < len(full)]))
                out["same_as_demux"] = bool(
                    len(full) == clip.num_stream_frames and [x.index for x in fr] == clip.indices
                    and [x.time_s for x in fr] == clip.times_s
                    and all(np.array_equal(x.rgb, y) for x, y in zip(fr, clip.frames)))
    except VideoDecodeError as e:
        out = {"outcome": "VideoDecodeError", "message": str(e)}
    except BaseException as e:
        out = {"outcome": "other", "message": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    print("RESULT " + json.dumps(out), flush=True)
"""


class ReaderChild:
    """A child process running ``read_video`` on request; restarted after a hang or a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.replies: queue.Queue = queue.Queue()
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(TESTS_DIR)] + [p or os.getcwd() for p in sys.path]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.replies = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self.replies), daemon=True).start()
        self.starts += 1
        ready = self.replies.get(timeout=CHILD_START_TIMEOUT_S)
        assert ready == {"outcome": "ready"}, f"the reader child did not start: {ready}"

    @staticmethod
    def _pump(proc: subprocess.Popen[str], replies: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                replies.put(json.loads(line[len("RESULT ") :]))
        replies.put(None)  # end of output: the child died

    def read(self, request: dict) -> dict:
        """The child's answer, or {"outcome": "timeout"} / {"outcome": "crash", "returncode": ...}."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        start = time.monotonic()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            reply = self.replies.get(timeout=READ_TIMEOUT_S)
        except queue.Empty:
            self.proc.kill()
            self.proc.wait()
            return {"outcome": "timeout", "seconds": READ_TIMEOUT_S}
        if reply is None:
            return {"outcome": "crash", "returncode": self.proc.wait()}
        reply["seconds"] = time.monotonic() - start
        return reply

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One seeded mutation of a file's bytes."""
    b = bytearray(data)
    size = len(b)
    if kind == "truncate":
        return bytes(b[: int(rng.integers(1, size))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 40))):
            b[int(rng.integers(0, size))] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)
    start = int(rng.integers(0, size))
    end = min(size, start + int(rng.integers(16, 4000)))
    if kind == "zero":
        b[start:end] = bytes(end - start)
    elif kind == "duplicate":
        at = int(rng.integers(0, size))
        b[at:at] = b[start:end]
    elif kind == "delete":
        del b[start:end]
    else:
        raise ValueError(kind)
    return bytes(b)


@pytest.fixture(scope="module")
def base_files(tmp_path_factory):
    """Valid files, 60 frames each, stamped; big enough (moving texture) that cuts land in frame data."""
    d = tmp_path_factory.mktemp("fuzz_bases")
    n, fps, size = BASE_FRAMES, 25, (128, 96)
    return {
        "h264.mp4": make_video(d / "h264.mp4", n, fps, size, "libx264", moving=True, gop=12, bframes=2),
        "faststart.mp4": make_video(
            d / "faststart.mp4", n, fps, size, "libx264", moving=True, gop=12,
            container_options={"movflags": "+faststart"},
        ),
        "mpeg4.avi": make_video(d / "mpeg4.avi", n, fps, size, "mpeg4", moving=True, gop=12, bframes=2),
        "vp9.webm": make_video(d / "vp9.webm", n, fps, size, "libvpx-vp9", moving=True),
        "h264.mkv": make_video(d / "h264.mkv", n, fps, size, "libx264", moving=True, gop=12),
        "mpeg2.mpg": make_video(d / "mpeg2.mpg", n, fps, size, "mpeg2video", moving=True, gop=12, bframes=2),
    }


def test_fuzzed_files_end_in_frames_or_video_decode_error(base_files, tmp_path):
    rng = np.random.default_rng(20240605)
    cases = []
    for name, path in base_files.items():
        data = path.read_bytes()
        for m in range(MUTATIONS_PER_FILE):
            kind = MUTATION_KINDS[m % len(MUTATION_KINDS)]
            mutated = tmp_path / f"{Path(name).stem}_{m:02d}_{kind}{path.suffix}"
            mutated.write_bytes(mutate(data, kind, rng))
            # Mostly uniform sampling with PyAV; every 4th by rate, every 3rd through the decord guard.
            request = {"path": str(mutated), "backend": "decord" if m % 3 == 2 else "pyav"}
            request.update({"fps": 5.0} if m % 4 == 3 else {"num_frames": 8})
            cases.append((mutated.name, kind, request))

    child = ReaderChild()
    failures, outcomes = [], {"frames": 0, "VideoDecodeError": 0}
    try:
        for name, kind, request in cases:
            r = child.read(request)
            outcome = r["outcome"]
            if outcome not in outcomes:  # timeout, crash, or another exception
                failures.append(f"{name}: {outcome}: {r.get('message', '')} {r.get('returncode', '')}"
                                f"\n{r.get('traceback', '')}")
                continue
            outcomes[outcome] += 1
            if outcome == "VideoDecodeError":
                msg = r["message"]
                if "\n" in msg or not msg.startswith(f"cannot decode video '{request['path']}': ") or "; " not in msg:
                    failures.append(f"{name}: unclear error message {msg!r}")
                continue
            idx, times = r["indices"], r["times"]
            if not r["well_formed"]:
                failures.append(f"{name}: frames array does not match indices/times")
            if idx != sorted(set(idx)) or not 0 <= idx[0] <= idx[-1] < r["n"]:
                failures.append(f"{name}: bad indices {idx} for {r['n']} frames")
            if not all(np.isfinite(times)) or any(b < a for a, b in itertools.pairwise(times)):
                failures.append(f"{name}: bad times {times}")
            if kind == "truncate":
                # A cut keeps the frames before it intact: every frame but the last (which
                # may be cut itself, or lose a reference) is the stamped frame of its index.
                if r["stamps"][:-1] != idx[:-1]:
                    failures.append(f"{name}: stamps {r['stamps']} != indices {idx}")
                # Containers that state their length must say when frames are missing (MPEG-PS
                # states none: a cut program stream is a shorter valid stream).
                lost = BASE_FRAMES - r["n"]
                told = any(w for w in r["warnings"] if "truncated" in w or "fewer than" in w)
                if lost > 12 and not told and not name.endswith(".mpg"):  # > 0.5 s missing, nobody said so
                    failures.append(f"{name}: {lost} frames lost without a warning: {r['warnings']}")
    finally:
        child.stop()
    assert not failures, f"{len(failures)} of {len(cases)} reads failed:\n" + "\n".join(failures)
    # The mutations must exercise both outcomes (else the test proves little).
    assert outcomes["frames"] >= len(cases) // 4 and outcomes["VideoDecodeError"] >= len(cases) // 10, outcomes
    assert child.starts == 1


def test_damaged_matroska_header_or_cues_give_the_demux_pass_frames(tmp_path):
    # Bits flipped where the Matroska index lives: the header (EBML, SeekHead, Info, Tracks) and
    # the end (last cluster, Cues, Tags). The index is then refused, or it gives exactly the frames
    # of the reader that builds its table from every packet; never other frames, a crash or a hang.
    rng = np.random.default_rng(16)
    bases = [make_noise_video(tmp_path / "base.mkv", 300, 25, gop=25, audio_s=12.0),
             make_noise_video(tmp_path / "base.webm", 300, 25, gop=25, codec="libvpx")]
    child = ReaderChild()
    failures, tables = [], {"index": 0, "demux": 0, "decode": 0, "VideoDecodeError": 0}
    try:
        for base in bases:
            data = base.read_bytes()
            for m in range(30):
                b = bytearray(data)
                lo, hi = (0, 700) if m % 2 == 0 else (len(b) - 1500, len(b))
                for _ in range(int(rng.integers(1, 4))):
                    b[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
                path = tmp_path / f"{base.stem}_{m:02d}{base.suffix}"
                path.write_bytes(bytes(b))
                r = child.read({"path": str(path), "backend": "pyav", "num_frames": 12, "compare_demux": True})
                if r["outcome"] == "VideoDecodeError":
                    tables["VideoDecodeError"] += 1
                elif r["outcome"] != "frames":
                    failures.append(f"{path.name}: {r['outcome']}: {r.get('message', '')}\n{r.get('traceback', '')}")
                else:
                    tables[r["frame_table"]] += 1
                    if not r["same_as_demux"]:
                        failures.append(f"{path.name}: frames differ from the demux pass ({r['frame_table']} table)")
    finally:
        child.stop()
    assert not failures, "\n".join(failures)
    assert tables["index"] >= 10 and tables["demux"] >= 5, tables  # both ways were exercised


# ----------------------------------------------------------------------------- cut files


def test_cut_mp4_without_index_says_so(tmp_path):
    # Ordinary mp4 (index at the end): a cut file has no index, or half of one, and cannot be
    # read at all. Cut in the frame data (no moov) and inside the moov box.
    path = make_video(tmp_path / "cut.mp4", 40, 10, (64, 48), "libx264")
    data = path.read_bytes()
    moov = data.index(b"moov") - 4
    for cut in (moov // 2, moov + 100):
        path.write_bytes(data[:cut])
        with pytest.raises(VideoDecodeError) as info:
            read_video(path, num_frames=4)
    msg = str(info.value)
    assert "index (the 'moov' box) is missing or incomplete: the file was cut off" in msg
    assert msg.endswith("get a complete copy of the file")


@pytest.mark.parametrize("name,codec,options", [
    ("faststart.mp4", "libx264", {"movflags": "+faststart"}),
    ("cut.mkv", "libx264", None),
    ("cut.webm", "libvpx-vp9", None),
    ("cut.avi", "mpeg4", None),
])
def test_cut_file_gives_the_frames_before_the_cut_with_a_warning(tmp_path, name, codec, options):
    # Policy: a file cut short (index first, or no index needed) yields the frames that
    # decode, and a warning that the file may be truncated.
    n = 100
    path = make_video(tmp_path / name, n, 25, (128, 96), codec, moving=True, gop=25, container_options=options)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for backend in BACKENDS_HERE:
        clip = read_video(path, num_frames=8, backend=backend)
        assert 20 < clip.num_stream_frames < n
        assert [read_stamp(f) for f in clip.frames[:-1]] == clip.indices[:-1]
        notes = [w for w in clip.warnings if "may be truncated" in w]
        assert len(notes) == 1 and f"using the {clip.num_stream_frames} frames it has" in notes[0]


# ----------------------------------------------------------------------------- decord guard


@pytest.fixture()
def sample(tmp_path):
    return make_video(tmp_path / "guard.mp4", 40, 10, (64, 48), "libx264")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_decord
def test_decord_hang_is_killed_and_pyav_takes_over(sample, monkeypatch):
    # The child spins forever in get_batch (3+ frames), ignoring SIGTERM, like decord's
    # native hang. The guard's time limit (2 s + 0.1 s per frame here) kills it with SIGKILL.
    proc = decord_guard.DecordProcess(
        init="decord_sabotage:hang_batches_of_many", batch_base_timeout_s=2.0, batch_frame_timeout_s=0.1
    )
    monkeypatch.setattr(decord_guard, "_shared", proc)
    try:
        small = read_video(sample, num_frames=2, backend="decord")  # 1-frame calls only: no hang
        assert small.backend == "decord" and small.warnings == []
        hung_pid = proc.pid
        assert hung_pid is not None
        clip = read_video(sample, num_frames=8, backend="decord")
        assert clip.backend == "pyav"
        assert [read_stamp(f) for f in clip.frames] == clip.indices == np.linspace(0, 39, 8, dtype=int).tolist()
        assert len(clip.warnings) == 1
        assert "decord did not answer within 2.8 s while answering 'batch'" in clip.warnings[0]
        assert "decoded with PyAV instead" in clip.warnings[0]
        assert proc.restarts == 1 and not _alive(hung_pid)
        # The next read starts a fresh child and uses decord again.
        again = read_video(sample, num_frames=2, backend="decord")
        assert again.backend == "decord" and proc.pid not in (None, hung_pid)
    finally:
        proc.stop()


@needs_decord
def test_decord_crash_is_contained_and_pyav_takes_over(sample, monkeypatch):
    proc = decord_guard.DecordProcess(init="decord_sabotage:crash_batches_of_many")
    monkeypatch.setattr(decord_guard, "_shared", proc)
    try:
        clip = read_video(sample, num_frames=8, backend="decord")
    finally:
        proc.stop()
    assert clip.backend == "pyav"
    assert [read_stamp(f) for f in clip.frames] == clip.indices
    assert "the decord process died while answering 'batch' (exit code -11)" in clip.warnings[0]


@needs_decord
def test_decord_process_is_reused_across_reads(sample, monkeypatch):
    proc = decord_guard.DecordProcess()
    monkeypatch.setattr(decord_guard, "_shared", proc)
    try:
        pids = set()
        for k in (3, 5, 7):
            clip = read_video(sample, num_frames=k, backend="decord")
            assert clip.backend == "decord" and [read_stamp(f) for f in clip.frames] == clip.indices
            pids.add(proc.pid)
        assert len(pids) == 1 and proc.generation == 1 and proc.restarts == 0
    finally:
        proc.stop()
    assert proc.pid is None


@needs_decord
def test_reader_of_a_replaced_decord_process_fails_cleanly(sample):
    proc = decord_guard.DecordProcess()
    try:
        reader = proc.open(str(sample))
        assert len(reader) == 40 and reader.get_batch([5]).shape == (1, 48, 64, 3)
        proc.stop()  # e.g. killed after another reader's time-out
        with pytest.raises(decord_guard.DecordFailure, match="restarted"):
            reader.get_batch([6])
        with pytest.raises(decord_guard.DecordFailure, match="RuntimeError|DECORDError|Error"):
            proc.open(str(sample.with_name("missing.mp4")))
    finally:
        proc.stop()


def _read_in_forked_child(path: str, results) -> None:
    clip = read_video(path, num_frames=4, backend="decord")
    own = decord_guard.shared_process()
    results.put((clip.backend, clip.warnings, [read_stamp(f) for f in clip.frames], own.pid, os.getpid()))
    own.stop()


@needs_decord
def test_forked_process_gets_its_own_decord_process(sample, monkeypatch):
    # A fork (DataLoader workers, some Ray setups) inherits the parent's pipes to its decord
    # process; using them would mix two conversations. The fork starts its own instead.
    proc = decord_guard.DecordProcess()
    monkeypatch.setattr(decord_guard, "_shared", proc)
    try:
        assert read_video(sample, num_frames=4, backend="decord").backend == "decord"
        parent_decord = proc.pid
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        child = ctx.Process(target=_read_in_forked_child, args=(str(sample), results))
        child.start()
        backend, warnings, stamps, child_decord, child_pid = results.get(timeout=60)
        child.join(timeout=30)
        assert child.exitcode == 0
        assert backend == "decord" and warnings == [] and stamps == [0, 13, 26, 39]
        assert child_decord not in (None, parent_decord) and child_pid != os.getpid()
        again = read_video(sample, num_frames=4, backend="decord")  # the parent's conversation is intact
        assert again.backend == "decord" and proc.pid == parent_decord and proc.restarts == 0
    finally:
        proc.stop()


def test_decord_that_cannot_start_is_not_retried(sample, monkeypatch):
    proc = decord_guard.DecordProcess(init="no_such_module:setup")
    monkeypatch.setattr(decord_guard, "_shared", proc)
    with pytest.raises(decord_guard.DecordFailure, match="cannot start.*ModuleNotFoundError"):
        proc.open(str(sample))
    clip = read_video(sample, num_frames=4, backend="decord")
    assert proc.generation == 1  # no second child: the failed start is not retried
    assert clip.backend == "pyav" and "decord cannot open it (the decord process cannot start" in clip.warnings[0]
