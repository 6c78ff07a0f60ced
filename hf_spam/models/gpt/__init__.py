"""The book's GPT as transformers models: config, model, blocks, pooling and saved-file checksums.

Every module of this folder but this ``__init__`` is copied next to a saved model by ``save_pretrained`` (so that
``trust_remote_code=True`` loads it without hf_spam): they import only each other, torch, transformers and the
standard library (``tests/test_layout.py``)."""

from pathlib import Path

from .configuration_gpt import GPT2_PRESETS, GPTConfig
from .modeling_gpt import GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel

# the code files a saved model carries, and a Hub repository of one holds
SHIPPED_FILES = tuple(sorted(path.name for path in Path(__file__).parent.glob("*.py") if path.name != "__init__.py"))

__all__ = ["GPT2_PRESETS", "SHIPPED_FILES", "GPTConfig", "GPTForCausalLM", "GPTForSequenceClassification", "GPTModel", "GPTPreTrainedModel"]
