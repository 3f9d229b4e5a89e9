"""Running a vision tower up to its feature layer, with forward hooks on that one layer."""

from __future__ import annotations

import torch

__all__ = ["run_tower_to_layer"]


class _StopTower(Exception):
    """Raised by the capture hook once the feature layer has run: the layers after it are not needed."""


def run_tower_to_layer(tower: torch.nn.Module, layer: torch.nn.Module, pixel_values: torch.Tensor):
    """Run a vision tower until ``layer`` has run; return (its input, its output), each (B, S, Dv).

    The tower is called as usual (its own embeddings, pre-norm and attention implementation);
    a forward pre-hook and a forward hook on ``layer`` capture its hidden states, and the hook
    then stops the forward, so no later layer runs.
    """
    captured: list[torch.Tensor] = []

    def take_input(_module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])

    def take_output(_module, _args, output):
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _StopTower

    handles = [layer.register_forward_pre_hook(take_input, with_kwargs=True), layer.register_forward_hook(take_output)]
    try:
        tower(pixel_values)
    except _StopTower:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(captured) != 2:
        raise RuntimeError(f"the vision tower never ran its encoder layer {type(layer).__name__}")
    return captured[0], captured[1]
