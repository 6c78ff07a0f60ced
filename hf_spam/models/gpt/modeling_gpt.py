"""The book's GPT (chapter 4) as transformers models: backbone, causal LM and sequence classifier, built from
the book's layers in ``gpt_blocks``.

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
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutput
from transformers.utils import cached_file, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_gpt import BOOK_PADDED_POOLINGS, MULTI_LABEL, REGRESSION, SINGLE_LABEL, GPTConfig
from .gpt_blocks import LayerNorm, TransformerBlock, padding_attention_mask
from .model_checksums import CHECKSUMS_NAME, MODEL_FILES, ModelFilesError, checksum_problem, write_checksums
from .pooled_position import blocks_mask, book_padding, first_tokens, pool, pooled_position, real_tokens


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
    def from_pretrained(cls, pretrained_model_name_or_path, *args, verify_checksums: bool = True, **kwargs):
        """transformers' loader, with what a trained folder needs checked rather than warned about: its files are
        the ones saved (``model_checksums.json``, which every folder of this model has: without it, or with
        ``verify_checksums=False``, nothing would tell damaged weights from good ones), a damaged weights file is
        named in the error, and a folder saved from this very class loads whole (a missing or unexpected weight means
        its ``config.json`` and weights disagree). Each is a :class:`ModelFilesError` naming the folder and the file."""
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except SafetensorError as error:
            raise ModelFilesError(
                f"{pretrained_model_name_or_path}: model.safetensors is truncated or corrupt ({error}); re-download or re-save the model."
            ) from error
        if verify_checksums and pretrained_model_name_or_path is not None:
            problem = saved_files_problem(str(pretrained_model_name_or_path), kwargs)
            if problem:
                raise ModelFilesError(
                    f"{pretrained_model_name_or_path}: {problem}. Restore the folder from where it was saved (or re-download it); "
                    "to load its files as they are (config.json edited on purpose), pass verify_checksums=False."
                )
        if cls.__name__ in (model.config.architectures or []):
            missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
            if missing or unexpected:
                raise ModelFilesError(
                    f"{pretrained_model_name_or_path}: config.json does not describe the saved weights (weights missing: "
                    f"{missing[:4]}{' ...' if len(missing) > 4 else ''}; weights not in the model: {unexpected[:4]}"
                    f"{' ...' if len(unexpected) > 4 else ''}). config.json was edited or comes from another model: restore it."
                )
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs) -> None:
        """transformers' save, then ``model_checksums.json`` over the weights and config just written (and a tokenizer
        already in the folder)."""
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_checksums(save_directory)

    def _upload_modified_files(self, working_dir, *args, **kwargs):
        """``save_pretrained(push_to_hub=True)`` uploads before returning: the checksums go up with the files."""
        write_checksums(working_dir)
        return super()._upload_modified_files(working_dir, *args, **kwargs)

    #: which head a converted checkpoint must provide: None (backbone), "lm" or "classifier"
    checkpoint_head: str | None = None

    @classmethod
    def from_gpt2(cls, name_or_path: str | os.PathLike, **config_kwargs):
        """Load OpenAI GPT-2 weights (a Hub id, a book preset name or a local transformers folder).

        ``config_kwargs`` set the fields GPT-2's config does not have, e.g. ``num_labels``,
        ``id2label``, ``pooling``, ``drop_rate``. A classifier's ``out_head`` starts fresh unless the
        checkpoint is a ``GPT2ForSequenceClassification`` (e.g. one written by :meth:`to_gpt2`).
        """
        convert = conversion()
        config, state_dict = convert.load_gpt2_checkpoint(name_or_path, cls.config_class, config_kwargs, cls.checkpoint_head)
        return convert.model_from_state_dict(cls, config, state_dict, source=str(name_or_path))

    @classmethod
    def from_book_state_dict(
        cls, state_dict_or_path: str | os.PathLike | Mapping[str, torch.Tensor], config: GPTConfig | None = None, **config_kwargs
    ):
        """Load what the book saves with ``torch.save(model.state_dict(), "review_classifier.pth")``.

        A path is read with ``torch.load(weights_only=True)``, so no code in the file runs. Without
        ``config`` the sizes are read off the tensors; ``n_heads`` comes from GPT-2's table for that
        width unless given in ``config_kwargs``.
        """
        convert = conversion()
        if isinstance(state_dict_or_path, Mapping):
            book_sd, source = dict(state_dict_or_path), "the given state dict"
        else:
            source = str(state_dict_or_path)
            book_sd = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
        if config is None:
            config = convert.config_from_book_state_dict(book_sd, cls.config_class, config_kwargs, cls.checkpoint_head)
        converted = convert.book_state_dict_to_hf(book_sd, cls.checkpoint_head, config.vocab_size)
        # cloned: the model never holds the caller's tensors
        return convert.model_from_state_dict(cls, config, {k: v.clone() for k, v in converted.items()}, source)


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
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPast:
        """Hidden states after ``final_norm``, (b, T, emb_dim).

        With ``use_cache`` (default: ``config.use_cache``) the keys and values of every block go into
        ``cache`` (a new ``DynamicCache`` if none is given), and a later call with the same cache
        passes only the new tokens (and the whole sequence's ``attention_mask``). ``past_key_values``
        is transformers' older name for ``cache``: accepted with its deprecation warning, as GPT-2 does.
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
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
        return super().prepare_inputs_for_generation(input_ids, next_sequence_length, cache, attention_mask, inputs_embeds, **kwargs)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
            cache=cache,
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
        return conversion().to_gpt2_causal_lm(self)


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
        prefix computed once, see ``hf_spam.cache.build``); only the remaining blocks run. Like
        ``inputs_embeds``, it is an alternative way in: the result equals the forward from ``input_ids``.

        A pooling that reads one position has the top block compute only that position (every position
        still feeds its attention, without forming keys and values): the same logits, a fraction of the
        top block's work. Asked for hidden states or attentions, every block computes every position.
        """
        config = self.config
        output_attentions, output_hidden_states = self.model.output_flags(output_attentions, output_hidden_states)
        if prefix_hidden_states is None:
            if input_ids is not None and input_ids.shape[1] > 0:  # an empty input is check_inputs' to report
                input_ids, attention_mask = self.as_trained(input_ids, attention_mask)
            hidden, attn_mask = self.model.embed(input_ids, blocks_mask(config.pooling, attention_mask), inputs_embeds)
            depth = 0
        else:  # the embeddings and the first prefix_depth blocks, computed earlier
            hidden, depth = prefix_hidden_states, prefix_depth
            mask = blocks_mask(config.pooling, attention_mask)
            attn_mask = None if mask is None else padding_attention_mask(mask, config.causal)
        real = real_tokens(input_ids, attention_mask, config.pad_token_id, hidden)
        every_position = output_attentions or output_hidden_states
        index = None if every_position else pooled_position(config.pooling, real)
        outputs = self.model.run_blocks(
            hidden, attn_mask, start=depth, index=index, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        if index is None:
            pooled = pool(config.pooling, outputs.last_hidden_state, real)
        else:  # the blocks' output is already only at the pooled position
            pooled = outputs.last_hidden_state[:, 0]
        logits = self.out_head(pooled)  # (b, num_labels)
        loss = None if labels is None else self.classification_loss(logits, labels, num_items_in_batch)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def as_trained(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input cut (and, for a book-padded model, padded) as training read its texts, so that ``pipeline``,
        ``hf-spam classify`` and a plain forward give what the run measured: ``padded_length`` for the book's
        fixed padding, else each text's first ``truncation_length`` tokens."""
        config = self.config
        if config.pooling in BOOK_PADDED_POOLINGS and config.padded_length:
            return book_padding(input_ids, attention_mask, config.pad_token_id, config.padded_length), None
        if config.truncation_length and input_ids.shape[1] > config.truncation_length:
            return first_tokens(input_ids, attention_mask, config.truncation_length)
        return input_ids, attention_mask

    def classification_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
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
        """The same classifier as a stock ``GPT2ForSequenceClassification`` (see ``hf_spam.models.convert_gpt2``)."""
        return conversion().to_gpt2_sequence_classifier(self)


