"""``RayVideoPipeline``: the actors of one pipeline, started, checked against the cluster, and run."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

from ...config import VidpruneConfig
from ...errors import ConfigError, ModelLoadError, VidpruneError
from ..stages import PrunedVideo
from .actors import DEFAULT_VARIANT, AnswerActor, DecodeActor, EncodeActor, SelectActor
from .failures import one_line, root_cause
from .layout import ClusterShape
from .options import RayPipelineOptions, StageResources, actor_options
from .placement import PlacementWatch
from .scheduler import POLL_S, Scheduler, VideoRequest, VideoResult

__all__ = ["RayVideoPipeline", "ACTOR_RESTART_TIMEOUT_S"]

# Seconds to wait for a restarted actor (process start + model load on a busy node).
ACTOR_RESTART_TIMEOUT_S = 300.0
# Seconds for the actors to be placed and to load the model at start; beyond, Ray could not place them.
ACTOR_START_TIMEOUT_S = 900.0


class RayVideoPipeline:
    """Decode → encode → select → answer as Ray actors. Needs a connected Ray (:func:`connect_ray`).

    Args:
        config: a validated :class:`VidpruneConfig` (``vidprune.config.resolve_config(...)[0]``);
            every actor builds its stage from it with ``build_stages``, as ``VideoQA`` does.
        options: the actor layout, resources and bounds (:class:`RayPipelineOptions`); what
            it leaves None is sized from the connected cluster (:mod:`.layout`).
        answering: start the LLM actors now, alongside the others (else on the first
            request with questions; ``prepare`` alone never needs them).
        variants: label → config of the selection/answer options one pipeline serves (an
            eval sweep's arms). They must agree with ``config`` on everything that decodes
            and encodes (model, frames, device, ...): the frames are decoded and encoded once
            per video for all of them. Default: ``config`` alone.

    Raises:
        ConfigError: the actors do not fit on the cluster's nodes (one line).
        ModelLoadError: an actor could not load the checkpoint.
    """

    def __init__(self, config: VidpruneConfig, options: RayPipelineOptions | None = None, *, answering: bool = True,
                 variants: dict[str, VidpruneConfig] | None = None):
        self.config = config.validate()
        self.variants = {label: cfg.validate() for label, cfg in (variants or {DEFAULT_VARIANT: config}).items()}
        _check_variants(config, self.variants)
        self.cluster = ClusterShape.current()
        self.options = (options or RayPipelineOptions()).resolved(config, self.cluster, answering=answering)
        o = self.options
        self.stats: dict[str, Any] = {"max_segments_in_flight": 0, "segments": 0, "restarted_videos": 0,
                                      "decoded_whole": 0, "segments_per_decoder": [0] * o.decoders,
                                      "videos": 0}
        # The largest GPU shares first: Ray packs fractional GPU requests onto the first device
        # with room, so the LLM replicas (0.75) take one device each before the encoders (0.25)
        # fill the rest beside them (created the other way round, two encoders share device 0
        # and the second LLM replica finds no device with 0.75 free).
        # a cluster that shrinks below the layout while it runs stops the run with one line (placement.py)
        self.placement = PlacementWatch(o, answering=lambda: bool(self.answerers), timeout_s=o.placement_timeout_s)
        # On GPUs each encoder replica shares a device with an LLM replica: the pair is reserved as
        # one placement-group bundle of one GPU (their shares summed), so they land on the same
        # device by reservation whatever order Ray places actors in.
        self.placement_groups = self._pair_bundles(o.gpu_pairs())
        self.answerers: list[Any] = []
        if answering:
            self.answerers = [self._new_answerer(i) for i in range(o.answerers)]
        self.encoders = [self._actor(EncodeActor, o.encode, False, config, bundle=self._bundle(i))
                         for i in range(o.encoders)]
        self.decoders = [self._actor(DecodeActor, o.decode, False, config) for _ in range(o.decoders)]
        self.selectors = [self._actor(SelectActor, o.select, True, config, self.variants) for _ in range(o.selectors)]
        self._wait_ready(self.decoders + self.encoders + self.selectors + self.answerers)

    @property
    def selector(self):
        """The first select actor (a pipeline with one select actor: the only one)."""
        return self.selectors[0]

    # ------------------------------------------------------------ actors
    def _actor(self, cls, resources: StageResources, stateful: bool, *args, bundle=None):
        opts = actor_options(resources, stateful=stateful, options=self.options, bundle=bundle)
        return ray.remote(cls).options(**opts).remote(*args)

    def _pair_bundles(self, pairs: int) -> list[Any]:
        """One placement group per encoder + LLM replica pair, each one bundle of the pair's summed shares."""
        if not pairs:
            return []
        from ray.util.placement_group import placement_group, remove_placement_group

        groups = [placement_group([self.options.pair_bundle()], strategy="STRICT_PACK") for _ in range(pairs)]
        try:
            ray.get([g.ready() for g in groups], timeout=ACTOR_START_TIMEOUT_S)
        except GetTimeoutError:
            for g in groups:
                remove_placement_group(g)
            raise ConfigError(f"the Ray cluster ({self.cluster.describe()}) could not reserve {pairs} GPU(s) for the "
                              f"encoder + LLM replica pairs ({self.options.pair_bundle()} each) within "
                              f"{ACTOR_START_TIMEOUT_S:.0f} s; lower --answerers/--encoders or add GPUs") from None
        return groups

    def _bundle(self, i: int):
        """The (placement group, bundle) of pair ``i``, or None when replica ``i`` is not paired."""
        return (self.placement_groups[i], 0) if i < len(self.placement_groups) else None

    def _wait_ready(self, actors: list) -> None:
        try:
            ray.get([a.ready.remote() for a in actors], timeout=ACTOR_START_TIMEOUT_S)
        except GetTimeoutError:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise ConfigError(f"the pipeline's actors ({self.options.layout()}) did not all start within "
                              f"{ACTOR_START_TIMEOUT_S:.0f} s on the Ray cluster ({self.cluster.describe()}); "
                              "Ray could not place them (see `ray status`) or loading the model takes longer: "
                              "lower the per-stage shares or add nodes") from None
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
        for selector in self.selectors:
            self._await_actor(selector)

    def _await_actor(self, actor) -> None:
        deadline = time.monotonic() + ACTOR_RESTART_TIMEOUT_S
        ref = actor.ready.remote()
        while True:
            try:
                ray.get(ref, timeout=min(POLL_S, max(0.1, deadline - time.monotonic())))
                return
            except ActorDiedError:
                return  # gone for good (max_restarts used up): the next attempt reports it
            except ActorUnavailableError:  # the call failed while the actor restarts: ask again shortly
                time.sleep(POLL_S / 4)
                ref = actor.ready.remote()
            except GetTimeoutError:  # still waiting for the answer
                pass
            if time.monotonic() > deadline:
                return  # the video's next attempt reports what is wrong
            self.placement.check()  # it may be waiting for resources the cluster no longer has

    def _new_answerer(self, i: int):
        return self._actor(AnswerActor, self.options.answer, False, self.config, self.options.questions_per_call,
                           self.variants, bundle=self._bundle(i))

    def ensure_answerers(self) -> None:
        """Start the LLM actors if they are not running yet (a pipeline built with ``answering=False``)."""
        if not self.answerers:
            self.answerers = [self._new_answerer(i) for i in range(self.options.answerers)]
            self._wait_ready(self.answerers)

    def actors(self) -> dict[str, list[Any]]:
        """The actor handles, by stage."""
        return {"decode": list(self.decoders), "encode": list(self.encoders), "select": list(self.selectors),
                "answer": list(self.answerers)}

    def shutdown(self) -> None:
        for actor in self.decoders + self.encoders + self.selectors + self.answerers:
            ray.kill(actor, no_restart=True)
        self.decoders, self.encoders, self.answerers = [], [], []
        if self.placement_groups:
            from ray.util.placement_group import remove_placement_group

            for group in self.placement_groups:
                remove_placement_group(group)
            self.placement_groups = []

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


# Options that may differ between the variants of one pipeline: selection and in-LLM pruning.
VARIANT_OPTIONS = ("budget", "pruner", "important_ratio", "seed", "dedup", "dedup_threshold", "dedup_reference",
                   "dedup_window", "ivtp_layer", "ivtp_keep", "ivtp_schedule", "ivtp_fusion")


def _check_variants(config: VidpruneConfig, variants: dict[str, VidpruneConfig]) -> None:
    base = {k: v for k, v in config.to_dict().items() if k not in VARIANT_OPTIONS}
    for label, cfg in variants.items():
        differ = sorted(k for k, v in cfg.to_dict().items() if k not in VARIANT_OPTIONS and base.get(k) != v)
        if differ:
            raise ConfigError(f"variant {label!r} differs from the pipeline's config in {', '.join(differ)}; "
                              f"variants may differ only in {', '.join(VARIANT_OPTIONS)}")

