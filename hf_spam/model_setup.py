"""Building the classifier to finetune and freezing it as chapter 6 does."""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, set_seed

from .arguments import ModelArguments
from .configuration_gpt import GPTConfig, resolve_preset
from .modeling_gpt import GPTForSequenceClassification

# appendix E puts LoRA on every Linear layer of the trunk; the new head is trained in full
LORA_TARGETS = ["W_query", "W_key", "W_value", "out_proj", "layers.0", "layers.2"]


def build_model(args: ModelArguments, id2label: dict[int, str], seed: int) -> GPTForSequenceClassification:
    """The classifier: OpenAI's weights (or a saved hf_spam model), or a fresh random one."""
    task = {"num_labels": len(id2label), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}, "pooling": args.pooling}
    set_seed(seed)
    if args.weights == "random":
        config = (
            GPTConfig.from_preset(args.model_name_or_path, **task)
            if is_preset(args.model_name_or_path)
            else GPTConfig.from_pretrained(args.model_name_or_path, **task)
        )
        if args.config_overrides:
            config.update_from_string(args.config_overrides)
            config.validate_book_fields()
        return GPTForSequenceClassification(config)
    if args.config_overrides:
        task.update(_parse_overrides(args.config_overrides))
    if os.path.isdir(args.model_name_or_path) and AutoConfig.from_pretrained(args.model_name_or_path).model_type == GPTConfig.model_type:
        return GPTForSequenceClassification.from_pretrained(args.model_name_or_path, ignore_mismatched_sizes=True, **task)
    return GPTForSequenceClassification.from_gpt2(args.model_name_or_path, **task)


def is_preset(name: str) -> bool:
    try:
        resolve_preset(name)
    except ValueError:
        return False
    return True


def _parse_overrides(overrides: str) -> dict:
    """``"drop_rate=0.1,pooling=mean"`` -> a dict, typed like ``GPTConfig``'s defaults (as ``update_from_string``)."""
    probe = GPTConfig()
    probe.update_from_string(overrides)
    return {key: getattr(probe, key) for key in (item.split("=")[0].strip() for item in overrides.split(","))}


def configure_trainable(model: GPTForSequenceClassification, args: ModelArguments):
    """Freeze as chapter 6 does (the new head always trains); ``lora`` returns a PEFT model."""
    if args.trainable_layers == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, target_modules=LORA_TARGETS, modules_to_save=["out_head"])
        return get_peft_model(model, lora)
    trainable = {
        "last_layer": [],
        "last_block": [model.model.trf_blocks[-1], model.model.final_norm],
        "last_two_blocks": [*model.model.trf_blocks[-2:], model.model.final_norm],
        "all": [model],
    }[args.trainable_layers]
    for param in model.parameters():
        param.requires_grad = False
    for module in [*trainable, model.out_head]:
        for param in module.parameters():
            param.requires_grad = True
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())
