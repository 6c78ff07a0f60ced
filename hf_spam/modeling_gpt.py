"""The book's GPT (chapter 4) as transformers models: backbone, causal LM and sequence classifier.

The module tree keeps the book's names so ``print(model)`` reads like the chapter. This file is
copied next to every saved model (``trust_remote_code=True``): it imports only ``torch``,
``transformers`` and its siblings via ``from .x import y``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput, SequenceClassifierOutput

from .configuration_gpt import BOOK_PADDED_POOLINGS, GPTConfig
from .convert_gpt2 import (
    book_state_dict_to_hf,
    config_from_book_state_dict,
    load_gpt2_checkpoint,
    to_gpt2_causal_lm,
    to_gpt2_sequence_classifier,
)


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


class MultiHeadAttention(nn.Module):
    """The book's multi-head attention, with the softmax(QK^T/sqrt(d))V step done by SDPA.

    ``F.scaled_dot_product_attention`` computes the same thing as the book's explicit
    ``masked_fill(-inf)`` + softmax + dropout (a test checks it), but picks a fused kernel and needs no
    ``mask`` buffer.
    """

    def __init__(self, d_in: int, d_out: int, dropout: float, num_heads: int, qkv_bias: bool = False, causal: bool = True) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads}).")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.causal = causal
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.out_proj.writes_residual = True  # GPT-2's scaled init (see GPTPreTrainedModel._init_weights)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, num_tokens, _ = x.shape
        # (b, T, d_out) -> (b, nh, T, hd)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        context = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=attn_mask,  # (b, 1, T, T) bool, already causal when needed
            dropout_p=self.dropout.p if self.training else 0.0,
            is_causal=self.causal and attn_mask is None,
        )
        # (b, nh, T, hd) -> (b, T, d_out)
        return self.out_proj(context.transpose(1, 2).reshape(b, num_tokens, self.d_out))

    def forward_at(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward(x * scale + shift)`` at one query position per sequence, ``index`` (b,), as (b, 1, d_out).

        Keys and values are never formed. One query's scores are ``q_h . (W_h y_j + b_h)`` over the positions
        ``j`` (``y = x * scale + shift``, the LayerNorm's affine part, ``W_h`` head ``h``'s rows of ``W_key``):
        the query goes through ``W_key`` instead, ``u_h = (W_h^T q_h) * scale``, and meets every position
        as ``u_h . x_j`` plus a term equal at all positions. Its context ``sum_j p_j (V_h y_j + c_h)`` is
        ``V_h (a_h * scale + shift) + c_h`` with ``a_h = sum_j p_j x_j`` (attention weights ``p`` sum to 1
        without dropout; ``sum_j p_j`` multiplies ``shift`` and ``c_h`` in general). Per position that is
        2 x num_heads x d_in multiply-adds instead of 2 x d_out x d_in for keys and values, 64x less for
        GPT-2, which is most of a one-position top block's work. Same result up to float rounding.
        Where ``W_key`` or ``W_value`` is wrapped (LoRA adapters add ``B A y`` beside ``.weight``), keys
        and values are formed through the modules, so the adapters act and train.
        """
        b, num_tokens, d_in = x.shape
        rows = torch.arange(b, device=x.device)
        scale = x.new_ones(d_in) if scale is None else scale
        shift = x.new_zeros(d_in) if shift is None else shift
        queries = self.W_query(x[rows, index] * scale + shift).view(b, self.num_heads, self.head_dim)
        # a wrapped projection (a LoRA adapter, a quantised layer) is more than its .weight: keys and values through it
        absorbed = type(self.W_key) is nn.Linear and type(self.W_value) is nn.Linear
        if absorbed:
            key_weight = self.W_key.weight.view(self.num_heads, self.head_dim, d_in)
            query_keys = torch.einsum("bhk,hkd->bhd", queries, key_weight)  # (b, nh, d_in): W_h^T q_h
            scores = query_keys * scale @ x.transpose(1, 2)  # (b, nh, T)
            constant = (query_keys * shift).sum(-1)  # (b, nh): the same at every position, kept for exact gradients
            if self.W_key.bias is not None:
                constant = constant + (queries * self.W_key.bias.view(self.num_heads, self.head_dim)).sum(-1)
            scores = scores + constant.unsqueeze(-1)
        else:
            y = x * scale + shift
            scores = torch.einsum("bhk,bthk->bht", queries, self.W_key(y).view(b, num_tokens, self.num_heads, self.head_dim))
        scores = scores / math.sqrt(self.head_dim)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask[rows, :, index], float("-inf"))  # that query's row of (b, 1, T, T)
        elif self.causal:
            scores = scores.masked_fill(torch.arange(num_tokens, device=x.device) > index[:, None, None], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        if absorbed:
            total = weights.sum(-1, keepdim=True)  # (b, nh, 1): 1 without dropout
            mixed = (weights @ x) * scale + total * shift  # (b, nh, d_in): sum_j p_j y_j
            context = torch.einsum("bhd,hkd->bhk", mixed, self.W_value.weight.view(self.num_heads, self.head_dim, d_in))
            if self.W_value.bias is not None:
                context = context + total * self.W_value.bias.view(self.num_heads, self.head_dim)
        else:
            context = torch.einsum("bht,bthk->bhk", weights, self.W_value(y).view(b, num_tokens, self.num_heads, self.head_dim))
        return self.out_proj(context.reshape(b, 1, self.d_out))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + drop(att(norm1(x))), then x + drop(ff(norm2(x)))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=config.emb_dim,
            d_out=config.emb_dim,
            dropout=config.drop_rate,
            num_heads=config.n_heads,
            qkv_bias=config.qkv_bias,
            causal=config.causal,
        )
        self.ff = FeedForward(config)
        self.norm1 = LayerNorm(config.emb_dim)
        self.norm2 = LayerNorm(config.emb_dim)
        self.drop_resid = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_resid(self.att(self.norm1(x), attn_mask))
        return x + self.drop_resid(self.ff(self.norm2(x)))

    def forward_at(self, x: torch.Tensor, index: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output at ``index`` only, (b, 1, emb_dim): what a classifier reading one position
        needs from the top block. Every position still feeds the attention, through ``norm1``'s
        normalisation alone (:meth:`MultiHeadAttention.forward_at` folds its scale and shift into the
        query and context); ``out_proj``, ``norm2`` and the feed-forward run at one position.

        Computed in the parameters' dtype even under autocast: with one row per sequence every product
        is bound by reading its weights, and autocast would copy the fp32 weights to bf16 on every step
        and their gradients back (the recipe's bf16 training loop on 2 CPU cores: 13.9 s with, 9.9 s without)."""
        device = x.device.type  # autocast has no "meta" (FLOP counting) context to leave
        with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else contextlib.nullcontext():
            x = x.to(self.norm1.scale.dtype)
            rows = torch.arange(x.shape[0], device=x.device)
            normalized = F.layer_norm(x, self.norm1.scale.shape, eps=self.norm1.eps)
            attended = self.att.forward_at(normalized, index, attn_mask, self.norm1.scale, self.norm1.shift)
            x_at = x[rows, index].unsqueeze(1) + self.drop_resid(attended)
            return x_at + self.drop_resid(self.ff(self.norm2(x_at)))


def padding_attention_mask(attention_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """The (b, 1, T, T) boolean SDPA mask for ``attention_mask``: pad keys are masked (with the causal
    mask when ``causal``); the diagonal stays visible so a pad query never gets an all-masked (NaN) row.

    Built the same way for any padding, so the forward never asks the device what the padding looks
    like (no host synchronisation). Callers that need no mask (the book's pads-as-tokens reading,
    ``pooling="last"``) pass no ``attention_mask`` and get SDPA's causal kernel.
    """
    keep = attention_mask.bool()
    num_tokens = keep.shape[1]
    eye = torch.eye(num_tokens, dtype=torch.bool, device=keep.device)
    mask = keep[:, None, None, :].expand(-1, 1, num_tokens, -1)
    if causal:
        mask = mask & torch.ones_like(eye).tril()
    return mask | eye


class GPTPreTrainedModel(PreTrainedModel):
    """Shared base: config class, weight init and the checkpoint converters for all three heads."""

    config_class = GPTConfig
    base_model_prefix = "model"
    _no_split_modules = ["TransformerBlock"]
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

        The model is built on the meta device: a random initialisation of every weight (1.4 s for GPT-2
        small) would only be overwritten."""
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
        self.trf_blocks = nn.Sequential(*[TransformerBlock(config) for _ in range(config.n_layers)])
        self.final_norm = LayerNorm(config.emb_dim)
        self.post_init()

    def check_inputs(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> int:
        """Turn the silent failures (position overflow, empty input) into errors that say what to do.

        Only shapes are checked here: they are known on the host, so the forward never waits for the
        device. Token ids outside the vocabulary are reported by :meth:`token_embeddings`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        num_tokens = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if num_tokens == 0:
            raise ValueError("The input has no tokens (an empty text?); give every sequence at least one token, e.g. <|endoftext|>.")
        if num_tokens > self.config.context_length:
            raise ValueError(
                f"Sequence length {num_tokens} exceeds context_length {self.config.context_length}; "
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

    def embed(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None):
        """Token + position embeddings (after ``drop_emb``) and the SDPA mask every block uses.

        ``attention_mask`` (1 = real token) masks pad keys and shifts positions under left padding.
        """
        num_tokens = self.check_inputs(input_ids, inputs_embeds)
        x = self.token_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (b, T, emb_dim)
        attn_mask = None if attention_mask is None else padding_attention_mask(attention_mask, self.config.causal)
        if attn_mask is None:
            positions = torch.arange(num_tokens, device=x.device)
        else:  # left padding: real tokens count positions from their first real token, as if unpadded
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.drop_emb(x + self.pos_emb(positions)), attn_mask

    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, depth: int) -> torch.Tensor:
        """Embeddings and blocks ``[0, depth)``: the part of a partly frozen model whose output can be cached."""
        x, attn_mask = self.embed(input_ids, attention_mask)
        for block in self.trf_blocks[:depth]:
            x = block(x, attn_mask)
        return x

    def suffix(
        self,
        hidden: torch.Tensor,
        attn_mask: torch.Tensor | None,
        depth: int,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks ``[depth, n_layers)`` and ``final_norm`` on :meth:`prefix`'s output, with the SDPA mask
        :meth:`embed` returns (``padding_attention_mask``, or ``None``): ``suffix(prefix(x)) == forward(x)``.

        With ``index`` (b,) the result is only at those positions, (b, 1, emb_dim), and the top block
        computes only what they need (:meth:`TransformerBlock.forward_at`).
        """
        blocks = self.trf_blocks[depth:]
        if index is None:
            for block in blocks:
                hidden = block(hidden, attn_mask)
            return self.final_norm(hidden)
        for block in blocks[:-1]:
            hidden = block(hidden, attn_mask)
        if len(blocks):
            hidden = blocks[-1].forward_at(hidden, index, attn_mask)
        else:  # everything was cached: just the pooled rows
            hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), index].unsqueeze(1)
        return self.final_norm(hidden)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput:
        """Hidden states after ``final_norm``, (b, T, emb_dim)."""
        if output_attentions:
            raise ValueError("output_attentions is not available: attention runs in fused SDPA kernels that do not return weights.")
        x, attn_mask = self.embed(input_ids, attention_mask, inputs_embeds)
        hidden_states = [x] if output_hidden_states else None
        for block in self.trf_blocks:
            x = block(x, attn_mask)
            if hidden_states is not None:
                hidden_states.append(x)
        x = self.final_norm(x)
        if hidden_states is not None:
            hidden_states[-1] = x
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden_states) if hidden_states else None)


class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """The book's full ``GPTModel``: ``out_head`` maps hidden states to next-token logits.

    The model keeps no KV cache, so ``generate()`` must re-read the whole (context-cropped) sequence
    every step, exactly like the book's ``generate_text_simple``; transformers' default would feed only
    the newest token and silently decode garbage.
    """

    _tied_weights_keys = {"out_head.weight": "model.tok_emb.weight"}
    checkpoint_head = "lm"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.model = GPTModel(config)
        self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        self.post_init()
        self.generation_config.use_cache = False

    def get_output_embeddings(self) -> nn.Linear:
        return self.out_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.out_head = value

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs) -> dict:
        """The whole sequence, cropped to the last ``context_length`` tokens (``generate_text_simple``)."""
        context = self.config.context_length
        inputs = {"input_ids": input_ids[:, -context:]}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask[:, -context:]
        return inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        use_cache: bool | None = None,
    ) -> CausalLMOutput:
        """``labels`` are the inputs themselves (shifted here, as transformers does); -100 is ignored."""
        outputs = self.model(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        logits = self.out_head(outputs.last_hidden_state)  # (b, T, vocab_size)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def to_gpt2(self):
        """The same network as a stock ``GPT2LMHeadModel`` (no custom code needed to use it)."""
        return to_gpt2_causal_lm(self)


class GPTForSequenceClassification(GPTPreTrainedModel):
    """Chapter 6's classifier: a ``Linear(emb_dim, num_labels)`` ``out_head`` on one pooled position.

    Which position is read is ``config.pooling``:
    ``last_non_pad`` (default) the last real token, found from ``attention_mask`` or else as the last
    token that is not ``pad_token_id``; padding never changes its logits.
    ``last`` position -1 exactly as the book; with padding that is a pad token (the book trains with
    it, and the model sees pads as ordinary tokens: ``attention_mask`` is ignored).
    ``first`` position of the first real token (exercise 6.3); ``mean`` the mean over real tokens.
    """

    checkpoint_head = "classifier"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTModel(config)
        self.out_head = nn.Linear(config.emb_dim, config.num_labels)
        self.post_init()

    def real_tokens(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """(b, T) 1/0 mask of real tokens: ``attention_mask``, else ``input_ids != pad_token_id``, else all."""
        if attention_mask is not None:
            return attention_mask.to(like.device, torch.long)
        if input_ids is not None and self.config.pad_token_id is not None:
            return (input_ids != self.config.pad_token_id).to(like.device, torch.long)
        return torch.ones(like.shape[:2], dtype=torch.long, device=like.device)

    def pooled_position(self, real: torch.Tensor) -> torch.Tensor | None:
        """(b,) the one position each sequence is read at, or ``None`` for the poolings that read every position."""
        positions = torch.arange(real.shape[1], device=real.device)
        if self.config.pooling == "last":
            return torch.full((real.shape[0],), real.shape[1] - 1, device=real.device)
        if self.config.pooling == "last_non_pad":
            return (positions * real).argmax(-1)  # rightmost real token
        if self.config.pooling == "first":
            return real.argmax(-1)  # leftmost real token
        return None

    def pool(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(b, T, emb_dim) -> (b, emb_dim) according to ``config.pooling``."""
        index = self.pooled_position(real)
        if index is not None:
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        if self.config.pooling == "mean_all":
            return hidden.mean(1)  # every position, pads included (the book's mean of the output over dim 1)
        weights = real.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        prefix_hidden_states: torch.Tensor | None = None,
        prefix_depth: int | None = None,
    ) -> SequenceClassifierOutput:
        """Logits (b, num_labels); with ``labels`` also the mean cross-entropy the book trains on.

        ``prefix_hidden_states`` (b, T, emb_dim) are the outputs of the embeddings and the first
        ``prefix_depth`` blocks for ``input_ids``, computed earlier (a frozen prefix computed once, see
        ``hf_spam.cached_trunk``); only the remaining blocks run. Like ``inputs_embeds``, it is an
        alternative way in: the result equals the forward from ``input_ids``.

        A pooling that reads one position has the top block compute only that position (every position
        still feeds its attention, without forming keys and values): the same logits, a fraction of the
        top block's work.
        """
        if (
            prefix_hidden_states is None
            and self.config.pooling in BOOK_PADDED_POOLINGS
            and self.config.padded_length
            and input_ids is not None
            and input_ids.shape[1]
        ):
            input_ids, attention_mask = self.book_padding(input_ids, attention_mask), None
        if output_hidden_states or output_attentions:
            outputs = self.model(input_ids, self.trunk_mask(attention_mask), inputs_embeds, output_attentions, output_hidden_states)
            return self.head(outputs.last_hidden_state, input_ids, attention_mask, labels, outputs.hidden_states)
        trunk_mask = self.trunk_mask(attention_mask)
        if prefix_hidden_states is None:
            (hidden, attn_mask), depth = self.model.embed(input_ids, trunk_mask, inputs_embeds), 0
        else:
            hidden, depth = prefix_hidden_states, prefix_depth
            attn_mask = None if trunk_mask is None else padding_attention_mask(trunk_mask, self.config.causal)
        real = self.real_tokens(input_ids, attention_mask, hidden)
        index = self.pooled_position(real)
        hidden = self.model.suffix(hidden, attn_mask, depth, index)  # (b, 1, d) at index, else (b, T, d)
        return self.output(hidden[:, 0] if index is not None else self.pool(hidden, real), labels)

    def book_padding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The input as a ``pooling="last"`` model was trained on it: real tokens first, then pads up to
        exactly ``config.padded_length`` (longer texts keep their first ``padded_length`` tokens, as the
        book's ``classify_review``). Position -1 is then the same pad token as in training, whatever
        padding the caller used (``pipeline``'s per-batch padding, left padding, none)."""
        pad_id = self.config.pad_token_id
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # real tokens first, in their order
        ids = input_ids.gather(1, order).masked_fill(~real.gather(1, order), pad_id)
        width = self.config.padded_length
        if ids.shape[1] < width:
            return F.pad(ids, (0, width - ids.shape[1]), value=pad_id)
        return ids[:, :width]

    def trunk_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The mask the trunk sees: none for ``last``/``mean_all`` pooling, where the book's model treats pads as tokens."""
        return None if self.config.pooling in BOOK_PADDED_POOLINGS else attention_mask

    def head(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        hidden_states: tuple[torch.Tensor, ...] | None = None,
    ) -> SequenceClassifierOutput:
        """Pool the final hidden states (b, T, emb_dim), apply ``out_head``, add the loss when ``labels`` are given."""
        return self.output(self.pool(hidden, self.real_tokens(input_ids, attention_mask, hidden)), labels, hidden_states)

    def output(
        self, pooled: torch.Tensor, labels: torch.Tensor | None = None, hidden_states: tuple[torch.Tensor, ...] | None = None
    ) -> SequenceClassifierOutput:
        """``out_head`` on the pooled (b, emb_dim) states, and the loss when ``labels`` are given."""
        logits = self.out_head(pooled)  # (b, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1), ignore_index=self.config.loss_ignore_index)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def to_gpt2(self):
        """The same classifier as a stock ``GPT2ForSequenceClassification`` (see ``convert_gpt2``)."""
        return to_gpt2_sequence_classifier(self)
