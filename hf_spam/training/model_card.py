"""The model card of a finetuned classifier: Hub metadata (``model-index`` eval results, base model,
dataset, license, pipeline tag) through ``huggingface_hub.ModelCard``, and a body with the recipe,
every split's metrics, how they are averaged, and a usage example taken from the user's own data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models.gpt import SHIPPED_FILES
from ..models.gpt.configuration_gpt import GPT2_PRESETS, MULTI_LABEL, REGRESSION, SINGLE_LABEL, is_preset, resolve_preset

SPLITS = (("train", "train"), ("validation", "eval"), ("test", "test"))

SHIPPED_CODE = ", ".join(f"`{name}`" for name in SHIPPED_FILES)


@dataclass
class RunRecord:
    """What a finetuning run was, besides its figures: what the model card says, and what the prefix cache
    records as its provenance. ``recipe`` holds the options that made the run, as the user gave them."""

    model: str  # a book preset, a Hub id or a folder, as given
    weights: str  # "pretrained" or "random"
    dataset_name: str  # shown on the card: a Hub id or the files
    dataset_id: str | None  # the Hub dataset, for the card's metadata
    label_names: list[str]
    problem_type: str
    example_texts: list[str]  # real validation texts: the card's usage example and widget
    recipe: dict
    config_overrides: str | None = None
    dropped_rows: dict[str, int] = field(default_factory=dict)
    data_fingerprint: str | None = None  # checkpoints.data_fingerprint of the splits: resuming checks it

    @property
    def base_model(self) -> str | None:
        return base_model_id(self.model, self.weights)

    @property
    def provenance(self) -> dict[str, str]:
        model = self.model + (f" with {self.config_overrides}" if self.config_overrides else "")
        return {"model": model + (" (random weights)" if self.weights == "random" else ""), "data": self.dataset_name}


def base_model_id(name: str, weights: str = "pretrained") -> str | None:
    """The Hub id the weights came from (a book preset's OpenAI checkpoint, or a Hub id); ``None`` for random or local weights."""
    if weights == "random":
        return None
    if is_preset(name):
        return str(GPT2_PRESETS[resolve_preset(name)]["hub_id"])
    return None if "/" not in name or name.startswith((".", "/")) else name


USE_NOTES = {
    SINGLE_LABEL: "",
    MULTI_LABEL: (
        "\nEvery class's probability (sigmoid, as the pipeline applies for a multi-label model); the run's metrics count a class as "
        "predicted above its --threshold (default 0.5).\n"
    ),
    REGRESSION: "\nThe predicted values, as they are (the pipeline applies no function to a regression model's output).\n",
}
# per problem type: the results table's metrics (the first two also go into the Hub metadata), and the per-class/target table's
TABLES = {
    SINGLE_LABEL: (("accuracy", "precision", "recall", "f1", "loss"), ("precision", "recall", "f1"), "class"),
    MULTI_LABEL: (("f1_micro", "f1_macro", "exact_match", "accuracy", "loss"), ("precision", "recall", "f1"), "class"),
    REGRESSION: (("mse", "pearson", "mae", "spearman", "loss"), ("mse", "mae", "pearson", "spearman"), "target"),
}


def _classes(label_names: list[str], problem_type: str) -> str:
    return f"{'Targets' if problem_type == REGRESSION else 'Labels'}: {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}"


def build_model_card(repo_id: str, run: RunRecord, results: dict) -> ModelCard:
    """The card of ``run`` with its ``results`` (``all_results.json``'s figures), for ``repo_id`` (a Hub id or the output folder)."""
    base, problem_type = run.base_model, run.problem_type
    averaging = results.get("test_average", "binary" if len(run.label_names) == 2 else "macro")
    headline = TABLES[problem_type][0][:2]
    dataset_id = run.dataset_id
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=base,
        datasets=[dataset_id] if dataset_id else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        license="mit" if base and base.startswith("openai-community/") else "apache-2.0",
        tags=["hf_spam", "gpt2", "text-classification", *([problem_type.replace("_", "-")] if problem_type != SINGLE_LABEL else [])],
        metrics=list(headline),
        widget=[{"text": text} for text in run.example_texts],
        eval_results=[
            EvalResult(
                task_type="text-classification",
                dataset_type=dataset_id or "csv",
                dataset_name=run.dataset_name,
                dataset_split=split,
                metric_type=metric,
                metric_name=f"{split} {metric}" + (f" ({averaging})" if metric == "f1" else ""),
                metric_value=round(float(results[f"{prefix}_{metric}"]), 4),
            )
            for split, prefix in SPLITS
            for metric in headline
            if f"{prefix}_{metric}" in results
        ],
    )
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n" + _body(repo_id, run, results, averaging))


