"""The built distributions: the wheel holds every file the package reads at run time (presets, the demo's
page), the sdist holds what rebuilds and tests it, and an installed wheel finds its presets, version and
lmms-eval entry point from outside the source tree.

The wheel and sdist are built here with ``python -m build`` from a copy of the files a clone has
(so this checkout's build/ or egg-info cannot leak in); ``.ci/wheel_smoke`` does the same and then
runs the installed wheel end to end in a fresh virtual environment.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import vidprune
from vidprune.presets import list_presets

REPO = Path(__file__).resolve().parent.parent


def _clone_files(root: Path) -> list[str]:
    """The files a fresh clone has (tracked and untracked-but-not-ignored), relative to ``root``."""
    if shutil.which("git") and (root / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        return [f for f in out.split("\0") if f and (root / f).is_file()]
    skip = {".venv", "build", "dist", "__pycache__", ".git", ".pytest_cache", ".hypothesis"}
    return [p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(root).parts) and not p.name.endswith(".egg-info")]


def _build_isolated() -> bool:
    """Build in an isolated environment unless this one already satisfies pyproject's build requirements."""
    try:
        from importlib.metadata import version

        from packaging.version import Version

        return Version(version("setuptools")) < Version("77")
    except Exception:
        return True


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist, source copy): built with ``python -m build`` (sdist, then the wheel from it)."""
    pytest.importorskip("build", reason="the wheel tests need the 'build' package (vidprune's test extra)")
    root = tmp_path_factory.mktemp("wheel")
    src, out = root / "src", root / "dist"
    for rel in _clone_files(REPO):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    cmd = [sys.executable, "-m", "build", "--outdir", str(out), str(src)]
    if not _build_isolated():
        cmd.insert(3, "--no-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return wheel, sdist, src


def test_wheel_holds_every_package_file_presets_and_static_page(dists):
    wheel, _, src = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    package_files = {p.relative_to(src).as_posix() for p in (src / "vidprune").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts}
    assert package_files - names == set(), "files of the package that the wheel lacks (declare them as package data)"
    for preset in list_presets():
        assert f"vidprune/configs/{preset.name}.yaml" in names
    for static in ("index.html", "app.js", "style.css"):
        assert f"vidprune/demo/static/{static}" in names
    assert {n.split("/")[0] for n in names} == {"vidprune", f"vidprune-{vidprune.__version__}.dist-info"}
    assert not any(n.startswith(("configs/", "tests/", "benchmarks/")) for n in names)


def test_wheel_metadata_version_urls_classifiers_and_entry_points(dists):
    wheel, _, _ = dists
    assert wheel.name == f"vidprune-{vidprune.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        info = f"vidprune-{vidprune.__version__}.dist-info"
        meta = email.message_from_bytes(zf.read(f"{info}/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        assert f"{info}/licenses/LICENSE" in zf.namelist()
    assert meta["Version"] == vidprune.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3" in classifiers and "Typing :: Typed" in classifiers
    assert "[lmms_eval.models]\nvidprune = vidprune.eval.lmms_plugin:manifest" in entry_points
    assert "[console_scripts]\nvidprune = vidprune.cli:main" in entry_points


def test_sdist_holds_package_tests_docs_and_changelog(dists):
    _, sdist, _ = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in", "tests/conftest.py",
                 "tests/test_wheel.py", "docs/eval.md", "vidprune/configs/video_llava_227.yaml",
                 "vidprune/demo/static/index.html", ".ci/wheel_smoke"):
        assert name in names, name


_INSTALLED_CHECK = textwrap.dedent("""
    import importlib.metadata as md, json, sys
    from importlib import resources
    import vidprune
    from vidprune.config import load_preset
    from vidprune.eval.settings import resolve_settings
    from vidprune.presets import list_presets

    eps = [ep for ep in md.entry_points(group="lmms_eval.models") if ep.name == "vidprune"]
    print(json.dumps({
        "file": vidprune.__file__,
        "version": vidprune.__version__,
        "budget": load_preset("video_llava_227")["budget"],
        "eval_budgets": resolve_settings("eval_video_llava_vispruner", data_root="/data").budgets,
        "presets": [p.name for p in list_presets()],
        "page": (resources.files("vidprune.demo") / "static" / "index.html").read_text()[:15],
        "entry_points": [(ep.value, str(ep.dist.locate_file(""))) for ep in eps],
    }))
""")


def test_installed_wheel_works_outside_the_source_tree(dists, tmp_path):
    """Installed with pip into a plain folder and run from an empty one: presets by name, the eval preset,
    the demo page, the version and the lmms-eval entry point all come from the installed files."""
    import json

    wheel, _, _ = dists
    site, cwd = tmp_path / "site", tmp_path / "empty"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # the installed copy, never this checkout
    proc = subprocess.run([sys.executable, "-c", _INSTALLED_CHECK], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["file"]).resolve().is_relative_to(site.resolve())
    assert got["version"] == vidprune.__version__
    assert got["budget"] == 227 and got["eval_budgets"] == [2048, 455, 227, 114]
    assert got["presets"] == [p.name for p in list_presets()]
    assert got["page"].lower().startswith("<!doctype html")
    assert [value for value, _ in got["entry_points"] if Path(_).resolve() == site.resolve()] == \
        ["vidprune.eval.lmms_plugin:manifest"]

    script = site / "bin" / "vidprune"  # the console script pip generated
    for args, expect in ((["--version"], f"vidprune {vidprune.__version__} "), (["presets"], "pipeline presets")):
        proc = subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0 and proc.stdout.startswith(expect), proc.stdout + proc.stderr
