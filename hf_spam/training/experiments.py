"""Chapter 6's bonus experiment table (the book's ``additional_experiments.py``, rows 1-19) through
hf_spam's own training path.

Every row is a list of ``hf-spam train`` arguments on top of the bonus script's recipe (:data:`BONUS_RECIPE`:
pad to the longest training message, read position -1, keep the last epoch, 5 batches for the
per-epoch training accuracy, the bonus script's data split). :func:`run_experiments` trains each
chosen row with :func:`hf_spam.training.run` and returns one table row per experiment with the
book's columns plus the device and the command.

Two of the bonus script's details are reproduced on purpose: its LoRA scales the low-rank update
by ``alpha`` (not ``alpha / rank`` as PEFT does), so ``--lora_alpha`` is given to PEFT as
``alpha * rank``; and its ``--weights random`` is PyTorch's default initialisation after
``torch.manual_seed(123)`` (``--random_init book``). Its LoRA also wraps the new output head (hf_spam
trains the head in full), which this table does not reproduce.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from transformers import HfArgumentParser

from ..errors import OptionError
from ..models.gpt.configuration_gpt import GPT2_PRESETS, resolve_preset
from .arguments import DataArguments, ModelArguments
from .config import SpamTrainingArguments

logger = logging.getLogger(__name__)

BONUS_RECIPE = [
    "--split", "bonus",
    "--padding", "longest_train",
    "--pooling", "last",
    "--load_best_model_at_end", "false",
    "--save_strategy", "no",
    "--train_eval_batches", "5",
    "--initial_eval_batches", "0",
    "--random_init", "book",
]  # fmt: skip
# --reduced: each size shrunk 6x in depth and 12x in width (heads of 32 or 40 dimensions), for a quick table
REDUCED_SHAPES = {
    "gpt2-small (124M)": "n_layers=2,emb_dim=64,n_heads=2",
    "gpt2-medium (355M)": "n_layers=4,emb_dim=80,n_heads=2",
    "gpt2-large (774M)": "n_layers=6,emb_dim=120,n_heads=3",
    "gpt2-xl (1558M)": "n_layers=8,emb_dim=128,n_heads=4",
}


@dataclass(frozen=True)
class Experiment:
    number: int
    name: str
    model: str
    weights: str
    token: str
    layers: str
    context: str
    args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return ["--model_name_or_path", self.model.split(" ")[0], *self.args]


def _lora(rank: int, alpha: int) -> tuple[str, ...]:
    return ("--trainable_layers", "lora", "--lora_rank", str(rank), "--lora_alpha", str(alpha * rank))


SMALL, MEDIUM, LARGE, XL = GPT2_PRESETS
LONGEST = "longest train ex. (120)"
EXPERIMENTS = [
    Experiment(1, "reference", SMALL, "pretrained", "last", "last_block", LONGEST),
    Experiment(2, "first_token", SMALL, "pretrained", "first", "last_block", LONGEST, ("--pooling", "first")),
    Experiment(3, "last_layer", SMALL, "pretrained", "last", "last_layer", LONGEST, ("--trainable_layers", "last_layer")),
    Experiment(4, "last_two_blocks", SMALL, "pretrained", "last", "last_two_blocks", LONGEST, ("--trainable_layers", "last_two_blocks")),
    Experiment(5, "all_layers", SMALL, "pretrained", "last", "all", LONGEST, ("--trainable_layers", "all")),
    Experiment(6, "medium", MEDIUM, "pretrained", "last", "last_block", LONGEST),
    Experiment(7, "large", LARGE, "pretrained", "last", "last_block", LONGEST),
    Experiment(8, "xl", XL, "pretrained", "last", "last_block", LONGEST),
    Experiment(9, "xl_all_layers", XL, "pretrained", "last", "all", LONGEST, ("--trainable_layers", "all")),
    Experiment(10, "random_weights", SMALL, "random", "last", "all", LONGEST, ("--weights", "random", "--trainable_layers", "all")),
    Experiment(11, "lora", SMALL, "pretrained", "last", "LoRA", LONGEST, _lora(16, 16)),
    Experiment(12, "xl_lora", XL, "pretrained", "last", "LoRA", LONGEST, _lora(16, 8)),
    Experiment(13, "model_context", SMALL, "pretrained", "last", "last_block", "context length (1024)", ("--padding", "max_length")),
    Experiment(
        14,
        "no_padding",
        SMALL,
        "pretrained",
        "last",
        "last_block",
        "variable: no padding (batch size 1)",
        ("--padding", "none", "--per_device_train_batch_size", "1"),
    ),
    Experiment(
        15,
        "no_padding_accumulation",
        SMALL,
        "pretrained",
        "last",
        "last_block",
        "variable: no padding (batch size 8)",
        ("--padding", "none", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "8"),
    ),
    Experiment(16, "flexible", SMALL, "pretrained", "flexible (last non-padding)", "last_block", LONGEST, ("--pooling", "last_non_pad")),
    Experiment(
        17,
        "no_causal_mask",
        SMALL,
        "pretrained",
        "last",
        "last_block",
        LONGEST + "; no causal mask",
        ("--config_overrides", "causal=False"),
    ),
    Experiment(
        18, "ignore_index", SMALL, "pretrained", "last", "last_block", LONGEST + " and ignore_index 50256", ("--loss_ignore_index", "50256")
    ),
    Experiment(19, "average_embeddings", SMALL, "pretrained", "last + pooled embeddings", "last_block", LONGEST, ("--pooling", "mean_all")),
]
BY_NAME = {e.name: e for e in EXPERIMENTS}


def select(names: list[str]) -> list[Experiment]:
    """Rows by number or name; ``all`` for every row."""
    if not names or names == ["all"]:
        return list(EXPERIMENTS)
    chosen = []
    for name in names:
        experiment = EXPERIMENTS[int(name) - 1] if name.isdigit() and 1 <= int(name) <= len(EXPERIMENTS) else BY_NAME.get(name)
        if experiment is None:
            raise OptionError(f"Unknown experiment {name!r}: use 1-{len(EXPERIMENTS)} or one of {list(BY_NAME)}.")
        chosen.append(experiment)
    return chosen


def pretrained_available(model: str) -> bool:
    """Whether OpenAI's weights for ``model`` can be had (from the Hub, or its cache when offline)."""
    try:
        hf_hub_download(str(GPT2_PRESETS[resolve_preset(model)]["hub_id"]), "config.json")
    except Exception:  # offline, unreachable, not cached
        return False
    return True


