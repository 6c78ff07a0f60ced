"""Configuration of the book's GPT (chapter 4 ``GPT_CONFIG_124M`` / chapter 6 ``BASE_CONFIG``).

This file is copied next to every saved model so that ``trust_remote_code=True`` can rebuild it
without ``hf_spam`` installed: it may import only the standard library, ``torch``, ``transformers``
and sibling files (``from .x import y``).
"""

from __future__ import annotations

from transformers import PretrainedConfig

# The book's four sizes (chapter 5, listing 5.x "model_configs"), with the Hub ids of OpenAI's weights.
GPT2_PRESETS: dict[str, dict[str, int | str]] = {
    "gpt2-small (124M)": {"emb_dim": 768, "n_layers": 12, "n_heads": 12, "hub_id": "openai-community/gpt2"},
    "gpt2-medium (355M)": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16, "hub_id": "openai-community/gpt2-medium"},
    "gpt2-large (774M)": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20, "hub_id": "openai-community/gpt2-large"},
    "gpt2-xl (1558M)": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25, "hub_id": "openai-community/gpt2-xl"},
}

POOLINGS = ("last_non_pad", "last", "first", "mean", "mean_all")
# GPT-2's <|endoftext|>: its pad, bos and eos token, and the book's pad token
END_OF_TEXT_ID = 50256
# poolings that read the padded sequence as the book does: pads are ordinary tokens to the blocks
BOOK_PADDED_POOLINGS = ("last", "mean_all")
# transformers' problem types: the loss a classifier head trains with (cross-entropy, MSE, BCE)
SINGLE_LABEL, REGRESSION, MULTI_LABEL = "single_label_classification", "regression", "multi_label_classification"
PROBLEM_TYPES = (SINGLE_LABEL, REGRESSION, MULTI_LABEL)


def resolve_preset(name: str) -> str:
    """Map ``gpt2-small``, ``gpt2-small (124M)``, ``gpt2``, ``124M`` or a preset's Hub id to the book's key."""
    wanted = name.strip().lower()
    for key, preset in GPT2_PRESETS.items():
        short, size = key.split(" ")
        aliases = {key.lower(), short, size.strip("()").lower(), str(preset["hub_id"]).lower()}
        aliases.add(str(preset["hub_id"]).split("/")[-1])
        if wanted in aliases:
            return key
    known = ", ".join(f"'{k.split(' ')[0]}'" for k in GPT2_PRESETS)
    raise ValueError(f"Unknown GPT-2 preset {name!r}; choose one of {known} (or the book's names, e.g. 'gpt2-small (124M)').")


def is_preset(name: str) -> bool:
    """Whether ``name`` is one of the book's sizes (any name :func:`resolve_preset` accepts)."""
    try:
        resolve_preset(name)
    except ValueError:
        return False
    return True


