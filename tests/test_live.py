"""Live sources: real network streams on loopback, files played in real time, Python iterators, cameras.

The network tests serve a generated MPEG-TS file (stamped frames) from a real server
on 127.0.0.1 (HTTP, or raw TCP), paced in real time, and read it through PyAV.
Threads are synchronised by events and results checked by counts; the only clock checks left are
lower bounds on real-time pacing (a frame is not handed on before its time), which load can only
make later, never fail.
"""

from __future__ import annotations

import itertools
import socket
import socketserver
import sys
import threading
import time

import numpy as np
import pytest
from videos import draw_stamp, make_video, read_stamp, texture

from vidprune.errors import ConfigError, VideoDecodeError
from vidprune.pipeline.decode import Frame
from vidprune.pipeline.live import LiveSource, open_live_source, source_kind

STREAM_FPS = 25
STREAM_FRAMES = 75  # 3 s
CHUNK = 188 * 8  # MPEG-TS packets per write


class TSServer:
    """Streams an MPEG-TS file to every client from its start, in real time, on 127.0.0.1.

    ``protocol``: ``"http"`` (an HTTP/1.0 response without length) or ``"tcp"`` (raw
    bytes). ``first``: what happens to the first connection after ``after_s`` seconds:
    ``"drop"`` (closed), ``"stall"`` (kept open, silent), or None. ``silent``: every
    connection gets no video at all. ``stop()`` closes the listening socket and all
    connections (clients then get refused).
    """

    def __init__(self, data: bytes, duration_s: float, protocol: str = "http", first: str | None = None,
                 after_s: float = 1.0, silent: bool = False) -> None:
        self.data, self.duration_s, self.protocol = data, duration_s, protocol
        self.first, self.after_s, self.silent = first, after_s, silent
        self.connections = 0
        self.stopped = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.protocol}://127.0.0.1:{self.port}/live.ts"

    def _handle(self, conn: socket.socket) -> None:
        self.connections += 1
        number = self.connections
        try:
            if self.protocol == "http":
                conn.recv(65536)  # the request
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
            if self.silent:
                self.stopped.wait(60)
                return
            start = time.monotonic()
            for pos in range(0, len(self.data), CHUNK):
                due = start + self.duration_s * pos / len(self.data)
                if self.stopped.wait(max(0.0, due - time.monotonic())):
                    return
                if number == 1 and self.first and time.monotonic() - start >= self.after_s:
                    if self.first == "stall":
                        self.stopped.wait(60)
                    return
                conn.sendall(self.data[pos : pos + CHUNK])
        except OSError:
            pass  # the client went away
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ts_bytes(tmp_path_factory):
    path = make_video(tmp_path_factory.mktemp("live") / "live.ts", STREAM_FRAMES, STREAM_FPS, (64, 48), "libx264",
                      gop=10, bframes=0)
    return path.read_bytes()