def _merge_overrides(argv: list[str], extra: str | None) -> list[str]:
    """Combine a row's ``--config_overrides`` with the caller's (``--reduced`` shapes, e.g.) into one flag."""
    overrides = [extra] if extra else []
    merged = []
    skip = False
    for index, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item == "--config_overrides":
            overrides.append(argv[index + 1])
            skip = True
            continue
        merged.append(item)
    return [*merged, "--config_overrides", ",".join(overrides)] if overrides else merged


def row_argv(experiment: Experiment, base: list[str], reduced: bool, offline_random: bool) -> list[str]:
    """The full ``hf-spam train`` argument list of one row."""
    argv = [*BONUS_RECIPE, *experiment.argv(), *base]
    if offline_random and "random" not in argv:
        argv += ["--weights", "random"]
    return _merge_overrides(argv, REDUCED_SHAPES[experiment.model] if reduced else None)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "CPU"


def run_experiments(
    experiments: list[Experiment], base: list[str], output_dir: str | Path, reduced: bool = False, weights: str = "auto"
) -> dict:
    """Train each row through ``hf_spam.training.run``; returns ``{"header": ..., "rows": [...]}``.

    ``weights="auto"`` uses OpenAI's weights where they can be had and random weights (the book's
    init) otherwise; the header says which.
    """
    from .recipe import run

    output_dir = Path(output_dir)
    rows = []
    for experiment in experiments:
        random_fallback = weights == "random" or (
            weights == "auto" and experiment.weights == "pretrained" and not pretrained_available(experiment.model)
        )
        argv = row_argv(experiment, base, reduced, random_fallback)
        folder = output_dir / f"row{experiment.number:02d}-{experiment.name}"
        parser = HfArgumentParser((ModelArguments, DataArguments, SpamTrainingArguments))
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=[*argv, "--output_dir", str(folder)])
        logger.info("Row %d (%s): hf-spam train %s", experiment.number, experiment.name, shlex.join(argv))
        started = time.perf_counter()
        results = run(model_args, data_args, training_args)
        rows.append(
            {
                "row": experiment.number,
                "name": experiment.name,
                "model": experiment.model + (f" reduced ({REDUCED_SHAPES[experiment.model]})" if reduced else ""),
                "weights": model_args.weights,
                "trainable_token": experiment.token,
                "trainable_layers": experiment.layers,
                "context_length": experiment.context,
                "train_accuracy": results["train_accuracy"],
                "validation_accuracy": results["eval_accuracy"],
                "test_accuracy": results["test_accuracy"],
                "training_minutes": results["train_runtime"] / 60,
                "wall_minutes": (time.perf_counter() - started) / 60,
                "device": device_name(),
                "command": "hf-spam train " + shlex.join([*argv, "--output_dir", str(folder)]),
            }
        )
    fallback = [r["row"] for r in rows if r["weights"] == "random" and EXPERIMENTS[r["row"] - 1].weights == "pretrained"]
    header = "Weights: " + (
        f"random (the book's init) for rows {fallback}, because OpenAI's pretrained GPT-2 weights could not be fetched here; "
        "these rows do not measure what the book's rows measure."
        if fallback
        else "as the book's rows state."
    )
    return {"header": header, "rows": rows}


def to_markdown(table: dict) -> str:
    lines = [
        table["header"],
        "",
        "| | Model | Weights | Trainable token | Trainable layers | Context length | Training acc | Validation acc | Test acc | "
        "Training time | Device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['row']} | {r['model']} | {r['weights']} | {r['trainable_token']} | {r['trainable_layers']} | {r['context_length']} "
            f"| {r['train_accuracy'] * 100:.2f}% | {r['validation_accuracy'] * 100:.2f}% | {r['test_accuracy'] * 100:.2f}% "
            f"| {r['training_minutes']:.2f} min | {r['device']} |"
        )
    lines += ["", "Commands:", ""] + [f"- Row {r['row']}: `{r['command']}`" for r in table["rows"]]
    return "\n".join(lines)


def write_table(table: dict, output_dir: str | Path) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "experiments.md").write_text(to_markdown(table) + "\n")
    (output_dir / "experiments.json").write_text(json.dumps(table, indent=2))


def listing() -> str:
    lines = [
        "| row | name | model | weights | trainable token | trainable layers | context length | hf-spam train arguments (beyond "
        "the bonus recipe) |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for e in EXPERIMENTS:
        lines.append(
            f"| {e.number} | {e.name} | {e.model} | {e.weights} | {e.token} | {e.layers} | {e.context} | `{shlex.join(e.argv())}` |"
        )
    lines.append("")
    lines.append(f"Bonus recipe (every row): `{shlex.join(BONUS_RECIPE)}`")
    return "\n".join(lines)
