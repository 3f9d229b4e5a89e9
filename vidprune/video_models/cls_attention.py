"""The [CLS] query's attention over patch tokens, recomputed without eager attention.

VisPruner ranks a frame's patches by how much the vision tower's [CLS] token attends
to them at the layer whose output the model feeds to its projector. Under SDPA the
tower returns no attention weights, and switching it to eager materialises every
layer's full (heads, N+1, N+1) map. We need one row of one layer, so we recompute it
from that layer's input (method.md §1):

    h = layer_norm1(x)            # x: the layer's input, (B, N+1, D)
    q = q_proj(h[:, :1])          # the [CLS] query only,   (B, 1, D)
    k = k_proj(h)                 # all keys,               (B, N+1, D)
    p = softmax(q · kᵀ · scale)   # over all N+1 keys, per head
    attn = mean_heads(p)[:, 1:]   # drop the [CLS] key, no renormalisation -> (B, N)

That is O(N·D²) extra work per frame, one row instead of an N×N matrix, and the tower
itself keeps SDPA / flash attention. The test suite checks it against eager attention.

Mirrors ``CLIPEncoderLayer.forward`` / ``CLIPAttention.forward`` of transformers 5.18–5.25
(pre-norm layer, separate q/k projections with bias, no rotary embedding); the attributes
it reads are checked by :func:`.hf_internals.check_cls_attention_internals`.
"""

from __future__ import annotations

import torch
from torch import nn

from .hf_internals import check_cls_attention_internals

__all__ = ["clip_cls_attention", "mean_received_attention", "segment_mean_received_attention"]


@torch.no_grad()
def clip_cls_attention(encoder_layer: nn.Module, layer_input: torch.Tensor, cls_index: int = 0) -> torch.Tensor:
    """Head-averaged attention of the [CLS] query over the patch keys of one CLIP layer.

    Args:
        encoder_layer: a ``CLIPEncoderLayer`` (has ``layer_norm1`` and ``self_attn`` with
            ``q_proj``, ``k_proj``, ``num_heads``, ``head_dim``, ``scale``).
        layer_input: (B, N+1, D) hidden states entering that layer ([CLS] at ``cls_index``).
        cls_index: position of the [CLS] token in the sequence.

    Returns:
        (B, N) float32 attention probabilities of the [CLS] query on the N patch keys, in
        patch order, averaged over heads. The softmax ran over all N+1 keys; the [CLS]
        key's column is dropped without renormalising.
    """
    check_cls_attention_internals(encoder_layer)  # names the attribute if a release renamed one
    attn_module = encoder_layer.self_attn
    batch, seq_len, _ = layer_input.shape
    num_heads, head_dim = attn_module.num_heads, attn_module.head_dim
    hidden = encoder_layer.layer_norm1(layer_input)
    query = attn_module.q_proj(hidden[:, cls_index : cls_index + 1])  # (B, 1, D)
    keys = attn_module.k_proj(hidden)  # (B, N+1, D)
    query = query.view(batch, 1, num_heads, head_dim).transpose(1, 2).float()  # (B, nh, 1, hd)
    keys = keys.view(batch, seq_len, num_heads, head_dim).transpose(1, 2).float()  # (B, nh, N+1, hd)
    scores = torch.matmul(query, keys.transpose(-1, -2)) * attn_module.scale  # (B, nh, 1, N+1)
    probs = scores.softmax(dim=-1).mean(dim=1).squeeze(1)  # (B, N+1)
    keep = torch.ones(seq_len, dtype=torch.bool, device=probs.device)
    keep[cls_index] = False
    return probs[:, keep]


@torch.no_grad()
def mean_received_attention(attn_module: nn.Module, normed_input: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Mean attention each token receives from all queries, for encoders without [CLS] (e.g. SigLIP).

    Computed in query chunks so that no (heads, N, N) map is held at once.

    Args:
        attn_module: attention with ``q_proj``, ``k_proj``, ``num_heads``, ``head_dim``, ``scale``.
        normed_input: (B, N, D) the layer's input after its pre-attention norm.
        chunk: queries per chunk.

    Returns:
        (B, N) float32: for each key token, its attention probability averaged over heads and queries.
    """
    batch, seq_len, _ = normed_input.shape
    num_heads, head_dim = attn_module.num_heads, attn_module.head_dim
    keys = attn_module.k_proj(normed_input).view(batch, seq_len, num_heads, head_dim).transpose(1, 2).float()
    received = torch.zeros(batch, seq_len, dtype=torch.float32, device=normed_input.device)
    for start in range(0, seq_len, chunk):
        q = attn_module.q_proj(normed_input[:, start : start + chunk])
        q = q.view(batch, q.shape[1], num_heads, head_dim).transpose(1, 2).float()  # (B, nh, c, hd)
        probs = (torch.matmul(q, keys.transpose(-1, -2)) * attn_module.scale).softmax(dim=-1)  # (B, nh, c, N)
        received += probs.sum(dim=2).mean(dim=1)
    return received / seq_len


@torch.no_grad()
def segment_mean_received_attention(block: nn.Module, captured: dict, apply_rotary, chunk: int = 256) -> torch.Tensor:
    """Mean attention each patch receives from the queries of its attention segment, at one Qwen vision block.

    Recomputes the block's attention probabilities from its input as the Qwen-VL vision
    attention does (``Qwen2_5_VLVisionAttention`` / ``Qwen3VLVisionAttention``, transformers
    5.18–5.24): ``norm1`` → ``qkv`` → the tower's rotary tables (``apply_rotary``, the family's
    ``apply_rotary_pos_emb_vision``) → softmax(q·kᵀ·scaling) within each ``cu_seqlens``
    segment (a temporal patch, or a window in Qwen2.5-VL's windowed blocks). Query chunks keep
    memory at (heads, chunk, segment).

    Args:
        block: the vision block (``norm1``, ``attn.qkv``, ``attn.num_heads``, ``attn.scaling``).
        captured: the block's inputs: ``hidden_states`` (S, Dv), ``position_embeddings`` (cos, sin),
            ``cu_seqlens`` (segments + 1,).
        apply_rotary: ``(q, k, cos, sin) -> (q, k)``.

    Returns:
        (S,) float32, in the order the tower holds the patches.
    """
    attn = block.attn
    hidden = block.norm1(captured["hidden_states"])  # (S, Dv)
    seq = hidden.shape[0]
    q, k, _ = attn.qkv(hidden).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)  # (S, H, hd)
    cos, sin = captured["position_embeddings"]
    q, k = apply_rotary(q, k, cos, sin)
    q, k = q.transpose(0, 1).float(), k.transpose(0, 1).float()  # (H, S, hd)
    bounds = captured["cu_seqlens"].tolist()
    received = torch.zeros(seq, dtype=torch.float32, device=hidden.device)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        keys = k[:, lo:hi]  # (H, n, hd)
        for start in range(lo, hi, chunk):
            stop = min(start + chunk, hi)
            probs = (torch.matmul(q[:, start:stop], keys.transpose(-1, -2)) * attn.scaling).softmax(dim=-1)  # (H, c, n)
            received[lo:hi] += probs.sum(dim=1).mean(dim=0)
        received[lo:hi] /= hi - lo
    return received
