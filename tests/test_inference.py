"""Classifying with a saved model (``hf_spam.serving.classifier``, ``hf-spam classify``): one line is one message
whichever way it comes in, and a missing model or an empty input is a sentence, not a traceback."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hf_spam import GPTForSequenceClassification, save_with_tokenizer
from hf_spam.data import load_sms_spam
from hf_spam.errors import ModelNotFoundError
from hf_spam.serving.classifier import load_classifier, split_lines
from hf_spam.training.recipe import run
from tests.helpers import TINY, parse, run_script, tiny_config


def train_run(*argv: str) -> dict:
    return run(*parse(*argv))


@pytest.fixture(scope="module")
def saved(gpt2_bpe, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})), folder)
    return folder


def classify_script(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return run_script("classify.py", *argv, input=stdin, timeout=300)


RAW = "page one\x0cpage two\nnext\u0085line\r\nsame\u2028message\n".encode()


def test_lines_split_at_newlines_only():
    """Form feed, NEL (U+0085) and LINE SEPARATOR (U+2028) are characters of a message, not line breaks
    (str.splitlines would split at them); CRLF ends a line."""
    assert split_lines(RAW, "stdin") == ["page one\x0cpage two", "next\u0085line", "same\u2028message"]


@pytest.mark.slow
def test_one_line_is_one_message_from_stdin_and_from_a_file(saved, tmp_path):
    raw = RAW
    (tmp_path / "texts.txt").write_bytes(raw)
    from_stdin = classify_script(str(saved), "--jsonl", stdin=raw)
    from_file = classify_script(str(saved), "--jsonl", "--file", str(tmp_path / "texts.txt"))
    assert from_stdin.returncode == from_file.returncode == 0, from_stdin.stderr.decode()[-2000:]
    texts = [[json.loads(line)["text"] for line in result.stdout.decode().split("\n") if line] for result in (from_stdin, from_file)]
    assert texts[0] == texts[1] == split_lines(raw, "stdin")


@pytest.mark.slow
def test_empty_input_is_a_message_not_a_traceback(saved, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    for argv, where in (((), "stdin"), (("--file", str(tmp_path / "empty.txt")), str(tmp_path / "empty.txt"))):
        result = classify_script(str(saved), *argv)
        stderr = result.stderr.decode()
        assert result.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
        assert f"No texts to classify: {where} is empty" in stderr


def test_a_model_that_is_not_there_is_named_as_a_folder_and_as_a_hub_id(tmp_path):
    with pytest.raises(ModelNotFoundError, match=rf"{tmp_path / 'runs' / 'spam'}: no such folder\. .*of the form user/name"):
        load_classifier(tmp_path / "runs" / "spam")
    with pytest.raises(ModelNotFoundError, match=r"nobody/nothing: no such folder here, and no Hub model of that id could be loaded"):
        load_classifier("nobody/nothing")  # offline in the tests (HF_HUB_OFFLINE=1), as on a machine without the network


@pytest.mark.slow
def test_classify_script_names_a_missing_model_without_a_traceback(tmp_path):
    result = classify_script(str(tmp_path / "missing"), "some text")
    assert result.returncode == 2 and "Traceback" not in result.stderr.decode()
    assert f"{tmp_path / 'missing'}: no such folder" in result.stderr.decode()


# ---------------------------------------------------------------------------------------------
# The saved folder reproduces its run: classify.py on the test texts gives all_results.json's test figures

REPRODUCE = [*TINY, "--num_train_epochs", "1", "--initial_eval_batches", "0", "--save_strategy", "no", "--eval_strategy", "no"]
REPRODUCE += ["--load_best_model_at_end", "false"]


def long_texts(sms_file, limit: int = 600) -> list[dict]:
    """SMS messages joined three at a time (longer than the runs' truncation lengths), with their first message's label."""
    splits = load_sms_spam(sms_file)
    texts = [" ".join(t.split()) for t in [*splits["train"]["text"], *splits["test"]["text"]]][: limit * 3]
    labels = [*splits["train"]["label"], *splits["test"]["label"]][: limit * 3]
    return [{"text": " ".join(texts[i : i + 3]), "spam": labels[i]} for i in range(0, len(texts) - 2, 3)]


def as_hub_snapshot(folder: Path, cache: Path, repo_id: str = "someone/reproduced") -> str:
    """``folder`` laid out as the Hub cache holds a downloaded model (refs/main naming a snapshot)."""
    commit = "0" * 39 + "1"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo_id


def classify_file(model: str, texts: list[str], tmp_path: Path, env: dict | None = None) -> list[dict]:
    path = tmp_path / "texts.txt"
    path.write_text("".join(text + "\n" for text in texts))
    result = run_script("classify.py", model, "--file", str(path), "--jsonl", env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["single_label", "regression", "multi_label"])
def test_classify_on_the_saved_folder_reproduces_the_runs_test_figures(problem, tmp_path, sms_file):
    """Each problem type trained with a non-default length, padding, pooling or threshold (what the saved config must
    carry): classify.py on the saved folder, and on the same folder loaded as a Hub id, gives the run's own test
    figures. Texts are longer than the truncation, so a folder that forgot it reads other tokens."""
    out = tmp_path / "run"
    if problem == "single_label":  # the SMS data, cut at 16 tokens, each batch padded to its longest
        argv = ["--data_file", str(sms_file), "--context_length", "16", "--padding", "dynamic"]
        test = load_sms_spam(sms_file)["test"]
        texts, truth = test["text"], test["label"]
    else:
        rows = long_texts(sms_file)
        for i, row in enumerate(rows):
            if problem == "regression":  # a spam score and a length, to predict from the first 24 tokens
                row["score"], row["length"] = row["spam"] + 0.1 * (i % 3), len(row["text"]) / 100
            else:
                row["tags"] = [tag for tag, on in (("spam", row["spam"]), ("digits", any(c.isdigit() for c in row["text"][:40]))) if on]
        for name, part in (("train", rows[:280]), ("validation", rows[280:330]), ("test", rows[330:])):
            (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        argv = [f"--{name}_file" for name in ("train", "validation", "test")]
        argv = [
            item
            for name, option in zip(("train", "validation", "test"), argv, strict=True)
            for item in (option, str(tmp_path / f"{name}.jsonl"))
        ]
        test_rows = rows[330:]
        texts = [r["text"] for r in test_rows]
        if problem == "regression":
            argv += ["--problem_type", "regression", "--label_column", "score", "length", "--padding", "max_length", "--max_length", "24"]
            argv += ["--pooling", "mean"]
            truth = [[r["score"], r["length"]] for r in test_rows]
        else:
            argv += ["--label_column", "tags", "--threshold", "0.3", "--context_length", "20", "--pooling", "first"]
            truth = [r["tags"] for r in test_rows]
    results = train_run(*REPRODUCE, *argv, "--output_dir", str(out))
    assert len(texts) > 100 and max(len(t) for t in texts) > 200

    hub_cache = tmp_path / "hub"
    repo_id = as_hub_snapshot(out, hub_cache)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    for model, run_env in ((str(out), None), (repo_id, env)):
        predicted = classify_file(model, texts, tmp_path, run_env)
        assert [p["text"] for p in predicted] == list(texts)
        if problem == "single_label":
            names = ["ham", "spam"]
            accuracy = sum(names.index(p["label"]) == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
            assert accuracy == results["test_accuracy"], (model, accuracy, results["test_accuracy"])
        elif problem == "regression":
            errors = [
                (p["values"][k] - t[i]) ** 2 for p, t in zip(predicted, truth, strict=True) for i, k in enumerate(("score", "length"))
            ]
            assert sum(errors) / len(errors) == pytest.approx(results["test_mse"], rel=1e-5, abs=0), model
        else:
            chosen = [set(p["labels"]) for p in predicted]
            exact = sum(c == set(t) for c, t in zip(chosen, truth, strict=True)) / len(truth)
            assert exact == results["test_exact_match"], (model, exact, results["test_exact_match"])
            hits = sum(len(c & set(t)) for c, t in zip(chosen, truth, strict=True))
            f1 = 2 * hits / (sum(map(len, chosen)) + sum(len(t) for t in truth))
            assert f1 == pytest.approx(results["test_f1_micro"], abs=1e-12), model
