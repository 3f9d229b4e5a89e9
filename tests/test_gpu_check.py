"""benchmarks/gpu_check.sh: its CPU dry run (``--device cpu --dry-run``) passes, and a real run without its wheels
stops in one line before anything runs.

The dry run is the GPU check's own steps on this machine: the wheels it would install are listed,
``pytest -m gpu`` runs a subset of tests/test_gpu.py on the CPU, and ``benchmarks/run_all.py
--dry-run`` checks that every benchmark takes the arguments the GPU run gives it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("VIDPRUNE_GPU_TEST_DEVICE", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)


def test_the_cpu_dry_run_passes_and_writes_nothing(tmp_path):
    doc = ROOT / "docs" / "performance.md"
    before = doc.read_text()
    done = _run("--device", "cpu", "--dry-run", tmp_path=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "would install" in out and "transformers-5.18.0" in out
    assert "2 passed" in out  # the GPU tests' code ran on the CPU
    assert "--layers 32 --device cuda" in out and "run_all: dry run: 3 benchmark(s) take their arguments" in out
    assert doc.read_text() == before


def test_a_run_without_its_wheels_stops_in_one_line(tmp_path):
    done = _run("--device", "cpu", "--wheels", str(tmp_path / "none"), tmp_path=tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("gpu_check:")]
    assert len(errors) == 1 and "must hold av-15.1.0-cp312" in errors[0] and "pip download" in errors[0]
    assert "2/3" not in done.stdout  # stopped before the tests


def test_an_unknown_argument_is_refused(tmp_path):
    done = _run("--gpu", tmp_path=tmp_path)
    assert done.returncode == 2 and "unknown argument --gpu" in done.stderr
