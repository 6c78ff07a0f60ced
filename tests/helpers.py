"""Small builders shared by the tests."""

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import torch
from transformers import GPT2Config, HfArgumentParser

from hf_spam import GPTConfig
from hf_spam.cli import COMMANDS
from hf_spam.cli import main as cli_main
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
    script: str,
    *argv: str,
    env: dict | None = None,
    input: str | bytes | None = None,
    timeout: float = 900,
    check: bool = False,
    process: bool = False,
):
    """``hf-spam <command> argv...`` where ``script`` names a command (``train.py``: ``hf-spam train``), else
    ``python scripts/<script>`` (the developer scripts), from the repository as a user runs it: its output captured
    (as text, unless ``input`` is bytes), its exit status kept (``check`` raises on a failure).

    A command runs in this process (see :func:`run_cli`: an interpreter with torch and transformers costs seconds
    to start) unless ``process`` is set or ``env`` is given (the libraries read their variables once, at import)."""
    command = script.removesuffix(".py")
    if command in COMMANDS and not process and env is None:
        result = run_cli(command, *argv, input=input)
        if check:
            result.check_returncode()
        return result
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


def run_cli(*argv: str, input: str | bytes | None = None) -> subprocess.CompletedProcess:
    """``hf-spam argv...`` in this process, as a process would see it: stdin, stdout and stderr its own; every plain
    logging handler (transformers' and datasets' own, which write to stderr) writing to its stderr; the root logger
    bare as in a new interpreter, so that the command's ``logging.basicConfig`` takes effect; an exception that
    escapes printed as a traceback, with exit status 1."""
    stdout, stderr = io.StringIO(), io.StringIO()
    raw = input.encode() if isinstance(input, str) else (input or b"")
    root = logging.getLogger()
    saved_handlers, saved_level, cwd = root.handlers[:], root.level, os.getcwd()
    redirected = {handler: handler.stream for handler in _stream_handlers()}
    code = 0
    try:
        for handler in redirected:
            handler.setStream(stderr)
        root.handlers = []
        os.chdir(ROOT)
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            _stdin(io.TextIOWrapper(io.BytesIO(raw))),
            _interpreter_warnings(stderr),
        ):
            try:
                cli_main(list(argv))
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
            except Exception:  # what the interpreter prints before it exits with 1
                traceback.print_exc(file=stderr)
                code = 1
    finally:
        os.chdir(cwd)
        root.handlers = saved_handlers  # the command's own (basicConfig's, on its stderr) go with it
        root.setLevel(saved_level)
        for handler, stream in redirected.items():
            handler.setStream(stream)
    out, err = stdout.getvalue(), stderr.getvalue()
    if isinstance(input, bytes):
        out, err = out.encode(), err.encode()
    return subprocess.CompletedProcess(["hf-spam", *argv], code, out, err)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    return [handler for logger in loggers for handler in logger.handlers if type(handler) is logging.StreamHandler]


@contextlib.contextmanager
def _interpreter_warnings(stderr: io.StringIO):
    """Python's warnings as a new interpreter shows them (its default filters, printed on stderr), not as pytest
    records them (its own filters, kept for the session's summary)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        yield


@contextlib.contextmanager
def _stdin(stream):
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved
