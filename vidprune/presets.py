"""The YAML presets that ship inside the package, found by name from any install.

A preset is ``vidprune/configs/<name>.yaml``, package data read through
:mod:`importlib.resources`, so a name resolves the same from a wheel, an sdist install,
an editable install or a zip import; nothing is read relative to a source checkout.
Its header comment starts with a one-line description, then the commands that run it.

Two kinds share the folder:

* ``eval_*`` presets are benchmark sweeps for ``vidprune eval`` (``vidprune.eval.settings``);
* the others (kind ``pipeline``) hold :class:`~vidprune.config.VidpruneConfig` options for ``vidprune ask``,
  ``vidprune job``, ``vidprune demo``, ``VideoQA.from_pretrained(config=...)`` and lmms-eval's
  ``config=``.

:func:`load_preset` takes a file path or a preset name; an existing file wins over a
preset of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; importlib.abc before

__all__ = ["Preset", "list_presets", "get_preset", "load_preset", "preset_description", "PRESET_KINDS"]

_PACKAGE = "vidprune"
_FOLDER = "configs"
_SUFFIX = ".yaml"
_EVAL_PREFIX = "eval_"
# kind -> who takes presets of that kind
PRESET_KINDS = {"pipeline": "vidprune ask / job / demo --config NAME, VideoQA.from_pretrained(config=NAME)",
                "eval": "vidprune eval --config NAME"}


@dataclass(frozen=True)
class Preset:
    """One shipped preset: ``name`` (what ``--config`` takes), ``kind`` (``pipeline`` or ``eval``)
    and the first line of its header comment as ``description``."""

    name: str
    kind: str
    description: str
    resource: Traversable

    def text(self) -> str:
        return self.resource.read_text(encoding="utf-8")


def _folder() -> Traversable:
    return resources.files(_PACKAGE) / _FOLDER


def preset_description(text: str) -> str:
    """The first line of a preset's leading comment, without ``#`` (empty when it has none)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            return ""
        words = stripped.lstrip("#").strip()
        if words:
            return words
    return ""


def _preset(resource: Traversable) -> Preset:
    name = resource.name[: -len(_SUFFIX)]
    kind = "eval" if name.startswith(_EVAL_PREFIX) else "pipeline"
    return Preset(name, kind, preset_description(resource.read_text(encoding="utf-8")), resource)


def list_presets(kind: str | None = None) -> list[Preset]:
    """Every shipped preset (of one ``kind`` when given), sorted by name."""
    if kind is not None and kind not in PRESET_KINDS:
        raise ConfigError(f"preset kind must be one of {', '.join(PRESET_KINDS)}, got {kind!r}")
    found = [_preset(r) for r in _folder().iterdir() if r.name.endswith(_SUFFIX) and r.is_file()]
    return sorted((p for p in found if kind is None or p.kind == kind), key=lambda p: p.name)


def _names() -> str:
    return ", ".join(p.name for p in list_presets())


def get_preset(name: str) -> Preset:
    """The shipped preset called ``name`` (``.yaml`` optional); ConfigError naming the presets otherwise."""
    stem = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name
    resource = _folder() / f"{stem}{_SUFFIX}"
    if "/" in stem or os.sep in stem or not resource.is_file():
        raise ConfigError(f"no preset named {name!r}; presets: {_names()} (`vidprune presets` describes them)")
    return _preset(resource)


def _is_name(value: str) -> bool:
    return "/" not in value and os.sep not in value and not value.startswith((".", "~"))


def _read(path: str | os.PathLike) -> tuple[str, str]:
    """(YAML text, where it came from) for a file path or a preset name."""
    text_path = os.fspath(path)
    candidate = Path(text_path).expanduser()
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8"), str(candidate)
    if candidate.is_dir():
        raise ConfigError(f"config {text_path!r} is a directory; pass a YAML file or a preset name (`vidprune presets`)")
    if _is_name(text_path):
        try:
            preset = get_preset(text_path)
        except ConfigError:
            raise ConfigError(f"config {text_path!r} not found: no such file and no preset of that name; "
                              f"presets: {_names()} (`vidprune presets`)") from None
        return preset.text(), f"preset {preset.name}"
    hint = ""
    stem = candidate.name[: -len(_SUFFIX)] if candidate.name.endswith(_SUFFIX) else candidate.name
    if any(p.name == stem for p in list_presets()):
        hint = f"; vidprune ships a preset of that name: --config {stem}"
    raise ConfigError(f"config file {text_path!r} not found; pass a YAML file path or a preset name "
                      f"(`vidprune presets`){hint}")


def load_preset(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML preset into a dict of option values (not yet validated).

    ``path`` is a YAML file, or the name of a shipped preset (``video_llava_227``, see
    :func:`list_presets`); an existing file wins over a preset of the same name.
    """
    import yaml

    text, source = _read(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {source!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {source!r} must hold a mapping of option: value")
    return data
