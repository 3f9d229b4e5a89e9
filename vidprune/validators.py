"""The value checks every layer shares: one wording, one implementation.

Each ``check_*`` returns the value normalised (``int`` / ``float``) or raises
:class:`~vidprune.errors.ConfigError` with a one-line message naming the option, the value
and what is allowed. Each ``problem_*`` returns that message instead (or None), for code
that collects every problem before raising once (:meth:`VidpruneConfig.validate`).
"""

from __future__ import annotations

import math
import numbers

from .errors import ConfigError

__all__ = ["problem_positive_int", "problem_positive_number", "problem_in_range", "problem_non_negative_int",
           "problem_int_at_least", "check_positive_int", "check_positive_number", "check_non_negative_int",
           "check_int_at_least"]


def problem_positive_int(name: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return f"{name} must be a positive integer, got {value!r}; give an integer >= 1"
    return None


def problem_int_at_least(name: str, value: object, minimum: int) -> str | None:
    """An integer (numpy's included, bool not) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        return f"{name} must be an integer >= {minimum}, got {value!r}"
    return None


def problem_non_negative_int(name: str, value: object) -> str | None:
    return problem_int_at_least(name, value, 0)


def problem_positive_number(name: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        return f"{name} must be a positive number, got {value!r}"
    return None


def problem_in_range(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> str | None:
    """``value`` in [low, high] (or (low, high] with ``low_open``)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value)
          and (value > low if low_open else value >= low) and value <= high)
    if not ok:
        return f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}"
    return None


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise ConfigError(problem)


def check_positive_int(name: str, value: object) -> int:
    _raise_if(problem_positive_int(name, value))
    return int(value)  # type: ignore[arg-type]


def check_int_at_least(name: str, value: object, minimum: int) -> int:
    _raise_if(problem_int_at_least(name, value, minimum))
    return int(value)  # type: ignore[arg-type]


def check_non_negative_int(name: str, value: object) -> int:
    _raise_if(problem_non_negative_int(name, value))
    return int(value)  # type: ignore[arg-type]


def check_positive_number(name: str, value: object) -> float:
    _raise_if(problem_positive_number(name, value))
    return float(value)  # type: ignore[arg-type]
