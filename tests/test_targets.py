"""Regression and multi-label data (``hf_spam.data.targets``), their metrics against scikit-learn and scipy, and
training, saving and classifying such models end to end."""

import csv
import json

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from hf_spam.data import DataError, load_text_classification
from hf_spam.serving.classifier import classify, load_classifier
from hf_spam.training.evaluation import load_metric
from hf_spam.training.recipe import run
from tests.helpers import TINY, parse, run_script


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sms_rows(sms_file, count=400):
    """SMS texts with targets a model can learn from the text: spam or not, length, digits."""
    rows = []
    for line in sms_file.read_text(encoding="utf-8").splitlines()[:count]:
        label, text = line.split("\t", 1)
        rows.append((text, label == "spam", len(text) / 100, any(c.isdigit() for c in text)))
    return rows


def test_regression_targets_are_floats_and_bad_values_name_the_line(tmp_path):
    path = write_csv(tmp_path / "scores.csv", ("review", "stars", "helpful"), [(f"text {i}", i % 5 + 0.5, i % 3) for i in range(40)])
    data = load_text_classification(train_file=path, text_column="review", label_column="stars", problem_type="regression")
    assert data.problem_type == "regression" and data.label_names == ["stars"]
    assert data.splits["train"].features["label"].dtype == "float32"
    assert sorted(set(data.splits["train"]["label"]) | set(data.splits["test"]["label"])) == [0.5, 1.5, 2.5, 3.5, 4.5]
    two = load_text_classification(train_file=path, text_column="review", label_column=["stars", "helpful"], problem_type="regression")
    assert two.label_names == ["stars", "helpful"] and len(two.splits["train"][0]["label"]) == 2
    write_csv(tmp_path / "bad.csv", ("review", "stars"), [("fine", 1.0), ("odd", "four"), ("more", 2.0)])
    with pytest.raises(DataError, match=r"bad.csv line 3: column 'stars' holds 'four', not a number"):
        load_text_classification(train_file=tmp_path / "bad.csv", text_column="review", label_column="stars", problem_type="regression")
    write_csv(tmp_path / "flat.csv", ("review", "stars"), [(f"t{i}", 3.0) for i in range(20)])
    with pytest.raises(DataError, match=r"flat.csv: column 'stars' has the value 3.0 in every training row"):
        load_text_classification(train_file=tmp_path / "flat.csv", text_column="review", label_column="stars", problem_type="regression")
    with pytest.raises(DataError, match=r"mixes values .*--problem_type regression"):
        load_text_classification(train_file=path, text_column="review", label_column="stars")  # 0.5 is not a class id
    with pytest.raises(DataError, match="--balance undersamples classes"):
        load_text_classification(train_file=path, text_column="review", label_column="stars", problem_type="regression", balance=True)


def test_multi_label_from_columns_or_lists_with_clear_errors(tmp_path):
    rows = [(f"text {i}", i % 2, int(i % 3 == 0), int(i % 5 == 0)) for i in range(60)]
    path = write_csv(tmp_path / "tags.csv", ("text", "toxic", "insult", "threat"), rows)
    data = load_text_classification(train_file=path, label_column=["toxic", "insult", "threat"])  # inferred: several columns
    assert data.problem_type == "multi_label_classification" and data.label_names == ["toxic", "insult", "threat"]
    expected = {text: [float(a), float(b), float(c)] for text, a, b, c in rows}
    for split in data.splits.values():
        assert all(expected[row["text"]] == row["label"] for row in split)
    lists = tmp_path / "tags.jsonl"
    lists.write_text("".join(json.dumps({"text": f"t{i}", "tags": [["sport"], ["news", "sport"], []][i % 3]}) + "\n" for i in range(30)))
    data = load_text_classification(train_file=lists, label_column="tags")  # inferred: a column of lists
    assert data.label_names == ["news", "sport"]
    by_text = {row["text"]: row["label"] for split in data.splits.values() for row in split}
    assert by_text["t0"] == [0.0, 1.0] and by_text["t1"] == [1.0, 1.0] and by_text["t2"] == [0.0, 0.0]
    write_csv(tmp_path / "two.csv", ("text", "toxic", "insult"), [("a", 0, 1), ("b", 2, 0), ("c", 1, 1)])
    with pytest.raises(DataError, match=r"two.csv line 3: column 'toxic' holds 2, not 0 or 1"):
        load_text_classification(train_file=tmp_path / "two.csv", label_column=["toxic", "insult"])
    write_csv(tmp_path / "flat.csv", ("text", "tags"), [("a", "news"), ("b", "sport")])
    with pytest.raises(DataError, match=r"flat.csv line 2: column 'tags' holds 'news', not a list of classes.*one 0/1 column per class"):
        load_text_classification(train_file=tmp_path / "flat.csv", label_column="tags", problem_type="multi_label_classification")
    write_csv(tmp_path / "never.csv", ("text", "toxic", "insult"), [(f"t{i}", i % 2, 0) for i in range(30)])
    with pytest.raises(DataError, match=r"classes \['insult'\] are never set in the training data"):
        load_text_classification(train_file=tmp_path / "never.csv", label_column=["toxic", "insult"])
    with pytest.raises(DataError, match="one per class is multi-label"):
        load_text_classification(train_file=path, label_column=["toxic", "insult"], problem_type="single_label_classification")