@pytest.fixture()
def serve(ts_bytes):
    servers = []

    def start(**kwargs) -> TSServer:
        server = TSServer(ts_bytes, STREAM_FRAMES / STREAM_FPS, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def take(source: LiveSource, count: int) -> list[Frame]:
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


# ----------------------------------------------------------------------------- network streams


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_network_stream_is_sampled_at_the_target_rate(serve, protocol):
    server = serve(protocol=protocol)
    start = time.monotonic()
    with open_live_source(server.url, fps=5.0, timeout_s=5.0, reconnects=0) as source:
        assert source.kind == "url"
        frames = take(source, 12)  # 0 .. 2.2 s of the first connection
        elapsed = time.monotonic() - start
        stats = dict(source.stats)
    stamps = [read_stamp(f.rgb) for f in frames]
    # 25 fps sampled at 5 fps: every 5th frame; index counts every frame received.
    assert stamps == [f.index for f in frames] == list(range(0, 60, 5))
    assert [f.time_s for f in frames] == pytest.approx([s / STREAM_FPS for s in stamps], abs=1e-6)
    assert all(f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert stats["yielded"] == 12 and stats["dropped"] == stats["received"] - 12 and stats["reconnects"] == 0
    assert elapsed > 1.2  # paced by the server: 2.2 s of video arrive over about that long, not at once


def test_udp_stream_joined_mid_broadcast(ts_bytes):
    # A UDP broadcast that was already running: the reader joins wherever it is, starts
    # at a keyframe, and samples every 5th frame from there.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    stop = threading.Event()

    def broadcast() -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagram = 188 * 7
        duration = STREAM_FRAMES / STREAM_FPS
        while not stop.is_set():  # loop the file, in real time
            start = time.monotonic()
            for pos in range(0, len(ts_bytes), datagram):
                if stop.wait(max(0.0, start + duration * pos / len(ts_bytes) - time.monotonic())):
                    break
                out.sendto(ts_bytes[pos : pos + datagram], ("127.0.0.1", port))
        out.close()

    sender = threading.Thread(target=broadcast, daemon=True)
    sender.start()
    try:
        with open_live_source(f"udp://127.0.0.1:{port}", fps=5.0, timeout_s=5.0, reconnects=0) as source:
            frames = take(source, 8)
    finally:
        stop.set()
        sender.join(timeout=5)
    stamps = [read_stamp(f.rgb) for f in frames]
    steps = np.diff(stamps) % STREAM_FRAMES  # the broadcast may loop in between
    assert np.all(steps == 5)
    times = [f.time_s for f in frames]
    assert times[0] == 0.0 and np.allclose(np.diff(times), 0.2, atol=0.05)


def test_server_killed_mid_stream_ends_in_a_clear_error(serve):
    server = serve()
    source = open_live_source(server.url, fps=5.0, timeout_s=2.0, reconnects=2)
    got = take(source, 3)
    assert [read_stamp(f.rgb) for f in got] == [0, 5, 10]
    server.stop()
    with pytest.raises(VideoDecodeError) as info:
        for _ in source:
            pass
    msg = str(info.value)
    assert msg.startswith(f"cannot read stream '{server.url}': cannot open it (")
    assert "Connection refused" in msg and "after 2 reconnects" in msg and "\n" not in msg
    assert source.stats["reconnects"] == 2
    # an HTTP response without length that stops: FFmpeg reports an I/O error, not an end
    first_cause = source.warnings[0].split(": ", 1)[1].split(";")[0]
    assert first_cause in ("the stream ended", "the stream broke off (Input/output error)")
    source.close()


@pytest.mark.parametrize("first", ["drop", "stall"])
def test_stream_reconnects_after_a_drop_or_a_stall(serve, first):
    # The first connection is dropped (or goes silent) after 1 s; the next one works and
    # streams from the start again. Indices and times go on increasing across the gap.
    server = serve(first=first, after_s=1.0)
    with open_live_source(server.url, fps=5.0, timeout_s=1.0, reconnects=1) as source:
        frames = take(source, 12)
        reconnects, warnings = source.stats["reconnects"], list(source.warnings)
    assert reconnects == 1 and server.connections == 2
    causes = ["the stream ended", "the stream broke off (Input/output error)"] if first == "drop" else [
        "no data within 1 s"]
    assert warnings in [[f"stream '{server.url}': {cause}; reconnecting in 0.5 s"] for cause in causes]
    stamps = [read_stamp(f.rgb) for f in frames]
    restart = next(i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1])
    assert stamps[:restart] == list(range(0, 5 * restart, 5))  # the first connection, every 5th frame
    assert stamps[restart] < 5 and stamps[restart:] == sorted(stamps[restart:])
    indices, times = [f.index for f in frames], [f.time_s for f in frames]
    assert indices == sorted(set(indices)) and times == sorted(times)
    # the second connection's times are anchored to the wall clock: after the outage
    gap = times[restart] - times[restart - 1]
    assert gap >= 0.5 + (1.0 if first == "stall" else 0.0) - 0.2


def test_silent_stream_times_out_with_a_clear_error(serve):
    server = serve(silent=True)
    start = time.monotonic()
    with pytest.raises(VideoDecodeError) as info:
        open_live_source(server.url, fps=2.0, timeout_s=1.0, reconnects=1)
    elapsed = time.monotonic() - start
    assert str(info.value) == (
        f"cannot read stream '{server.url}': cannot open it (it did not answer within 1 s), after 1 reconnect; "
        "check that it is running and reachable, or allow more time (timeout_s) and reconnects"
    )
    assert elapsed >= 2.0  # both 1 s time-outs were waited (the attempts are counted below)
    assert server.connections == 2


def _reader(source: LiveSource, got: list[Frame], count: int) -> tuple[threading.Thread, threading.Event]:
    """A thread reading ``source`` into ``got``; the event is set once it holds ``count`` frames (or it ended)."""
    reached = threading.Event()

    def read() -> None:
        try:
            for frame in source:
                got.append(frame)
                if len(got) >= count:
                    reached.set()
        finally:
            reached.set()

    return threading.Thread(target=read), reached


def test_close_from_another_thread_stops_the_reader(serve):
    server = serve()
    source = open_live_source(server.url, fps=5.0, timeout_s=5.0, reconnects=0)
    got: list[Frame] = []
    reader, reached = _reader(source, got, 2)
    reader.start()
    assert reached.wait(60) and len(got) >= 2
    source.close()
    reader.join(timeout=60)
    # the whole stream sampled at 5 fps is 15 frames: the reader stopped before its end because of close()
    assert not reader.is_alive() and 2 <= len(got) < STREAM_FRAMES // 5


# ----------------------------------------------------------------------------- files in real time


def test_file_is_played_in_real_time(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 20, 10, (64, 48), "libx264")  # 2 s
    source = open_live_source(path, fps=5.0)
    assert source.kind == "file"
    start = time.monotonic()
    arrivals, frames = [], []
    for frame in source:
        arrivals.append(time.monotonic() - start)
        frames.append(frame)
    assert [f.index for f in frames] == [read_stamp(f.rgb) for f in frames] == list(range(0, 20, 2))
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(0, 20, 2)], abs=1e-6)
    # each frame is handed on when the clock reaches its time, not before (nor much later)
    assert all(a >= f.time_s - 0.02 for a, f in zip(arrivals, frames))
    assert arrivals[-1] >= 1.7  # paced: the last frame (t = 1.8 s) is not handed on early


