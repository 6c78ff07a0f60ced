"""Finetuning as TRL lays it out: ``config`` (``SpamTrainingArguments``) beside ``trainer`` (``SpamTrainer``),
``recipe`` (``run``: data, model, training, evaluation and saving, what ``hf-spam train`` calls) with the command
line's ``arguments``; around them ``model_setup``, ``callbacks``, ``checkpoints``, ``evaluation`` (with the local
``metrics``), ``model_card``, ``plots``, ``allocator`` and ``experiments`` (the book's table of variants).

Names are imported on first use (Trainer, datasets and accelerate are heavy)."""

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .arguments import DataArguments, ModelArguments
    from .config import SpamTrainingArguments
    from .recipe import run
    from .trainer import SpamTrainer

__all__ = ["DataArguments", "ModelArguments", "SpamTrainer", "SpamTrainingArguments", "run"]
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "DataArguments": ".arguments",
        "ModelArguments": ".arguments",
        "SpamTrainingArguments": ".config",
        "SpamTrainer": ".trainer",
        "run": ".recipe",
    },
)