def test_regression_and_multi_label_metrics_agree_with_scikit_learn_and_scipy():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=50)
    guess = truth + rng.normal(scale=0.5, size=50)
    guess[:5] = guess[5]  # ties, which Spearman ranks by their mean rank
    ours = load_metric("regression").compute(predictions=guess, references=truth)
    assert ours["mse"] == pytest.approx(mean_squared_error(truth, guess))
    assert ours["mae"] == pytest.approx(mean_absolute_error(truth, guess))
    assert ours["pearson"] == pytest.approx(pearsonr(guess, truth)[0])
    assert ours["spearman"] == pytest.approx(spearmanr(guess, truth)[0])
    two = load_metric("regression", "multiple").compute(predictions=np.stack([guess, truth], 1), references=np.stack([truth, truth], 1))
    assert two["mse_per_target"] == pytest.approx([mean_squared_error(truth, guess), 0.0])
    references = rng.integers(0, 2, size=(60, 4))
    predictions = np.where(rng.random((60, 4)) < 0.8, references, 1 - references)
    ours = load_metric("multi_label").compute(predictions=predictions, references=references)
    assert ours["f1_micro"] == pytest.approx(f1_score(references, predictions, average="micro"))
    assert ours["f1_macro"] == pytest.approx(f1_score(references, predictions, average="macro"))
    assert ours["exact_match"] == pytest.approx(accuracy_score(references, predictions))  # subset accuracy
    assert ours["f1_per_class"] == pytest.approx(f1_score(references, predictions, average=None).tolist())


def recomputed(folder, split_rows, problem_type):
    """The saved model's outputs on rows, by a plain forward of the reloaded folder (not the run's numbers)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.problem_type == problem_type
    with torch.no_grad():
        return torch.cat([model(**tokenizer([text], return_tensors="pt")).logits for text in split_rows]).numpy()


@pytest.mark.slow
def test_regression_run_reports_what_the_saved_model_predicts(tmp_path, sms_file):
    rows = sms_rows(sms_file)
    write_csv(tmp_path / "train.csv", ("text", "length"), [(t, n) for t, _, n, _ in rows[:300]])
    write_csv(tmp_path / "test.csv", ("text", "length"), [(t, n) for t, _, n, _ in rows[300:]])
    argv = ["--train_file", str(tmp_path / "train.csv"), "--test_file", str(tmp_path / "test.csv"), "--label_column", "length"]
    results = run(*parse(*argv, "--problem_type", "regression", *TINY, "--max_steps", "30", "--output_dir", str(tmp_path / "out")))
    assert {"test_mse", "test_mae", "test_pearson", "test_spearman", "eval_mse"} <= results.keys()
    texts, truth = [t for t, *_ in rows[300:]], np.array([n for *_, n, _ in rows[300:]])
    predicted = recomputed(tmp_path / "out", texts, "regression")[:, 0]
    assert results["test_mse"] == pytest.approx(mean_squared_error(truth, predicted), rel=1e-4)
    assert results["test_pearson"] == pytest.approx(pearsonr(predicted, truth)[0], rel=1e-4)
    answers = classify(load_classifier(tmp_path / "out"), texts[:3])
    assert [a["values"]["length"] for a in answers] == pytest.approx(predicted[:3].tolist(), abs=1e-5)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| split | mse | pearson | mae | spearman | loss |" in card and "(regression)" in card


@pytest.mark.slow
def test_multi_label_run_with_the_cache_and_threshold_everywhere(tmp_path, sms_file):
    """Several 0/1 columns, the prefix cache on (the default): the run's micro-F1 is the saved model's,
    and classify.py and the library list every class above --threshold."""
    rows = sms_rows(sms_file)
    header = ("text", "spam", "long", "digits")
    write_csv(tmp_path / "train.csv", header, [(t, int(s), int(n > 0.8), int(d)) for t, s, n, d in rows[:300]])
    write_csv(tmp_path / "test.csv", header, [(t, int(s), int(n > 0.8), int(d)) for t, s, n, d in rows[300:]])
    argv = [
        "--train_file",
        str(tmp_path / "train.csv"),
        "--test_file",
        str(tmp_path / "test.csv"),
        "--label_column",
        "spam",
        "long",
        "digits",
    ]
    model = ["--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2", "--trainable_layers", "last_block"]
    results = run(*parse(*argv, *model, "--max_steps", "40", "--learning_rate", "1e-3", "--output_dir", str(tmp_path / "out")))
    assert "prefix_cache_train_key" in results  # the frozen block's output came from the cache
    texts = [t for t, *_ in rows[300:]]
    truth = np.array([[int(s), int(n > 0.8), int(d)] for _, s, n, d in rows[300:]])
    probabilities = 1 / (1 + np.exp(-recomputed(tmp_path / "out", texts, "multi_label_classification")))
    assert results["test_f1_micro"] == pytest.approx(f1_score(truth, probabilities > 0.5, average="micro"), abs=1e-9)
    assert results["test_exact_match"] == pytest.approx(accuracy_score(truth, probabilities > 0.5), abs=1e-9)
    answers = classify(load_classifier(tmp_path / "out"), texts[:4], threshold=0.3)
    for answer, row in zip(answers, probabilities[:4], strict=True):
        assert answer["scores"] == pytest.approx(dict(zip(("spam", "long", "digits"), row.tolist(), strict=True)), abs=1e-5)
        assert set(answer["labels"]) == {name for name, p in answer["scores"].items() if p > 0.3}
    printed = run_script("classify.py", str(tmp_path / "out"), "--threshold", "0.3", texts[0])
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.split("\t")[0] == (",".join(answers[0]["labels"]) or "-")
