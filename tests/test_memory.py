"""The rolling token memory of a live stream (budget, ageing, dedup against the memory) and the
newest-wins frame slot between a fast producer and a slow encoder."""

from __future__ import annotations

import gc
import threading
import time
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidprune.errors import ConfigError
from vidprune.pipeline.latest_frame import LatestFrameSlot
from vidprune.pipeline.memory import RollingTokenMemory, build_memory, plan_memory
from vidprune.pruners import CrossFrameDedup, create_pruner
from vidprune.video_models.datatypes import EncodedFrames, VisualGeometry

SIDE = 6
N = SIDE * SIDE
DIM = 16
GEOMETRY = VisualGeometry(patch_grid=(SIDE, SIDE), prune_grid=(SIDE, SIDE), extra_per_frame=1,
                          stock_per_frame=N + 1)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def one_frame(features: torch.Tensor, seed: int = 0, extra: bool = True) -> EncodedFrames:
    """EncodedFrames of one frame: features (1, N, D), a random attention (1, N), a [CLS] row (1, 1, D)."""
    attn = torch.softmax(randn(features.shape[0], seed=seed), dim=0)
    cls = randn(1, features.shape[1], seed=seed + 7) if extra else None
    return EncodedFrames(features=features[None], cls_attn=attn[None], extra=None if cls is None else cls[None])


def memory(budget: int, window_s: float = 1e6, max_frames: int = 10_000, allowance: int = N,
           reference: str | None = "kept", threshold: float = 0.9) -> RollingTokenMemory:
    dedup = None if reference is None else CrossFrameDedup(threshold, reference, window=None if reference == "kept"
                                                           else max_frames)
    return RollingTokenMemory(budget=budget, window_s=window_s, max_frames=max_frames, frame_allowance=allowance,
                              pruner=create_pruner("vispruner", important_ratio=0.5), dedup=dedup,
                              stock_per_frame=N + 1)


# ----------------------------------------------------------------------------- plan


