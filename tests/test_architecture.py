"""The layering of docs/architecture.md, checked on the source: no upward import, no private name
imported from another module.

Imports inside functions count too (a lazy upward import is still an upward edge).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vidprune"

# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    {"errors", "flops", "validators", "devices", "samples", "py"},
    {"pruners"},
    {"video_models"},
    {"engines"},
    {"plan", "presets", "config", "configs"},
    {"pipeline"},
    {"qa", "prompts", "results"},
    {"jobs", "eval", "demo", "ray_data"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "vidprune" and len(parts) > 1 else None


def _imports(path: Path, module: str):
    """(line, imported module, names) for every vidprune import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vidprune"):
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("vidprune"):
                yield node.lineno, target, [a.name for a in node.names]


APPLICATIONS = LAYERS[LAYER_OF["jobs"]]


@pytest.mark.parametrize("path,module", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_no_application_imports_another(path, module):
    """jobs/, eval/, demo/ and ray_data.py share only what lies below them (e.g. ``prompts``)."""
    own = _top(module)
    if own not in APPLICATIONS:
        return
    bad = [f"{path.name}:{line} imports {target}" for line, target, _names in _imports(path, module)
           if _top(target) in APPLICATIONS and _top(target) != own]
    assert not bad, "; ".join(bad)


def test_layers_are_known():
    tops = {_top(m) for _, m in _modules()} - {None}
    unknown = sorted(t for t in tops if t not in LAYER_OF)
    assert not unknown, f"modules with no layer in tests/test_architecture.py and docs/architecture.md: {unknown}"


@pytest.mark.parametrize("path,module", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_no_upward_import(path, module):
    own = _top(module)
    if own is None:  # vidprune/__init__.py re-exports the public API lazily
        return
    bad = []
    for line, target, _names in _imports(path, module):
        other = _top(target)
        if other is not None and LAYER_OF[other] > LAYER_OF[own]:
            bad.append(f"{path.name}:{line} imports {target} (layer {other!r} is above {own!r})")
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("path,module", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_no_private_name_from_another_module(path, module):
    bad = []
    for line, target, names in _imports(path, module):
        if target == module:
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            bad.append(f"{path.name}:{line} imports {', '.join(private)} from {target}")
    assert not bad, "; ".join(bad)


# ---------------------------------------------------------------------------- renamed names
# docs/architecture.md "Names": each old name still imports, warns, and is the new object.
RENAMED = [
    ("vidprune.pruners", "VideoTokenSelector", "vidprune.pruners", "VideoBudget"),
    ("vidprune.pipeline.stages", "SelectionStream", "vidprune.pipeline.stages", "VideoSelection"),
]


@pytest.mark.parametrize("old_module, old_name, new_module, new_name", RENAMED, ids=[r[1] for r in RENAMED])
def test_renamed_names_warn_and_alias_the_new_one(old_module, old_name, new_module, new_name):
    import importlib

    old = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{old_name} was renamed {new_name}"):
        value = getattr(old, old_name)
    assert value is getattr(importlib.import_module(new_module), new_name)
    with pytest.raises(AttributeError):
        getattr(old, "NoSuchName")


def test_one_class_name_per_concept():
    """No two classes in the package share a name (FrameSelection once meant two things)."""
    seen: dict[str, str] = {}
    clashes = []
    for path, module in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if node.name in seen and seen[node.name] != module:
                    clashes.append(f"{node.name}: {seen[node.name]} and {module}")
                seen.setdefault(node.name, module)
    assert not clashes, clashes
