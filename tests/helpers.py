"""Small builders shared by the tests."""

import subprocess
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, HfArgumentParser

from hf_spam import GPTConfig
from hf_spam.cli import COMMANDS
from hf_spam.training.arguments import DataArguments, ModelArguments
from hf_spam.training.config import SpamTrainingArguments
from tests.support import book_reference

TINY_CONFIG = {"vocab_size": 50257, "context_length": 32, "emb_dim": 64, "n_heads": 4, "n_layers": 2}


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**{**TINY_CONFIG, **overrides})


def tiny_gpt2_config(**overrides) -> GPT2Config:
    fields = {"vocab_size": 50257, "n_positions": 32, "n_embd": 64, "n_layer": 2, "n_head": 4, "pad_token_id": 50256}
    return GPT2Config(**{**fields, **overrides})


def book_model_like(model) -> book_reference.GPTModel:
    """The book's GPTModel holding ``model``'s weights (LM head, or a classifier head as in chapter 6)."""
    c = model.config
    cfg = {k: getattr(c, k) for k in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")}
    book = book_reference.GPTModel(cfg)
    out_features = model.out_head.out_features
    book.out_head = torch.nn.Linear(c.emb_dim, out_features, bias=model.out_head.bias is not None)
    state = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
    result = book.load_state_dict(state, strict=False)
    assert all(k.endswith("att.mask") for k in result.missing_keys) and not result.unexpected_keys, result
    return book.eval()


def right_padded(rows: list[list[int]], pad: int = 50256) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def left_padded(rows: list[list[int]], pad: int = 50256) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


ROOT = Path(__file__).resolve().parents[1]

# a tiny model for training runs: 1 block of width 64 from random weights, every layer trained
TINY = [
    "--weights",
    "random",
    "--config_overrides",
    "n_layers=1,emb_dim=64,n_heads=2",
    "--trainable_layers",
    "all",
    "--learning_rate",
    "5e-4",
]


def parse(*argv: str):
    """hf-spam train's arguments, parsed as it parses them."""
    return HfArgumentParser((ModelArguments, DataArguments, SpamTrainingArguments)).parse_args_into_dataclasses(args=list(argv))


def run_script(
    script: str, *argv: str, env: dict | None = None, input: str | bytes | None = None, timeout: float = 900, check: bool = False
):
    """``hf-spam <command> argv...`` where ``script`` names a command (``train.py``: ``python -m hf_spam.cli train``),
    else ``python scripts/<script>`` (the developer scripts), from the repository as a user runs it: its output
    captured (as text, unless ``input`` is bytes), its exit status kept (``check`` raises on a failure)."""
    command = script.removesuffix(".py")
    program = ["-m", "hf_spam.cli", command] if command in COMMANDS else [f"scripts/{script}"]
    return subprocess.run(
        [sys.executable, *program, *argv],
        cwd=ROOT,
        env=env,
        input=input,
        capture_output=True,
        text=not isinstance(input, bytes),
        timeout=timeout,
        check=check,
    )
