"""Building the classifier to finetune and freezing it as chapter 6 does."""

from __future__ import annotations

import logging
import os

import torch
from transformers import AutoConfig, set_seed

from ..errors import ModelNotFoundError
from ..models.gpt.configuration_gpt import GPTConfig, is_preset
from ..models.gpt.modeling_gpt import GPTForSequenceClassification

# what trains besides the new head (chapter 6 and its bonus table; lora: appendix E)
TRAINABLE_LAYERS = ("last_layer", "last_block", "last_two_blocks", "all", "lora")
# random weights: GPT-2's N(0, 0.02) initialisation, or the book's (PyTorch's defaults after torch.manual_seed(123))
RANDOM_INITS = ("gpt2", "book")
# appendix E puts LoRA on every Linear layer of the GPT model; the new head is trained in full
LORA_TARGETS = ["W_query", "W_key", "W_value", "out_proj", "layers.0", "layers.2"]

logger = logging.getLogger(__name__)


def build_model(
    name_or_path: str,
    id2label: dict[int, str],
    *,
    seed: int,
    weights: str = "pretrained",
    problem_type: str | None = None,
    pooling: str = "last_non_pad",
    loss_ignore_index: int = -100,
    config_overrides: str | None = None,
    random_init: str = "gpt2",
) -> GPTForSequenceClassification:
    """The classifier: OpenAI's weights (or a saved hf_spam model) for ``weights="pretrained"``, or a fresh random
    one (``random_init`` in :data:`RANDOM_INITS`). ``id2label`` names the classes (or the regression targets);
    ``problem_type`` chooses the loss (see ``GPTConfig``); ``config_overrides`` is ``"drop_rate=0.1,..."``."""
    task = {
        "problem_type": problem_type,
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
        "pooling": pooling,
        "loss_ignore_index": loss_ignore_index,
    }
    set_seed(seed)
    if weights == "random":
        config = GPTConfig.from_preset(name_or_path, **task) if is_preset(name_or_path) else GPTConfig.from_pretrained(name_or_path, **task)
        if config_overrides:
            config.update_from_string(config_overrides)
            config.validate_book_fields()
        model = GPTForSequenceClassification(config)
        if random_init == "book":
            book_init_(model)
        if not config_overrides:  # the full shape, often a typo for a small test run: say what it costs before it costs
            logger.warning(
                "--weights random without --config_overrides builds the full %s shape (%s parameters), trained from scratch: on "
                "a CPU that takes tens of minutes and leaves a prefix cache of hundreds of MB. For a quick run pass e.g. "
                '--config_overrides "n_layers=2,emb_dim=128,n_heads=2".',
                name_or_path,
                f"{sum(p.numel() for p in model.parameters()):,}",
            )
        return model
    if config_overrides:
        task.update(_parse_overrides(config_overrides))
    if os.path.isdir(name_or_path) and AutoConfig.from_pretrained(name_or_path).model_type == GPTConfig.model_type:
        return GPTForSequenceClassification.from_pretrained(name_or_path, ignore_mismatched_sizes=True, **task)
    try:
        return GPTForSequenceClassification.from_gpt2(name_or_path, **task)
    except OSError as error:
        if os.path.isdir(name_or_path):
            raise
        reason = " ".join(str(error).split())  # transformers' offline message spans lines
        raise ModelNotFoundError(
            f"{reason} Or build a randomly initialised model: weights='random'.",
            command_line=f"{reason} Or train from random weights: --weights random.",
        ) from error


@torch.no_grad()
def book_init_(model: GPTForSequenceClassification, seed: int = 123) -> None:
    """Initialise as the book's code does for random weights: ``torch.manual_seed(123); GPTModel(cfg)``
    (PyTorch's default init of every ``nn.Embedding``/``nn.Linear``, drawn in construction order,
    the 50257-way LM head included), then ``torch.manual_seed(123); model.out_head = Linear(emb_dim, 2)``.
    Replaying the draws in that order gives the book's tensors exactly (a test compares)."""
    torch.manual_seed(seed)
    gpt = model.model
    gpt.tok_emb.reset_parameters()
    gpt.pos_emb.reset_parameters()
    for block in gpt.trf_blocks:
        for linear in (block.att.W_query, block.att.W_key, block.att.W_value, block.att.out_proj, block.ff.layers[0], block.ff.layers[2]):
            linear.reset_parameters()
        for norm in (block.norm1, block.norm2):
            norm.scale.fill_(1.0)
            norm.shift.zero_()
    gpt.final_norm.scale.fill_(1.0)
    gpt.final_norm.shift.zero_()
    torch.nn.Linear(model.config.emb_dim, model.config.vocab_size, bias=False)  # the book's LM head, replaced below: its draws still count
    torch.manual_seed(seed)
    model.out_head.reset_parameters()


def _parse_overrides(overrides: str) -> dict:
    """``"drop_rate=0.1,pooling=mean"`` -> a dict, typed like ``GPTConfig``'s defaults (as ``update_from_string``)."""
    probe = GPTConfig()
    probe.update_from_string(overrides)
    return {key: getattr(probe, key) for key in (item.split("=")[0].strip() for item in overrides.split(","))}


def configure_trainable(model: GPTForSequenceClassification, trainable_layers: str, *, lora_rank: int = 16, lora_alpha: float = 16.0):
    """Freeze as chapter 6 does (the new head always trains); ``lora`` returns a PEFT model (appendix E's rank and alpha)."""
    if trainable_layers not in TRAINABLE_LAYERS:
        raise ValueError(f"trainable_layers must be one of {TRAINABLE_LAYERS}, got {trainable_layers!r}.")
    if trainable_layers == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=LORA_TARGETS, modules_to_save=["out_head"])
        return get_peft_model(model, lora)
    trainable = {
        "last_layer": [],
        "last_block": [model.model.trf_blocks[-1], model.model.final_norm],
        "last_two_blocks": [*model.model.trf_blocks[-2:], model.model.final_norm],
        "all": [model],
    }[trainable_layers]
    for param in model.parameters():
        param.requires_grad = False
    for module in [*trainable, model.out_head]:
        for param in module.parameters():
            param.requires_grad = True
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())
