"""FLOPs of transformer layers, counted as FastV and VisPruner count them (method.md §5).

Per layer on n tokens, hidden size d, MLP size m and ``mlp_matrices`` MLP weight
matrices (3 for the SwiGLU of Llama, 2 for CLIP's GELU MLP):

    FLOPs = 2 · (4·n·d² + 2·n²·d + mlp_matrices·n·d·m)

A model's total sums this over layers, each with its own n (in-LLM pruning makes n
smaller from some layer on). Sizes come from the HF config.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["layer_flops", "stack_flops", "llm_flops", "llm_layer_flops", "vision_tower_flops"]


def layer_flops(n: int, d: int, m: int, mlp_matrices: int = 3) -> int:
    """FLOPs of one transformer layer on ``n`` tokens (attention projections, scores, MLP)."""
    return 2 * (4 * n * d * d + 2 * n * n * d + mlp_matrices * n * d * m)


def stack_flops(tokens_per_layer: Sequence[int], d: int, m: int, mlp_matrices: int = 3) -> int:
    """Sum of :func:`layer_flops` over layers, layer i running on ``tokens_per_layer[i]`` tokens."""
    return sum(layer_flops(n, d, m, mlp_matrices) for n in tokens_per_layer)


def llm_layer_flops(text_config, layer: int, n: int) -> int:
    """FLOPs of decoder layer ``layer`` on ``n`` tokens, counting only the parameters a token uses.

    A mixture-of-experts layer (``num_experts_per_tok`` of ``num_experts`` experts of
    ``moe_intermediate_size``, e.g. Qwen3-VL-30B-A3B) counts its active experts' SwiGLU and the
    router (2·n·d·num_experts); layers in ``mlp_only_layers`` or off ``decoder_sparse_step`` are dense.
    """
    d = text_config.hidden_size
    experts = getattr(text_config, "num_experts", 0) or 0
    step = getattr(text_config, "decoder_sparse_step", 1) or 1
    sparse = experts > 0 and layer not in (getattr(text_config, "mlp_only_layers", None) or []) and (layer + 1) % step == 0
    if not sparse:
        return layer_flops(n, d, text_config.intermediate_size, mlp_matrices=3)
    active = text_config.num_experts_per_tok * text_config.moe_intermediate_size
    return layer_flops(n, d, active, mlp_matrices=3) + 2 * n * d * experts


def llm_flops(text_config, num_tokens: int | Sequence[int]) -> int:
    """Prefill FLOPs of the language model: ``num_tokens`` in every layer, or one count per layer
    (active parameters only for mixture-of-experts layers, :func:`llm_layer_flops`)."""
    layers = text_config.num_hidden_layers
    per_layer = [num_tokens] * layers if isinstance(num_tokens, int) else list(num_tokens)
    if len(per_layer) != layers:
        raise ValueError(f"need one token count per layer ({layers}), got {len(per_layer)}")
    return sum(llm_layer_flops(text_config, i, n) for i, n in enumerate(per_layer))


def vision_tower_flops(vision_config, num_frames: int, layers_run: int | None = None, has_cls: bool = True) -> int:
    """FLOPs of a ViT tower over ``num_frames`` frames (patches, plus [CLS] when ``has_cls``, per frame)."""
    side = vision_config.image_size // vision_config.patch_size
    n = side * side + (1 if has_cls else 0)
    layers = vision_config.num_hidden_layers if layers_run is None else layers_run
    per_frame = layers * layer_flops(n, vision_config.hidden_size, vision_config.intermediate_size, mlp_matrices=2)
    return num_frames * per_frame