def test_file_loops_with_continuing_indices_and_times(tmp_path):
    path = make_video(tmp_path / "short.mp4", 5, 10, (64, 48), "libx264")  # 0.5 s
    with open_live_source(path, fps=10.0, loop=True) as source:
        frames = take(source, 12)
    assert [f.index for f in frames] == list(range(12))
    assert [read_stamp(f.rgb) for f in frames] == [i % 5 for i in range(12)]
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(12)], abs=1e-6)


# ----------------------------------------------------------------------------- Python iterators


def stamped(i: int) -> np.ndarray:
    img = texture(48, 64)
    draw_stamp(img, i)
    return img


def test_iterator_with_times_is_sampled_at_the_target_rate():
    items = [(stamped(i), i / 30) for i in range(60)]  # 30 fps, 2 s
    with open_live_source(iter(items), fps=10.0) as source:
        assert source.kind == "iterator"
        frames = list(source)
    assert [f.index for f in frames] == [read_stamp(f.rgb) for f in frames] == list(range(0, 60, 3))
    assert [f.time_s for f in frames] == pytest.approx([i / 30 for i in range(0, 60, 3)])
    assert frames[1].rgb is items[3][0]  # handed on as it is, no copy
    assert source.stats == {"received": 60, "yielded": 20, "dropped": 40, "reconnects": 0}


def test_iterator_without_times_uses_the_clock():
    def camera():
        for i in range(40):
            time.sleep(0.01)  # about 100 frames per second
            yield stamped(i)

    source = open_live_source(camera(), fps=20.0)
    frames = list(source)
    times = [f.time_s for f in frames]
    # the arrival clock decides: kept frames at least 1/20 s apart (less the tolerance), the rest counted as dropped
    assert times[0] == 0.0 and all(b - a >= 0.75 * 0.05 for a, b in itertools.pairwise(times))
    assert source.stats["received"] == 40 and source.stats["yielded"] == len(frames) >= 2
    assert source.stats["dropped"] == 40 - len(frames)
    assert [f.index for f in frames] == [read_stamp(f.rgb) for f in frames]


def test_iterator_stall_times_out():
    def stalls():
        yield stamped(0), 0.0
        yield stamped(1), 0.1
        time.sleep(30)
        yield stamped(2), 0.2

    source = open_live_source(stalls(), fps=100.0, timeout_s=0.5)
    assert [read_stamp(f.rgb) for f in take(source, 2)] == [0, 1]
    with pytest.raises(VideoDecodeError, match=r"the frame iterator gave no frame within 0.5 s"):
        next(source)  # a reader that waited for the stalled iterator would get frame 2 after 30 s instead
    source.close()


