"""Cross-frame dedup (method.md section 2) and the per-video budget (section 3)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidprune.errors import ConfigError
from vidprune.pruners import (
    KEPT_ANY_MAX_FRAMES,
    CrossFrameDedup,
    FrameSelection,
    VideoBudget,
    create_pruner,
    frame_shares,
    frame_token_counts,
)

SIDE = 6
N = SIDE * SIDE
DIM = 16


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def moving_block_video(num_frames: int = 6, seed: int = 0) -> tuple[torch.Tensor, list[set[int]]]:
    """(F, N, D) features: a static background and a 2x2 block of fresh content moving right.

    Returns the features and, per frame, the positions the block covers.
    """
    background = randn(N, DIM, seed=seed)
    frames, blocks = [], []
    for t in range(num_frames):
        feats = background.clone()
        block = {(1 + dy) * SIDE + (t % (SIDE - 1)) + dx for dy in (0, 1) for dx in (0, 1)}
        idx = torch.tensor(sorted(block))
        feats[idx] = randn(len(block), DIM, seed=seed + 1000 + t)
        frames.append(feats)
        blocks.append(block)
    return torch.stack(frames), blocks


def run_dedup(dedup: CrossFrameDedup, video: torch.Tensor, candidates=None) -> list[tuple[set[int], set[int]]]:
    out = []
    for t, feats in enumerate(video):
        cand = torch.arange(video.shape[1]) if candidates is None else candidates[t]
        kept, dups = dedup.step(feats, cand)
        out.append((set(kept.tolist()), set(dups.tolist())))
    return out


# ----------------------------------------------------------------------------------
# Dedup


@pytest.mark.parametrize("reference", ["previous", "kept", "kept_any"])
def test_static_background_is_dropped_moving_block_kept(reference):
    video, blocks = moving_block_video()
    result = run_dedup(CrossFrameDedup(0.9, reference), video)
    assert result[0] == (set(range(N)), set()), "first frame: no duplicates"
    for t in range(1, len(video)):
        kept, dups = result[t]
        # Where the block left, the background returns: new vs the previous frame and vs the
        # last kept token there (the block). For "kept_any" it is new only if that
        # background was never shown before (the block covered it since frame 0).
        vacated = blocks[t - 1] - blocks[t]
        if reference == "kept_any":
            vacated = {p for p in vacated if all(p in blocks[s] for s in range(t))}
        expected = blocks[t] | vacated
        assert kept == expected, (reference, t)
        assert dups == set(range(N)) - expected


def rotating_token(num_frames: int, degrees_per_frame: float) -> torch.Tensor:
    """(F, 1, 4) one token whose feature turns by a fixed angle each frame."""
    angles = torch.arange(num_frames, dtype=torch.float64) * torch.deg2rad(torch.tensor(degrees_per_frame))
    return torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles), torch.zeros_like(angles)], -1)[:, None].float()


def test_slow_drift_previous_vs_kept():
    # 20 degrees per frame: cos 0.94 between neighbours (>= 0.9), cos 0.77 two frames apart.
    video = rotating_token(7, 20.0)
    previous = run_dedup(CrossFrameDedup(0.9, "previous"), video)
    kept = run_dedup(CrossFrameDedup(0.9, "kept"), video)
    # "previous" never notices the drift; "kept" re-sends the token once it has moved enough.
    assert [t for t, (k, _) in enumerate(previous) if k] == [0]
    assert [t for t, (k, _) in enumerate(kept) if k] == [0, 2, 4, 6]


def test_kept_reference_uses_only_kept_tokens():
    # Frame 1 repeats frame 0 exactly. Position 3 was not a candidate in frame 0 (never
    # handed on), so for "kept"/"kept_any" it is new in frame 1; for "previous" it repeats.
    frame = randn(8, DIM, seed=1)
    video = torch.stack([frame, frame])
    candidates = [torch.tensor([0, 1, 2]), torch.tensor([1, 3])]
    assert run_dedup(CrossFrameDedup(0.9, "previous"), video, candidates)[1] == (set(), {1, 3})
    assert run_dedup(CrossFrameDedup(0.9, "kept"), video, candidates)[1] == ({3}, {1})
    assert run_dedup(CrossFrameDedup(0.9, "kept_any"), video, candidates)[1] == ({3}, {1})


def test_kept_any_matches_other_positions():
    # Content that moves to another position is a duplicate only for "kept_any".
    frame0 = randn(8, DIM, seed=2)
    frame1 = torch.roll(frame0, shifts=1, dims=0)
    video = torch.stack([frame0, frame1])
    assert run_dedup(CrossFrameDedup(0.9, "kept_any"), video)[1] == (set(), set(range(8)))
    assert run_dedup(CrossFrameDedup(0.9, "kept"), video)[1] == (set(range(8)), set())


@pytest.mark.parametrize("reference", ["kept", "kept_any"])
def test_window_refreshes_static_tokens(reference):
    # A static token, window=2: kept at 0, duplicate at 1 and 2, too old at 3 -> kept again.
    video = randn(1, 1, DIM, seed=3).expand(8, 1, DIM)
    result = run_dedup(CrossFrameDedup(0.9, reference, window=2), video)
    assert [t for t, (k, _) in enumerate(result) if k] == [0, 3, 6]
    unlimited = run_dedup(CrossFrameDedup(0.9, reference), video)
    assert [t for t, (k, _) in enumerate(unlimited) if k] == [0]


@pytest.mark.parametrize("return_at, is_duplicate", [(KEPT_ANY_MAX_FRAMES, True), (KEPT_ANY_MAX_FRAMES + 1, False)])
def test_kept_any_memory_is_capped(return_at, is_duplicate):
    # Token content X shows at frame 0, other content in between, X again at `return_at`.
    x = randn(1, DIM, seed=4)
    frames = [x] + [randn(1, DIM, seed=100 + t) for t in range(1, return_at)] + [x]
    result = run_dedup(CrossFrameDedup(0.9, "kept_any"), torch.stack(frames))
    assert result[return_at] == ((set(), {0}) if is_duplicate else ({0}, set()))


@pytest.mark.parametrize("reference", ["previous", "kept", "kept_any"])
def test_threshold_one_drops_only_exact_duplicates(reference):
    base = randn(6, DIM, seed=5)
    noisy = base + 1e-3 * base.norm(dim=-1, keepdim=True) * randn(6, DIM, seed=6) / DIM**0.5
    frame1 = torch.cat([base[:2], 2.0 * base[2:4], noisy[4:]])  # exact, exact up to scale, tiny noise
    video = torch.stack([base, frame1])
    assert run_dedup(CrossFrameDedup(1.0, reference), video)[1] == ({4, 5}, {0, 1, 2, 3})
    assert run_dedup(CrossFrameDedup(0.999, reference), video)[1] == (set(), set(range(6)))


def test_reset_starts_a_new_stream():
    frame = randn(N, DIM, seed=7)
    dedup = CrossFrameDedup(0.9, "kept")
    run_dedup(dedup, torch.stack([frame, frame]))
    assert dedup.frames_seen == 2
    dedup.reset()
    assert dedup.frames_seen == 0
    kept, dups = dedup.step(frame, torch.arange(N))
    assert kept.numel() == N and dups.numel() == 0
    # After a reset, a different N is fine.
    dedup.reset()
    dedup.step(randn(4, 3, seed=8), torch.arange(4))


@settings(max_examples=40, deadline=None)
@given(
    reference=st.sampled_from(["previous", "kept", "kept_any"]),
    threshold=st.floats(0.05, 1.0),
    window=st.none() | st.integers(1, 4),
    seed=st.integers(0, 10_000),
    repeat=st.floats(0.0, 1.0),
)
def test_dedup_split_is_a_partition(reference, threshold, window, seed, repeat):
    if reference == "previous":
        window = None
    g = torch.Generator().manual_seed(seed)
    n, frames = 20, 5
    video = torch.randn(frames, n, 3, generator=g)
    for t in range(1, frames):  # some positions repeat the previous frame
        same = torch.rand(n, generator=g) < repeat
        video[t, same] = video[t - 1, same]
    dedup = CrossFrameDedup(threshold, reference, window)
    for t in range(frames):
        cand = torch.nonzero(torch.rand(n, generator=g) < 0.6).flatten()
        kept, dups = dedup.step(video[t], cand)
        assert kept.dtype == dups.dtype == torch.long
        assert bool((kept[1:] > kept[:-1]).all()) and bool((dups[1:] > dups[:-1]).all())
        assert set(kept.tolist()).isdisjoint(dups.tolist())
        assert sorted(kept.tolist() + dups.tolist()) == cand.tolist()
        if t == 0:
            assert dups.numel() == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=1.5), "threshold"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(reference="same_position"), r"Has to be one of \['previous', 'kept', 'kept_any'\]"),
        (dict(window=0), "window"),
        (dict(window=2.5), "window"),
        (dict(reference="previous", window=3), "no effect"),
    ],
)
def test_dedup_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CrossFrameDedup(**kwargs)


def test_dedup_bad_step_inputs():
    dedup = CrossFrameDedup()
    feats = randn(8, 4, seed=9)
    for bad in (torch.tensor([2, 1]), torch.tensor([1, 1]), torch.tensor([0, 8]), torch.tensor([-1]), torch.tensor([0.5])):
        with pytest.raises(ConfigError, match="candidates"):
            dedup.step(feats, bad)
    dedup.step(feats, torch.arange(8))
    with pytest.raises(ConfigError, match="reset"):
        dedup.step(randn(9, 4, seed=10), torch.arange(9))


# ----------------------------------------------------------------------------------
# Budget


def test_frame_shares_examples():
    assert frame_shares(455, 8) == [57] * 7 + [56]
    assert frame_shares(227, 8) == [29, 29, 29, 28, 28, 28, 28, 28]
    assert frame_shares(114, 8) == [15, 15] + [14] * 6
    assert frame_shares(455, 8, reserved_per_frame=1) == [56] * 7 + [55]
    assert frame_shares(8, 8, reserved_per_frame=1) == [0] * 8
    assert frame_shares(3, 5) == [1, 1, 1, 0, 0]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 64), st.integers(0, 4))
def test_frame_shares_sum_and_spread(budget, frames, reserved):
    if budget < reserved * frames:
        with pytest.raises(ConfigError):
            frame_shares(budget, frames, reserved)
        return
    shares = frame_shares(budget, frames, reserved)
    assert len(shares) == frames and sum(shares) == budget - reserved * frames
    assert max(shares) - min(shares) <= 1 and shares == sorted(shares, reverse=True)


def test_budget_too_small_for_reserved_tokens():
    with pytest.raises(ConfigError, match="at least 8: raise the budget or drop the reserved tokens"):
        frame_shares(7, 8, reserved_per_frame=1)
    with pytest.raises(ConfigError, match="at least 8"):
        VideoBudget(7, 8, create_pruner("vispruner"), reserved_per_frame=1)


@pytest.mark.parametrize("kwargs", [dict(budget=0), dict(num_frames=0), dict(reserved_per_frame=-1), dict(budget=2.5)])
def test_selector_bad_arguments(kwargs):
    args = dict(budget=100, num_frames=4, pruner=create_pruner("vispruner")) | kwargs
    with pytest.raises(ConfigError):
        VideoBudget(**args)


def test_frame_token_counts():
    assert frame_token_counts(455, 8, 256) == frame_shares(455, 8)
    assert frame_token_counts(None, 3, 144) == [144] * 3
    assert frame_token_counts(1000, 4, 144) == [144] * 4  # shares of 250 are capped at N
    assert frame_token_counts(400, 4, 90) == [90, 90, 90, 90]
    assert frame_token_counts(200, 3, 60, reserved_per_frame=1) == [60, 60, 60]
    assert frame_token_counts(150, 3, 60) == [50, 50, 50]
    assert frame_token_counts(190, 3, 60) == [60, 60, 60]  # 64 + 63 + 63: 4 + 3 + 3 unused


def random_frames(num_frames: int, n: int, seed: int, static: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(attn (N,), feats (N, D)) per frame; a `static` share of positions repeat frame 0."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, DIM, generator=g)
    still = torch.rand(n, generator=g) < static
    out = []
    for _ in range(num_frames):
        feats = torch.randn(n, DIM, generator=g)
        feats[still] = base[still]
        out.append((torch.softmax(torch.randn(n, generator=g), -1), feats))
    return out


def test_selector_without_dedup_keeps_shares():
    frames = random_frames(8, 64, seed=0)
    selector = VideoBudget(455 // 4, 8, create_pruner("vispruner"))
    results = [selector.select(a, f) for a, f in frames]
    assert [s.allowance for s in results] == frame_shares(455 // 4, 8)
    assert [s.kept.numel() for s in results] == frame_shares(455 // 4, 8)
    for (a, f), s in zip(frames, results):
        assert isinstance(s, FrameSelection)
        assert torch.equal(s.kept, s.candidates) and s.duplicates.numel() == 0
        assert torch.equal(s.kept, create_pruner("vispruner")(a, f, s.allowance))
    assert selector.total_kept == selector.patch_budget == 113


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(1, 400),
    num_frames=st.integers(1, 8),
    n=st.sampled_from([4, 16, 36, 64]),
    reserved=st.integers(0, 2),
    reference=st.sampled_from([None, "previous", "kept", "kept_any"]),
    threshold=st.floats(0.3, 1.0),
    static=st.floats(0.0, 1.0),
    pruner=st.sampled_from(["vispruner", "random", "uniform"]),
    seed=st.integers(0, 1000),
)
def test_budget_is_never_exceeded(budget, num_frames, n, reserved, reference, threshold, static, pruner, seed):
    dedup = None if reference is None else CrossFrameDedup(threshold, reference)
    if budget < reserved * num_frames:
        with pytest.raises(ConfigError):
            VideoBudget(budget, num_frames, create_pruner(pruner), dedup, reserved)
        return
    selector = VideoBudget(budget, num_frames, create_pruner(pruner), dedup, reserved)
    shares = frame_shares(budget, num_frames, reserved)
    carry, total = 0, 0
    for t, (attn, feats) in enumerate(random_frames(num_frames, n, seed, static)):
        s = selector.select(attn, feats)
        assert s.allowance == shares[t] + carry
        assert s.candidates.numel() == min(s.allowance, n)
        assert s.kept.numel() <= s.allowance
        assert sorted(s.kept.tolist() + s.duplicates.tolist()) == s.candidates.tolist()
        assert bool((s.kept[1:] > s.kept[:-1]).all())
        carry = s.allowance - s.kept.numel()
        total += s.kept.numel()
        assert total <= budget - reserved * num_frames
    assert selector.total_kept == total
    with pytest.raises(RuntimeError, match="num_frames"):
        selector.select(*random_frames(1, n, seed)[0])


@pytest.mark.parametrize("reference, kept_counts", [("previous", [8, 0, 0, 16]), ("kept", [8, 0, 8, 16])])
def test_freed_budget_goes_to_new_content(reference, kept_counts):
    # 3 identical frames, then a frame of all-new content; budget 32 over 4 frames (shares of 8).
    static = random_frames(1, 16, seed=1)[0]
    new = random_frames(1, 16, seed=2)[0]
    selector = VideoBudget(32, 4, create_pruner("vispruner"), CrossFrameDedup(0.9, reference))
    results = [selector.select(*frame) for frame in (static, static, static, new)]
    # "previous": frames 1-2 repeat frame 1's tokens, so their budget piles up for frame 3.
    # "kept": frame 2's larger allowance proposes 8 tokens never handed on before; they are new.
    assert [s.kept.numel() for s in results] == kept_counts
    assert results[3].kept.numel() > frame_shares(32, 4)[3]
    assert sum(s.kept.numel() for s in results) <= 32


def test_selection_is_streaming():
    # Frame t's decision does not depend on later frames.
    shared = random_frames(3, 36, seed=3, static=0.7)
    tail_a, tail_b = random_frames(2, 36, seed=4), random_frames(2, 36, seed=5, static=1.0)
    results = []
    for tail in (tail_a, tail_b):
        selector = VideoBudget(60, 5, create_pruner("vispruner"), CrossFrameDedup(0.8, "kept"))
        results.append([selector.select(*frame) for frame in shared + tail])
    for t in range(3):
        assert torch.equal(results[0][t].kept, results[1][t].kept)
        assert results[0][t].allowance == results[1][t].allowance


def test_budget_none_keeps_all_minus_duplicates():
    frames = random_frames(4, 36, seed=6, static=0.5)
    plain = VideoBudget(None, 4, create_pruner("none"))
    for frame in frames:
        s = plain.select(*frame)
        assert s.allowance == 36 and torch.equal(s.kept, torch.arange(36))
    deduped = VideoBudget(None, 4, create_pruner("vispruner"), CrossFrameDedup(0.9, "previous"))
    results = [deduped.select(*frame) for frame in frames]
    assert results[0].kept.numel() == 36
    for s in results[1:]:
        assert torch.equal(s.candidates, torch.arange(36))
        assert 0 < s.duplicates.numel() < 36  # the static half repeats


def test_reserved_tokens_come_off_first():
    selector = VideoBudget(20, 4, create_pruner("vispruner"), reserved_per_frame=1)
    assert selector.patch_budget == 16
    assert [selector.select(*frame).kept.numel() for frame in random_frames(4, 36, seed=7)] == [4, 4, 4, 4]


def test_zero_allowance_skips_the_pruner():
    calls = []

    class Spy:
        name = "spy"
        respects_budget = True

        def __call__(self, cls_attn, features, budget):
            calls.append(budget)
            return create_pruner("vispruner")(cls_attn, features, budget)

    selector = VideoBudget(3, 5, Spy())
    results = [selector.select(*frame) for frame in random_frames(5, 16, seed=8)]
    assert calls == [1, 1, 1]
    assert [s.allowance for s in results] == [1, 1, 1, 0, 0]
    assert all(s.kept.numel() == 0 and s.candidates.numel() == 0 for s in results[3:])


def test_pruner_that_ignores_budget_is_refused():
    with pytest.raises(ConfigError, match="'none'.*budget=None"):
        VideoBudget(100, 4, create_pruner("none"))


def test_select_takes_one_frame():
    selector = VideoBudget(100, 4, create_pruner("vispruner"))
    with pytest.raises(ConfigError, match="one frame"):
        selector.select(torch.rand(2, 16), torch.randn(2, 16, 4))
