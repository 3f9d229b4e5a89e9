"""Tests of vidprune.pipeline.decode on small generated videos whose frames carry their index."""

from __future__ import annotations

import sys
import types
from fractions import Fraction

import av
import numpy as np
import pytest
from videos import (  # tests/videos.py (tests/ is on sys.path under pytest)
    BACKENDS,
    BACKENDS_HERE,
    make_audio_file,
    make_moving_square_video,
    make_noise_video,
    make_resolution_change_ts,
    make_vfr_video,
    make_video,
    needs_decord,
    read_stamp,
    remove_avi_index,
    scale_mp4_durations,
    scramble_avi_index,
    set_avi_frame_counts,
    set_mkv_default_duration,
    texture,
)

from vidprune.errors import ConfigError, VideoDecodeError
from vidprune.pipeline.decode import decord_guard
from vidprune.pipeline.decode.mkv_index import read_cluster_blocks, read_cue_index
from vidprune.pipeline.decode import (
    DecodedClip,
    Frame,
    VideoReader,
    available_backends,
    fps_indices,
    frame_to_rgb,
    read_video,
    uniform_indices,
)

FPS = 10
N = 40


def stamps(frames) -> list[int]:
    return [read_stamp(f) for f in frames]


def raw_decode_pts(path) -> tuple[list[int], Fraction]:
    """Reference: pts of every frame plain PyAV decodes, in output order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        return [f.pts for f in c.decode(s)], s.time_base


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    v = {
        "h264": make_video(d / "h264.mp4", N, FPS, (64, 48), "libx264"),
        "mpeg4": make_video(d / "mpeg4.avi", N, FPS, (64, 48), "mpeg4"),
        "vp9": make_video(d / "vp9.webm", 20, FPS, (64, 48), "libvpx-vp9", moving=True),
        "mkv": make_video(d / "h264.mkv", N, FPS, (96, 64), "libx264", moving=True),
        "short": make_video(d / "short.mp4", 5, FPS, (64, 48), "libx264"),
        "seek_mp4": make_video(d / "seek.mp4", 120, 25, (64, 48), "libx264", gop=10, bframes=2),
        "seek_avi": make_video(d / "seek.avi", 120, 25, (64, 48), "mpeg4", gop=10),
        "cut": make_video(d / "cut.mkv", N, FPS, (64, 48), "libx264", gop=10, bframes=0, drop_packets=(0,)),
    }
    return v


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("n,k", [(40, 8), (40, 40), (100, 7), (2, 2), (1000, 32), (9, 3)])
def test_uniform_indices_is_lmms_eval_linspace(n, k):
    assert uniform_indices(n, k) == np.linspace(0, n - 1, k, dtype=int).tolist()


def test_uniform_indices_shorter_video_gives_all_frames():
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_indices(0, 8) == []
    with pytest.raises(ConfigError):
        uniform_indices(10, 0)


def test_fps_indices_nearest_dedup_and_cap():
    times = [i / 10 for i in range(40)]  # 10 fps, 0.0 .. 3.9 s
    assert fps_indices(times, 2.0, None) == [0, 5, 10, 15, 20, 25, 30, 35]
    # thinned uniformly over the picked list: linspace(0, 7, 5) -> [0, 1, 3, 5, 7]
    assert fps_indices(times, 2.0, 5) == [0, 5, 15, 25, 35]
    # a rate above the video's keeps each frame once
    assert fps_indices(times, 30.0, None) == list(range(40))
    # ties (0.25 s between 0.2 and 0.3) go to the earlier frame
    assert fps_indices(times, 4.0, None)[:3] == [0, 2, 5]
    # variable frame rate: nearest real timestamp, not index / fps
    vfr = [0.0, 0.1, 0.15, 0.4, 0.41, 0.9, 1.0, 1.7, 1.8, 1.85, 2.5]
    assert fps_indices(vfr, 2.0, None) == [0, 4, 6, 7, 9, 10]
    assert fps_indices([], 1.0, None) == []
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError):
            fps_indices(times, bad, None)
    with pytest.raises(ConfigError):
        fps_indices(times, 1.0, 0)


# ----------------------------------------------------------------------------- uniform sampling


@pytest.mark.parametrize("key,size", [("h264", (64, 48)), ("mpeg4", (64, 48)), ("mkv", (96, 64))])
def test_uniform_sampling_returns_stamped_frames_and_times(vids, key, size):
    clip = read_video(vids[key], num_frames=8)
    expected = np.linspace(0, N - 1, 8, dtype=int).tolist()
    assert isinstance(clip, DecodedClip)
    assert clip.indices == expected
    assert stamps(clip.frames) == expected
    assert clip.times_s == pytest.approx([i / FPS for i in expected], abs=1e-6)
    assert clip.num_stream_frames == N
    assert clip.backend == "pyav"
    assert clip.warnings == []
    w, h = size
    assert clip.frames.shape == (8, h, w, 3) and clip.frames.dtype == np.uint8
    assert clip.frames.flags.c_contiguous


def test_frame_count_ignores_headers(vids):
    # Matroska stores no frame count: the header says 0, the demuxed stream says 40.
    with av.open(str(vids["mkv"])) as c:
        assert c.streams.video[0].frames == 0
    with VideoReader(vids["mkv"]) as r:
        assert len(r) == N
        assert r.frame_times == pytest.approx([i / FPS for i in range(N)], abs=1e-6)


def test_fewer_frames_than_asked_uses_all_with_warning(vids):
    clip = read_video(vids["short"], num_frames=8)
    assert clip.indices == [0, 1, 2, 3, 4]
    assert stamps(clip.frames) == [0, 1, 2, 3, 4]
    assert clip.num_stream_frames == 5
    assert clip.warnings == ["video has 5 frames, fewer than the 8 asked for: using all 5"]


# ----------------------------------------------------------------------------- fps sampling


def test_fps_sampling_lower_rate_with_cap(vids):
    clip = read_video(vids["h264"], fps=2.0)
    assert clip.indices == [0, 5, 10, 15, 20, 25, 30, 35]
    assert stamps(clip.frames) == clip.indices
    capped = read_video(vids["mpeg4"], fps=2.0, max_frames=5)
    assert capped.indices == [0, 5, 15, 25, 35]
    assert stamps(capped.frames) == [0, 5, 15, 25, 35]
    assert capped.times_s == pytest.approx([0.0, 0.5, 1.5, 2.5, 3.5], abs=1e-6)
    assert capped.warnings == []


def test_fps_sampling_above_video_rate_warns(vids):
    clip = read_video(vids["short"], fps=30.0)
    assert clip.indices == [0, 1, 2, 3, 4]
    assert len(clip.warnings) == 1 and "frame rate is lower" in clip.warnings[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_times_come_from_pts(tmp_path, backend):
    times = [0.0, 0.1, 0.15, 0.4, 0.41, 0.9, 1.0, 1.7, 1.8, 1.85, 2.5]
    path = make_vfr_video(tmp_path / "vfr.mkv", times)
    with VideoReader(path) as r:
        assert r.frame_times == pytest.approx(times, abs=1e-6)
    clip = read_video(path, fps=2.0, backend=backend)
    assert clip.backend == backend
    assert clip.indices == [0, 4, 6, 7, 9, 10]
    assert stamps(clip.frames) == clip.indices
    assert clip.times_s == pytest.approx([times[i] for i in clip.indices], abs=1e-6)


# ----------------------------------------------------------------------------- backends


@needs_decord
@pytest.mark.parametrize("key", ["h264", "mpeg4", "vp9", "mkv"])
def test_pyav_and_decord_give_identical_frames(vids, key):
    a = read_video(vids[key], num_frames=6, backend="pyav")
    b = read_video(vids[key], num_frames=6, backend="decord")
    assert b.backend == "decord" and b.warnings == []
    assert a.indices == b.indices
    assert stamps(a.frames) == stamps(b.frames) == a.indices
    assert a.times_s == b.times_s
    assert a.num_stream_frames == b.num_stream_frames
    # Both use FFmpeg's swscale with the frame's own matrix/range: measured difference is 0.
    assert np.array_equal(a.frames, b.frames)


@pytest.mark.parametrize(
    "name,codec,pix_fmt,colorspace,full_range,options",
    [
        ("bt709.mp4", "libx264", "yuv444p", "bt709", False, {"qp": "0"}),
        ("bt709_full.mp4", "libx264", "yuv444p", "bt709", True, {"qp": "0"}),
        ("bt601_full.webm", "libvpx-vp9", "yuv444p", "bt601", True, {"lossless": "1"}),
    ],
)
def test_colour_tags_are_honoured(tmp_path, name, codec, pix_fmt, colorspace, full_range, options):
    path = make_video(
        tmp_path / name,
        4,
        FPS,
        (64, 48),
        codec,
        pix_fmt,
        colorspace=colorspace,
        full_range=full_range,
        options=options,
    )
    clip = read_video(path, num_frames=2)
    body = clip.frames[0, 16:].astype(np.int16)  # below the stamp rows
    source = texture(48, 64)[16:].astype(np.int16)
    assert np.abs(body - source).max() <= 3  # lossless: only rounding error is left
    assert np.array_equal(clip.frames, read_video(path, num_frames=2, backend="decord").frames)


def test_decord_missing_falls_back_to_pyav(vids, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    assert available_backends() == ["pyav"]
    clip = read_video(vids["h264"], num_frames=4, backend="decord")
    assert clip.backend == "pyav"
    assert stamps(clip.frames) == clip.indices == [0, 13, 26, 39]
    assert len(clip.warnings) == 1
    assert "decord" in clip.warnings[0] and "not installed" in clip.warnings[0]


@needs_decord
def test_available_backends_lists_decord_when_installed():
    assert available_backends() == ["pyav", "decord"]


@needs_decord
def test_decord_failing_mid_decode_falls_back(vids, monkeypatch):
    # decord runs in a guarded child process; the hook makes its get_batch raise there
    # for calls of 3+ frames, so the open-time checks pass and the read itself fails.
    proc = decord_guard.DecordProcess(init="decord_sabotage:fail_batches_of_many")
    monkeypatch.setattr(decord_guard, "_shared", proc)
    try:
        clip = read_video(vids["h264"], num_frames=8, backend="decord")
    finally:
        proc.stop()
    assert clip.backend == "pyav"
    assert stamps(clip.frames) == clip.indices == np.linspace(0, N - 1, 8, dtype=int).tolist()
    assert len(clip.warnings) == 1 and "decord failed while decoding" in clip.warnings[0]
    assert "simulated failure" in clip.warnings[0]


def test_stream_cut_before_keyframe_uses_decoded_frames(vids):
    # The first keyframe packet was dropped: 39 packets demux, but the decoder only
    # outputs frames from the next keyframe on. Decoded frames are the truth.
    ref_pts, tb = raw_decode_pts(vids["cut"])
    n_true = len(ref_pts)
    assert n_true < N - 1  # precondition: packets and decoded frames disagree
    for backend in BACKENDS_HERE:
        clip = read_video(vids["cut"], num_frames=8, backend=backend)
        assert clip.backend == "pyav"
        assert clip.num_stream_frames == n_true
        assert clip.indices == uniform_indices(n_true, 8)
        assert stamps(clip.frames) == [i + N - n_true for i in clip.indices]
        expected_t = [float((ref_pts[i] - ref_pts[0]) * tb) for i in clip.indices]
        assert clip.times_s == pytest.approx(expected_t, abs=1e-6)
        assert any("frame table corrected" in w for w in clip.warnings)
        assert not any("were not returned" in w for w in clip.warnings)  # redone pass leaves no noise
        if backend == "decord":
            assert any("decord counts 39 frames" in w for w in clip.warnings)


def test_iter_frames_corrects_the_table_from_the_first_decoded_frame(vids):
    ref_pts, tb = raw_decode_pts(vids["cut"])
    with VideoReader(vids["cut"]) as r:
        assert len(r) == N - 1  # demuxed packets: not yet checked against the decoder
        frames = list(r.iter_frames([0, 1, 2]))
        assert r.table_revision == 1 and len(r) == len(ref_pts)
        assert r.frame_times == pytest.approx([float((p - ref_pts[0]) * tb) for p in ref_pts], abs=1e-6)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [read_stamp(f.rgb) for f in frames] == [i + N - len(ref_pts) for i in range(3)]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.1, 0.2], abs=1e-6)


def test_raw_stream_without_timestamps_is_counted_by_decoding(tmp_path):
    # A raw H.264 elementary stream: packets carry no pts, so demuxing cannot build
    # the table; decoding does. decord cannot open such a file at all.
    path = make_video(tmp_path / "raw.h264", 30, FPS, (64, 48), "libx264")
    with VideoReader(path) as r:
        assert len(r) == 30
        assert r.stats["demux_passes"] == 1 and r.stats["decode_passes"] == 1
        steps = np.diff(r.frame_times)
        assert r.frame_times[0] == 0.0 and np.all(steps > 0) and np.allclose(steps, steps[0])
    for backend in BACKENDS_HERE:
        clip = read_video(path, num_frames=5, backend=backend)
        assert clip.backend == "pyav"
        assert clip.num_stream_frames == 30
        assert stamps(clip.frames) == clip.indices == uniform_indices(30, 5)
        assert any("extrapolated from the frame rate" in w for w in clip.warnings)
        if backend == "decord":
            assert any("decord cannot open it" in w for w in clip.warnings)


def test_resolution_change_is_scaled_to_the_first_size(tmp_path):
    path = make_resolution_change_ts(tmp_path / "cat.ts", ((20, (64, 48)), (20, (96, 64))))
    clip = read_video(path, num_frames=8)
    assert clip.num_stream_frames == 40
    assert clip.frames.shape == (8, 48, 64, 3)
    first_part = [i for i in clip.indices if i < 20]
    assert stamps(clip.frames[: len(first_part)]) == first_part
    assert any("resolution changes mid-stream" in w for w in clip.warnings)
    # the scaled frames still show the second part's picture: its texture, resized
    last = clip.frames[-1, 16:].astype(np.int16)
    assert np.abs(last.mean(axis=(0, 1)) - texture(64, 96)[16:].mean(axis=(0, 1))).max() < 12


# ----------------------------------------------------------------------------- streaming & seeking


def test_iter_frames_streams_in_order(vids):
    with VideoReader(vids["h264"], seek_threshold=None) as r:
        it = r.iter_frames([30, 3, 10, 3])
        assert isinstance(it, types.GeneratorType)
        first = next(it)
        assert isinstance(first, Frame)
        assert (first.index, read_stamp(first.rgb)) == (3, 3)
        assert first.time_s == pytest.approx(0.3)
        assert first.rgb.shape == (48, 64, 3) and first.rgb.dtype == np.uint8
        # streaming: only frames 0..3 decoded, one converted so far
        assert r.stats["decoded_frames"] == 4 and r.stats["converted_frames"] == 1
        rest = list(it)
        assert [f.index for f in rest] == [10, 30]
        assert [read_stamp(f.rgb) for f in rest] == [10, 30]
        assert r.stats["decoded_frames"] == 31 and r.stats["converted_frames"] == 3
        assert r.stats["demux_passes"] == 1 and r.stats["decode_passes"] == 0
        with pytest.raises(IndexError):
            r.iter_frames([N])


def test_frame_times_are_lazy_and_computed_once(vids):
    with VideoReader(vids["mpeg4"]) as r:
        assert r.stats["demux_passes"] == 0
        assert r.frame_times == pytest.approx([i / FPS for i in range(N)], abs=1e-6)
        assert len(r) == N
        assert r.stats["demux_passes"] == 1 and r.stats["decode_passes"] == 0


@pytest.mark.parametrize("key", ["seek_mp4", "seek_avi"])
def test_keyframe_seeking_gives_same_frames_as_sequential(vids, key):
    wanted = [2, 57, 58, 103, 119]
    with VideoReader(vids[key], seek_threshold=8) as r:
        seeked = list(r.iter_frames(wanted))
        assert r.stats["seeks"] >= 2
        assert r.stats["decoded_frames"] < 60  # sequential would decode 120
        assert r.warnings == []
    with VideoReader(vids[key], seek_threshold=None) as r:
        sequential = list(r.iter_frames(wanted))
        assert r.stats["seeks"] == 0 and r.stats["decoded_frames"] == 120
    assert [f.index for f in seeked] == [read_stamp(f.rgb) for f in seeked] == wanted
    assert [f.time_s for f in seeked] == pytest.approx([i / 25 for i in wanted], abs=1e-6)
    for a, b in zip(seeked, sequential):
        assert a.index == b.index and a.time_s == b.time_s
        assert np.array_equal(a.rgb, b.rgb)


# ----------------------------------------------------------------------------- containers and codecs


def header_frames(path) -> int:
    """What the container header says (PyAV ``stream.frames``, 0 = not stored)."""
    with av.open(str(path)) as c:
        return c.streams.video[0].frames


def assert_backends_agree(path, num_frames, expected_indices, expected_times, size, notes=()):
    """Both backends return the stamped frames; decord runs or falls back with a warning, pixels equal.

    ``notes``: the warnings expected from PyAV (decord adds only its fallback note)."""
    w, h = size
    a = read_video(path, num_frames=num_frames, backend="pyav")
    assert a.backend == "pyav" and a.warnings == list(notes)
    assert a.indices == expected_indices and stamps(a.frames) == expected_indices
    assert a.times_s == pytest.approx(expected_times, abs=1e-6)
    assert a.frames.shape == (len(expected_indices), h, w, 3)
    b = read_video(path, num_frames=num_frames, backend="decord")
    assert b.indices == a.indices and b.times_s == a.times_s
    fallback = [msg for msg in b.warnings if "decoded with PyAV instead" in msg]
    assert len(fallback) == (1 if b.backend == "pyav" else 0)
    assert [msg for msg in b.warnings if msg not in fallback] == list(notes)
    assert np.array_equal(a.frames, b.frames)
    return b


@pytest.mark.parametrize(
    "name,codec,pix_fmt,size,kwargs,header,decord_runs",
    [
        # webm stores no frame count (header 0)
        ("vp8.webm", "libvpx", "yuv420p", (64, 48), {}, 0, True),
        ("vp9.webm", "libvpx-vp9", "yuv420p", (64, 48), {"moving": True}, 0, True),
        # MPEG-2 with B-frames in an MPEG program stream (.mpg, FFmpeg's "mpeg" muxer), no count
        # in the header; decord reports decode-order times there, so it must not be used
        ("mpeg2.mpg", "mpeg2video", "yuv420p", (64, 48), {"gop": 12, "bframes": 2}, 0, False),
        ("mpeg2.vob", "mpeg2video", "yuv420p", (64, 48), {"gop": 12, "bframes": 2}, 0, False),
        # odd sizes: codecs that allow them (x264 refuses 4:2:0 at odd sizes, so 4:4:4 there)
        ("odd.avi", "mpeg4", "yuv420p", (97, 55), {}, 40, True),
        ("odd.mp4", "libx264", "yuv444p", (97, 55), {"bframes": 2}, 40, True),
        ("odd.webm", "libvpx-vp9", "yuv420p", (97, 55), {}, 0, True),
        ("odd.mkv", "mjpeg", "yuvj420p", (97, 55), {}, 0, True),
    ],
)
def test_containers_and_codecs_give_stamped_frames(tmp_path, name, codec, pix_fmt, size, kwargs, header, decord_runs):
    path = make_video(tmp_path / name, N, FPS, size, codec, pix_fmt, **kwargs)
    assert header_frames(path) == header  # precondition: what the header claims
    expected = uniform_indices(N, 8)
    b = assert_backends_agree(path, 8, expected, [i / FPS for i in expected], size)
    assert b.backend == ("decord" if decord_runs else "pyav")
    assert b.num_stream_frames == N


@pytest.mark.parametrize(
    "name,codec,pix_fmt",
    [("one.mp4", "libx264", "yuv420p"), ("one.webm", "libvpx-vp9", "yuv420p"), ("one.avi", "mjpeg", "yuvj420p"),
     ("one.mpg", "mpeg2video", "yuv420p")],
)
def test_one_frame_video(tmp_path, name, codec, pix_fmt):
    path = make_video(tmp_path / name, 1, FPS, (64, 48), codec, pix_fmt)
    for backend in BACKENDS_HERE:
        clip = read_video(path, num_frames=8, backend=backend)
        assert clip.indices == [0] and clip.times_s == [0.0] and stamps(clip.frames) == [0]
        assert clip.num_stream_frames == 1 and clip.frames.shape == (1, 48, 64, 3)
        assert clip.warnings[-1] == "video has 1 frame, fewer than the 8 asked for: using it"
        by_rate = read_video(path, fps=2.0, backend=backend)
        assert by_rate.indices == [0] and stamps(by_rate.frames) == [0]


@pytest.mark.parametrize("claimed", [0, 5, 1000])
@pytest.mark.parametrize("codec,bframes", [("mpeg4", 0), ("mpeg4", 2)])
def test_avi_header_frame_counts_that_lie(tmp_path, claimed, codec, bframes):
    path = make_video(tmp_path / "lie.avi", N, FPS, (64, 48), codec, bframes=bframes)
    set_avi_frame_counts(path, claimed)
    assert header_frames(path) == claimed  # precondition: the header lies
    expected = uniform_indices(N, 8)
    # A header claiming more than there is could mean a cut file: the user is told, frames are right.
    notes = [
        (
            f"the header says the video lasts {claimed / FPS:.2f} s but its frames end at {N / FPS:.2f} s: the "
            f"file may be truncated (or its header is wrong); using the {N} frames it has"
        )
    ] if claimed > N else []
    b = assert_backends_agree(path, 8, expected, [i / FPS for i in expected], (64, 48), notes)
    assert b.num_stream_frames == N
    if claimed == 0:  # decord trusts the header, finds nothing to read and refuses the file
        assert b.backend == "pyav" and "decord cannot open it" in b.warnings[0]


def test_mp4_header_duration_that_lies(tmp_path):
    path = make_video(tmp_path / "dur.mp4", N, FPS, (64, 48), "libx264", bframes=2)
    scale_mp4_durations(path, 0.25)
    with av.open(str(path)) as c:  # precondition: the header says 1 s for a 4 s video
        assert c.duration == pytest.approx(1_000_000 * N / FPS / 4, rel=0.01)
    clip = read_video(path, fps=2.0)
    assert clip.indices == stamps(clip.frames) == [0, 5, 10, 15, 20, 25, 30, 35]
    assert clip.times_s == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], abs=1e-6)


@pytest.mark.parametrize("codec,bframes", [("mpeg4", 0), ("mpeg4", 2), ("libx264", 0)])
def test_avi_without_index_reads_and_never_loops(tmp_path, codec, bframes):
    # An AVI cut before its idx1 index was written. FFmpeg cannot seek in it (a seek lands at
    # the start or a GOP late): sparse reading must still return the right frames, and decode
    # each frame about once (it used to seek back to the start forever).
    n = 120
    path = make_video(tmp_path / "noidx.avi", n, 25, (64, 48), codec, gop=10, bframes=bframes)
    remove_avi_index(path)
    wanted = [2, 57, 58, 103, 119]
    with VideoReader(path, seek_threshold=8) as r:
        assert len(r) == n
        frames = list(r.iter_frames(wanted))
        assert r.stats["decoded_frames"] <= n + 10
    assert [f.index for f in frames] == [read_stamp(f.rgb) for f in frames] == wanted
    assert [f.time_s for f in frames] == pytest.approx([i / 25 for i in wanted], abs=1e-6)
    expected = uniform_indices(n, 8)
    assert_backends_agree(path, 8, expected, [i / 25 for i in expected], (64, 48))


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_avi_with_scrambled_index_is_read_without_it(tmp_path, codec):
    path = make_video(tmp_path / "badidx.avi", N, FPS, (64, 48), codec, bframes=0)
    scramble_avi_index(path, seed=3)
    raw, _ = raw_decode_pts(path)
    assert len(raw) < N // 2  # precondition: FFmpeg trusts the index and loses most frames
    for backend in BACKENDS_HERE:
        clip = read_video(path, num_frames=8, backend=backend)
        assert clip.backend == "pyav"
        assert clip.num_stream_frames == N
        assert clip.indices == stamps(clip.frames) == uniform_indices(N, 8)
        assert "the AVI index is damaged" in clip.warnings[0] and f"of the {N} frames" in clip.warnings[0]


@needs_decord
def test_decord_seeks_are_checked_against_pyav(tmp_path):
    # H.264 in AVI: decord reads sequentially right but returns wrong frames after a seek
    # (frame 1 for frame 11). Its first frame matches, so only the seek probe catches it.
    path = make_video(tmp_path / "h264.avi", N, FPS, (64, 48), "libx264", gop=10, bframes=0)
    probe = decord_guard.shared_process().open(str(path))
    try:
        assert stamps(probe.get_batch([0])) == [0]
        assert stamps(probe.get_batch([11, 16])) != [11, 16]  # precondition: decord's seeks are wrong
    finally:
        probe.close()
    clip = read_video(path, num_frames=8, backend="decord")
    assert clip.backend == "pyav"
    assert "decord's frames after a seek differ from PyAV's" in clip.warnings[0]
    assert clip.indices == stamps(clip.frames) == uniform_indices(N, 8)


def test_h264_with_b_frames_in_avi_gets_presentation_times(tmp_path):
    # AVI stores no pts; for H.264 with B-frames the decoder's pts guesses come out of order
    # (1, 3, 4, 2, ...) while the frames themselves are in presentation order.
    path = make_video(tmp_path / "hb.avi", N, FPS, (64, 48), "libx264", bframes=2)
    raw, _ = raw_decode_pts(path)
    assert raw != sorted(raw)  # precondition: the decoder's pts are out of order
    clip = read_video(path, num_frames=N)
    assert clip.indices == stamps(clip.frames) == list(range(N))
    assert clip.times_s == pytest.approx([i / FPS for i in range(N)], abs=1e-6)
    assert clip.warnings == [
        (
            "the decoder's timestamps come out of order (e.g. H.264 with B-frames in AVI): frames are identified "
            "by decoding order, without seeking"
        )
    ]


@pytest.mark.parametrize("name,bframes", [("h264.ts", 2), ("mpeg2.ts", 2)])
def test_mpegts_seeks_that_land_late_are_retried_from_earlier_keyframes(tmp_path, name, bframes):
    # FFmpeg's timestamp seek in MPEG-TS lands one GOP after the keyframe asked for when
    # there are B-frames; seeking one keyframe earlier lands right.
    codec = "libx264" if name.startswith("h264") else "mpeg2video"
    n = 300
    path = make_video(tmp_path / name, n, 25, (64, 48), codec, gop=12, bframes=bframes)
    wanted = [3, 100, 200, 299]
    with VideoReader(path, seek_threshold=8) as r:
        frames = list(r.iter_frames(wanted))
        assert r.stats["seeks"] >= 3 and r.stats["decoded_frames"] < 80  # sequential: 300
        assert r.warnings == []
    assert [f.index for f in frames] == [read_stamp(f.rgb) for f in frames] == wanted


def test_mpeg_program_stream_falls_back_to_sequential_decoding(tmp_path):
    # After a seek in an MPEG-PS file, frames come out with timestamps no frame has: the
    # frames cannot be identified, so decoding restarts sequentially (correct, not sparse).
    path = make_video(tmp_path / "mpeg2.mpg", 120, 25, (64, 48), "mpeg2video", gop=12, bframes=2)
    wanted = [3, 60, 119]
    with VideoReader(path, seek_threshold=8) as r:
        frames = list(r.iter_frames(wanted))
        assert any("seeking was unreliable" in w for w in r.warnings)
    assert [f.index for f in frames] == [read_stamp(f.rgb) for f in frames] == wanted


# ----------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    path = make_video(tmp_path / f"rot{rotation}.mp4", 12, FPS, (64, 48), "libx264", rotation=rotation)
    with av.open(str(path)) as c:  # precondition: the display matrix is there and matters
        raw = next(c.decode(video=0))
        assert raw.rotation % 360 == (-rotation) % 360
        with pytest.raises(ValueError):
            read_stamp(raw.to_ndarray(format="rgb24"))
    clip = read_video(path, num_frames=4)
    assert clip.frames.shape == (4, 48, 64, 3)
    assert stamps(clip.frames) == clip.indices == [0, 3, 7, 11]
    # decord 0.6 mishandles rotation: it must not be used
    dclip = read_video(path, num_frames=4, backend="decord")
    assert dclip.backend == "pyav" and "rotation" in dclip.warnings[0]
    assert np.array_equal(dclip.frames, clip.frames)


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    make_audio_file(d / "audio.wav")
    make_audio_file(d / "audio.m4a")
    make_audio_file(d / "song.mp3", cover=True)
    (d / "folder.mp4").mkdir()
    return {
        "missing": (d / "missing.mp4", "does not exist"),
        "empty": (d / "empty.mp4", "empty"),
        "text": (d / "text.mp4", "cannot read it as a media file"),
        "random": (d / "random.mp4", "cannot read it as a media file"),
        "wav": (d / "audio.wav", "no video stream"),
        "aac": (d / "audio.m4a", "no video stream"),
        "cover": (d / "song.mp3", "no video stream (streams found: audio, cover picture)"),
        "dir": (d / "folder.mp4", "directory"),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "random", "wav", "aac", "cover", "dir"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_raise_video_decode_error_quickly(bad_files, kind, backend, monkeypatch):
    """Quickly = with bounded work: FFmpeg opens the file at most once per call and decodes no frame."""
    path, cause = bad_files[kind]
    opened, decoded = [], []
    from vidprune.pipeline.decode.media import MediaFile  # where every PyAV frame is decoded

    real_open, real_decoded = av.open, MediaFile.decoded_frames
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))

    def counting_decoded(self, container, stream, *args, **kwargs):
        for frame in real_decoded(self, container, stream, *args, **kwargs):
            decoded.append(frame.index if hasattr(frame, "index") else len(decoded))
            yield frame

    monkeypatch.setattr(MediaFile, "decoded_frames", counting_decoded)
    with pytest.raises(VideoDecodeError) as info:
        VideoReader(path, backend=backend)
    with pytest.raises(VideoDecodeError):
        read_video(path, num_frames=4, backend=backend)
    assert len(opened) <= 2 and decoded == []  # one open per call at most (none for a missing file or a folder)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and cause in msg
    assert ";" in msg  # cause; what to do


def test_bad_arguments_raise_config_error(vids):
    p = vids["short"]
    cases = [
        {},
        {"num_frames": 4, "fps": 1.0},
        {"num_frames": 0},
        {"num_frames": -2},
        {"num_frames": 2.5},
        {"fps": 0},
        {"fps": -1.0},
        {"fps": float("nan")},
        {"num_frames": 4, "max_frames": 2},
        {"fps": 1.0, "max_frames": 0},
    ]
    for kwargs in cases:
        with pytest.raises(ConfigError):
            read_video(p, **kwargs)
    with pytest.raises(ConfigError, match="pyav, decord"):
        read_video(p, num_frames=4, backend="opencv")
    with pytest.raises(ConfigError, match="pyav, decord"):
        VideoReader(p, backend="torchvision")


# ----------------------------------------------------------------------------- test helper


def test_moving_square_video_has_static_background(tmp_path):
    info = make_moving_square_video(tmp_path / "square.mp4", num_frames=12, static_frames=(5,))
    clip = read_video(info.path, num_frames=12)
    assert clip.frames.shape == (12, 64, 96, 3)
    s = info.square
    masks = np.ones((12, 64, 96), bool)
    for i, (x, y) in enumerate(info.positions):
        masks[i, y : y + s, x : x + s] = False
        assert np.abs(clip.frames[i, y : y + s, x : x + s].astype(int) - (255, 32, 32)).max() <= 3
    background = masks.all(axis=0)  # pixels never covered by the square
    assert background.mean() > 0.5
    assert np.abs(clip.frames[:, background].astype(int) - info.background[background].astype(int)).max() <= 3
    assert np.array_equal(
        clip.frames[:, background], np.broadcast_to(clip.frames[0][background], clip.frames[:, background].shape)
    )
    assert info.positions[5] == info.positions[4] and info.positions[6] != info.positions[5]
    assert np.array_equal(clip.frames[5], clip.frames[4])


# ----------------------------------------------------------------------------- the one frame reader


def test_clip_bounds_and_explicit_indices_read_the_right_frames(vids):
    # 40 frames at 10 fps: [1.0 s, 2.5 s] holds frames 10..25
    clip = read_video(vids["h264"], num_frames=4, start_s=1.0, end_s=2.5)
    assert clip.indices == [10 + i for i in uniform_indices(16, 4)]
    assert stamps(clip.frames) == clip.indices and clip.num_stream_frames == N
    assert clip.times_s == pytest.approx([i / FPS for i in clip.indices], abs=1e-6)
    by_rate = read_video(vids["h264"], fps=2.0, start_s=1.0, end_s=2.5)
    assert by_rate.indices == [10, 15, 20, 25] and stamps(by_rate.frames) == by_rate.indices
    outside = read_video(vids["h264"], num_frames=4, start_s=100.0, end_s=200.0)  # no frame inside: all of it
    assert outside.indices == uniform_indices(N, 4)
    explicit = read_video(vids["mpeg4"], indices=[33, 2, 2, 17])
    assert explicit.indices == [2, 17, 33] and stamps(explicit.frames) == [2, 17, 33]
    with pytest.raises(ConfigError, match="out of range"):
        read_video(vids["h264"], indices=[N])
    with pytest.raises(ConfigError, match="one of num_frames, fps or indices"):
        read_video(vids["h264"], num_frames=2, indices=[1])
    with pytest.raises(ConfigError, match="explicit indices take no"):
        read_video(vids["h264"], indices=[1], start_s=0.5)


# ----------------------------------------------------------------------------- reading only what is needed

LONG_FPS, LONG_GOP = 5, 50  # a keyframe every 10 s
LONG_FRAMES = 20 * 60 * LONG_FPS  # 20 minutes


# (codec, B-frames, size) per container: H.264 with B-frames in MP4 and MKV, VP8 in WebM. Frames of
# noise at 128x96 are ~8 KB, so FFmpeg's fixed costs (its 8 KiB read buffer refilled at every seek,
# probing at every open) are a few % of the bytes, as with real video; VP8 stays at 64x48 (~1 KB
# frames, fixed costs ~4 %), encoding it is 8x slower.
LONG_CODECS = {"mp4": ("libx264", 2, (128, 96)), "mkv": ("libx264", 2, (128, 96)), "webm": ("libvpx", 0, (64, 48))}


@pytest.fixture(scope="module", params=sorted(LONG_CODECS))
def long_video(request, tmp_path_factory):
    codec, bframes, size = LONG_CODECS[request.param]
    path = tmp_path_factory.mktemp("long") / f"long.{request.param}"
    return make_noise_video(path, LONG_FRAMES, LONG_FPS, size, gop=LONG_GOP, codec=codec, bframes=bframes)


def test_long_file_reads_only_from_the_keyframe_before_each_wanted_frame(long_video):
    # MP4: the sample table; MKV / WebM: the cues and the constant frame duration.
    clip = read_video(long_video, num_frames=32)
    assert clip.stats["frame_table"] == "index" and clip.warnings == []
    assert clip.indices == uniform_indices(LONG_FRAMES, 32)
    assert stamps(clip.frames) == clip.indices
    # 32 frames ~194 apart, a keyframe every 50: about 25 frames decoded per wanted frame
    assert clip.stats["packets_demuxed"] <= 0.2 * LONG_FRAMES
    assert clip.stats["decoded_frames"] <= 32 * LONG_GOP
    if LONG_CODECS[long_video.suffix[1:]][:2] == ("libx264", 2):
        assert clip.stats["packets_skipped"] > 0  # unwanted B-frames no frame refers to: not decoded
    assert clip.stats["bytes_read"] <= 0.2 * clip.stats["file_bytes"]
    # The same frames as the reader that builds its table from every packet (which reads it all).
    with VideoReader(long_video) as full:
        frames = list(full.iter_frames(clip.indices))
        assert full.table_source == "demux" and full.stats["packets_demuxed"] >= LONG_FRAMES
        assert full.stats["bytes_read"] >= clip.stats["file_bytes"]
        assert clip.times_s == [f.time_s for f in frames] and clip.num_stream_frames == len(full)
        assert full.frame_times == VideoReader(long_video, use_index=True).frame_times
    assert [f.index for f in frames] == clip.indices
    assert all(np.array_equal(f.rgb, got) for f, got in zip(frames, clip.frames))
    by_rate = read_video(long_video, fps=0.02, max_frames=10)  # one frame every 50 s
    assert by_rate.stats["frame_table"] == "index" and stamps(by_rate.frames) == by_rate.indices
    assert by_rate.indices == fps_indices([i / LONG_FPS for i in range(LONG_FRAMES)], 0.02, 10)


def test_index_that_disagrees_with_the_decoder_falls_back_to_the_stream(tmp_path):
    # A keyframe in the middle is zeroed: the sample table and FFmpeg's packets still list 200
    # frames, but the decoder skips that packet and outputs fewer. Decoded frames are the truth.
    path = make_noise_video(tmp_path / "hole.mp4", 200, 10, gop=20, bframes=0)
    with VideoReader(path, use_index=True) as r:
        assert r.table_source == "index"
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        hole = [p for p in c.demux(s) if p.size and p.is_keyframe][5]  # the keyframe of frame 100
        start, size = hole.pos, hole.size
    data = bytearray(path.read_bytes())
    data[start : start + size] = bytes(size)
    path.write_bytes(bytes(data))
    # Reference: what plain PyAV decodes, skipping the packets it cannot decode.
    reference = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for packet in c.demux(s):
            try:
                reference += [frame_to_rgb(f) for f in packet.decode()]
            except av.FFmpegError:
                pass
    assert len(reference) < 200  # precondition: index and decoder disagree
    clip = read_video(path, num_frames=8)
    assert any("container's index does not match the decoded frames" in w for w in clip.warnings)
    assert clip.stats["frame_table"] != "index"
    assert clip.num_stream_frames == len(reference)
    assert clip.indices == uniform_indices(len(reference), 8)
    assert all(np.array_equal(reference[i], got) for i, got in zip(clip.indices, clip.frames))
    assert stamps(clip.frames[:4]) == clip.indices[:4]  # before the hole


def test_index_is_not_trusted_for_cut_or_fragmented_mp4(tmp_path):
    whole = make_noise_video(tmp_path / "first.mp4", 100, FPS, gop=10, container_options={"movflags": "+faststart"})
    assert read_video(whole, num_frames=4).stats["frame_table"] == "index"
    data = whole.read_bytes()
    cut = tmp_path / "cut_first.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # index first, media data cut: the table lists missing frames
    with VideoReader(cut, use_index=True) as r:
        assert r.table_source == "demux" and "past the end of the file" in r.index_unused
    clip = read_video(cut, num_frames=4)
    assert clip.num_stream_frames < 100 and stamps(clip.frames[:-1]) == clip.indices[:-1]
    assert any("may be truncated" in w for w in clip.warnings)
    frag = make_video(tmp_path / "frag.mp4", N, FPS, (64, 48), "libx264",
                      container_options={"movflags": "frag_keyframe+empty_moov"})
    with VideoReader(frag, use_index=True) as r:
        assert r.table_source == "demux" and "fragmented" in r.index_unused
    clip = read_video(frag, num_frames=5)
    assert stamps(clip.frames) == clip.indices == uniform_indices(N, 5)


def _same_as_the_demux_pass(clip, path) -> None:
    """``clip`` has exactly the frames, indices and times the reader building its table from every packet gives."""
    with VideoReader(path) as full:
        frames = list(full.iter_frames(clip.indices))
        assert full.table_source == "demux" and clip.num_stream_frames == len(full)
    assert [f.index for f in frames] == clip.indices and clip.times_s == [f.time_s for f in frames]
    assert all(np.array_equal(f.rgb, got) for f, got in zip(frames, clip.frames))


@pytest.mark.parametrize("name, codec, bframes", [("h264.mkv", "libx264", 2), ("vp8.webm", "libvpx", 0)])
def test_matroska_with_audio_reads_block_headers_as_ffmpeg_demuxes_them(tmp_path, name, codec, bframes):
    # With an audio track that outlasts the video by 2 s (the segment's Duration is the audio's).
    path = make_noise_video(tmp_path / name, 500, 25, gop=50, codec=codec, bframes=bframes, audio_s=22.0)
    cues = read_cue_index(str(path))
    blocks = read_cluster_blocks(str(path), int(cues.cue_clusters[0]), cues.segment_end, cues.track_number, 10**6)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [(p.pts, bool(p.is_keyframe)) for p in c.demux(s) if p.size]
    assert list(zip(blocks.times, blocks.keyframes)) == packets and len(packets) == 500
    assert blocks.bytes_read < 0.1 * path.stat().st_size  # headers only: 12 + 12 bytes a block (frames: ~1.5 KB)
    clip = read_video(path, num_frames=16)
    assert clip.stats["frame_table"] == "index" and clip.warnings == []
    assert stamps(clip.frames) == clip.indices == uniform_indices(500, 16)
    _same_as_the_demux_pass(clip, path)


def test_matroska_without_a_trustworthy_index_takes_the_demux_pass(tmp_path):
    # Variable frame rate (ms timestamps, FFmpeg still writes a DefaultDuration of 1/30 s).
    vfr = make_vfr_video(tmp_path / "vfr.mkv", [0.0, 0.1, 0.15, 0.4, 0.41, 0.9, 1.0, 1.7, 1.8, 1.85, 2.5])
    with VideoReader(vfr, use_index=True) as r:
        assert r.table_source == "demux" and "variable frame rate" in r.index_unused
    clip = read_video(vfr, num_frames=5)
    assert stamps(clip.frames) == clip.indices == uniform_indices(11, 5)
    _same_as_the_demux_pass(clip, vfr)
    # No Cues: a live recording (FFmpeg's "live" mode, as browsers' MediaRecorder writes WebM).
    live = make_noise_video(tmp_path / "live.webm", 300, 25, codec="libvpx", container_options={"live": "1"})
    with VideoReader(live, use_index=True) as r:
        assert r.table_source == "demux" and r.index_unused == "the file has no Cues"
    clip = read_video(live, num_frames=6)
    assert stamps(clip.frames) == clip.indices == uniform_indices(300, 6)
    _same_as_the_demux_pass(clip, live)
    # A cut file: the Cues at the end are gone.
    whole = make_noise_video(tmp_path / "whole.mkv", 300, 25, gop=25)
    assert read_video(whole, num_frames=4).stats["frame_table"] == "index"
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.7)])
    with VideoReader(cut, use_index=True) as r:
        assert r.table_source == "demux" and "cut" in r.index_unused
    clip = read_video(cut, num_frames=4)
    assert clip.num_stream_frames < 300 and stamps(clip.frames[:-1]) == clip.indices[:-1]
    _same_as_the_demux_pass(clip, cut)


@pytest.mark.parametrize("nanoseconds", [80_000_000, 41_000_000])  # the real frame duration is 40 ms
def test_matroska_default_duration_that_lies_is_not_trusted(tmp_path, nanoseconds):
    path = make_noise_video(tmp_path / "lie.mkv", 1000, 25, gop=50)
    assert read_video(path, num_frames=4).stats["frame_table"] == "index"
    set_mkv_default_duration(path, nanoseconds)
    with VideoReader(path, use_index=True) as r:
        assert r.table_source == "demux" and "constant frame-rate grid" in r.index_unused
    clip = read_video(path, num_frames=32)
    assert clip.stats["frame_table"] == "demux" and clip.warnings == []
    assert stamps(clip.frames) == clip.indices == uniform_indices(1000, 32)
    _same_as_the_demux_pass(clip, path)


@pytest.mark.parametrize("name, codec, bframes", [("h264.mkv", "libx264", 2), ("vp9.webm", "libvpx-vp9", 0)])
def test_matroska_without_default_duration_is_trusted_when_its_first_gop_shows_one(tmp_path, name, codec, bframes):
    path = make_noise_video(tmp_path / name, 600, 25, gop=50, codec=codec, bframes=bframes)
    set_mkv_default_duration(path, None)
    with VideoReader(path, use_index=True) as r:
        assert r.table_source == "index" and len(r) == 600 and r.index_unused == ""
    clip = read_video(path, num_frames=8)
    assert clip.stats["frame_table"] == "index" and stamps(clip.frames) == clip.indices == uniform_indices(600, 8)
    _same_as_the_demux_pass(clip, path)


def test_matroska_frame_missing_in_the_middle_falls_back_to_the_demux_pass(tmp_path):
    # A capture that dropped one frame: its timestamp is missing, the ends of the file and the
    # header are those of a constant rate, so the index is trusted until decoding meets the gap.
    n, gop = 2000, 50
    wanted = uniform_indices(n, 32)
    gap = wanted[10] - 1
    assert gap % gop and (gap - 1) % gop  # precondition: decoding wanted[10] runs from its keyframe over the gap
    path = make_noise_video(tmp_path / "dropped.mkv", n, 25, gop=gop, skip_frames=(gap,))
    with VideoReader(path, use_index=True) as r:
        assert r.table_source == "index" and len(r) == n  # the grid counts the missing frame
    clip = read_video(path, num_frames=32)
    assert any("container's index does not match the decoded frames" in w for w in clip.warnings)
    assert clip.stats["frame_table"] == "demux" and clip.num_stream_frames == n - 1
    assert clip.indices == uniform_indices(n - 1, 32)
    assert stamps(clip.frames) == [i if i < gap else i + 1 for i in clip.indices]  # frames stamp their number
    _same_as_the_demux_pass(clip, path)
