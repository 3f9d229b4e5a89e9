"""vispruner_select against a literal reference of docs/method.md section 1.

The reference below is plain numpy, written from the pseudocode line by line. It also
emulates the shape arithmetic of the published (official) implementation and raises
``PublishedCodeFails`` where that code crashes or keeps a wrong number of tokens, so
the tests can say both "identical to the pseudocode" and "identical wherever the
published code works".

Features in the identity tests are exact in float32: each token is a +-1 pattern with
4 or 16 non-zeros (norm 2 or 4) times a power of two, so normalising and every cosine
are exact and the comparison does not depend on summation order. Such features also
produce many exactly equal similarity scores, which exercises the tie rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidprune.errors import ConfigError
from vidprune.pruners import vispruner_select

# ----------------------------------------------------------------------------------
# Reference


class PublishedCodeFails(Exception):
    """The published implementation would crash, or return a wrong number of tokens, here."""


def official_round_failure(R: int, r: int) -> str | None:
    """How one round of the published loop handles (R, r), compared with the pseudocode.

    The pseudocode keeps ``k = max(0, ceil(R/2) - r)`` a-tokens: ``argsort(s)[r:]``.
    The published code (batch form, B == 1) picks them with
    ``residual[..., ::2][arange(B).unsqueeze(-1).expand(-1, R // 2 - r), distinct]``:
    a batch index of width ``w = R // 2 - r`` broadcast against ``distinct`` of width k.
      * ``w < -1``: ``expand`` gets a negative size and raises (r > len(a) + 1 for even R).
      * ``w == -1`` leaves the size-1 dimension as it is (expand's "keep" value): width 1.
      * widths broadcast only if equal or one of them is 1; otherwise IndexError. For odd
        R, ``w = k - 1``, so it works only for k == 0 or k == 2; k == 1 broadcasts to
        width 0 and silently drops the last a-token (a different selection; one token
        short of T when it happens in the last round, as in the N=8 hand-worked case).
    Returns None where the round gives exactly what the pseudocode gives.
    """
    len_a = (R + 1) // 2
    k = max(0, len_a - r)
    w = R // 2 - r
    if w < -1:
        return f"expand(-1, {w}) raises: negative size (R={R}, r={r})"
    w = 1 if w == -1 else w
    if w != k and w != 1 and k != 1:
        return f"IndexError: index widths {w} and {k} do not broadcast (R={R}, r={r})"
    got = k if (w == k or w == 1) else w
    if got != k:
        return f"keeps {got} a-tokens instead of {k} (R={R}, r={r}): wrong count"
    return None


def reference_vispruner(attn: np.ndarray, feats: np.ndarray, T: int, rho: float, official: bool = False) -> np.ndarray:
    """Literal method.md pseudocode. ``official=True`` also raises where the published code fails."""
    N = attn.shape[0]
    if T >= N:
        return np.arange(N)
    T_imp = math.floor(T * rho)
    T_div = T - T_imp
    order = np.argsort(-attn, kind="stable")  # descending, ties: lower index first
    important, residual = order[:T_imp], order[T_imp:]
    unit = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
    if T_div == 0:
        # The pseudocode's `while T_div > 0` would keep the whole residual (N tokens, not T);
        # the published `while True` loop shrinks the residual until b = residual[1::2] is
        # empty and `max(dim=-1)` over it raises.
        raise PublishedCodeFails("T_div == 0")
    while T_div > 0:
        R = len(residual)
        r = min(8, R - T_div)
        if r <= 0:
            break
        if official:
            reason = official_round_failure(R, r)
            if reason:
                raise PublishedCodeFails(reason)
        a, b = residual[0::2], residual[1::2]
        s = (unit[a] @ unit[b].T).max(axis=1)  # each a-token: max cosine to any b-token
        keep_a = np.argsort(-s, kind="stable")[r:]  # drop the r most duplicated a-tokens
        residual = np.concatenate([a[keep_a], b])
    kept = np.concatenate([important, residual])
    assert len(kept) == T
    return np.sort(kept)


def exact_features(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """(n, D) float32 features whose normalisation and cosines are exact in float32."""
    dim, nonzeros = {"onehot": (8, 1), "signs4": (8, 4), "signs16": (32, 16)}[kind]
    feats = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        cols = rng.choice(dim, size=nonzeros, replace=False)
        feats[i, cols] = rng.choice([-1.0, 1.0], size=nonzeros)
    scale = np.float32(2.0) ** rng.integers(-4, 5, size=(n, 1)).astype(np.float32)
    return feats * scale


def make_attention(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "ties":
        return (rng.integers(0, 4, size=n) / 4).astype(np.float32)
    return rng.random(n, dtype=np.float32)


def select(attn: np.ndarray, feats: np.ndarray, T: int, rho: float) -> np.ndarray:
    return vispruner_select(torch.from_numpy(attn), torch.from_numpy(feats), T, rho).numpy()


def check_invariants(kept: np.ndarray, attn: np.ndarray, T: int, rho: float) -> None:
    N = attn.shape[0]
    assert kept.dtype == np.int64
    assert len(kept) == min(T, N)
    assert np.all(np.diff(kept) > 0), "sorted ascending, unique"
    assert kept.min() >= 0 and kept.max() < N
    if T < N:
        top = np.argsort(-attn, kind="stable")[: math.floor(T * rho)]
        assert set(top.tolist()) <= set(kept.tolist()), "the top-T_imp attention tokens are kept"


# ----------------------------------------------------------------------------------
# Property tests


@st.composite
def frame_cases(draw):
    n = draw(st.integers(4, 600))
    T = draw(st.integers(1, n + 3))
    rho = draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    feat_kind = draw(st.sampled_from(["onehot", "signs4", "signs16"]))
    attn_kind = draw(st.sampled_from(["distinct", "ties"]))
    rng = np.random.default_rng(seed)
    return make_attention(rng, n, attn_kind), exact_features(rng, n, feat_kind), T, rho


@settings(max_examples=120, deadline=None)
@given(frame_cases())
def test_identical_to_pseudocode_and_exact_count(case):
    attn, feats, T, rho = case
    kept = select(attn, feats, T, rho)
    check_invariants(kept, attn, T, rho)
    try:
        ref = reference_vispruner(attn, feats, T, rho)
    except PublishedCodeFails:
        # Only T_div == 0: then the kept set is the top-T attention tokens.
        assert T - math.floor(T * rho) == 0
        np.testing.assert_array_equal(kept, np.sort(np.argsort(-attn, kind="stable")[:T]))
        return
    np.testing.assert_array_equal(kept, ref)


@settings(max_examples=60, deadline=None)
@given(frame_cases())
def test_identical_wherever_the_published_code_works(case):
    attn, feats, T, rho = case
    kept = select(attn, feats, T, rho)
    try:
        ref = reference_vispruner(attn, feats, T, rho, official=True)
    except PublishedCodeFails:
        assert len(kept) == min(T, len(attn))  # we still return exactly T
        return
    np.testing.assert_array_equal(kept, ref)


def test_official_failure_model_matches_torch_broadcasting():
    # The failure model above, checked against what torch indexing really does with a
    # batch index of width R // 2 - r (B = 1) and argsort(s)[r:] of width max(0, ceil(R/2) - r).
    for R in range(2, 40):
        for r in range(1, 9):
            x = torch.arange(R)[None]  # (1, R)
            distinct = torch.arange((R + 1) // 2)[None][:, r:]  # (1, k)
            try:
                got = x[..., ::2][torch.zeros(1, 1, dtype=torch.long).expand(-1, R // 2 - r), distinct]
                ok = got.shape[1] == distinct.shape[1]
            except (IndexError, RuntimeError):
                ok = False
            assert ok == (official_round_failure(R, r) is None), (R, r)


# ----------------------------------------------------------------------------------
# Hand-worked cases


def test_hand_worked_n8_two_rounds_and_published_miscount():
    # attn order (descending, 0 before 7 on the 0.10 tie): 1, 3, 6, 0, 7, 4, 2, 5
    # T=4, rho=0.5 -> T_imp=2, T_div=2; important = {1, 3}; residual = [6, 0, 7, 4, 2, 5]
    # round 1: R=6, r=min(8, 4)=4 > len(a)=3 with a=[6, 7, 2], b=[0, 4, 5]: all of a goes
    #          -> residual = [0, 4, 5]
    # round 2: R=3, r=1; a=[0, 5], b=[4]; s(0)=cos((1,0),(0,1))=0, s(5)=cos((1,1),(0,1))=0.707
    #          -> drop 5 -> residual = [0] + [4] = [0, 4]; R=2 == T_div, stop.
    # kept = {1, 3} | {0, 4} = [0, 1, 3, 4]
    attn = np.array([0.10, 0.30, 0.05, 0.20, 0.08, 0.02, 0.15, 0.10], dtype=np.float32)
    feats = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [0, 1], [1, 1], [1, 0], [-1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(select(attn, feats, 4, 0.5), [0, 1, 3, 4])
    np.testing.assert_array_equal(reference_vispruner(attn, feats, 4, 0.5), [0, 1, 3, 4])
    # Round 2 has odd R=3 with one a-token to keep: the published indexing keeps none
    # (3 tokens in total instead of 4).
    with pytest.raises(PublishedCodeFails, match="wrong count"):
        reference_vispruner(attn, feats, 4, 0.5, official=True)


def test_hand_worked_all_ties():
    # Equal attention: important = lowest indices [0, 1]; residual = [2, 3, 4, 5, 6, 7].
    # Identical features: every score is 1, so the stable sort drops a-tokens by position.
    # round 1: R=6, r=4 capped at len(a)=3: a=[2, 4, 6] all go -> residual = [3, 5, 7]
    # round 2: R=3, r=1; a=[3, 7] (both s=1), b=[5]; drop the first, 3 -> residual = [7, 5]
    # kept = [0, 1, 5, 7]
    attn = np.full(8, 0.125, dtype=np.float32)
    feats = np.ones((8, 3), dtype=np.float32)
    np.testing.assert_array_equal(select(attn, feats, 4, 0.5), [0, 1, 5, 7])
    # Ties in attention alone: lower index wins.
    np.testing.assert_array_equal(select(attn, feats, 3, 1.0), [0, 1, 2])
    attn2 = np.array([0.5, 0.2, 0.5, 0.2, 0.5, 0.1], dtype=np.float32)
    np.testing.assert_array_equal(select(attn2, np.eye(6, dtype=np.float32), 2, 1.0), [0, 2])
    np.testing.assert_array_equal(select(attn2, np.eye(6, dtype=np.float32), 4, 1.0), [0, 1, 2, 4])


def test_hand_worked_ratio_zero_pure_diversity():
    # rho=0: no important tokens; residual = attention order [3, 2, 1, 0, 4, 5] (distinct values).
    # T=2, T_div=2, R=6: r=4 > len(a)=3 -> a=[3, 1, 4] all go -> residual [2, 0, 5]
    # R=3, r=1: a=[2, 5], b=[0]; features: 2 equals 0 (s=1), 5 is orthogonal (s=0)
    #   -> drop 2 -> residual [5, 0] -> kept [0, 5]
    attn = np.array([0.3, 0.4, 0.5, 0.6, 0.2, 0.1], dtype=np.float32)
    feats = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(select(attn, feats, 2, 0.0), [0, 5])
    np.testing.assert_array_equal(reference_vispruner(attn, feats, 2, 0.0), [0, 5])


def test_ratio_one_keeps_top_attention_where_published_crashes():
    rng = np.random.default_rng(3)
    attn = rng.random(50, dtype=np.float32)
    feats = exact_features(rng, 50, "signs4")
    with pytest.raises(PublishedCodeFails):
        reference_vispruner(attn, feats, 10, 1.0)
    np.testing.assert_array_equal(select(attn, feats, 10, 1.0), np.sort(np.argsort(-attn)[:10]))


def test_budget_at_or_above_n_keeps_all():
    attn, feats = torch.rand(2, 20), torch.randn(2, 20, 4)
    for T in (20, 21, 1000):
        assert torch.equal(vispruner_select(attn, feats, T), torch.arange(20).expand(2, 20))
    assert torch.equal(vispruner_select(attn[0], feats[0], 20), torch.arange(20))


# ----------------------------------------------------------------------------------
# Paper-sized frames


@pytest.mark.parametrize(
    "n, budgets",
    [
        (256, [57, 56, 29, 28, 15, 14]),  # Video-LLaVA: 455 / 227 / 114 of 8 x 256, split over 8 frames
        (576, [192, 128, 64, 32]),  # LLaVA-1.5 image budgets
        (144, [32, 16, 8]),  # LLaVA-NeXT-Video pooled frames (12 x 12)
    ],
)
def test_realistic_sizes_match_reference(n, budgets):
    rng = np.random.default_rng(n)
    attn = rng.random(n, dtype=np.float32) ** 4  # peaked, like [CLS] attention
    feats = exact_features(rng, n, "signs16")
    for T in budgets:
        kept = select(attn, feats, T, 0.5)
        check_invariants(kept, attn, T, 0.5)
        np.testing.assert_array_equal(kept, reference_vispruner(attn, feats, T, 0.5))


@pytest.mark.parametrize(
    "n, T, published_fails",
    [
        (256, 56, False),
        (256, 28, False),
        (256, 14, True),  # N - T_imp = 249 is odd: IndexError in round 1
        (256, 15, True),  # same, T_imp = 7
        (144, 16, False),
        (144, 8, True),  # last round R=12, r=8 > len(a) + 1: negative expand
        (576, 2, True),  # N - T_imp = 575 odd
    ],
)
def test_where_the_published_code_fails_we_return_t(n, T, published_fails):
    rng = np.random.default_rng(T)
    attn = rng.random(n, dtype=np.float32)
    feats = exact_features(rng, n, "signs16")
    kept = select(attn, feats, T, 0.5)
    assert len(kept) == T
    np.testing.assert_array_equal(kept, reference_vispruner(attn, feats, T, 0.5))
    if published_fails:
        with pytest.raises(PublishedCodeFails):
            reference_vispruner(attn, feats, T, 0.5, official=True)
    else:
        np.testing.assert_array_equal(kept, reference_vispruner(attn, feats, T, 0.5, official=True))


# ----------------------------------------------------------------------------------
# dtype, batching, validation


def test_bf16_inputs_select_what_their_float32_values_select():
    """vispruner_select scores in float32 whatever the input dtype: bf16 inputs select exactly what the same
    values upcast to float32 select (arithmetic in bf16 -- ties, cosine rounding -- would differ here)."""
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(4, 576) * 3, dim=-1).to(torch.bfloat16)
    feats = torch.randn(4, 576, 64).to(torch.bfloat16)
    for T in (144, 64, 9):
        got = vispruner_select(attn, feats, T)
        want = vispruner_select(attn.float(), feats.float(), T)
        assert torch.equal(got, want)
        assert got.dtype == torch.long and got.shape == (4, T)


# Measured on the tiny random-weight checkpoints, 8 frames each of random noise and of the moving square
# (2026-12-07): mean agreement 0.57-0.75 per budget, lowest frame 0.44. A random-weight tower's [CLS]
# attention is nearly flat, so bf16 rounding reorders tokens near the cut far more than a trained
# tower's would; the bound is what a correct bf16 path keeps here, and well above chance (T / N <= 0.25).
BF16_MEAN_AGREEMENT = 0.5


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video"])
def test_bf16_tower_features_select_mostly_what_float32_features_select(tiny_checkpoints, random_frames, family):
    """The same checkpoint loaded in bfloat16 and in float32, the same frames: what VisPruner keeps from the bf16
    tower's [CLS] attention and features against what it keeps from the float32 tower's, as the share of the
    kept tokens both keep (agreement), per frame and budget."""
    from vidprune.samples import moving_square_frames
    from vidprune.video_models import load_video_llm

    full, half = (load_video_llm(tiny_checkpoints[family], dtype=d) for d in ("float32", "bfloat16"))
    for frames in (random_frames(8, seed=0), moving_square_frames(num_frames=8)):
        a, b = full.encode(full.preprocess(frames)), half.encode(half.preprocess(frames))
        assert a.features.dtype == torch.float32 and b.features.dtype == torch.bfloat16
        n = a.features.shape[1]
        for budget in (n // 4, n // 8, n // 16):
            kept_full = vispruner_select(a.cls_attn, a.features, budget)
            kept_half = vispruner_select(b.cls_attn, b.features, budget)
            agreement = [len(set(x.tolist()) & set(y.tolist())) / budget for x, y in zip(kept_full, kept_half)]
            mean = sum(agreement) / len(agreement)
            assert mean >= BF16_MEAN_AGREEMENT, (budget, agreement)
            assert mean > 2 * budget / n  # far from chance: bf16 tower features still carry the ranking


def test_batched_equals_per_item():
    torch.manual_seed(1)
    attn, feats = torch.rand(5, 256), torch.randn(5, 256, 32)
    for T, rho in ((56, 0.5), (14, 0.5), (30, 0.2), (7, 1.0), (300, 0.5)):
        batched = vispruner_select(attn, feats, T, rho)
        for i in range(5):
            assert torch.equal(batched[i], vispruner_select(attn[i], feats[i], T, rho))


def test_output_keeps_device_and_does_not_modify_inputs():
    attn, feats = torch.rand(64), torch.randn(64, 8)
    attn_copy, feats_copy = attn.clone(), feats.clone()
    kept = vispruner_select(attn, feats, 10)
    assert kept.device == attn.device
    assert torch.equal(attn, attn_copy) and torch.equal(feats, feats_copy)


@pytest.mark.parametrize("budget", [0, -3, 2.5, True, None, "8"])
def test_bad_budget_raises(budget):
    with pytest.raises(ConfigError, match="budget"):
        vispruner_select(torch.rand(16), torch.randn(16, 4), budget)


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan"), "half"])
def test_bad_ratio_raises(ratio):
    with pytest.raises(ConfigError, match="important_ratio"):
        vispruner_select(torch.rand(16), torch.randn(16, 4), 4, ratio)


@pytest.mark.parametrize(
    "attn_shape, feat_shape",
    [((16,), (15, 4)), ((16,), (16,)), ((2, 16), (16, 4)), ((2, 16), (3, 16, 4)), ((1, 2, 16), (1, 2, 16, 4))],
)
def test_shape_mismatch_raises(attn_shape, feat_shape):
    with pytest.raises(ConfigError):
        vispruner_select(torch.rand(attn_shape), torch.randn(feat_shape), 4)


def test_integer_inputs_raise():
    with pytest.raises(ConfigError, match="floating-point"):
        vispruner_select(torch.arange(16), torch.randn(16, 4), 4)
