"""hf_spam: chapter 6 of *Build a Large Language Model (From Scratch)* as transformers models.

Importing the package registers the book's GPT with the Auto classes, and marks the classes for
``save_pretrained`` to copy their code into the saved folder (``trust_remote_code=True`` loading).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from .configuration_gpt import GPT2_PRESETS, GPTConfig
from .modeling_gpt import GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel
from .tokenizer import gpt2_tokenizer, save_with_tokenizer, tiktoken_gpt2

AutoConfig.register(GPTConfig.model_type, GPTConfig, exist_ok=True)
for _auto, _model in (
    (AutoModel, GPTModel),
    (AutoModelForCausalLM, GPTForCausalLM),
    (AutoModelForSequenceClassification, GPTForSequenceClassification),
):
    _auto.register(GPTConfig, _model, exist_ok=True)
    _model.register_for_auto_class(_auto.__name__)
GPTConfig.register_for_auto_class()

__all__ = [
    "GPT2_PRESETS",
    "GPTConfig",
    "GPTForCausalLM",
    "GPTForSequenceClassification",
    "GPTModel",
    "GPTPreTrainedModel",
    "gpt2_tokenizer",
    "save_with_tokenizer",
    "tiktoken_gpt2",
]
