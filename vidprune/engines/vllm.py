"""The vLLM engine: the LLM stage on vLLM, fed vidprune's pruned stream.

Decoding, the vision tower, VisPruner, dedup and the budget run as with the HF engine, in this
process; what reaches vLLM is each video's kept rows (LLM input embeddings, the model's own
projector's output) and, for Qwen2.5-VL, where they sit in the stock grid. vLLM runs the
checkpoint under vidprune's subclass of its own model class
(:mod:`vidprune.engines.vllm_models`, named to vLLM by the ``vllm.general_plugins`` entry point,
:mod:`vidprune.engines.vllm_plugin`), chosen with ``hf_overrides={"architectures": [...]}``.

All of a call's prompts go to one ``LLM.generate``: vLLM schedules them together (continuous
batching), and the questions about one video share its prefix through vLLM's automatic prefix
caching (the same rows hash the same). Sampling keywords map to ``SamplingParams``.

Shapes: K_i kept rows of sample i, D the LLM width.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..video_models.datatypes import GenerationOutput
from .base import LLMEngine
from .vllm_plugin import KEPT_FIELD, VLLM_ARCHITECTURES, VLLM_RESERVED_OPTIONS, register, vllm_problem

__all__ = ["VllmEngine", "vllm_problem", "VLLM_RESERVED_OPTIONS"]

# generate() keywords the vLLM engine maps to SamplingParams; any other is refused in one line
_SAMPLING_KEYWORDS = ("max_new_tokens", "do_sample", "temperature", "top_p")


class VllmEngine(LLMEngine):
    """A vLLM ``LLM`` over the checkpoint of ``llm``, fed the kept rows that ``llm``'s vision side selects.

    Args:
        llm: the loaded :class:`~vidprune.video_models.base.VideoLLM` (its processor's chat
            template and tokenizer make the prompts; its projector the rows).
        tensor_parallel_size, gpu_memory_utilization, max_model_len, enforce_eager: vLLM's
            settings of those names (None: vLLM's default). ``gpu_memory_utilization`` is vLLM's
            share of the device; the vision tower loaded in this process is outside it.
        dtype: the engine's dtype name (None: the loaded model's).
        vllm_options: further ``vllm.LLM`` keywords, passed through (not the ones above).
        seed: the sampling seed.
    """

    name = "vllm"

    def __init__(self, llm, *, tensor_parallel_size: int | None = None, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None, enforce_eager: bool | None = None, dtype: str | None = None,
                 vllm_options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(llm)
        problem = vllm_problem()
        if problem is not None:
            raise ConfigError(problem)
        architecture = VLLM_ARCHITECTURES.get(llm.model_type)
        if architecture is None:
            raise ConfigError(f"engine 'vllm' has no model class for {llm.model_type!r}; use one of "
                              f"{', '.join(sorted(VLLM_ARCHITECTURES))}, or engine 'hf'")
        from vllm import LLM

        register()  # this process; vLLM's own processes register through the entry point
        self.seed = seed
        self.dtype = getattr(torch, dtype) if dtype else llm.dtype
        settings = {"tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
                    "max_model_len": max_model_len, "enforce_eager": enforce_eager}
        self.engine = LLM(
            model=llm.name_or_path,
            hf_overrides={"architectures": [architecture]},
            dtype=str(self.dtype).removeprefix("torch."),
            enable_mm_embeds=True,  # videos arrive as their kept rows
            limit_mm_per_prompt={"video": 1, "image": 0},
            seed=seed,
            **{k: v for k, v in settings.items() if v is not None},
            **(vllm_options or {}),
        )

    # ----------------------------------------------------------------- requests
    def video_input(self, rows: torch.Tensor, layout: dict | None) -> Any:
        """One video's ``multi_modal_data["video"]``: its kept rows (K, D), and for Qwen2.5-VL the full grid.

        LLaVA families: (1, K, D). Qwen2.5-VL: ``{"video_embeds": (K, D), "video_grid_thw": (1, 3)
        in patches, "second_per_grid_ts": (1,), "vidprune_kept": (1, K) indices into the merged grid}``.
        """
        rows = rows.detach().to("cpu", self.dtype)
        if self.llm.model_type != "qwen2_5_vl":
            return rows[None]
        if layout is None:
            raise ConfigError("Qwen2.5-VL places kept tokens at their stock (t, h, w) positions: pass each "
                              "video's layout (PrunedVideo.layout)")
        h, w = layout["grid"]
        merge = self.llm.config.vision_config.spatial_merge_size
        kept = [u * h * w + k for u, unit in enumerate(layout["kept"]) for k in unit]
        return {
            "video_embeds": rows,
            "video_grid_thw": torch.tensor([[layout["units"], h * merge, w * merge]]),
            "second_per_grid_ts": torch.tensor([float(layout["seconds_per_unit"])]),
            KEPT_FIELD: torch.tensor([kept], dtype=torch.long),
        }

    def sampling_params(self, **generate_kwargs: Any):
        """``generate()`` keywords → vLLM ``SamplingParams`` (greedy unless ``do_sample``)."""
        from vllm import SamplingParams

        unknown = sorted(k for k in generate_kwargs if k not in _SAMPLING_KEYWORDS and generate_kwargs[k] is not None)
        if unknown:
            raise ConfigError(f"engine 'vllm' does not take the generate keyword(s) {', '.join(unknown)}; "
                              f"it takes {', '.join(_SAMPLING_KEYWORDS)} (or use engine 'hf')")
        sample = bool(generate_kwargs.get("do_sample"))
        return SamplingParams(max_tokens=int(generate_kwargs.get("max_new_tokens", 64)),
                              temperature=float(generate_kwargs.get("temperature", 1.0)) if sample else 0.0,
                              top_p=float(generate_kwargs.get("top_p", 1.0)) if sample else 1.0,
                              seed=self.seed if sample else None)

    # ----------------------------------------------------------------- generate
    def generate(self, prompts, visual_tokens, layouts=None, *, ivtp: Any = None, **generate_kwargs):
        if ivtp is not None:
            raise ConfigError("IVTP needs the attention rows of the LLM's layers, which vLLM's paged attention does "
                              "not expose; use engine 'hf' for IVTP")
        params = self.sampling_params(**generate_kwargs)
        layouts = layouts if layouts is not None else [None] * len(prompts)
        requests = [{"prompt": p, "multi_modal_data": {"video": self.video_input(rows, layout)}}
                    for p, rows, layout in zip(prompts, visual_tokens, layouts)]
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        sequences = self.llm.answer_ids([list(out.outputs[0].token_ids) for out in outputs])  # as the HF engine's
        cached = [getattr(out, "num_cached_tokens", None) for out in outputs]
        return GenerationOutput(answer_ids=sequences, prompt_tokens=[len(out.prompt_token_ids) for out in outputs],
                                prefix_tokens=max((c for c in cached if c), default=None))

    def generate_about_one_video(self, prompts, visual_tokens, layout=None, *, ivtp: Any = None, **generate_kwargs):
        """The prompts in one ``generate``: vLLM's prefix caching shares the video's prefix between them."""
        return self.generate(prompts, [visual_tokens] * len(prompts), [layout] * len(prompts), ivtp=ivtp,
                             **generate_kwargs)

    def reuses_prefix(self, num_prompts, generate_kwargs):
        """False: the answer stage need not group a call's items by video. It hands every item to one
        :meth:`generate` (continuous batching), and vLLM's prefix caching shares each video's prefix itself."""
        return False

    def close(self) -> None:
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            shutdown = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