class GPTConfig(PretrainedConfig):
    r"""The book's GPT hyper-parameters, under the book's names, plus what a classifier needs.

    The defaults are chapter 6's ``BASE_CONFIG`` for gpt2-small: OpenAI's GPT-2 has query/key/value
    biases (``qkv_bias=True``) and the chapter finetunes without dropout (``drop_rate=0.0``).
    ``attribute_map`` exposes the HF names (``hidden_size``, ``num_hidden_layers``, ...) so generic
    tooling (PEFT, Trainer, pipelines) finds them.

    Args:
        vocab_size: number of token ids (GPT-2's BPE: 50257).
        context_length: longest sequence the position embedding covers.
        emb_dim: width of the residual stream.
        n_heads: attention heads per block.
        n_layers: transformer blocks.
        drop_rate: dropout after embeddings, on attention weights and on both residual branches.
        qkv_bias: whether ``W_query``/``W_key``/``W_value`` have biases (GPT-2: yes).
        causal: apply the causal mask (``False`` is the bonus experiment "no causal mask").
        pooling: which token's output the classifier reads: ``last_non_pad`` (last real token by
            ``attention_mask``, else by ``pad_token_id``), ``last`` (position -1, exactly the book,
            pads included), ``first`` (exercise 6.3), ``mean`` (mean over real tokens) or
            ``mean_all`` (the bonus experiment ``--average_embeddings``: the mean over every
            position, pads included, of a model that reads pads as tokens).
        loss_ignore_index: ``ignore_index`` of the classification loss (bonus experiment row 18 sets
            50256; class targets are 0..num_labels-1, so only -100 or a class id changes anything).
        padded_length: for ``pooling="last"``/``"mean_all"`` models trained on fixed-length padding (the book pads
            every message to the longest training message): that length. The classifier then pads
            (or cuts) every input to it before reading position -1, so ``pipeline``, ``hf-spam classify``
            and a plain forward see exactly what training saw. ``None``: inputs are used as given.
        truncation_length: how many tokens of each text training read (``--context_length``,
            ``--max_length``, or the book's longest training text), when fewer than
            ``context_length``. The classifier keeps each input's first that many real tokens, so a
            longer text is read as training read it, whoever tokenized it. ``None``: up to the context.
        threshold: a multi-label classifier predicts every class whose probability is above it (the
            ``--threshold`` the run was evaluated with); ``hf-spam classify``, the demo and the card read it here.
        tie_word_embeddings: share ``out_head`` with ``tok_emb`` in the causal LM, as GPT-2 does.
        initializer_range: std of the normal init of fresh weights (GPT-2: 0.02).
        use_cache: whether the causal LM returns a KV cache (``generate()`` decodes with it).
        pad_token_id, bos_token_id, eos_token_id: default to GPT-2's ``<|endoftext|>`` (50256) where
            the vocabulary has that id, and to ``None`` in a smaller one; a given id is validated.

    The classifier's loss follows ``problem_type`` as in transformers: ``"single_label_classification"``
    (cross-entropy), ``"regression"`` (MSE; ``num_labels=1`` for one target) or
    ``"multi_label_classification"`` (BCE with logits on 0/1 targets). Left ``None``, the first batch
    with labels decides as transformers does: one label is regression, integer labels single-label,
    float labels multi-label.
    """

    model_type = "hf_spam_gpt"
    attribute_map = {
        "hidden_size": "emb_dim",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "max_position_embeddings": "context_length",
        "n_positions": "context_length",
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        context_length: int = 1024,
        emb_dim: int = 768,
        n_heads: int = 12,
        n_layers: int = 12,
        drop_rate: float = 0.0,
        qkv_bias: bool = True,
        causal: bool = True,
        pooling: str = "last_non_pad",
        padded_length: int | None = None,
        truncation_length: int | None = None,
        threshold: float = 0.5,
        loss_ignore_index: int = -100,
        tie_word_embeddings: bool = True,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        pad_token_id: int | None | str = "endoftext",
        bos_token_id: int | None | str = "endoftext",
        eos_token_id: int | None | str = "endoftext",
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.emb_dim = emb_dim
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.drop_rate = drop_rate
        self.qkv_bias = qkv_bias
        self.causal = causal
        self.pooling = pooling
        self.padded_length = padded_length
        self.truncation_length = truncation_length
        self.threshold = threshold
        self.loss_ignore_index = loss_ignore_index
        self.tie_word_embeddings = tie_word_embeddings
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        special = {"pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
        for name, value in special.items():  # "endoftext": GPT-2's id where this vocabulary has it
            if value == "endoftext":
                special[name] = END_OF_TEXT_ID if isinstance(vocab_size, int) and END_OF_TEXT_ID < vocab_size else None
        super().__init__(**special, **kwargs)
        self.validate_book_fields()

    def validate_book_fields(self) -> None:
        """Fail at construction, naming the field, instead of deep inside ``forward``."""
        for field in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{field} must be a positive integer, got {value!r}.")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}).")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate!r}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"GPTConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        for name in ("padded_length", "truncation_length"):
            length = getattr(self, name)
            if length is not None and not (isinstance(length, int) and 0 < length <= self.context_length):
                raise ValueError(f"GPTConfig.{name} must be in [1, context_length={self.context_length}], got {length!r}.")
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold < 1.0):
            raise ValueError(f"GPTConfig.threshold must be a probability in [0, 1), got {self.threshold!r}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            ids = getattr(self, name)
            for token_id in ids if isinstance(ids, list) else [ids]:
                if token_id is not None and not (isinstance(token_id, int) and 0 <= token_id < self.vocab_size):
                    raise ValueError(f"GPTConfig.{name} {token_id!r} is outside the vocabulary (size {self.vocab_size}).")

    @property
    def token_limit(self) -> int:
        """How many tokens of a text the model reads, as training read them: the training pad length of a book-padded
        model (the book's ``classify_review`` cuts there too), else the length training cut texts to, else the context
        length. The classifier cuts (and pads) its own input so (``as_trained``); ``hf-spam classify``, ``pipeline``'s
        tokenizer and the demo read this."""
        if self.pooling in BOOK_PADDED_POOLINGS and self.padded_length:
            return self.padded_length
        return self.truncation_length or self.context_length

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> GPTConfig:
        """The book's size by name (``gpt2-small`` ... ``gpt2-xl``); ``kwargs`` override any field."""
        preset = GPT2_PRESETS[resolve_preset(name)]
        sizes = {k: v for k, v in preset.items() if k != "hub_id"}
        return cls(**{**sizes, **kwargs})
