"""``SamplingStream``: the random numbers of one answer stage's sampled ``generate`` calls, its own.

transformers' sampling (``torch.multinomial`` in ``GenerationMixin._sample``, 5.x) draws from
torch's *default* generator and takes no ``generator=`` argument. Seeding that generator on
every call (``torch.manual_seed``) resets the caller's random state and makes every sampled
call repeat the same draw. A :class:`SamplingStream` instead keeps its own generator state,
seeded once: :meth:`SamplingStream.active` puts that state into the default generator of the
model's device for one call only (inside :func:`torch.random.fork_rng`, which puts the
caller's state back afterwards) and keeps where the stream got to. So:

* the caller's global RNG state is the same after a sampled answer as before it;
* successive sampled calls draw new numbers (two sampled asks differ);
* a new stage with the same seed, given the same calls in the same order, gives the same samples.

The default generator is process-wide, so the swap is held under one process-wide lock:
sampled calls run one at a time in a process (greedy calls take no lock).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

__all__ = ["SamplingStream"]

# The default generators are process-wide: one sampled call at a time swaps its stream in.
_DEFAULT_GENERATOR_LOCK = threading.Lock()


class SamplingStream:
    """A private random stream for sampling on ``device``, seeded once with ``seed``."""

    def __init__(self, seed: int, device: str | torch.device = "cpu"):
        self.seed = int(seed)
        self.device = torch.device(device)
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within the block, the default generator of ``device`` draws from this stream; the caller's state
        (CPU and that device) is put back when the block ends, and the stream continues where the block left it."""
        cuda = self.device.type == "cuda"
        with self._lock, _DEFAULT_GENERATOR_LOCK, torch.random.fork_rng(devices=[self.device] if cuda else []):
            if cuda:
                torch.cuda.set_rng_state(self._generator.get_state(), self.device)
            else:
                torch.set_rng_state(self._generator.get_state())
            try:
                yield
            finally:
                self._generator.set_state(torch.cuda.get_rng_state(self.device) if cuda else torch.get_rng_state())
