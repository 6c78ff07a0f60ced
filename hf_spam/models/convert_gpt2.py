"""OpenAI GPT-2 (transformers layout) <-> the book's layout, in one declarative table.

The differences are the ones chapter 5's ``load_weights_into_gpt`` handles: GPT-2 stores its linear
layers as ``Conv1D`` with weights ``(in, out)``, so they are transposed; ``c_attn`` packs query, key
and value side by side, so it is split in three. Any key that the table does not expect is an error,
never ignored. Not copied next to saved models (a saved model loads without it): ``from_gpt2``, ``from_book_state_dict``
and ``to_gpt2`` import it from the installed hf_spam.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from .gpt.configuration_gpt import GPT2_PRESETS, resolve_preset

# book name -> GPT-2 name, outside the blocks
GPT2_TOP = {
    "tok_emb.weight": "wte.weight",
    "pos_emb.weight": "wpe.weight",
    "final_norm.scale": "ln_f.weight",
    "final_norm.shift": "ln_f.bias",
}
# book name inside trf_blocks.{i} -> (GPT-2 name inside h.{i}, stored as Conv1D (in, out) so transposed)
GPT2_BLOCK = {
    "norm1.scale": ("ln_1.weight", False),
    "norm1.shift": ("ln_1.bias", False),
    "att.out_proj.weight": ("attn.c_proj.weight", True),
    "att.out_proj.bias": ("attn.c_proj.bias", False),
    "norm2.scale": ("ln_2.weight", False),
    "norm2.shift": ("ln_2.bias", False),
    "ff.layers.0.weight": ("mlp.c_fc.weight", True),
    "ff.layers.0.bias": ("mlp.c_fc.bias", False),
    "ff.layers.2.weight": ("mlp.c_proj.weight", True),
    "ff.layers.2.bias": ("mlp.c_proj.bias", False),
}
# c_attn's output dim is [query | key | value]
GPT2_QKV = ("att.W_query", "att.W_key", "att.W_value")
# widths of OpenAI's four checkpoints -> heads (the book's state dicts do not record n_heads)
GPT2_HEADS_BY_WIDTH = {int(p["emb_dim"]): int(p["n_heads"]) for p in GPT2_PRESETS.values()}


def gpt2_to_book(gpt2_sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """``GPT2Model`` state dict -> ``GPTModel`` (book) state dict; unknown or missing keys raise."""
    remaining = dict(gpt2_sd)

    def take(name: str) -> torch.Tensor:
        if name not in remaining:
            raise ValueError(f"GPT-2 checkpoint lacks {name!r} (expected {n_layers} blocks).")
        return remaining.pop(name)

    book = {ours: take(theirs) for ours, theirs in GPT2_TOP.items()}
    for i in range(n_layers):
        for ours, (theirs, conv1d) in GPT2_BLOCK.items():
            tensor = take(f"h.{i}.{theirs}")
            book[f"trf_blocks.{i}.{ours}"] = tensor.t().contiguous() if conv1d else tensor
        qkv_weight = take(f"h.{i}.attn.c_attn.weight").t()  # (3*emb, emb)
        qkv_bias = take(f"h.{i}.attn.c_attn.bias")
        for name, weight, bias in zip(GPT2_QKV, qkv_weight.chunk(3, dim=0), qkv_bias.chunk(3, dim=0), strict=True):
            book[f"trf_blocks.{i}.{name}.weight"] = weight.contiguous()
            book[f"trf_blocks.{i}.{name}.bias"] = bias
    if remaining:
        raise ValueError(f"GPT-2 checkpoint has keys the conversion does not know: {sorted(remaining)[:10]}")
    return book


def book_to_gpt2(book_sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """``GPTModel`` (book) state dict -> ``GPT2Model`` state dict; absent qkv biases become zeros."""
    gpt2 = {theirs: book_sd[ours] for ours, theirs in GPT2_TOP.items()}
    for i in range(n_layers):
        prefix = f"trf_blocks.{i}."
        for ours, (theirs, conv1d) in GPT2_BLOCK.items():
            tensor = book_sd[prefix + ours]
            gpt2[f"h.{i}.{theirs}"] = tensor.t().contiguous() if conv1d else tensor
        weights = [book_sd[f"{prefix}{name}.weight"] for name in GPT2_QKV]
        biases = [book_sd.get(f"{prefix}{name}.bias", torch.zeros_like(w[:, 0])) for name, w in zip(GPT2_QKV, weights, strict=True)]
        gpt2[f"h.{i}.attn.c_attn.weight"] = torch.cat(weights, dim=0).t().contiguous()
        gpt2[f"h.{i}.attn.c_attn.bias"] = torch.cat(biases)
    return gpt2


def check_gpt2_config(config: GPT2Config, source: str) -> None:
    """Refuse GPT-2 variants the book's architecture cannot represent exactly."""
    if config.model_type != "gpt2":
        raise ValueError(f"{source} is a {config.model_type!r} checkpoint, not GPT-2; from_gpt2 reads transformers GPT-2 checkpoints only.")
    problems = []
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={config.activation_function!r} (the book uses tanh-approximated GELU)")
    if abs(config.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={config.layer_norm_epsilon} (the book uses 1e-5)")
    if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn:
        problems.append("non-standard attention scaling")
    if problems:
        raise ValueError(f"{source} cannot be converted exactly: " + "; ".join(problems))


def book_config_from_gpt2(gpt2_config: GPT2Config, config_class: type, overrides: dict, head: str | None):
    """The book config for a GPT-2 config; dropout stays at chapter 6's 0.0 unless overridden."""
    fields = {
        "vocab_size": gpt2_config.vocab_size,
        "context_length": gpt2_config.n_positions,
        "emb_dim": gpt2_config.n_embd,
        "n_heads": gpt2_config.n_head,
        "n_layers": gpt2_config.n_layer,
        "qkv_bias": True,
        "tie_word_embeddings": getattr(gpt2_config, "tie_word_embeddings", True),
    }
    if head == "classifier" and "GPT2ForSequenceClassification" in (gpt2_config.architectures or []):
        fields.update(num_labels=gpt2_config.num_labels, id2label=gpt2_config.id2label)
        fields["pooling"] = "last_non_pad" if gpt2_config.pad_token_id is not None else "last"
    if overrides.get("qkv_bias") is False:
        raise ValueError("GPT-2 has query/key/value biases; from_gpt2 needs qkv_bias=True.")
    return config_class(**{**fields, **overrides})


def load_gpt2_checkpoint(name_or_path: str | os.PathLike, config_class: type, overrides: dict, head: str | None):
    """(book config, state dict for the target class) from a transformers GPT-2 checkpoint.

    ``name_or_path`` is a local folder, a Hub id, or a book preset name (``gpt2-small`` ->
    ``openai-community/gpt2``); downloading, caching and offline mode are transformers' own.
    """
    source = str(name_or_path)
    if not os.path.isdir(source):
        try:
            source = str(GPT2_PRESETS[resolve_preset(source)]["hub_id"])
        except ValueError:
            pass  # not a preset name: a Hub id
    try:
        gpt2_config = AutoConfig.from_pretrained(source)
    except OSError as error:
        raise OSError(
            f"Could not load GPT-2 weights {source!r} ({error}). Offline, pass a local transformers GPT-2 folder, "
            "or put the checkpoint in the Hugging Face cache and set HF_HUB_OFFLINE=1."
        ) from error
    check_gpt2_config(gpt2_config, source)
    config = book_config_from_gpt2(gpt2_config, config_class, overrides, head)
    if head == "classifier" and "GPT2ForSequenceClassification" in (gpt2_config.architectures or []):
        hf = GPT2ForSequenceClassification.from_pretrained(source, dtype=torch.float32)
        head_sd = {"out_head.weight": hf.score.weight, "out_head.bias": torch.zeros(hf.score.out_features)}
    else:
        hf = GPT2LMHeadModel.from_pretrained(source, dtype=torch.float32)
        head_sd = {"out_head.weight": hf.lm_head.weight} if head == "lm" else {}
    body = gpt2_to_book(hf.transformer.state_dict(), gpt2_config.n_layer)
    prefix = "" if head is None else "model."
    state_dict = {prefix + k: v for k, v in body.items()} | head_sd
    return config, {k: v.detach() for k, v in state_dict.items()}  # the transformers model is dropped: nothing else holds them


def config_from_book_state_dict(book_sd: dict[str, torch.Tensor], config_class: type, overrides: dict, head: str | None):
    """Read the sizes off a book state dict (it records no config); ``overrides`` win."""
    overrides = dict(overrides)
    if "tok_emb.weight" not in book_sd or "pos_emb.weight" not in book_sd:
        raise ValueError("Not a book GPTModel state dict: it has no 'tok_emb.weight'/'pos_emb.weight'.")
    vocab_size, emb_dim = book_sd["tok_emb.weight"].shape
    n_layers = 1 + max((int(k.split(".")[1]) for k in book_sd if k.startswith("trf_blocks.")), default=-1)
    n_heads = overrides.pop("n_heads", GPT2_HEADS_BY_WIDTH.get(emb_dim))
    if n_heads is None:
        raise ValueError(f"emb_dim {emb_dim} is not a GPT-2 width; pass n_heads=... (the state dict does not record it).")
    fields = {
        "vocab_size": vocab_size,
        "context_length": book_sd["pos_emb.weight"].shape[0],
        "emb_dim": emb_dim,
        "n_heads": n_heads,
        "n_layers": n_layers,
        "qkv_bias": "trf_blocks.0.att.W_query.bias" in book_sd,
    }
    out_head = book_sd.get("out_head.weight")
    if head == "lm" and out_head is not None:
        fields["tie_word_embeddings"] = torch.equal(out_head, book_sd["tok_emb.weight"])
    if head == "classifier" and out_head is not None and out_head.shape[0] != vocab_size:
        fields["num_labels"] = out_head.shape[0]
    return config_class(**{**fields, **overrides})


def book_state_dict_to_hf(book_sd: dict[str, torch.Tensor], head: str | None, vocab_size: int) -> dict[str, torch.Tensor]:
    """Book keys -> this package's keys: drop the book's ``att.mask`` buffers, prefix the GPT model's.

    A classifier keeps ``out_head`` only if it is a classification head (fewer rows than the
    vocabulary); an LM head in a classifier's place is left out, so the classifier head starts fresh.
    """
    prefix = "" if head is None else "model."
    converted = {prefix + k: v for k, v in book_sd.items() if not k.startswith("out_head.") and not k.endswith(".att.mask")}
    heads = {k: v for k, v in book_sd.items() if k.startswith("out_head.")}
    if head == "lm" or (head == "classifier" and heads and heads["out_head.weight"].shape[0] != vocab_size):
        converted.update(heads)
    return converted


def gpt2_config_from_book(config, **fields) -> GPT2Config:
    """The stock GPT-2 config of the same network (refuses the non-causal bonus variant)."""
    if not config.causal:
        raise ValueError("This model was built with causal=False; GPT-2 is always causal, so it has no stock GPT-2 equivalent.")
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.context_length,
        n_embd=config.emb_dim,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        activation_function="gelu_new",
        resid_pdrop=config.drop_rate,
        embd_pdrop=config.drop_rate,
        attn_pdrop=config.drop_rate,
        layer_norm_epsilon=1e-5,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        **fields,
    )


