"""The pruner registry, and one contract that every registered pruner passes."""

from __future__ import annotations

import math

import pytest
import torch

from vidprune.errors import ConfigError
from vidprune.pruners import Pruner, create_pruner, list_pruners, register_pruner, uniform_grid_indices
from vidprune.pruners import registry

N_SIDE = 12  # N = 144 tokens: a square grid, so "uniform" works without options
N = N_SIDE * N_SIDE
BUDGETS = [1, 5, 36, 100, N, N + 7]


def make_batch(batch: int = 4, n: int = N, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    attn = torch.softmax(torch.randn(batch, n, generator=g) * 2, dim=-1)  # (B, N)
    feats = torch.randn(batch, n, dim, generator=g)  # (B, N, D)
    return attn, feats


# ----------------------------------------------------------------------------------
# Contract, parametrized over the registry


@pytest.mark.parametrize("name", list_pruners())
def test_registered_pruner_contract(name):
    pruner = create_pruner(name)
    assert isinstance(pruner, Pruner)
    assert pruner.name == name
    assert isinstance(pruner.respects_budget, bool)
    attn, feats = make_batch()
    for budget in BUDGETS:
        want = min(budget, N) if pruner.respects_budget else N
        kept = pruner(attn, feats, budget)  # (B, K)
        assert kept.dtype == torch.long and kept.shape == (4, want), (name, budget)
        assert kept.device == attn.device
        assert bool((kept[:, 1:] > kept[:, :-1]).all()), "sorted ascending, unique"
        assert int(kept.min()) >= 0 and int(kept.max()) < N
        # Deterministic: same inputs, same output (also from a fresh instance).
        assert torch.equal(kept, pruner(attn, feats, budget))
        assert torch.equal(kept, create_pruner(name)(attn, feats, budget))
        # A batch of one, and a single frame, equal each item of the batch.
        for i in range(4):
            assert torch.equal(pruner(attn[i : i + 1], feats[i : i + 1], budget)[0], kept[i])
            assert torch.equal(pruner(attn[i], feats[i], budget), kept[i])


@pytest.mark.parametrize("name", list_pruners())
def test_registered_pruner_accepts_bf16_and_rejects_bad_shapes(name):
    pruner = create_pruner(name)
    attn, feats = make_batch(batch=2)
    kept = pruner(attn.to(torch.bfloat16), feats.to(torch.bfloat16), 20)
    assert kept.shape[0] == 2 and kept.dtype == torch.long
    with pytest.raises(ConfigError):
        pruner(attn, feats[:, :-1], 20)
    with pytest.raises(ConfigError):
        pruner(attn[0], feats, 20)


@pytest.mark.parametrize("name", [n for n in list_pruners() if create_pruner(n).respects_budget])
def test_budget_respecting_pruners_reject_bad_budget(name):
    attn, feats = make_batch(batch=1)
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ConfigError, match="budget"):
            create_pruner(name)(attn, feats, bad)


# ----------------------------------------------------------------------------------
# Registry


def test_list_pruners_sorted_and_filtered():
    names = list_pruners()
    assert names == sorted(names)
    assert {"none", "random", "uniform", "vispruner"} <= set(names)
    assert list_pruners("v*") == ["vispruner"]
    assert list_pruners("*n*") == [n for n in names if "n" in n]
    assert list_pruners("no-such-*") == []


def test_unknown_pruner_lists_available():
    with pytest.raises(ConfigError, match=r"Unknown pruner 'fastv'\. Available: none, random, uniform, vispruner"):
        create_pruner("fastv")


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match=r"ratio.*'vispruner'.*Allowed: important_ratio"):
        create_pruner("vispruner", ratio=0.3)
    with pytest.raises(ConfigError, match=r"seed.*'none'"):
        create_pruner("none", seed=1)
    with pytest.raises(ConfigError, match="bogus, other"):
        create_pruner("random", other=1, bogus=2)


def test_bad_option_values_raise():
    with pytest.raises(ConfigError, match="important_ratio"):
        create_pruner("vispruner", important_ratio=2.0)
    with pytest.raises(ConfigError, match="seed"):
        create_pruner("random", seed=0.5)
    with pytest.raises(ConfigError, match="grid"):
        create_pruner("uniform", grid=(4, 0))


