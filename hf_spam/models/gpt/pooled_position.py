"""Reading one position: which position the classifier reads, the top block computed there only, and the
frozen prefix a cache stores.

A classifier that reads one position per sequence (chapter 6 reads the last token) needs the top block's
output at that position alone. :func:`block_at` computes exactly that, a fraction of the block's work,
and :func:`prefix` computes the blocks below a depth, whose output ``hf_spam.cache.build`` stores so that
training runs only the blocks above it. ``modeling_gpt`` uses this module through ``from .pooled_position
import ...``, so it is copied next to every saved model and may import only ``torch`` and ``transformers``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_gpt import BOOK_PADDED_POOLINGS


def real_tokens(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, pad_token_id: int | None, like: torch.Tensor
) -> torch.Tensor:
    """(b, T) 1/0 mask of real tokens: ``attention_mask``, else ``input_ids != pad_token_id``, else all."""
    if attention_mask is not None:
        return attention_mask.to(like.device, torch.long)
    if input_ids is not None and pad_token_id is not None:
        return (input_ids != pad_token_id).to(like.device, torch.long)
    return torch.ones(like.shape[:2], dtype=torch.long, device=like.device)


def pooled_position(pooling: str, real: torch.Tensor) -> torch.Tensor | None:
    """(b,) the one position each sequence is read at, or ``None`` for the poolings that read every position."""
    positions = torch.arange(real.shape[1], device=real.device)
    if pooling == "last":
        return torch.full((real.shape[0],), real.shape[1] - 1, device=real.device)
    if pooling == "last_non_pad":
        return (positions * real).argmax(-1)  # rightmost real token
    if pooling == "first":
        return real.argmax(-1)  # leftmost real token
    return None


def pool(pooling: str, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(b, T, emb_dim) -> (b, emb_dim) according to ``pooling`` (see ``GPTConfig.pooling``)."""
    index = pooled_position(pooling, real)
    if index is not None:
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    if pooling == "mean_all":
        return hidden.mean(1)  # every position, pads included (the book's mean of the output over dim 1)
    weights = real.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def blocks_mask(pooling: str, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask the transformer blocks see: none for ``last``/``mean_all`` pooling, where the book's model treats pads as tokens."""
    return None if pooling in BOOK_PADDED_POOLINGS else attention_mask


def _real_first(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, T) gather order that puts each row's real tokens first, in their order, then its pads; and the
    real-token mask in that order. A stable argsort of the pad mask, computed from ranks (each real token's
    count of real tokens before it; each pad's after all of them) because ONNX has no stable sort to export."""
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    ranks = torch.where(real, real.cumsum(1) - 1, real.sum(1, keepdim=True) + (~real).cumsum(1) - 1)
    positions = torch.arange(real.shape[1], device=real.device).expand_as(ranks)
    order = torch.empty_like(ranks).scatter(1, ranks, positions)
    return order, real.gather(1, order)


def book_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_token_id: int, width: int) -> torch.Tensor:
    """The input as a ``pooling="last"`` model was trained on it: real tokens first, then pads up to
    exactly ``width`` (``config.padded_length``; longer texts keep their first ``width`` tokens, as the
    book's ``classify_review``). Position -1 is then the same pad token as in training, whatever padding
    the caller used (``pipeline``'s per-batch padding, left padding, none)."""
    order, real = _real_first(input_ids, attention_mask)
    ids = input_ids.gather(1, order).masked_fill(~real, pad_token_id)
    if ids.shape[1] < width:
        return F.pad(ids, (0, width - ids.shape[1]), value=pad_token_id)
    return ids[:, :width]


def first_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each text's first ``width`` real tokens, as training cut it (``config.truncation_length``), padded on the
    right: with padding on either side, and whoever tokenized the text, the model reads what training read."""
    if attention_mask is None:
        return input_ids[:, :width], None
    order, real = _real_first(input_ids, attention_mask)
    return input_ids.gather(1, order)[:, :width], real[:, :width].to(attention_mask.dtype)


def prefix(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, depth: int) -> torch.Tensor:
    """Embeddings and blocks ``[0, depth)`` of a ``GPTModel``: the part of a partly frozen model whose output
    can be cached. The classifier's ``forward(prefix_hidden_states=..., prefix_depth=depth)`` runs the rest."""
    x, attn_mask = model.embed(input_ids, attention_mask)
    for block in model.trf_blocks[:depth]:
        x = block(x, attn_mask)
    return x


def attention_at(
    att: nn.Module,
    x: torch.Tensor,
    index: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """``att(x * scale + shift)`` (a ``MultiHeadAttention``) at one query position per sequence, ``index``
    (b,), as (b, 1, d_out).

    Keys and values are never formed. One query's scores are ``q_h . (W_h y_j + b_h)`` over the positions
    ``j`` (``y = x * scale + shift``, the LayerNorm's affine part, ``W_h`` head ``h``'s rows of ``W_key``):
    the query goes through ``W_key`` instead, ``u_h = (W_h^T q_h) * scale``, and meets every position
    as ``u_h . x_j`` plus a term equal at all positions. Its context ``sum_j p_j (V_h y_j + c_h)`` is
    ``V_h (a_h * scale + shift) + c_h`` with ``a_h = sum_j p_j x_j`` (attention weights ``p`` sum to 1
    without dropout; ``sum_j p_j`` multiplies ``shift`` and ``c_h`` in general). Per position that is
    2 x num_heads x d_in multiply-adds instead of 2 x d_out x d_in for keys and values, 64x less for
    GPT-2, which is most of a one-position top block's work. Same result up to float rounding.
    Where ``W_key`` or ``W_value`` is wrapped (LoRA adapters add ``B A y`` beside ``.weight``), or the model is being
    exported, keys and values are formed through the modules, so the adapters act and train.
    """
    b, num_tokens, d_in = x.shape
    heads, head_dim = att.num_heads, att.head_dim
    rows = torch.arange(b, device=x.device)
    scale = x.new_ones(d_in) if scale is None else scale
    shift = x.new_zeros(d_in) if shift is None else shift
    queries = att.W_query(x[rows, index] * scale + shift).view(b, heads, head_dim)
    # a wrapped projection (a LoRA adapter, a quantised layer) is more than its .weight: keys and values through it;
    # so under an exporter, which may trace a module through a forward of its own (transformers' OpenVINO exporter
    # gives a bf16 model's nn.Linear a float32 placeholder .weight and casts the real one inside its forward)
    absorbed = type(att.W_key) is nn.Linear and type(att.W_value) is nn.Linear and not torch.compiler.is_exporting()
    if absorbed:
        query_keys = torch.einsum("bhk,hkd->bhd", queries, att.W_key.weight.view(heads, head_dim, d_in))  # W_h^T q_h
        scores = query_keys * scale @ x.transpose(1, 2)  # (b, nh, T)
        constant = (query_keys * shift).sum(-1)  # (b, nh): the same at every position, kept for exact gradients
        if att.W_key.bias is not None:
            constant = constant + (queries * att.W_key.bias.view(heads, head_dim)).sum(-1)
        scores = scores + constant.unsqueeze(-1)
    else:
        y = x * scale + shift
        scores = torch.einsum("bhk,bthk->bht", queries, att.W_key(y).view(b, num_tokens, heads, head_dim))
    scores = scores / math.sqrt(head_dim)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask[rows, :, index], float("-inf"))  # that query's row of (b, 1, T, T)
    elif att.causal:
        scores = scores.masked_fill(torch.arange(num_tokens, device=x.device) > index[:, None, None], float("-inf"))
    weights = att.dropout(torch.softmax(scores, dim=-1))
    if absorbed:
        total = weights.sum(-1, keepdim=True)  # (b, nh, 1): 1 without dropout
        mixed = (weights @ x) * scale + total * shift  # (b, nh, d_in): sum_j p_j y_j
        context = torch.einsum("bhd,hkd->bhk", mixed, att.W_value.weight.view(heads, head_dim, d_in))
        if att.W_value.bias is not None:
            context = context + total * att.W_value.bias.view(heads, head_dim)
    else:
        context = torch.einsum("bht,bthk->bhk", weights, att.W_value(y).view(b, num_tokens, heads, head_dim))
    return att.out_proj(context.reshape(b, 1, att.d_out))


def block_at(block: nn.Module, x: torch.Tensor, index: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A ``TransformerBlock``'s output at ``index`` only, (b, 1, emb_dim): what a classifier reading one
    position needs from the top block. Every position still feeds the attention, through ``norm1``'s
    normalisation alone (:func:`attention_at` folds its scale and shift into the query and context);
    ``out_proj``, ``norm2`` and the feed-forward run at one position.

    Computed in the parameters' dtype even under autocast: with one row per sequence every product is
    bound by reading its weights, and autocast would copy the fp32 weights to bf16 on every step and
    their gradients back (BENCHMARKS.md has the measurement)."""
    device = x.device.type  # autocast has no "meta" (FLOP counting) context to leave
    with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else contextlib.nullcontext():
        x = x.to(block.norm1.scale.dtype)
        rows = torch.arange(x.shape[0], device=x.device)
        normalized = F.layer_norm(x, block.norm1.scale.shape, eps=block.norm1.eps)
        attended = attention_at(block.att, normalized, index, attn_mask, block.norm1.scale, block.norm1.shift)
        x_at = x[rows, index].unsqueeze(1) + block.drop_resid(attended)
        return x_at + block.drop_resid(block.ff(block.norm2(x_at)))
