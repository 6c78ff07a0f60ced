"""The book's building blocks of GPT: ``LayerNorm``, ``FeedForward`` and ``TransformerBlock`` (chapter 4) and
``MultiHeadAttention`` (chapter 3), with the book's parameter names, read top to bottom as in the chapters.

``MultiHeadAttention`` runs through transformers' attention functions (eager: the book's masked softmax, or
SDPA) and its ``Cache``; ``TransformerBlock`` is a ``GradientCheckpointingLayer``. Like ``modeling_gpt.py``, this
file is copied next to every saved model: it imports only ``torch``, ``transformers`` and its siblings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_gpt import GPTConfig
from .pooled_position import block_at


class LayerNorm(nn.Module):
    """The book's LayerNorm (``scale``/``shift``, biased variance, eps 1e-5), computed by ``F.layer_norm``."""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class FeedForward(nn.Module):
    """Linear -> GELU (tanh approximation, as GPT-2 and the book) -> Linear, 4x wide."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(config.emb_dim, 4 * config.emb_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * config.emb_dim, config.emb_dim),
        )
        self.layers[2].writes_residual = True  # GPT-2's scaled init (see GPTPreTrainedModel._init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def causal_mask(num_queries: int, num_keys: int, device: torch.device) -> torch.Tensor:
    """(T_q, T_k) boolean mask, True where a query may look: the queries are the last ``num_queries`` of
    the ``num_keys`` positions (the rest are in the KV cache), and each sees itself and what precedes it."""
    queries = torch.arange(num_queries, device=device) + (num_keys - num_queries)
    return torch.arange(num_keys, device=device) <= queries[:, None]


class MultiHeadAttention(nn.Module):
    """The book's multi-head attention, computed by the function ``config._attn_implementation`` names.

    ``"eager"`` is the book's own computation (:func:`eager_attention`) and can return the attention
    weights; ``"sdpa"`` (the default) gives the same result through transformers' function around
    ``F.scaled_dot_product_attention``, which picks a fused kernel and returns no weights (it warns
    when asked for them). Keys and values go into a transformers ``Cache`` when one is given, so
    generation reads each token once.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        causal: bool = True,
        layer_idx: int = 0,
        config: GPTConfig | None = None,
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads}).")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.causal = causal
        self.layer_idx = layer_idx  # this layer's slot in the KV cache
        self.config = config  # shared with the model: set_attn_implementation() switches every layer
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.out_proj.writes_residual = True  # GPT-2's scaled init (see GPTPreTrainedModel._init_weights)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """(b, T, d_in) -> (b, T, d_out); with ``output_attentions`` also the (b, nh, T, T_k) weights
        (``None`` under SDPA, which does not form them). ``attn_mask`` (b, 1, T, T_k) is True where a
        query may look; ``None`` means the causal mask (or nothing when ``causal`` is off)."""
        b, num_tokens, _ = x.shape
        # (b, T, d_out) -> (b, nh, T, hd)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            keys, values = cache.update(keys, values, self.layer_idx)
        implementation = getattr(self.config, "_attn_implementation", None) or "sdpa"
        # SDPA's own causal mask is right only when queries and keys are the same positions
        if attn_mask is None and self.causal and num_tokens > 1 and (implementation == "eager" or keys.shape[2] != num_tokens):
            attn_mask = causal_mask(num_tokens, keys.shape[2], x.device)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention)
        context, weights = attention(
            self,
            queries,
            keys,
            values,
            attn_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=1 / math.sqrt(self.head_dim),
            is_causal=self.causal,
            output_attentions=output_attentions,
        )
        # (b, T, nh, hd) -> (b, T, d_out)
        out = self.out_proj(context.reshape(b, num_tokens, self.d_out))
        return (out, weights) if output_attentions else out


def eager_attention(
    module: MultiHeadAttention,
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The book's attention: scores, ``masked_fill(-inf)`` where ``attn_mask`` is False, softmax of the
    scaled scores, dropout on the weights; ``attn_implementation="eager"``. Returns the context
    (b, T, nh, hd) and the weights (b, nh, T, T_k), as transformers' attention functions do."""
    scores = queries @ keys.transpose(2, 3)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = torch.softmax(scores * scaling, dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return (weights @ values).transpose(1, 2), weights


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm block: x + drop(att(norm1(x))), then x + drop(ff(norm2(x))).

    A ``GradientCheckpointingLayer``: with ``gradient_checkpointing_enable()`` its activations are
    recomputed in the backward pass instead of kept, the one-position top block included."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=config.emb_dim,
            d_out=config.emb_dim,
            dropout=config.drop_rate,
            num_heads=config.n_heads,
            qkv_bias=config.qkv_bias,
            causal=config.causal,
            layer_idx=layer_idx,
            config=config,
        )
        self.ff = FeedForward(config)
        self.norm1 = LayerNorm(config.emb_dim)
        self.norm2 = LayerNorm(config.emb_dim)
        self.drop_resid = nn.Dropout(config.drop_rate)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """(b, T, emb_dim); with ``index`` (b,) only the output at those positions, (b, 1, emb_dim)
        (``pooled_position.block_at``); with ``output_attentions`` also the attention weights."""
        if index is not None:
            return block_at(self, x, index, attn_mask)
        attended = self.att(self.norm1(x), attn_mask, cache, output_attentions)
        weights = None
        if output_attentions:
            attended, weights = attended
        x = x + self.drop_resid(attended)
        x = x + self.drop_resid(self.ff(self.norm2(x)))
        return (x, weights) if output_attentions else x


def padding_attention_mask(attention_mask: torch.Tensor, causal: bool, num_queries: int | None = None) -> torch.Tensor:
    """The (b, 1, T_q, T_k) boolean mask for ``attention_mask`` (b, T_k): pad keys are masked (with the
    causal mask when ``causal``); the queries are the last ``num_queries`` positions (all by default,
    fewer when the rest are in the KV cache). The diagonal stays visible so a pad query never gets an
    all-masked (NaN) row.

    Built the same way for any padding, so the forward never asks the device what the padding looks
    like (no host synchronisation). Callers that need no mask (the book's pads-as-tokens reading,
    ``pooling="last"``) pass no ``attention_mask`` and get SDPA's causal kernel.
    """
    keep = attention_mask.bool()
    num_keys = keep.shape[1]
    num_queries = num_keys if num_queries is None else num_queries
    queries = torch.arange(num_queries, device=keep.device) + (num_keys - num_queries)
    itself = torch.arange(num_keys, device=keep.device) == queries[:, None]
    mask = keep[:, None, None, :].expand(-1, 1, num_queries, -1)
    if causal:
        mask = mask & causal_mask(num_queries, num_keys, keep.device)
    return mask | itself
