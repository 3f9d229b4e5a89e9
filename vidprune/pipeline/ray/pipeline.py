"""``RayVideoPipeline``: the actors of one pipeline, started, checked against the cluster, and run."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

from ...config import VidpruneConfig
from ...errors import ModelLoadError, VidpruneError
from ..stages import PrunedVideo
from .actors import AnswerActor, DecodeActor, EncodeActor, SelectActor
from .failures import one_line, root_cause
from .layout import ClusterShape
from .options import RayPipelineOptions, StageResources, actor_options
from .scheduler import POLL_S, Scheduler, VideoRequest, VideoResult

__all__ = ["RayVideoPipeline", "ACTOR_RESTART_TIMEOUT_S"]

# Seconds to wait for a restarted actor (process start + model load on a busy node).
ACTOR_RESTART_TIMEOUT_S = 300.0


class RayVideoPipeline:
    """Decode → encode → select → answer as Ray actors. Needs a connected Ray (:func:`connect_ray`).

    Args:
        config: a validated :class:`VidpruneConfig` (e.g. ``VideoQA.resolve_config(...)``);
            every actor builds its stage from it exactly as ``VideoQA`` does.
        options: the actor layout, resources and bounds (:class:`RayPipelineOptions`); what
            it leaves None is sized from the connected cluster (:mod:`.layout`).
        answering: start the LLM actors now, alongside the others (else on the first
            request with questions; ``prepare`` alone never needs them).

    Raises:
        ConfigError: the actors do not fit on the cluster's nodes (one line).
        ModelLoadError: an actor could not load the checkpoint.
    """

    def __init__(self, config: VidpruneConfig, options: RayPipelineOptions | None = None, *, answering: bool = True):
        self.config = config.validate()
        self.cluster = ClusterShape.current()
        self.options = (options or RayPipelineOptions()).resolved(config, self.cluster, answering=answering)
        o = self.options
        self.stats: dict[str, Any] = {"max_segments_in_flight": 0, "segments": 0, "restarted_videos": 0,
                                      "decoded_whole": 0, "segments_per_decoder": [0] * o.decoders,
                                      "videos": 0}
        self.decoders = [self._actor(DecodeActor, o.decode, False, config) for _ in range(o.decoders)]
        self.encoders = [self._actor(EncodeActor, o.encode, False, config) for _ in range(o.encoders)]
        self.selector = self._actor(SelectActor, o.select, True, config)
        self.answerers: list[Any] = []
        if answering:
            self.answerers = [self._new_answerer() for _ in range(o.answerers)]
        self._wait_ready(self.decoders + self.encoders + [self.selector] + self.answerers)

    # ------------------------------------------------------------ actors
    def _actor(self, cls, resources: StageResources, stateful: bool, *args):
        return ray.remote(cls).options(**actor_options(resources, stateful=stateful, options=self.options)).remote(*args)

    def _wait_ready(self, actors: list) -> None:
        try:
            ray.get([a.ready.remote() for a in actors])
        except Exception as exc:  # a constructor failed: say why once, before any work starts
            cause = root_cause(exc)
            if isinstance(cause, VidpruneError):
                raise cause from None
            raise ModelLoadError(f"a pipeline actor failed to start: {one_line(exc)}") from None

    def await_selector(self) -> None:
        """Wait until the select actor answers again (it may be restarting after its process died).

        Calls to a restarting actor without task retries fail at once, so a video started over
        too early would lose its work again.
        """
        deadline = time.monotonic() + ACTOR_RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self.selector.ready.remote(), timeout=max(0.1, deadline - time.monotonic()))
                return
            except ActorDiedError:
                return  # gone for good (max_restarts used up): the next attempt reports it
            except (ActorUnavailableError, GetTimeoutError):
                if time.monotonic() > deadline:
                    return  # the video's next attempt reports what is wrong
                time.sleep(POLL_S / 4)

    def _new_answerer(self):
        return self._actor(AnswerActor, self.options.answer, False, self.config, self.options.questions_per_call)

    def ensure_answerers(self) -> None:
        """Start the LLM actors if they are not running yet (a pipeline built with ``answering=False``)."""
        if not self.answerers:
            self.answerers = [self._new_answerer() for _ in range(self.options.answerers)]
            self._wait_ready(self.answerers)

    def actors(self) -> dict[str, list[Any]]:
        """The actor handles, by stage."""
        return {"decode": list(self.decoders), "encode": list(self.encoders), "select": [self.selector],
                "answer": list(self.answerers)}

    def shutdown(self) -> None:
        for actor in self.decoders + self.encoders + [self.selector] + self.answerers:
            ray.kill(actor, no_restart=True)
        self.decoders, self.encoders, self.answerers = [], [], []

    # ------------------------------------------------------------ public
    def prepare(self, video: Any) -> PrunedVideo:
        """Decode, encode and prune one video on the cluster (== ``VideoQA.prepare(video)``)."""
        (result,) = list(self.run([VideoRequest(0, video, None)]))
        _raise_error(result)
        return result.pruned

    def ask(self, video: Any, questions: list[str]) -> list[dict[str, Any]]:
        """Answer questions about one video (== ``VideoQA.answer(VideoQA.prepare(video), questions)``)."""
        (result,) = list(self.run([VideoRequest(0, video, list(questions))]))
        _raise_error(result)
        return result.answers

    def run(self, requests: Iterable[VideoRequest]) -> Iterator[VideoResult]:
        """Stream requests through the cluster; yields each result as its video finishes (any order)."""
        return Scheduler(self).run(requests)


def _raise_error(result: VideoResult) -> None:
    """Raise a failed result's exception: a vidprune error as the actor raised it, anything else wrapped."""
    if result.error is None:
        return
    if isinstance(result.exception, VidpruneError):
        raise result.exception
    raise VidpruneError(result.error) from result.exception