def _format(metric: str, value: float) -> str:
    return f"{value * 100:.2f} %" if metric == "accuracy" else f"{value:.4f}"


def _results(results: dict, label_names: list[str], averaging: str, problem_type: str) -> str:
    """The results table, how its figures are computed, and the per-class (or per-target) table of the test split."""
    columns, per, unit = TABLES[problem_type]
    nan = float("nan")
    table = [f"| split | {' | '.join(c.replace('_', ' ') for c in columns)} |", "|---" * (len(columns) + 1) + "|"]
    table += [f"| {split} | {' | '.join(_format(c, results.get(f'{prefix}_{c}', nan)) for c in columns)} |" for split, prefix in SPLITS]
    if problem_type == REGRESSION:
        note = "MSE and MAE are the mean squared and absolute errors; Pearson and Spearman the correlations of predicted and true values."
    elif problem_type == MULTI_LABEL:
        note = (
            "A class is predicted when its probability (sigmoid) is above the threshold. Micro F1 pools every (text, class) decision, "
            "macro F1 averages the classes' F1, exact match counts texts whose whole set of classes is right, accuracy counts "
            "right decisions."
        )
    elif averaging == "binary":
        note = f"Precision, recall and F1 are those of class 1 (`{label_names[1]}`) against class 0 (`{label_names[0]}`)."
    else:
        note = f"Precision, recall and F1 are macro-averaged: the unweighted mean over the {len(label_names)} classes."
    suffix = "per_target" if problem_type == REGRESSION else "per_class"
    rows = zip(label_names, *(results.get(f"test_{m}_{suffix}", [nan] * len(label_names)) for m in per), strict=True)
    detail = [f"| {unit} | {' | '.join(per)} |", "|---" * (len(per) + 1) + "|"] + [
        f"| {name} | {' | '.join(f'{v:.4f}' for v in values)} |" for name, *values in rows
    ]
    text = "\n".join(table) + f"\n\n{note} Per {unit} on the test split:\n\n" + "\n".join(detail)
    if "test_confusion_matrix" in results:
        text += f"\n\nTest confusion matrix (rows: true, columns: predicted; classes in label order): `{results['test_confusion_matrix']}`"
    return text


def _body(repo_id: str, run: RunRecord, results: dict, averaging: str) -> str:
    problem_type, label_names = run.problem_type, run.label_names
    dropped = {name: count for name, count in run.dropped_rows.items() if count}
    weights = f"{run.weights} ({run.base_model or run.model}{', ' + run.config_overrides if run.config_overrides else ''})"
    return f"""
# GPT classifier finetuned with hf_spam

The from-scratch GPT of *Build a Large Language Model (From Scratch)*, chapter 6, finetuned as a
text classifier with `Trainer` ({problem_type.replace("_", " ")}). {_classes(label_names, problem_type)}.

- **Dataset**: {run.dataset_name}
- **Weights**: {weights}
{f"- **Rows dropped as invalid** (empty text or missing label): {dropped}" if dropped else ""}

## Results (measured by this run)

{_results(results, label_names, averaging, problem_type)}

## Use

```python
from transformers import pipeline
classify = pipeline("text-classification", model="{repo_id}", trust_remote_code=True)
classify({json.dumps(run.example_texts[0], ensure_ascii=False)}{", top_k=None" if problem_type != SINGLE_LABEL else ""})
```
{USE_NOTES[problem_type]}
`trust_remote_code=True` runs the model code stored next to the weights ({SHIPPED_CODE}); loading checks the weights and
`config.json` against `model_checksums.json`. `model.to_gpt2()` turns the model into a stock
`GPT2ForSequenceClassification` that needs no custom code.

## Recipe

```json
{json.dumps(run.recipe, indent=2, default=str)}
```
"""
