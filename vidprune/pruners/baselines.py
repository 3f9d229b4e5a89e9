"""Baseline pruners: ``"random"``, ``"uniform"`` (even spatial grid) and ``"none"`` (keep all).

They follow the ``Pruner`` contract of ``registry.py``; ``features`` is checked for shape
but not used.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch

from vidprune.errors import ConfigError
from vidprune.pruners.registry import batch_inputs, check_budget, register_pruner

__all__ = ["RandomPruner", "UniformPruner", "NoPruner", "uniform_grid_indices"]


def _finish(kept: torch.Tensor, single: bool) -> torch.Tensor:
    return kept[0] if single else kept


@register_pruner("random")
@dataclass(frozen=True)
class RandomPruner:
    """Keeps ``min(budget, N)`` tokens drawn uniformly without replacement.

    Deterministic: the draw for one frame depends only on ``seed`` and that frame's
    ``cls_attn`` values (their float32 bytes are hashed into the generator's seed), so
    the same inputs give the same tokens, a frame gives the same tokens alone or inside
    a batch, and different frames of a video get different draws. The draw runs on
    a CPU generator (reading N attention values to the host); the result goes back to
    the input's device. A smaller budget keeps a subset of a larger one.
    """

    seed: int = 0

    name: ClassVar[str]
    respects_budget: ClassVar[bool] = True
    summary: ClassVar[str] = "baseline: tokens drawn at random per frame; --seed"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ConfigError(f"seed={self.seed!r} is not allowed: the random pruner's seed must be an integer")

    def _generator(self, attn_row: torch.Tensor) -> torch.Generator:
        digest = hashlib.blake2b(digest_size=8)
        digest.update(int(self.seed).to_bytes(16, "little", signed=True))
        digest.update(attn_row.to("cpu", torch.float32).contiguous().numpy().tobytes())
        return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest.digest(), "little") >> 1)

    def __call__(self, cls_attn: torch.Tensor, features: torch.Tensor, budget: int) -> torch.Tensor:
        attn, _, single = batch_inputs(cls_attn, features)  # (B, N)
        budget = check_budget(budget)
        num_tokens = attn.shape[1]
        k = min(budget, num_tokens)
        rows = [torch.randperm(num_tokens, generator=self._generator(row))[:k] for row in attn]
        kept = torch.sort(torch.stack(rows), dim=-1).values.to(attn.device)  # (B, K)
        return _finish(kept, single)


@lru_cache(maxsize=256)
def _grid_points(height: int, width: int, k: int) -> tuple[int, ...]:
    # Rows: as many as keeps the cell shape square-ish, at least enough that no row
    # needs more than `width` tokens, at most k (every row gets at least one token).
    rows = max(1, min(height, k, round(math.sqrt(k * height / width))))
    rows = max(rows, -(-k // width))
    base, extra = divmod(k, rows)
    points = []
    for i in range(rows):
        # The `extra` rows with one more token are spread over the rows evenly.
        n = base + ((i + 1) * extra // rows - i * extra // rows)
        y = (2 * i + 1) * height // (2 * rows)  # centre of the i-th of `rows` equal bands
        points.extend(y * width + (2 * j + 1) * width // (2 * n) for j in range(n))
    return tuple(sorted(points))


def uniform_grid_indices(height: int, width: int, k: int) -> list[int]:
    """``min(k, height * width)`` raster indices spread evenly over a ``height x width`` grid.

    The grid is cut into ``rows`` horizontal bands (about ``sqrt(k * height / width)``,
    so cells are roughly square); band i gets ``k // rows`` or one more tokens, placed at
    the centres of equal column segments, in the band's middle row. Band and column
    centres are at least one cell apart, so all indices are distinct. Deterministic.
    """
    k = min(k, height * width)
    return list(_grid_points(height, width, k))


def _check_grid(grid: object) -> tuple[int, int] | None:
    if grid is None:
        return None
    ok = (
        isinstance(grid, (tuple, list))
        and len(grid) == 2
        and all(isinstance(g, numbers.Integral) and not isinstance(g, bool) and g >= 1 for g in grid)
    )
    if not ok:
        raise ConfigError(f"grid={grid!r} is not allowed: it must be (height, width), two integers >= 1")
    return int(grid[0]), int(grid[1])


@register_pruner("uniform")
@dataclass(frozen=True)
class UniformPruner:
    """Keeps ``min(budget, N)`` tokens spread evenly over the frame's token grid.

    The grid is ``grid=(height, width)`` if given (``height * width`` must equal N),
    otherwise the square grid of side ``sqrt(N)`` (N must be a perfect square). Content is
    ignored: every frame of a batch gets the same indices (``uniform_grid_indices``).
    """

    grid: tuple[int, int] | None = None

    name: ClassVar[str]
    respects_budget: ClassVar[bool] = True
    summary: ClassVar[str] = "baseline: tokens spread evenly over the frame's grid, content ignored"

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _check_grid(self.grid))

    def _grid_for(self, num_tokens: int) -> tuple[int, int]:
        if self.grid is not None:
            if self.grid[0] * self.grid[1] != num_tokens:
                raise ConfigError(
                    f"grid={self.grid} has {self.grid[0] * self.grid[1]} cells but the frame has N={num_tokens} tokens"
                )
            return self.grid
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ConfigError(
                f"N={num_tokens} tokens is not a square grid; pass grid=(height, width) to the 'uniform' pruner"
            )
        return side, side

    def __call__(self, cls_attn: torch.Tensor, features: torch.Tensor, budget: int) -> torch.Tensor:
        attn, _, single = batch_inputs(cls_attn, features)  # (B, N)
        budget = check_budget(budget)
        height, width = self._grid_for(attn.shape[1])
        idx = torch.tensor(uniform_grid_indices(height, width, budget), dtype=torch.long, device=attn.device)  # (K,)
        return _finish(idx.expand(attn.shape[0], -1).clone(), single)  # (B, K)


@register_pruner("none")
@dataclass(frozen=True)
class NoPruner:
    """Keeps all N tokens and ignores ``budget`` (the unpruned reference)."""

    name: ClassVar[str]
    respects_budget: ClassVar[bool] = False
    summary: ClassVar[str] = "keeps every token (pruning off; takes no --budget)"

    def __call__(self, cls_attn: torch.Tensor, features: torch.Tensor, budget: int | None = None) -> torch.Tensor:
        attn, _, single = batch_inputs(cls_attn, features)  # (B, N)
        batch, num_tokens = attn.shape
        return _finish(torch.arange(num_tokens, device=attn.device).expand(batch, -1).clone(), single)  # (B, N)