def conversion():
    """hf_spam's GPT-2 and book-checkpoint conversion (``hf_spam.models.convert_gpt2``). It is not shipped with a saved
    model, whose folder loads without hf_spam; converting needs hf_spam installed. (Imported inside ``try``, which
    transformers' scan of a saved model's imports skips: the folder does not require hf_spam.)"""
    try:
        from hf_spam.models import convert_gpt2
    except ImportError as error:
        raise ImportError(
            "Converting from or to GPT-2 (from_gpt2, from_book_state_dict, to_gpt2) needs hf_spam installed: pip install hf_spam. "
            "Loading and running this model does not."
        ) from error
    return convert_gpt2


# how from_pretrained was asked to reach the Hub, for the checksummed files (a local folder needs none of it)
HUB_OPTIONS = ("cache_dir", "revision", "subfolder", "token", "local_files_only", "proxies")


def saved_files_problem(name_or_path: str, load_options: dict) -> str | None:
    """Why the loaded folder's (or Hub snapshot's) files differ from its ``model_checksums.json``, or why they cannot
    be checked (``None``: they match). Run after loading, so the files are already local and in the page cache."""
    if os.path.isdir(name_or_path):
        folder = os.path.join(name_or_path, load_options.get("subfolder") or "")

        def locate(name: str) -> str | None:
            path = os.path.join(folder, name)
            return path if os.path.isfile(path) else None

    else:
        hub = {key: load_options[key] for key in HUB_OPTIONS if key in load_options}

        def locate(name: str) -> str | None:
            return cached_file(
                name_or_path, name, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False, **hub
            )

    manifest = locate(CHECKSUMS_NAME)
    if manifest is None:
        return f"{CHECKSUMS_NAME} is missing, so its files cannot be checked against what was saved (every save writes it)"
    return checksum_problem(manifest, locate, required=MODEL_FILES)
