"""``--device`` and ``--dtype`` checked before any weights load: one line, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from vidprune import VideoQA
from vidprune.config import VidpruneConfig
from vidprune.devices import check_device, device_problems
from vidprune.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_CUDA = not torch.cuda.is_available()


def _ask_demo(*args):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "vidprune.cli", "ask", "--demo", "--max-new-tokens", "2", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vidprune: error:")]


@pytest.mark.parametrize("device,message", [
    ("gpu", "device 'gpu' is not a device torch knows; use cpu, cuda or cuda:N"),
    pytest.param("cuda", "device 'cuda' needs a CUDA GPU but",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")),
    pytest.param("cuda:64", "device 'cuda:64' does not exist",
                 marks=pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU (without one: the case above)")),
])
def test_ask_demo_with_a_device_this_machine_lacks_is_one_line_and_exit_2(device, message):
    proc = _ask_demo("--device", device)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]  # nothing after the error line
    assert proc.stdout == ""


def test_cuda_without_a_gpu_is_refused_before_the_weights_load(video_llava_ckpt, monkeypatch):
    """The same check in-process, on any machine (CUDA reported missing): no model class loads."""
    import transformers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads = []
    cls = transformers.VideoLlavaForConditionalGeneration
    monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda *a, **k: loads.append(a) or pytest.fail("loaded")))
    with pytest.raises(ConfigError, match=r"device 'cuda' needs a CUDA GPU but .*; use --device cpu"):
        VideoQA.from_pretrained(video_llava_ckpt, device="cuda", budget=100)
    assert loads == []


def test_the_options_check_refuses_unknown_devices_but_leaves_hardware_to_the_loading_machine(monkeypatch):
    """A Ray driver without a GPU may schedule actors on GPU nodes: options with cuda are valid there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not any("device" in p for p in VidpruneConfig(device="cuda:1", dtype="bf16").problems())
    problems = VidpruneConfig(device="gpu").problems()
    assert problems == ["device 'gpu' is not a device torch knows; use cpu, cuda or cuda:N (mps on Apple silicon)"]
    assert device_problems("cuda", "float16")[0].startswith("device 'cuda' needs a CUDA GPU")


def test_dtypes_are_checked_by_running_them_on_the_device():
    # bf16 and fp16 both run on this torch's CPU (matmul + softmax), float32 of course
    for name in ("float32", "bfloat16", "float16"):
        assert device_problems("cpu", name) == [], name
        check_device("cpu", getattr(torch, name))
    # a dtype whose kernels the CPU lacks is refused in one line that names it
    (problem,) = device_problems("cpu", "float8_e4m3fn")
    assert problem.startswith("dtype float8_e4m3fn does not run on device 'cpu' here (") and problem.endswith("use float32")
    assert "\n" not in problem
    with pytest.raises(ConfigError, match="float8_e4m3fn does not run"):
        check_device("cpu", torch.float8_e4m3fn)