def test_register_custom_pruner_and_duplicate_name(monkeypatch):
    monkeypatch.setattr(registry, "_PRUNERS", dict(registry._PRUNERS))

    @register_pruner("first_k")
    class FirstK:
        respects_budget = True

        def __call__(self, cls_attn, features, budget):
            return torch.arange(min(budget, cls_attn.shape[-1]))

    assert "first_k" in list_pruners()
    assert create_pruner("first_k").name == "first_k"
    with pytest.raises(ValueError, match="already registered"):
        register_pruner("vispruner")(FirstK)


def test_vispruner_option_is_used():
    attn, feats = make_batch(batch=1)
    only_attention = create_pruner("vispruner", important_ratio=1.0)(attn, feats, 10)
    assert torch.equal(only_attention[0], torch.sort(torch.topk(attn[0], 10).indices).values)
    assert not torch.equal(only_attention, create_pruner("vispruner", important_ratio=0.0)(attn, feats, 10))


# ----------------------------------------------------------------------------------
# Baselines


def test_random_depends_on_seed_and_frame_content():
    attn, feats = make_batch(batch=2)
    a = create_pruner("random", seed=0)(attn, feats, 20)
    assert not torch.equal(a, create_pruner("random", seed=1)(attn, feats, 20))
    assert not torch.equal(a[0], a[1]), "different frames get different draws"
    # A smaller budget keeps a subset of a larger one.
    small = create_pruner("random", seed=0)(attn, feats, 5)
    for i in range(2):
        assert set(small[i].tolist()) <= set(a[i].tolist())


def test_random_is_roughly_uniform():
    attn, feats = make_batch(batch=64, seed=3)
    kept = create_pruner("random")(attn, feats, 36)  # (64, 36): 2304 draws over 144 tokens
    counts = torch.bincount(kept.flatten(), minlength=N).float()
    assert counts.min() > 0 and counts.max() < 4 * counts.mean()


def test_uniform_exact_lattice_when_budget_is_square():
    # 16 of a 16 x 16 grid: a 4 x 4 lattice at the centres of 4-cell bands.
    idx = uniform_grid_indices(16, 16, 16)
    assert idx == [r * 16 + c for r in (2, 6, 10, 14) for c in (2, 6, 10, 14)]


@pytest.mark.parametrize("h, w", [(24, 24), (16, 16), (12, 12), (6, 20), (20, 6), (1, 10)])
def test_uniform_spreads_tokens_evenly(h, w):
    for k in range(1, h * w + 1, max(1, (h * w) // 40)):
        idx = uniform_grid_indices(h, w, k)
        assert len(idx) == k and idx == sorted(set(idx)) and idx[-1] < h * w
        rows = sorted({i // w for i in idx})
        per_row = [sum(1 for i in idx if i // w == r) for r in rows]
        assert max(per_row) - min(per_row) <= 1, "rows get equal shares"
        gaps = [b - a for a, b in zip(rows, rows[1:])]
        assert not gaps or max(gaps) - min(gaps) <= 1, "rows evenly spaced"
        for r in rows:  # tokens in a row evenly spaced
            cols = [i % w for i in idx if i // w == r]
            col_gaps = [b - a for a, b in zip(cols, cols[1:])]
            assert not col_gaps or max(col_gaps) - min(col_gaps) <= 1
        # Cells stay roughly square: bands about as tall as segments are wide.
        if 4 <= k <= h * w // 4 and min(h, w) >= 6:
            band, segment = h / len(rows), w / max(per_row)
            assert 0.4 <= band / segment <= 2.5, (k, band, segment)


def test_uniform_needs_square_n_or_grid():
    attn, feats = torch.rand(2, 40), torch.randn(2, 40, 4)
    with pytest.raises(ConfigError, match="N=40.*grid"):
        create_pruner("uniform")(attn, feats, 8)
    kept = create_pruner("uniform", grid=(5, 8))(attn, feats, 8)
    assert kept.shape == (2, 8)
    with pytest.raises(ConfigError, match="grid"):
        create_pruner("uniform", grid=(6, 8))(attn, feats, 8)


def test_none_keeps_everything():
    pruner = create_pruner("none")
    assert pruner.respects_budget is False
    assert all(create_pruner(n).respects_budget for n in list_pruners() if n != "none")
    attn, feats = make_batch(batch=2)
    assert torch.equal(pruner(attn, feats, 3), torch.arange(N).expand(2, N))
    assert math.prod(pruner(attn[0], feats[0], 3).shape) == N