def test_plan_splits_the_budget_over_a_full_window():
    geometry = VisualGeometry(patch_grid=(16, 16), prune_grid=(16, 16), extra_per_frame=1, stock_per_frame=257)
    plan = plan_memory(geometry, budget=2056, window_s=60, frame_rate=1)
    assert (plan.max_frames, plan.frame_allowance, plan.budget) == (60, 2056 // 60 - 1, 2056)
    assert plan.stock_tokens == 60 * 257
    assert plan_memory(geometry, budget=2056, window_s=2.5, frame_rate=2).max_frames == 5
    full = plan_memory(geometry, budget=None, window_s=10, frame_rate=1)
    assert (full.budget, full.frame_allowance) == (257 * 10, 256)
    assert plan_memory(geometry, budget=2056, window_s=60, frame_rate=1, frame_tokens=100).frame_allowance == 100


@pytest.mark.parametrize("kwargs, words", [
    ({"budget": 1}, "cannot hold one frame"),
    ({"budget": 0}, "integer >= 1"),
    ({"budget": 100, "window_s": 0}, "window_s"),
    ({"budget": 100, "frame_rate": float("nan")}, "frame_rate"),
    ({"budget": 2000, "frame_tokens": 300}, "more than the 256"),
    ({"budget": 50, "frame_tokens": 60}, "does not fit in budget=50"),
])
def test_plan_refuses_impossible_sizes(kwargs, words):
    geometry = VisualGeometry(patch_grid=(16, 16), prune_grid=(16, 16), extra_per_frame=1, stock_per_frame=257)
    kwargs = {"window_s": 60, "frame_rate": 1, **kwargs}
    with pytest.raises(ConfigError, match=words):
        plan_memory(geometry, **kwargs)


def test_dedup_that_compares_with_dropped_tokens_is_refused():
    plan = plan_memory(GEOMETRY, budget=100, window_s=10, frame_rate=1)
    with pytest.raises(ConfigError, match="previous"):
        build_memory(plan, dedup_reference="previous")
    with pytest.raises(ConfigError, match="previous"):
        RollingTokenMemory(budget=100, window_s=10, max_frames=10, frame_allowance=5,
                           pruner=create_pruner("vispruner"), dedup=CrossFrameDedup(0.9, "previous"))
    with pytest.raises(ConfigError, match="keeps every token"):
        RollingTokenMemory(budget=100, window_s=10, max_frames=10, frame_allowance=5, pruner=create_pruner("none"))
    assert build_memory(plan, dedup=False).dedup is None
    assert build_memory(plan, dedup_reference="kept_any").dedup.window == plan.max_frames


def test_bad_frames_are_refused():
    mem = memory(budget=100)
    two = EncodedFrames(features=randn(2, N, DIM, seed=0), cls_attn=torch.rand(2, N))
    with pytest.raises(ConfigError, match="exactly one frame"):
        mem.add(two, time_s=0.0)
    mem.add(one_frame(randn(N, DIM, seed=1)), time_s=5.0)
    with pytest.raises(ConfigError, match="earlier than the newest"):
        mem.add(one_frame(randn(N, DIM, seed=2)), time_s=4.0)
    with pytest.raises(ConfigError, match="holds frames with"):
        mem.add(one_frame(randn(N + 1, DIM, seed=3)), time_s=6.0)


# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize("reference", ["kept", "kept_any", None])
def test_budget_is_a_hard_limit_and_the_oldest_frames_leave_first(reference):
    budget, allowance = 50, 10
    mem = memory(budget=budget, allowance=allowance, reference=reference)
    expected: list[tuple[int, int]] = []  # (seq, tokens) the policy keeps: oldest out until a full frame fits
    for t in range(40):
        while expected and sum(n for _, n in expected) + allowance + 1 > budget:
            expected.pop(0)
        frame = mem.add(one_frame(randn(N, DIM, seed=t), seed=t), time_s=float(t))
        expected.append((t, frame.tokens.shape[0]))
        assert frame.seq == t and frame.kept.numel() <= allowance
        assert mem.num_tokens <= budget
        held = mem.frames()
        assert [f.seq for f in held] == [s for s, _ in expected], "oldest frames leave first, no more than needed"
        assert mem.tokens().shape == (mem.num_tokens, DIM)
    stats = mem.stats()
    assert stats.frames_evicted > 0 and stats.frames_aged_out == 0
    assert stats.frames_added == 40 and stats.tokens == mem.num_tokens <= budget


def test_frame_cap_holds():
    mem = memory(budget=10_000, max_frames=4, reference=None)
    for t in range(10):
        mem.add(one_frame(randn(N, DIM, seed=t)), time_s=float(t))
        assert len(mem) == min(t + 1, 4)
    assert [f.seq for f in mem.frames()] == [6, 7, 8, 9]


# --------------------------------------------------------------------------- ageing


def test_frames_age_out_of_the_window():
    mem = memory(budget=10_000, window_s=2.0, reference=None)
    for t in range(12):
        now = 0.5 * t
        mem.add(one_frame(randn(N, DIM, seed=t)), time_s=now)
        times = [f.time_s for f in mem.frames()]
        assert all(now - 2.0 < x <= now for x in times)
        assert len(times) == min(t + 1, 4)
    assert mem.stats().frames_aged_out == 8
    assert mem.expire(now + 1.6) == 3 and len(mem) == 1
    assert mem.tokens(now_s=now + 10).shape == (0, DIM)
    assert len(mem) == 0 and mem.stats().frames_aged_out == 12


# ---------------------------------------------------------------------------- dedup


@pytest.mark.parametrize("reference", ["kept", "kept_any"])
@pytest.mark.parametrize("leave_by", ["window", "budget"])
def test_static_content_moves_forward_instead_of_vanishing(reference, leave_by):
    """A static scene: later frames repeat the memory; when the frame holding it leaves, the next one re-keeps it."""
    scene = randn(N, DIM, seed=0)
    if leave_by == "window":
        mem = memory(budget=10_000, window_s=2.0, reference=reference)
    else:
        mem = memory(budget=80, reference=reference)
    kept_counts = []
    for t in range(20):
        frame = mem.add(one_frame(scene.clone(), seed=t), time_s=0.5 * t)
        kept_counts.append(frame.kept.numel())
        held_positions = set().union(*(set(f.kept.tolist()) for f in mem.frames()))
        assert held_positions == set(range(N)), f"frame {t}: the scene must stay fully in memory"
        assert mem.num_tokens <= mem.budget
    # First frame: everything new; then repeats until the frame holding the scene leaves.
    assert kept_counts[0] == N and kept_counts[1] == 0
    refreshes = [t for t, k in enumerate(kept_counts) if k == N]
    assert len(refreshes) >= 3, kept_counts
    assert sum(kept_counts) == N * len(refreshes), "a frame keeps all of the scene or none of it"
    stats = mem.stats()
    assert stats.duplicates_total == 20 * N - sum(kept_counts)
    assert 0.0 < stats.duplicate_share_total < 1.0


def brute_force_duplicates(held, features: torch.Tensor, candidates: list[int], reference: str,
                           threshold: float) -> set[int]:
    """Candidates that repeat the memory's held patch tokens, by direct cosine similarity."""
    dups = set()
    unit = F.normalize(features.double(), dim=-1)
    if reference == "kept_any":
        refs = [F.normalize(f.tokens[f.num_extra:].double(), dim=-1) for f in held]
        if not refs:
            return dups
        refs = torch.cat(refs)
        for c in candidates:
            if refs.shape[0] and float((refs @ unit[c]).max()) >= threshold:
                dups.add(c)
        return dups
    for c in candidates:  # "kept": the most recent held token at the same position
        for f in reversed(held):
            where = (f.kept == c).nonzero()
            if where.numel():
                token = F.normalize(f.tokens[f.num_extra + int(where[0, 0])].double(), dim=-1)
                if float(token @ unit[c]) >= threshold:
                    dups.add(c)
                break
    return dups


@pytest.mark.parametrize("reference", ["kept", "kept_any"])
def test_dedup_compares_with_exactly_what_the_memory_holds(reference):
    """Each position flips between three looks; which repeat depends on what is still held after ageing/eviction."""
    threshold = 0.9
    looks = randn(3, N, DIM, seed=1)
    rng = np.random.default_rng(0)
    mem = memory(budget=120, window_s=2.0, reference=reference, threshold=threshold)
    checked_dups = 0
    for t in range(60):
        choice = torch.from_numpy(rng.integers(0, 3, N))
        features = looks[choice, torch.arange(N)] + 0.05 * randn(N, DIM, seed=100 + t)  # (N, D)
        now = 0.25 * t + 3.0 * (t // 10)  # bursts that fill the budget, gaps that age everything out
        # What the memory will hold when it decides: age out, then make room for a full frame.
        mem.expire(now)
        held = mem.frames()
        while held and sum(f.tokens.shape[0] for f in held) + N + 1 > mem.budget:
            held = held[1:]
        frame = mem.add(one_frame(features, seed=t), time_s=now)
        assert [f.seq for f in mem.frames()[:-1]] == [f.seq for f in held]
        candidates = list(range(N))  # allowance N: the pruner proposes every patch
        expected = brute_force_duplicates(held, features, candidates, reference, threshold)
        assert set(frame.duplicates.tolist()) == expected, t
        assert set(frame.kept.tolist()) == set(candidates) - expected
        checked_dups += len(expected)
    assert checked_dups > 100, "the stream must exercise dedup"
    assert mem.stats().frames_evicted > 0 and mem.stats().frames_aged_out > 0


def test_tokens_are_in_temporal_order_extra_first():
    mem = memory(budget=1000, allowance=5, reference=None)
    expected = []
    for t in range(3):
        enc = one_frame(randn(N, DIM, seed=t), seed=t)
        frame = mem.add(enc, time_s=float(t))
        expected += [enc.extra[0], enc.features[0][frame.kept]]
        assert frame.kept.tolist() == sorted(frame.kept.tolist()) and frame.kept.numel() == 5
    assert torch.equal(mem.tokens(), torch.cat(expected))
    snapshot = mem.tokens()
    mem.add(one_frame(randn(N, DIM, seed=9)), time_s=9.0)
    assert snapshot.shape[0] == 18, "tokens() is a copy: later frames do not change it"
    mem.clear()
    assert len(mem) == 0 and mem.num_tokens == 0 and mem.stats().frames_added == 4


def _objects_held_by(root) -> int:
    """How many objects ``root`` holds: everything reachable from it through references, not
    counting code (modules, classes, functions), which belongs to the process, not to it."""
    code = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, code):
            continue
        seen.add(id(obj))
        stack.extend(gc.get_referents(obj))
    return len(seen)


def test_memory_stays_flat_over_a_long_session():
    """Thousands of frames at 10 fps: frames, tokens and bytes held stop growing once the window is full."""
    dim = 8
    plan = plan_memory(VisualGeometry((4, 4), (4, 4), 1, 17), budget=120, window_s=5.0, frame_rate=10.0)
    mem = build_memory(plan, dedup_reference="kept_any")
    rng = torch.Generator().manual_seed(0)
    scene = torch.randn(16, dim, generator=rng)
    peak_bytes = []
    for t in range(3000):
        if t == 1000:
            objects_at_100s = _objects_held_by(mem)
        features = scene.clone()
        moving = torch.randint(0, 16, (4,), generator=rng)
        features[moving] = torch.randn(4, dim, generator=rng)
        mem.add(EncodedFrames(features[None], torch.rand(1, 16, generator=rng), torch.randn(1, 1, dim, generator=rng)),
                time_s=t / 10.0)
        stats = mem.stats()
        assert stats.frames <= plan.max_frames and stats.tokens <= plan.budget
        peak_bytes.append(stats.held_bytes)
    assert max(peak_bytes) <= plan.budget * dim * 4
    assert _objects_held_by(mem) <= objects_at_100s, "the memory kept holding more objects after the first 100 s"
    assert mem.stats().frames_added == 3000


# ------------------------------------------------------------------ with a real model


@pytest.mark.parametrize("family", ["video_llava", "llava_onevision"])
def test_memory_of_a_real_encoder_answers_through_the_llm(tiny_checkpoints, family):
    from vidprune.pipeline.stages import EncodeStage
    from vidprune.samples import moving_square_frames
    from vidprune.video_models import load_video_llm

    llm = load_video_llm(tiny_checkpoints[family])
    encoder = EncodeStage(llm, batch_size=1)
    plan = plan_memory(llm.geometry, budget=300, window_s=1.0, frame_rate=12.0)
    mem = build_memory(plan, prune_grid=llm.geometry.prune_grid)
    frames = moving_square_frames(num_frames=24)
    last = None
    for t, rgb in enumerate(frames):
        last = encoder.process(rgb[None])
        stored = mem.add(last, time_s=t / 12.0)
        assert mem.num_tokens <= 300
    stats = mem.stats()
    assert stats.frames == 12 and stats.frames_aged_out + stats.frames_evicted == 12
    assert stats.duplicates > 0, "the static background repeats"
    tokens = mem.tokens()  # (K, Dc)
    # rows handed on: the stock LLM-input rows (OneVision: projected then pooled) at the kept positions
    torch.testing.assert_close(stored.tokens[stored.num_extra:], last.rows[0, stored.kept])
    if llm.geometry.extra_per_video:  # OneVision's newline, once, after the newest frame
        torch.testing.assert_close(tokens[-1:], last.video_extra)
        assert stats.tokens == sum(f.tokens.shape[0] for f in mem.frames()) + 1
    visual = llm.project(tokens)
    assert visual.shape == (stats.tokens, llm.config.text_config.hidden_size)
    out = llm.generate([llm.build_prompt("What is moving?")], [visual], max_new_tokens=4)
    assert len(out.answer_ids[0]) >= 1
    assert llm.tokenize([llm.build_prompt("q")], [tokens.shape[0]])["input_ids"].eq(llm.video_token_id).sum() \
        == tokens.shape[0]


# ------------------------------------------------------------------------ the slot


def test_slot_keeps_the_newest_and_counts_drops():
    slot = LatestFrameSlot(capacity=1)
    for i in range(5):
        slot.put(i)
    assert slot.take() == 4 and slot.take() is None
    c = slot.counts()
    assert (c.received, c.taken, c.dropped, c.pending, c.max_pending) == (5, 1, 4, 0, 1)
    slot3 = LatestFrameSlot(capacity=3)
    for i in range(5):
        slot3.put(i)
    assert [slot3.take() for _ in range(4)] == [2, 3, 4, None]
    assert slot3.get(timeout=0.01) is None
    slot3.close()
    with pytest.raises(RuntimeError):
        slot3.put(9)
    with pytest.raises(ConfigError):
        LatestFrameSlot(capacity=0)


def test_a_producer_far_faster_than_the_encoder_is_bounded_and_counted(video_llava_ckpt):
    """A real encoder (tiny model) behind a producer ~100x faster: the slot never holds more than one
    frame, the newest frame always wins, every frame is accounted for, and the memory stays in budget."""
    from vidprune.pipeline.stages import EncodeStage
    from vidprune.video_models import load_video_llm

    llm = load_video_llm(video_llava_ckpt)
    encoder = EncodeStage(llm, batch_size=1)
    plan = plan_memory(llm.geometry, budget=200, window_s=2.0, frame_rate=8.0)
    mem = build_memory(plan, prune_grid=llm.geometry.prune_grid)
    slot: LatestFrameSlot[tuple[int, np.ndarray]] = LatestFrameSlot(capacity=1)
    frames = np.random.default_rng(0).integers(0, 256, (8, 120, 160, 3), dtype=np.uint8)
    total = 600
    consumed: list[int] = []
    done = threading.Event()

    def produce():
        for i in range(total):
            slot.put((i, frames[i % len(frames)]))
            time.sleep(0.0005)
        done.set()

    def consume():
        while True:
            item = slot.get(timeout=0.05)
            if item is None:
                if done.is_set() and len(slot) == 0:
                    return
                continue
            seq, rgb = item
            mem.add(encoder.process(rgb[None]), time_s=time.monotonic(), seq=seq)
            consumed.append(seq)

    producer, consumer = threading.Thread(target=produce), threading.Thread(target=consume)
    producer.start(), consumer.start()
    producer.join(), consumer.join(timeout=60)
    assert not consumer.is_alive()
    counts = slot.counts()
    assert counts.received == total == counts.taken + counts.dropped + counts.pending
    assert counts.max_pending == 1
    assert counts.dropped >= total // 2, counts
    assert counts.taken == len(consumed) >= 2
    assert consumed == sorted(consumed) and len(set(consumed)) == len(consumed)
    assert consumed[-1] == total - 1, "the newest frame wins"
    assert mem.num_tokens <= plan.budget and len(mem) <= plan.max_frames
