"""The pruner registry: ``register_pruner``, ``create_pruner``, ``list_pruners``.

A *pruner* picks, for one frame, which of its N patch tokens go on to the LLM. Every
pruner has the same call contract (see ``Pruner``), so the pipeline, the budget logic
and the tests treat them alike:

    pruner = create_pruner("vispruner", important_ratio=0.5)
    kept = pruner(cls_attn, features, budget)   # (N,), (N, D) -> (K,)   or
                                                # (B, N), (B, N, D) -> (B, K)

``kept`` is a LongTensor of indices into the N tokens, sorted ascending (raster order),
without repeats, ``K = min(budget, N)`` of them (``K = N`` for a pruner whose
``respects_budget`` is False), on the device of ``cls_attn``.

This module also holds the input checks every pruner shares (``batch_inputs``,
``check_budget``), so the error messages are the same whichever pruner runs.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Callable, Protocol, TypeVar, runtime_checkable

import torch

from vidprune.errors import ConfigError
from vidprune.validators import check_positive_int

__all__ = ["Pruner", "register_pruner", "create_pruner", "list_pruners", "describe_pruner", "pruner_from_options",
           "check_pruner_grid"]


@runtime_checkable
class Pruner(Protocol):
    """What ``create_pruner`` returns.

    Attributes:
        name: the registry name (``"vispruner"``, ``"random"``, ...).
        respects_budget: False for a pruner that keeps all N tokens whatever the budget
            (``"none"``); the budget logic refuses such a pruner under a finite budget.

    Call:
        cls_attn: (N,) or (B, N) attention each patch token receives (VisPruner: the
            [CLS] query's attention, mean over heads).
        features: (N, D) or (B, N, D) the patch features (before the projector).
        budget: tokens to keep per frame, an int >= 1.
        returns: (K,) or (B, K) LongTensor, sorted ascending, unique, in ``[0, N)``.
    """

    name: str
    respects_budget: bool

    def __call__(self, cls_attn: torch.Tensor, features: torch.Tensor, budget: int) -> torch.Tensor: ...


_PRUNERS: dict[str, Callable[..., Pruner]] = {}

_F = TypeVar("_F", bound=Callable[..., Pruner])


def register_pruner(name: str) -> Callable[[_F], _F]:
    """Class decorator: make ``create_pruner(name, **kwargs)`` build ``cls(**kwargs)``.

    The decorator sets ``cls.name = name``. The constructor's keyword parameters are the
    pruner's options; ``create_pruner`` rejects any other keyword by name.
    """

    def decorator(factory: _F) -> _F:
        if name in _PRUNERS:
            raise ValueError(f"A pruner named {name!r} is already registered ({_PRUNERS[name]!r}); pick another name.")
        factory.name = name  # type: ignore[attr-defined]
        _PRUNERS[name] = factory
        return factory

    return decorator


def list_pruners(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered pruners, optionally filtered by an fnmatch pattern (``"v*"``)."""
    names = sorted(_PRUNERS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def describe_pruner(name: str) -> str:
    """One line about the pruner registered as ``name``: its ``summary``, else its docstring's first line."""
    factory = _PRUNERS.get(name)
    if factory is None:
        raise ConfigError(f"Unknown pruner {name!r}. Available: {', '.join(list_pruners())}")
    summary = getattr(factory, "summary", None) or (factory.__doc__ or "").strip().split("\n")[0]
    return summary


def create_pruner(name: str, **kwargs) -> Pruner:
    """Build the pruner registered as ``name`` with its options ``kwargs``.

    Raises:
        ConfigError: unknown ``name`` (the message lists the registered ones), an option
            the pruner does not take (named, with the ones it takes), or a bad option value.
    """
    factory = _PRUNERS.get(name)
    if factory is None:
        raise ConfigError(f"Unknown pruner {name!r}. Available: {', '.join(list_pruners())}")
    params = inspect.signature(factory).parameters
    allowed = [p for p, spec in params.items() if spec.kind in (spec.KEYWORD_ONLY, spec.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {', '.join(unknown)} for pruner {name!r}. "
            f"Allowed: {', '.join(allowed) if allowed else 'none (this pruner takes no options)'}"
        )
    return factory(**kwargs)


# ----------------------------------------------------------------------------------
# Input checks shared by all pruners (not exported from vidprune.pruners).


def pruner_options(name: str) -> list[str]:
    """The option names the pruner registered as ``name`` takes (its constructor's keywords)."""
    factory = _PRUNERS.get(name)
    if factory is None:
        raise ConfigError(f"Unknown pruner {name!r}. Available: {', '.join(list_pruners())}")
    params = inspect.signature(factory).parameters
    return [p for p, spec in params.items() if spec.kind in (spec.KEYWORD_ONLY, spec.POSITIONAL_OR_KEYWORD)]


def pruner_from_options(name: str, **options) -> Pruner:
    """A pruner from the pipeline's options: each pruner gets the ones its constructor takes.

    ``options`` are what the select section offers every pruner (``important_ratio``,
    ``seed``, the token ``grid`` (h, w), ...); a registered pruner declares which it uses by
    its constructor's keyword names, as with ``create_pruner`` (no switch on names here).
    """
    taken = set(pruner_options(name))
    return create_pruner(name, **{k: v for k, v in options.items() if k in taken})


def check_pruner_grid(name: str, dynamic_grid: bool) -> None:
    """Refuse a pruner that needs the token grid in advance (it takes the ``grid`` option) for a
    model whose grid comes from each video (dynamic resolution: Qwen2.5-VL)."""
    if dynamic_grid and "grid" in pruner_options(name):
        others = [n for n in list_pruners() if n != "none" and "grid" not in pruner_options(n)]
        raise ConfigError(f"the {name!r} pruner spreads tokens over a grid fixed in advance, but this model's grid "
                          f"comes from each video (dynamic resolution); use {' or '.join(others)}")


def check_budget(budget: object) -> int:
    """Return ``budget`` as an int, or raise ConfigError unless it is an integer >= 1."""
    return check_positive_int("the per-frame budget", budget)


def batch_inputs(cls_attn: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check the shapes of one frame or a batch and return float32 batched views.

    Args:
        cls_attn: (N,) or (B, N), any floating dtype.
        features: (N, D) or (B, N, D), any floating dtype, same leading sizes as cls_attn.

    Returns:
        attn (B, N) float32, feats (B, N, D) float32 (same device as the inputs), and
        ``single``: True if the inputs were one frame (the caller then squeezes B away).
    """
    for label, t in (("cls_attn", cls_attn), ("features", features)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"{label} must be a floating-point torch.Tensor, got {got}")
    if cls_attn.dim() not in (1, 2):
        raise ConfigError(f"cls_attn must have shape (N,) or (B, N), got {tuple(cls_attn.shape)}")
    if features.dim() != cls_attn.dim() + 1 or features.shape[:-1] != cls_attn.shape:
        raise ConfigError(
            f"features must have shape {tuple(cls_attn.shape) + ('D',)} to match cls_attn {tuple(cls_attn.shape)}, "
            f"got {tuple(features.shape)}"
        )
    if features.device != cls_attn.device:
        raise ConfigError(f"cls_attn is on {cls_attn.device} but features are on {features.device}; put both on one device")
    single = cls_attn.dim() == 1
    attn = cls_attn.detach().to(torch.float32)
    feats = features.detach().to(torch.float32)
    if single:
        attn, feats = attn.unsqueeze(0), feats.unsqueeze(0)  # (1, N), (1, N, D)
    return attn, feats, single
