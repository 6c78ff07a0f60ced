"""The model card of a finetuned classifier: Hub metadata (``model-index`` eval results, base model,
dataset, license, pipeline tag) through ``huggingface_hub.ModelCard``, and a body with the recipe,
every split's metrics, how they are averaged, and a usage example taken from the user's own data."""

from __future__ import annotations

import json
from dataclasses import asdict

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_gpt import GPT2_PRESETS, resolve_preset
from .model_setup import is_preset

SPLITS = (("train", "train"), ("validation", "eval"), ("test", "test"))


def base_model_id(model_args) -> str | None:
    """The Hub id the weights came from (a book preset's OpenAI checkpoint, or a Hub id); ``None`` for random or local weights."""
    if model_args.weights == "random":
        return None
    name = model_args.model_name_or_path
    if is_preset(name):
        return str(GPT2_PRESETS[resolve_preset(name)]["hub_id"])
    return None if "/" not in name or name.startswith((".", "/")) else name


def build_model_card(
    repo_id: str,
    model_args,
    data_args,
    training_args,
    results: dict,
    label_names: list[str],
    dataset_name: str,
    dataset_id: str | None,
    example_texts: list[str],
) -> ModelCard:
    """``dataset_name`` is shown (a Hub id or file names); ``dataset_id`` goes into the metadata when the data is on the Hub.
    ``example_texts`` (real texts of the validation split) become the usage example and the Hub widget's examples."""
    base = base_model_id(model_args)
    averaging = results.get("test_average", "binary" if len(label_names) == 2 else "macro")
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=base,
        datasets=[dataset_id] if dataset_id else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        license="mit" if base and base.startswith("openai-community/") else "apache-2.0",
        tags=["hf_spam", "gpt2", "text-classification"],
        metrics=["accuracy", "f1"],
        widget=[{"text": text} for text in example_texts],
        eval_results=[
            EvalResult(
                task_type="text-classification",
                dataset_type=dataset_id or "csv",
                dataset_name=dataset_name,
                dataset_split=split,
                metric_type=metric,
                metric_name=f"{split} {metric}" + (f" ({averaging})" if metric == "f1" else ""),
                metric_value=round(float(results[f"{prefix}_{metric}"]), 4),
            )
            for split, prefix in SPLITS
            for metric in ("accuracy", "f1")
            if f"{prefix}_{metric}" in results
        ],
    )
    body = _body(repo_id, model_args, data_args, training_args, results, label_names, dataset_name, base, averaging, example_texts[0])
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n" + body)


def _body(repo_id, model_args, data_args, training_args, results, label_names, dataset_name, base, averaging, example_text) -> str:
    rows = "\n".join(
        f"| {split} | {results.get(f'{prefix}_accuracy', float('nan')) * 100:.2f} % | {results.get(f'{prefix}_precision', float('nan')):.4f} "
        f"| {results.get(f'{prefix}_recall', float('nan')):.4f} | {results.get(f'{prefix}_f1', float('nan')):.4f} | {results.get(f'{prefix}_loss', float('nan')):.4f} |"
        for split, prefix in SPLITS
    )
    average_note = (
        f"Precision, recall and F1 are those of class 1 (`{label_names[1]}`) against class 0 (`{label_names[0]}`)."
        if averaging == "binary"
        else f"Precision, recall and F1 are macro-averaged: the unweighted mean over the {len(label_names)} classes."
    )
    per_class = "\n".join(
        f"| {name} | {p:.4f} | {r:.4f} | {f:.4f} |"
        for name, p, r, f in zip(
            label_names, results["test_precision_per_class"], results["test_recall_per_class"], results["test_f1_per_class"], strict=True
        )
    )
    recipe = asdict(model_args) | {k: v for k, v in asdict(data_args).items() if v is not None}
    recipe |= {
        k: getattr(training_args, k)
        for k in (
            "learning_rate",
            "weight_decay",
            "weight_decay_scope",
            "num_train_epochs",
            "per_device_train_batch_size",
            "seed",
            "load_best_model_at_end",
            "metric_for_best_model",
            "early_stopping_patience",
        )
    }
    dropped = {k.removeprefix("dropped_rows_"): v for k, v in results.items() if k.startswith("dropped_rows_") and v}
    weights = f"{model_args.weights} ({base or model_args.model_name_or_path}{', ' + model_args.config_overrides if model_args.config_overrides else ''})"
    return f"""
# GPT classifier finetuned with hf_spam

The from-scratch GPT of *Build a Large Language Model (From Scratch)*, chapter 6, finetuned as a
text classifier with `Trainer`. Labels: {", ".join(f"{i} = {name}" for i, name in enumerate(label_names))}.

- **Dataset**: {dataset_name}
- **Weights**: {weights}
{f"- **Rows dropped as invalid** (empty text or missing label): {dropped}" if dropped else ""}

## Results (measured by this run)

| split | accuracy | precision | recall | F1 | loss |
|---|---|---|---|---|---|
{rows}

{average_note} Per class on the test split:

| class | precision | recall | F1 |
|---|---|---|---|
{per_class}

Test confusion matrix (rows: true, columns: predicted; classes in label order): `{results.get("test_confusion_matrix")}`

## Use

```python
from transformers import pipeline
classify = pipeline("text-classification", model="{repo_id}", trust_remote_code=True)
classify({json.dumps(example_text, ensure_ascii=False)})
```

`trust_remote_code=True` runs the model code stored next to the weights (`modeling_gpt.py`,
`configuration_gpt.py`, `convert_gpt2.py`). `model.to_gpt2()` turns the model into a stock
`GPT2ForSequenceClassification` that needs no custom code.

## Recipe

```json
{json.dumps(recipe, indent=2, default=str)}
```
"""