def _load_exact(hf_model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    result = hf_model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"GPT-2 export is incomplete: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    return hf_model.eval()


def to_gpt2_causal_lm(model) -> GPT2LMHeadModel:
    """A stock ``GPT2LMHeadModel`` with the same weights, hence the same logits."""
    config = gpt2_config_from_book(
        model.config, tie_word_embeddings=model.config.tie_word_embeddings, pad_token_id=model.config.pad_token_id
    )
    body = book_to_gpt2(model.model.state_dict(), model.config.n_layers)
    state_dict = {f"transformer.{k}": v for k, v in body.items()} | {"lm_head.weight": model.out_head.weight.detach()}
    return _load_exact(GPT2LMHeadModel(config), state_dict)


def to_gpt2_sequence_classifier(model) -> GPT2ForSequenceClassification:
    """A stock ``GPT2ForSequenceClassification`` giving the same logits as ``model``.

    transformers' ``score`` layer has no bias, the book's ``out_head`` does. Only the head reads the
    final LayerNorm's output, so with ``W delta = b`` (least-norm ``delta``, exact when ``W`` has full
    row rank) the bias moves into the LayerNorm's shift: ``W (g*n + shift + delta) = W (g*n + shift) + b``.
    Pooling: ``last_non_pad`` becomes GPT-2's pad-token search; ``last`` becomes ``pad_token_id=None``
    (position -1; transformers then accepts only unpadded batches); ``first``/``mean`` have no GPT-2 form.
    """
    config = model.config
    if config.pooling not in ("last_non_pad", "last"):
        raise ValueError(
            f"GPT2ForSequenceClassification always reads the last token, but this model pools with {config.pooling!r}; "
            "share it with save_pretrained() (loads with trust_remote_code=True) instead."
        )
    weight = model.out_head.weight.detach()
    bias = model.out_head.bias.detach()
    delta = torch.linalg.pinv(weight.double()) @ bias.double()
    residual = (weight.double() @ delta - bias.double()).abs().max().item()
    if residual > 1e-6 * (1.0 + bias.abs().max().item()):
        raise ValueError(
            "out_head's bias cannot be folded into the final LayerNorm (rows of its weight are linearly dependent; residual "
            f"{residual:.2e}); "
            "share it with save_pretrained() (loads with trust_remote_code=True) instead."
        )
    gpt2_config = gpt2_config_from_book(
        config,
        num_labels=config.num_labels,
        id2label=config.id2label,
        label2id=config.label2id,
        problem_type=config.problem_type,
        pad_token_id=config.pad_token_id if config.pooling == "last_non_pad" else None,
    )
    body = book_to_gpt2(model.model.state_dict(), config.n_layers)
    body["ln_f.bias"] = (body["ln_f.bias"].double() + delta).to(body["ln_f.bias"].dtype)
    state_dict = {f"transformer.{k}": v for k, v in body.items()} | {"score.weight": weight}
    return _load_exact(GPT2ForSequenceClassification(gpt2_config), state_dict)


def model_from_state_dict(cls: type, config, state_dict: dict[str, torch.Tensor], source: str):
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