def test_close_from_another_thread_stops_a_stalled_iterator():
    def stalls():
        yield stamped(0), 0.0
        time.sleep(30)
        yield stamped(1), 0.1

    source = open_live_source(stalls(), fps=10.0, timeout_s=30.0)
    got: list[Frame] = []
    reader, reached = _reader(source, got, 1)
    reader.start()
    assert reached.wait(25) and len(got) == 1  # frame 0 is in; the iterator now sleeps 30 s
    source.close()
    reader.join(timeout=20)
    assert not reader.is_alive()  # the iterator sleeps 30 s: the reader stopped because of close()
    assert [read_stamp(f.rgb) for f in got] == [0]


def test_iterator_errors_are_reported():
    def broken():
        yield stamped(0)
        raise RuntimeError("camera unplugged")

    source = open_live_source(broken(), fps=10.0)
    assert read_stamp(next(source).rgb) == 0
    with pytest.raises(VideoDecodeError, match=r"failed after 1 frames \(RuntimeError: camera unplugged\)"):
        next(source)
    with pytest.raises(ConfigError, match=r"frame 0 from the iterator is a float64 array of shape \(4, 4\)"):
        next(open_live_source(iter([np.zeros((4, 4))]), fps=10.0))


# ----------------------------------------------------------------------------- specs and cameras


def test_the_pyav_wheel_has_the_camera_input_and_opens_devices_through_it():
    """FFmpeg lists the V4L2 demuxer as 'video4linux2,v4l2': the lookup must see it, and a device path
    reaches it (``/dev/null`` is a device but not a camera: V4L2's ioctl fails, in one clear line)."""
    from vidprune.pipeline.live import _CAMERA_FORMATS, has_input_format

    assert has_input_format(_CAMERA_FORMATS.get(sys.platform, "v4l2")) and not has_input_format("no-such-input")
    if not sys.platform.startswith("linux"):  # the device half below is V4L2's (Linux)
        return
    assert has_input_format("v4l2") and has_input_format("video4linux2")
    with pytest.raises(VideoDecodeError) as info:
        open_live_source("device:/dev/null", fps=2.0, timeout_s=2.0, reconnects=0)
    message = str(info.value)
    assert message.startswith("cannot read camera 'device:/dev/null': cannot open it (Inappropriate ioctl")
    assert "\n" not in message


def test_missing_camera_fails_fast_with_a_clear_error(monkeypatch):
    """Fast = FFmpeg is never asked to open a device that does not exist (no time-out, no retries)."""
    import av

    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    for spec in ("/dev/video97", "device:97"):
        with pytest.raises(VideoDecodeError) as info:
            open_live_source(spec, fps=2.0)
        assert opened == []
        msg = str(info.value)
        assert msg.startswith(f"cannot open camera '{spec}': no such device /dev/video97;")
        assert "ls /dev/video*" in msg


def test_source_specs_are_classified_and_checked(tmp_path):
    video = make_video(tmp_path / "v.mp4", 3, 10, (64, 48), "libx264")
    assert source_kind(str(video)) == "file" and source_kind(video) == "file"
    assert source_kind("rtsp://cam/stream") == source_kind("udp://127.0.0.1:5000") == "url"
    assert source_kind("/dev/video0") == source_kind("device:FaceTime HD Camera") == "device"
    assert source_kind(iter([])) == source_kind([np.zeros((2, 2, 3), np.uint8)]) == "iterator"
    with pytest.raises(ConfigError, match="is a directory"):
        source_kind(str(tmp_path))
    with pytest.raises(VideoDecodeError, match="it is not an existing file, a camera"):
        source_kind(str(tmp_path / "missing.mp4"))
    with pytest.raises(ConfigError, match="got int"):
        open_live_source(3, fps=1.0)
    for bad in ({"fps": 0}, {"fps": float("nan")}, {"fps": 1.0, "timeout_s": 0}, {"fps": 1.0, "reconnects": -1}):
        with pytest.raises(ConfigError):
            open_live_source(str(video), **bad)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(VideoDecodeError, match="FFmpeg cannot read it"):
        open_live_source(text, fps=1.0)
