"""Where a run can execute: the ``device`` and ``dtype`` options checked against this machine.

:func:`device_problems` runs inside :meth:`vidprune.config.VidpruneConfig.problems`, so a
device torch does not know (``gpu``), CUDA on a machine without a usable GPU, a GPU index
that does not exist, or a dtype the device cannot compute in, is reported in one line
before any checkpoint is read. Without it these end in a ``RuntimeError`` from inside
``model.to(device)`` ("Found no NVIDIA driver on your system", "Expected one of cpu, cuda,
...") after the weights have loaded.

The dtype check runs the operations a forward needs (a matmul and a softmax) on a 2×2
tensor of that dtype on that device, rather than keeping a table: what a device supports
depends on the torch build and the hardware (bf16 on a pre-Ampere GPU, fp16 on an old CPU
build, bf16 on MPS before macOS 14).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

# dtype names users may give -> the torch dtype attribute they mean
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "bfloat16": "bfloat16", "bf16": "bfloat16"}

__all__ = ["device_problems", "check_device", "KNOWN_DEVICE_HINT"]

# What to suggest when a device string is not one torch knows.
KNOWN_DEVICE_HINT = "use cpu, cuda or cuda:N (mps on Apple silicon)"


def _torch_device(device: Any):
    import torch

    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return None


def _backend_available(device_type: str) -> tuple[bool, int | None]:
    """(is the backend usable here, how many devices it has or None if it has no index)."""
    import torch

    if device_type == "cpu":
        return True, None
    if device_type == "cuda":
        available = torch.cuda.is_available()  # False without a driver or a GPU; never raises
        return available, torch.cuda.device_count() if available else 0
    if device_type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available()), None
    module = getattr(torch, device_type, None)  # xpu, hpu, ...: torch.<type>.is_available()
    if module is not None and callable(getattr(module, "is_available", None)):
        available = bool(module.is_available())
        count = getattr(module, "device_count", None)
        return available, (count() if available and callable(count) else None)
    return False, None


def _why_cuda_missing() -> str:
    import torch

    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return f"torch.cuda.is_available() is False (no NVIDIA GPU or driver found; torch {torch.__version__} built for CUDA {torch.version.cuda})"


def _dtype_problem(device, dtype_name: str) -> str | None:
    import torch

    dtype = getattr(torch, dtype_name)
    try:
        x = torch.ones(2, 2, dtype=dtype, device=device)
        (x @ x).softmax(dim=-1)
    except (RuntimeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"dtype {dtype_name} does not run on device {str(device)!r} here ({reason}); use float32"
    return None


def device_problems(device: Any, dtype_name: str | None = None, *, hardware: bool = True) -> list[str]:
    """Problems with running on ``device`` in ``dtype_name``, as short phrases.

    Args:
        device: what the user gave (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
        dtype_name: a torch dtype attribute name (``"float16"``, ``"bfloat16"``, ``"float32"``)
            or None (the checkpoint's default). An unknown name is left to the caller's check.
        hardware: also check that this machine has the device and can compute in the dtype
            (False: only that torch knows the device string).

    Returns:
        An empty list when the run can start here.
    """
    if device is None:
        return []
    parsed = _torch_device(device)
    if parsed is None:
        return [f"device {device!r} is not a device torch knows; {KNOWN_DEVICE_HINT}"]
    if not hardware:
        return []
    available, count = _backend_available(parsed.type)
    if not available:
        if parsed.type == "cuda":
            return [f"device {device!r} needs a CUDA GPU but {_why_cuda_missing()}; use --device cpu"]
        return [f"device {device!r} is not available on this machine (torch.{parsed.type} reports none); use --device cpu"]
    if parsed.index is not None and count is not None and parsed.index >= count:
        return [f"device {device!r} does not exist: this machine has {count} {parsed.type} device(s) "
                f"({parsed.type}:0..{parsed.type}:{count - 1})" if count else f"device {device!r} does not exist"]
    import torch

    if dtype_name is not None and hasattr(torch, dtype_name):
        problem = _dtype_problem(parsed, dtype_name)
        if problem:
            return [problem]
    return []


def check_device(device: Any, dtype: Any = None) -> None:
    """Raise one :class:`ConfigError` if the weights cannot run on ``device`` in ``dtype`` here.

    ``dtype``: a torch dtype, its attribute name, or None.
    """
    name = str(dtype).removeprefix("torch.") if dtype is not None else None
    problems = device_problems(device, name)
    if problems:
        raise ConfigError("; ".join(problems))
