"""The book's GPT (chapter 4) as transformers models: backbone, causal LM and sequence classifier.

The module tree keeps the book's names so ``print(model)`` reads like the chapter. This file is
copied next to every saved model (``trust_remote_code=True``): it imports only ``torch``,
``transformers`` and its siblings via ``from .x import y``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple

from .configuration_gpt import BOOK_PADDED_POOLINGS, MULTI_LABEL, REGRESSION, SINGLE_LABEL, GPTConfig
from .pooled_position import block_at, book_padding, pool, pooled_position, real_tokens, trunk_mask


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


class GPTPreTrainedModel(PreTrainedModel):
    """Shared base: config class, weight init and the checkpoint converters for all three heads."""

    config_class = GPTConfig
    base_model_prefix = "model"
    _no_split_modules = ["TransformerBlock"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True  # "sdpa" (default) or "eager" in config._attn_implementation, see MultiHeadAttention
    _input_embed_layer = "tok_emb"  # transformers' embedding accessors find model.tok_emb by this name
    # Without this, Trainer would multiply the loss by the number of processes (DDP) and skip the
    # division by gradient-accumulation steps for models that accept loss kwargs.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's init: N(0, 0.02) weights, zero biases, LayerNorm scale 1 / shift 0, and the two
        projections that write into the residual stream (``out_proj``, ``ff.layers[2]``) scaled by
        1/sqrt(2 n_layers), so the residual's variance does not grow with depth (GPT-2 paper; the same
        rule as transformers' GPT-2 and nanoGPT). Those two are flagged ``writes_residual`` where they
        are built: transformers skips this method for modules without parameters of their own (the
        attention and feed-forward containers) in custom code, so the rule must live on the ``Linear``.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            scale = math.sqrt(2 * self.config.n_layers) if getattr(module, "writes_residual", False) else 1.0
            init.normal_(module.weight, mean=0.0, std=std / scale)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LayerNorm):
            init.ones_(module.scale)
            init.zeros_(module.shift)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, with a damaged weights file named in the error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"{pretrained_model_name_or_path}: model.safetensors is truncated or corrupt ({error}); re-download or re-save the model."
            ) from error

    #: which head a converted checkpoint must provide: None (backbone), "lm" or "classifier"
    checkpoint_head: str | None = None

    @classmethod
    def from_gpt2(cls, name_or_path: str | os.PathLike, **config_kwargs):
        """Load OpenAI GPT-2 weights (a Hub id, a book preset name or a local transformers folder).

        ``config_kwargs`` set the fields GPT-2's config does not have, e.g. ``num_labels``,
        ``id2label``, ``pooling``, ``drop_rate``. A classifier's ``out_head`` starts fresh unless the
        checkpoint is a ``GPT2ForSequenceClassification`` (e.g. one written by :meth:`to_gpt2`).
        """
        from .convert_gpt2 import load_gpt2_checkpoint

        config, state_dict = load_gpt2_checkpoint(name_or_path, cls.config_class, config_kwargs, cls.checkpoint_head)
        return cls._from_converted(config, state_dict, source=str(name_or_path))

    @classmethod
    def from_book_state_dict(
        cls, state_dict_or_path: str | os.PathLike | Mapping[str, torch.Tensor], config: GPTConfig | None = None, **config_kwargs
    ):
        """Load what the book saves with ``torch.save(model.state_dict(), "review_classifier.pth")``.

        A path is read with ``torch.load(weights_only=True)``, so no code in the file runs. Without
        ``config`` the sizes are read off the tensors; ``n_heads`` comes from GPT-2's table for that
        width unless given in ``config_kwargs``.
        """
        from .convert_gpt2 import book_state_dict_to_hf, config_from_book_state_dict

        if isinstance(state_dict_or_path, Mapping):
            book_sd, source = dict(state_dict_or_path), "the given state dict"
        else:
            source = str(state_dict_or_path)
            book_sd = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
        if config is None:
            config = config_from_book_state_dict(book_sd, cls.config_class, config_kwargs, cls.checkpoint_head)
        converted = book_state_dict_to_hf(book_sd, cls.checkpoint_head, config.vocab_size)
        return cls._from_converted(config, {k: v.clone() for k, v in converted.items()}, source)  # never the caller's tensors

    @classmethod
    def _from_converted(cls, config: GPTConfig, state_dict: dict[str, torch.Tensor], source: str):
        """``cls(config)`` holding the tensors of ``state_dict`` (loaded strictly, taken over, not copied);
        only a classifier's head may be missing, and starts fresh.

        The model is built on the meta device: a random initialisation of every weight (seconds for GPT-2
        small on a CPU) would only be overwritten."""
        with torch.device("meta"):
            model = cls(config)
        fresh_ok = ("out_head.weight", "out_head.bias") if cls.checkpoint_head == "classifier" else ()
        expected = model.state_dict()
        wrong_shape = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
            for k, v in state_dict.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if wrong_shape:
            more = f"\n  ... and {len(wrong_shape) - 8} more" if len(wrong_shape) > 8 else ""
            raise ValueError(
                f"{source} does not match the config's shapes (emb_dim, n_layers, vocab_size, context_length, num_labels):\n  "
                + "\n  ".join(wrong_shape[:8])
                + more
            )
        state_dict = {k: v.to(expected[k].dtype) if k in expected else v for k, v in state_dict.items()}
        result = model.load_state_dict(state_dict, strict=False, assign=True)
        missing = [k for k in result.missing_keys if k not in fresh_ok]
        if missing or result.unexpected_keys:
            raise ValueError(f"{source} does not fit {cls.__name__}: missing {missing}, unexpected {result.unexpected_keys}.")
        if any(k in result.missing_keys for k in fresh_ok):
            model.out_head.to_empty(device=next(iter(state_dict.values())).device)
            model._init_weights(model.out_head)
        model.tie_weights()
        return model.eval()


class GPTModel(GPTPreTrainedModel):
    """The book's ``GPTModel`` without ``out_head``: token ids -> final-LayerNorm hidden states."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(config, layer_idx=i) for i in range(config.n_layers)])
        self.final_norm = LayerNorm(config.emb_dim)
        self.gradient_checkpointing = False
        self.post_init()

    def check_inputs(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, past_length: int = 0) -> int:
        """Turn the silent failures (position overflow, empty input) into errors that say what to do.

        Only shapes are checked here: they are known on the host, so the forward never waits for the
        device. Token ids outside the vocabulary are reported by :meth:`token_embeddings`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        num_tokens = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if num_tokens == 0:
            raise ValueError("The input has no tokens (an empty text?); give every sequence at least one token, e.g. <|endoftext|>.")
        if past_length + num_tokens > self.config.context_length:
            cached = f" ({past_length} in the KV cache)" if past_length else ""
            raise ValueError(
                f"Sequence length {past_length + num_tokens}{cached} exceeds context_length {self.config.context_length}; "
                f"truncate the input (tokenizer(..., truncation=True, max_length={self.config.context_length}))."
            )
        return num_tokens

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``tok_emb(input_ids)``; an id outside the vocabulary (an ``IndexError`` on CPU) is named in a
        ``ValueError``. The ids are inspected only then, so a valid batch costs no host synchronisation."""
        try:
            return self.tok_emb(input_ids)
        except IndexError as error:
            low, high = int(input_ids.min()), int(input_ids.max())
            bad = high if high >= self.config.vocab_size else low
            raise ValueError(
                f"Token id {bad} is outside the vocabulary [0, {self.config.vocab_size}); was the text tokenized for another model?"
            ) from error

    def embed(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None = None,
        past_length: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token + position embeddings (after ``drop_emb``) and the attention mask every block uses.

        ``attention_mask`` (1 = real token, covering the ``past_length`` cached tokens too) masks pad
        keys and shifts positions under left padding.
        """
        num_tokens = self.check_inputs(input_ids, inputs_embeds, past_length)
        x = self.token_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (b, T, emb_dim)
        if attention_mask is None:
            return self.drop_emb(x + self.pos_emb(torch.arange(past_length, past_length + num_tokens, device=x.device))), None
        if attention_mask.shape[1] != past_length + num_tokens:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[1]} tokens, but there are {past_length} cached and "
                f"{num_tokens} new ones; give the mask of the whole sequence."
            )
        # left padding: real tokens count positions from their first real token, as if unpadded
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_length:]
        return self.drop_emb(x + self.pos_emb(positions)), padding_attention_mask(attention_mask, self.config.causal, num_tokens)

    def run_blocks(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        start: int = 0,
        index: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPast:
        """Blocks ``[start, n_layers)`` and ``final_norm`` on ``x`` (the embeddings, or the output of the
        first ``start`` blocks: ``pooled_position.prefix``). With ``index`` (b,) the result is only at
        those positions, (b, 1, emb_dim), and the top block computes only what they need.

        ``hidden_states`` are the input and each block's output, the last after ``final_norm`` (as in
        transformers' GPT-2)."""
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        blocks = self.trf_blocks[start:]
        if index is not None and not len(blocks):  # everything was cached: just the pooled rows
            x = x[torch.arange(x.shape[0], device=x.device), index].unsqueeze(1)
        for i, block in enumerate(blocks):
            at = index if i == len(blocks) - 1 else None
            x = block(x, attn_mask, cache=cache, output_attentions=output_attentions, index=at)
            if output_attentions:
                x, weights = x
                attentions += (weights,)
            if output_hidden_states:
                hidden_states += (x,)
        x = self.final_norm(x)
        if output_hidden_states:
            hidden_states = hidden_states[:-1] + (x,)
        return BaseModelOutputWithPast(last_hidden_state=x, cache=cache, hidden_states=hidden_states, attentions=attentions)

    def output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None) -> tuple[bool, bool]:
        """The call's flags, else the config's, as every transformers model reads them."""
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return bool(output_attentions), bool(output_hidden_states)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
    ) -> BaseModelOutputWithPast:
        """Hidden states after ``final_norm``, (b, T, emb_dim).

        With ``use_cache`` (default: ``config.use_cache``) the keys and values of every block go into
        ``cache`` (a new ``DynamicCache`` if none is given), and a later call with the same cache
        passes only the new tokens (and the whole sequence's ``attention_mask``). ``past_key_values``
        is transformers' older name for ``cache``.
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
        cache = past_key_values if cache is None else cache
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False  # the recomputed blocks would write their keys and values twice
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        past_length = cache.get_seq_length() if cache is not None else 0
        x, attn_mask = self.embed(input_ids, attention_mask, inputs_embeds, past_length)
        return self.run_blocks(x, attn_mask, cache=cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states)


class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """The book's full ``GPTModel``: ``out_head`` maps hidden states to next-token logits.

    ``generate()`` decodes with a KV cache (each step reads only the new token). Past
    ``context_length`` it does what the book's ``generate_text_simple`` does: every step re-reads the
    last ``context_length`` tokens, from position 0.
    """

    _tied_weights_keys = {"out_head.weight": "model.tok_emb.weight"}
    checkpoint_head = "lm"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.model = GPTModel(config)
        self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.out_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.out_head = value

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> dict:
        """transformers' preparation, except past ``context_length``: there the cache is emptied and the
        last ``context_length`` tokens are read again from position 0 (the book's sliding window)."""
        context = self.config.context_length
        if input_ids.shape[1] > context:
            if cache is not None:
                cache.reset()
            input_ids, next_sequence_length, inputs_embeds = input_ids[:, -context:], None, None
            attention_mask = None if attention_mask is None else attention_mask[:, -context:]
        return super().prepare_inputs_for_generation(
            input_ids, next_sequence_length, cache, attention_mask, inputs_embeds, **kwargs
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **loss_kwargs,
    ) -> CausalLMOutputWithPast:
        """``labels`` are the inputs themselves (shifted here, as transformers does); -100 is ignored.

        ``loss_kwargs`` are transformers' loss arguments (``num_items_in_batch``, ``shift_labels``,
        ``ignore_index``). ``logits_to_keep`` computes logits at the last that many positions only
        (0: all), as ``generate()`` asks for its first step.
        """
        outputs = self.model(
            input_ids,
            attention_mask,
            inputs_embeds,
            cache=past_key_values if cache is None else cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.out_head(outputs.last_hidden_state[:, kept])  # (b, T, vocab_size)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **loss_kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def to_gpt2(self):
        """The same network as a stock ``GPT2LMHeadModel`` (no custom code needed to use it)."""
        from .convert_gpt2 import to_gpt2_causal_lm

        return to_gpt2_causal_lm(self)


class GPTForSequenceClassification(GPTPreTrainedModel):
    """Chapter 6's classifier: a ``Linear(emb_dim, num_labels)`` ``out_head`` on one pooled position.

    Which position is read is ``config.pooling``:
    ``last_non_pad`` (default) the last real token, found from ``attention_mask`` or else as the last
    token that is not ``pad_token_id``; padding never changes its logits.
    ``last`` position -1 exactly as the book; with padding that is a pad token (the book trains with
    it, and the model sees pads as ordinary tokens: ``attention_mask`` is ignored).
    ``first`` position of the first real token (exercise 6.3); ``mean`` the mean over real tokens.

    The loss follows ``config.problem_type`` (see ``GPTConfig``): cross-entropy, MSE or BCE.
    """

    checkpoint_head = "classifier"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTModel(config)
        self.out_head = nn.Linear(config.emb_dim, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        prefix_hidden_states: torch.Tensor | None = None,
        prefix_depth: int | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> SequenceClassifierOutput:
        """Logits (b, num_labels); with ``labels`` also the loss of ``config.problem_type``.

        ``prefix_hidden_states`` (b, T, emb_dim) are the outputs of the embeddings and the first
        ``prefix_depth`` blocks for ``input_ids``, computed earlier (``pooled_position.prefix``; a frozen
        prefix computed once, see ``hf_spam.cached_trunk``); only the remaining blocks run. Like
        ``inputs_embeds``, it is an alternative way in: the result equals the forward from ``input_ids``.

        A pooling that reads one position has the top block compute only that position (every position
        still feeds its attention, without forming keys and values): the same logits, a fraction of the
        top block's work. Asked for hidden states or attentions, every block computes every position.
        """
        config = self.config
        output_attentions, output_hidden_states = self.model.output_flags(output_attentions, output_hidden_states)
        book_padded = config.pooling in BOOK_PADDED_POOLINGS and config.padded_length
        if book_padded and prefix_hidden_states is None and input_ids is not None and input_ids.shape[1]:  # empty: check_inputs says so
            input_ids, attention_mask = book_padding(input_ids, attention_mask, config.pad_token_id, config.padded_length), None
        mask = trunk_mask(config.pooling, attention_mask)
        if prefix_hidden_states is None:
            (hidden, attn_mask), depth = self.model.embed(input_ids, mask, inputs_embeds), 0
        else:
            hidden, depth = prefix_hidden_states, prefix_depth
            attn_mask = None if mask is None else padding_attention_mask(mask, config.causal)
        real = real_tokens(input_ids, attention_mask, config.pad_token_id, hidden)
        index = None if output_attentions or output_hidden_states else pooled_position(config.pooling, real)
        outputs = self.model.run_blocks(hidden, attn_mask, depth, index, None, output_attentions, output_hidden_states)
        pooled = outputs.last_hidden_state[:, 0] if index is not None else pool(config.pooling, outputs.last_hidden_state, real)
        logits = self.out_head(pooled)  # (b, num_labels)
        loss = None if labels is None else self.classification_loss(logits, labels, num_items_in_batch)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """The loss of ``config.problem_type``, inferred (and recorded in the config) as transformers does
        when unset. Single-label cross-entropy ignores ``config.loss_ignore_index`` and, given
        ``num_items_in_batch`` (transformers' loss argument), sums and divides by it."""
        config = self.config
        labels = labels.to(logits.device)
        if config.problem_type is None:
            if self.num_labels == 1:
                config.problem_type = REGRESSION
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = SINGLE_LABEL
            else:
                config.problem_type = MULTI_LABEL
        logits = logits.float()
        if config.problem_type == REGRESSION:
            return F.mse_loss(logits.view(-1), labels.float().view(-1)) if self.num_labels == 1 else F.mse_loss(logits, labels.float())
        if config.problem_type == MULTI_LABEL:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = F.cross_entropy(logits, labels.view(-1), ignore_index=config.loss_ignore_index, reduction=reduction)
        return loss if num_items_in_batch is None else loss / torch.as_tensor(num_items_in_batch, device=loss.device)

    def to_gpt2(self):
        """The same classifier as a stock ``GPT2ForSequenceClassification`` (see ``convert_gpt2``)."""
        from .convert_gpt2 import to_gpt2_sequence_classifier

        return to_gpt2_sequence_classifier(self)
