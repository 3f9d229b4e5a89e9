"""Bytes fetched = bytes needed (vidprune.pipeline.decode.byte_source), on a local disk, S3 and HTTP.

Local files: the reader must switch the kernel's read-ahead off and announce exactly the
byte ranges the index says decoding reads (checked on the fadvise calls and on every
read, counted by a wrapper around the file object; the physical reads at a cold cache are
measured by benchmarks/bench_skip_and_fetch.py). Remote files: a local HTTP server with
byte ranges (tests/range_server.py, counting what it sends) and moto's S3 server, both on
127.0.0.1, started here; the frames must be those read from the local copy.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from range_server import LocalS3, RangeHTTPServer
from videos import make_noise_video, read_stamp

from vidprune.errors import VideoDecodeError
from vidprune.pipeline.decode import byte_source, read_video
from vidprune.pipeline.decode.sampling import uniform_indices

# as the long-file tests of test_decode.py: 20 minutes at 5 fps, a keyframe every 10 s, noise frames
LONG_FPS, LONG_GOP = 5, 50
LONG_FRAMES = 20 * 60 * LONG_FPS
needs_s3 = pytest.mark.skipif(importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None,
                              reason="the remote extra (s3fs) and moto are not installed")


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    return {ext: make_noise_video(root / f"long.{ext}", LONG_FRAMES, LONG_FPS, (128, 96), gop=LONG_GOP, bframes=2)
            for ext in ("mp4", "mkv")}


def stamps(frames) -> list[int]:
    return [read_stamp(f) for f in frames]


class _ReadLog:
    """Every read of every local video file (position, bytes, after read-ahead was switched off)."""

    def __init__(self, monkeypatch):
        self.reads: list[tuple[object, int, int, bool]] = []
        self.files: dict[int, object] = {}
        original = byte_source._LocalFile.readinto

        def readinto(file, buffer):
            pos = file.tell()
            n = original(file, buffer)
            self.reads.append((file, pos, n, file._random))
            self.files[id(file)] = file
            return n

        monkeypatch.setattr(byte_source._LocalFile, "readinto", readinto)

    def announced(self) -> list[tuple[int, int]]:
        return [(o, o + n) for f in self.files.values() for what, o, n in f.advice if what == "willneed"]


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this platform")
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_seeks_switch_read_ahead_off_and_announce_exactly_the_index_ranges(long_videos, monkeypatch, ext):
    calls: list[tuple[int, int, int]] = []
    fadvise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, o, n, a: (calls.append((a, o, n)), fadvise(fd, o, n, a))[1])
    log = _ReadLog(monkeypatch)
    clip = read_video(long_videos[ext], num_frames=32)
    assert clip.stats["frame_table"] == "index" and clip.stats["seeks"] >= 30
    assert stamps(clip.frames) == clip.indices == uniform_indices(LONG_FRAMES, 32)
    assert [a for a, _, _ in calls].count(os.POSIX_FADV_RANDOM) == 1  # once, on the file that seeks
    assert os.POSIX_FADV_WILLNEED in [a for a, _, _ in calls]
    announced = log.announced()
    after = [(pos, n) for _, pos, n, random in log.reads if random]
    read_after = sum(n for _, n in after)
    covered = sum(min(n, sum(max(0, min(pos + n, b) - max(pos, a)) for a, b in announced)) for pos, n in after)
    announced_bytes = sum(b - a for a, b in announced)
    # what decoding reads was announced (within 10 %), and what was announced was read (within 10 %)
    assert covered >= 0.9 * read_after, (covered, read_after)
    assert announced_bytes <= 1.1 * covered, (announced_bytes, covered)
    assert read_after >= 0.7 * clip.stats["bytes_read"]  # most reads come after the first seek
    assert clip.stats["bytes_read"] <= 0.2 * clip.stats["file_bytes"]


def test_a_file_read_front_to_back_keeps_read_ahead(long_videos, monkeypatch):
    calls = []
    fadvise = os.posix_fadvise if hasattr(os, "posix_fadvise") else None
    if fadvise is not None:
        monkeypatch.setattr(os, "posix_fadvise", lambda fd, o, n, a: (calls.append(a), fadvise(fd, o, n, a))[1])
    clip = read_video(long_videos["mp4"], indices=list(range(10)))  # the first frames: no seek
    assert stamps(clip.frames) == list(range(10)) and clip.stats["seeks"] == 0
    assert calls == []


@pytest.fixture(scope="module")
def http_server(long_videos):
    root = os.path.dirname(long_videos["mp4"])
    with RangeHTTPServer(root) as server:
        yield server


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_http_reads_the_same_frames_by_byte_ranges(long_videos, http_server, ext):
    local = read_video(long_videos[ext], num_frames=32)
    before = http_server.bytes_sent
    clip = read_video(http_server.url(f"long.{ext}"), num_frames=32)
    sent = http_server.bytes_sent - before
    assert clip.stats["frame_table"] == "index" and clip.indices == local.indices
    assert all(np.array_equal(a, b) for a, b in zip(clip.frames, local.frames))
    size = os.path.getsize(long_videos[ext])
    assert sent <= 0.2 * size, f"fetched {sent / size:.1%} of the file"
    assert sent <= 1.1 * local.stats["bytes_read"]  # about what FFmpeg and the index readers asked for


def test_unreachable_and_missing_urls_are_one_line(http_server):
    for url in (http_server.url("missing.mp4"), "http://127.0.0.1:9/closed-port.mp4"):
        with pytest.raises(VideoDecodeError) as info:
            read_video(url, num_frames=4)
        assert "\n" not in str(info.value) and url in str(info.value)


def test_decord_on_a_url_decodes_with_pyav_and_says_so(long_videos, http_server):
    clip = read_video(http_server.url("long.mp4"), indices=[0, 1], backend="decord")
    assert stamps(clip.frames) == [0, 1] and clip.backend == "pyav"
    assert any("decord reads local files only" in w for w in clip.warnings)


@needs_s3
def test_s3_reads_the_same_frames_by_byte_ranges(long_videos):
    local = read_video(long_videos["mp4"], num_frames=32)
    with LocalS3() as s3:
        url = s3.put(long_videos["mp4"], "long.mp4")
        clip = read_video(url, num_frames=32)
        fetched = byte_source.bytes_fetched(url)
        with pytest.raises(VideoDecodeError, match="does not exist") as info:
            read_video(s3.url("missing.mp4"), num_frames=4)
        assert "\n" not in str(info.value)
    assert clip.indices == local.indices and all(np.array_equal(a, b) for a, b in zip(clip.frames, local.frames))
    assert fetched <= 0.2 * os.path.getsize(long_videos["mp4"])


# ------------------------------------------------------------------------------ the applications


@pytest.fixture(scope="module")
def short_video_server(tmp_path_factory):
    from vidprune.samples import moving_square_frames, write_video

    root = tmp_path_factory.mktemp("served")
    write_video(root / "moving.mp4", moving_square_frames(48, 112, 144))
    with RangeHTTPServer(root) as server:
        yield server, root / "moving.mp4"


def test_ask_on_an_https_style_url_equals_the_local_file(video_llava_ckpt, short_video_server, capsys):
    import json

    from vidprune.cli import main

    server, local = short_video_server
    args = ["What is moving?", "--model", video_llava_ckpt, "--frames", "8", "--budget", "60",
            "--max-new-tokens", "4", "--json"]
    assert main(["ask", server.url("moving.mp4"), *args]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert main(["ask", str(local), *args]) == 0
    here = json.loads(capsys.readouterr().out)
    assert remote["answer"] == here["answer"] and remote["frames"] == here["frames"]
    code = main(["ask", server.url("missing.mp4"), *args])
    err = capsys.readouterr().err
    assert code != 0 and "does not exist or cannot be reached" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_manifest_keeps_urls_as_given(tmp_path):
    from vidprune.jobs.manifest import read_manifest

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": 1, "video": "s3://bucket/a.mp4", "question": "What?"}\n'
                        '{"id": 2, "video": "b.mp4", "question": "What?"}\n')
    items = read_manifest(manifest)
    assert items[0].video == "s3://bucket/a.mp4" and items[1].video == str(tmp_path / "b.mp4")
