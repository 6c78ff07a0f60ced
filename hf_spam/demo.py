"""The chapter's user interface (its bonus app classifies a typed message) as a Gradio app.

It works for any classifier hf_spam trains: the labels come from the model's ``id2label``, every
class's probability is shown, and the examples come from the model card's ``widget`` texts (taken
from the validation split at training time). The probabilities are ``pipeline("text-classification")``'s
with the same truncation as ``hf-spam classify`` (a test checks they agree).

This file is also a Hugging Face Space's ``app.py``: :func:`write_space` copies it into a Space
folder beside a ``requirements.txt`` and a README with the Space metadata, with ``MODEL`` set to the
model's Hub id. It therefore imports only gradio, torch, transformers and huggingface_hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import gradio as gr
from huggingface_hub import ModelCard
from transformers import Pipeline, pipeline

MODEL = os.environ.get("HF_SPAM_MODEL", "")  # set to the model's Hub id in a Space's app.py
FALLBACK_EXAMPLES = ["You are a winner you have been specially selected to receive $1000 cash or a $2000 award."]


def load(model: str, backend: str | None = None) -> Pipeline:
    """A text-classification pipeline over a saved folder or Hub id (the model's code runs: ``trust_remote_code``);
    for a folder ``hf-spam export`` wrote (or another ``backend`` than torch), hf_spam's classifier on that runtime,
    called the same way (a Space's app, which has no hf_spam, serves PyTorch models only)."""
    if backend not in (None, "torch") or (Path(model) / "export.json").is_file():
        from hf_spam.serving.classifier import load_classifier

        return load_classifier(model, backend=backend)
    return pipeline("text-classification", model=model, trust_remote_code=True, top_k=None)


def token_limit(classifier: Pipeline) -> int:
    """Tokens the model reads (``GPTConfig.token_limit``, as ``hf-spam classify``), else its position embedding's length."""
    config = classifier.model.config
    return getattr(config, "token_limit", None) or getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024)


def model_threshold(classifier: Pipeline, threshold: float | None) -> float:
    """``threshold`` if given, else the one the model was trained and evaluated with (its config's), else 0.5."""
    return getattr(classifier.model.config, "threshold", 0.5) if threshold is None else threshold


def examples(model: str) -> list[str]:
    """The model card's ``widget`` example texts (Hub metadata), or one SMS example when there are none."""
    try:
        card = ModelCard.load(str(Path(model) / "README.md")) if Path(model).is_dir() else ModelCard.load(model)
    except Exception:  # no card, or offline
        return FALLBACK_EXAMPLES
    texts = [entry.get("text") for entry in (card.data.to_dict().get("widget") or []) if isinstance(entry, dict)]
    return [t for t in texts if t] or FALLBACK_EXAMPLES


def classify(classifier: Pipeline, text: str, threshold: float | None = None) -> dict[str, float] | tuple[dict[str, float], str]:
    """``{label: probability}`` for every class (a regression model's ``{target: value}``); a multi-label
    model's also with the classes whose probability is above ``threshold``. An empty text is refused, a
    long one is cut with a warning."""
    if not text or not text.strip():
        raise gr.Error("Type or paste a message to classify.")
    limit = token_limit(classifier)
    length = len(classifier.tokenizer(text)["input_ids"])
    if length > limit:
        gr.Warning(f"The message has {length} tokens; the model reads only its first {limit}.")
    scores = {entry["label"]: float(entry["score"]) for entry in classifier([text], truncation=True, max_length=limit)[0]}
    if classifier.model.config.problem_type != "multi_label_classification":
        return scores
    threshold = model_threshold(classifier, threshold)
    chosen = [label for label, score in sorted(scores.items(), key=lambda item: -item[1]) if score > threshold]
    return scores, ", ".join(chosen) or f"none above {threshold}"


def build(classifier: Pipeline, example_texts: list[str], title: str = "GPT text classifier", threshold: float | None = None) -> gr.Blocks:
    threshold = model_threshold(classifier, threshold)
    labels = list(classifier.model.config.id2label.values())
    problem_type = classifier.model.config.problem_type
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\nThe GPT of *Build a Large Language Model (From Scratch)*, chapter 6, finetuned with hf_spam. Classes: "
            f"{', '.join(labels)}."
        )
        message = gr.Textbox(label="Message", lines=4, placeholder="Type a message", elem_id="message")
        button = gr.Button("Classify", variant="primary", elem_id="classify")
        if problem_type == "regression":
            outputs = [gr.JSON(label="Predicted values", elem_id="prediction")]
        else:
            outputs = [gr.Label(label="Prediction", num_top_classes=len(labels), elem_id="prediction")]
        if problem_type == "multi_label_classification":
            outputs.append(gr.Textbox(label=f"Classes above {threshold}", elem_id="chosen"))
        gr.Examples(examples=[[t] for t in example_texts], inputs=message)
        button.click(lambda text: classify(classifier, text, threshold), inputs=message, outputs=outputs, api_name="classify")
        message.submit(lambda text: classify(classifier, text, threshold), inputs=message, outputs=outputs, api_name=False)
    return demo


def launch(
    model: str, port: int | None = None, host: str = "127.0.0.1", threshold: float | None = None, backend: str | None = None
) -> None:
    classifier = load(model, backend)
    title = f"{Path(model).name or model}: GPT text classifier"
    build(classifier, examples(model), title, threshold).launch(server_name=host, server_port=port)


SPACE_README = """---
title: {title}
emoji: 📨
colorFrom: blue
colorTo: green
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
models:
- {model}
---

# {title}

A demo of [{model}](https://huggingface.co/{model}), a GPT classifier finetuned with hf_spam
(chapter 6 of *Build a Large Language Model (From Scratch)*). Type a message to see the predicted
class and every class's probability.
"""


def write_space(model: str, folder: str | os.PathLike) -> Path:
    """A ready-to-upload Space folder (``app.py``, ``requirements.txt``, README with Space metadata) for a Hub model id."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        raise ValueError(f"A Space loads its model from the Hub: pass the model's Hub id (user/name), not {model!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).read_text()
    app = source.replace('MODEL = os.environ.get("HF_SPAM_MODEL", "")', f'MODEL = os.environ.get("HF_SPAM_MODEL", "{model}")', 1)
    app += '\n\nif __name__ == "__main__":\n    launch(MODEL, host="0.0.0.0")\n'
    (folder / "app.py").write_text(app)
    (folder / "requirements.txt").write_text("torch\ntransformers>=5.24,<6\nsafetensors\nhuggingface_hub\n")
    title = model.split("/")[-1]
    (folder / "README.md").write_text(SPACE_README.format(title=title, model=model, gradio_version=gr.__version__))
    return folder
