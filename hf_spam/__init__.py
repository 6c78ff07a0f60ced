"""hf_spam: chapter 6 of *Build a Large Language Model (From Scratch)* as transformers models.

Importing the package registers the book's GPT with the Auto classes, and marks the classes for
``save_pretrained`` to copy their code into the saved folder (``trust_remote_code=True`` loading). Training,
data and inference names are imported on first use: ``from hf_spam import SpamTrainer, SpamTrainingArguments``
as ``from trl import SFTTrainer, SFTConfig``.
"""

from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from .lazy import lazy_names
from .models.gpt import GPT2_PRESETS, GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel
from .tokenizer import gpt2_tokenizer, save_with_tokenizer, tiktoken_gpt2

if TYPE_CHECKING:
    from .data import load_sms_spam, load_text_classification, tokenize
    from .serving.classifier import classify, load_classifier
    from .training import DataArguments, ModelArguments, SpamTrainer, SpamTrainingArguments

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
    "DataArguments",
    "GPTConfig",
    "GPTForCausalLM",
    "GPTForSequenceClassification",
    "GPTModel",
    "GPTPreTrainedModel",
    "ModelArguments",
    "SpamTrainer",
    "SpamTrainingArguments",
    "classify",
    "gpt2_tokenizer",
    "load_classifier",
    "load_sms_spam",
    "load_text_classification",
    "save_with_tokenizer",
    "tiktoken_gpt2",
    "tokenize",
]
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "DataArguments": ".training",
        "ModelArguments": ".training",
        "SpamTrainer": ".training",
        "SpamTrainingArguments": ".training",
        "classify": ".serving.classifier",
        "load_classifier": ".serving.classifier",
        "load_sms_spam": ".data",
        "load_text_classification": ".data",
        "tokenize": ".data",
    },
)
