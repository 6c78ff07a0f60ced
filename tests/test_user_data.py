"""The user's own data: their splits kept, bad rows reported or dropped with editor line numbers,
their column and class names everywhere, any encoding, numeric-looking texts kept as text."""

import csv
import json
import logging
import sys
import unicodedata

import pytest
from datasets import ClassLabel, Dataset, Features, Value
from transformers import TrainerCallback

from hf_spam.cli import main as cli_main
from hf_spam.data import DataError, docstring_corpus, load_sms_spam, load_text_classification
from hf_spam.training.recipe import run
from tests.helpers import parse


def write_csv(path, header, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def three_way_folder(folder, names=("train.csv", "dev.csv", "TEST.csv")):
    folder.mkdir()
    rows = {}
    for name, count in zip(names, (60, 12, 15), strict=True):
        rows[name] = [(f"{name} message {i}", ["sports", "news", "weather"][i % 3]) for i in range(count)]
        write_csv(folder / name, ("CONTENT", "airline_sentiment"), rows[name])
    return rows


def test_a_folders_splits_are_kept_row_for_row(tmp_path):
    rows = three_way_folder(tmp_path / "data")
    data = load_text_classification(tmp_path / "data", text_column="CONTENT", label_column="airline_sentiment")
    for split, name in (("train", "train.csv"), ("validation", "dev.csv"), ("test", "TEST.csv")):
        assert data.splits[split]["text"] == [text for text, _ in rows[name]], split
        names = data.splits[split].features["label"].names
        assert [names[i] for i in data.splits[split]["label"]] == [label for _, label in rows[name]]
        assert data.origin[split] == f"user: {name}"
    assert not set(data.splits["test"]["text"]) & set(data.splits["train"]["text"]), "test rows must never reach training"
    # the same files named explicitly, as run_classification.py's --train_file/--validation_file/--test_file
    explicit = load_text_classification(
        train_file=tmp_path / "data" / "train.csv",
        validation_file=tmp_path / "data" / "dev.csv",
        test_file=tmp_path / "data" / "TEST.csv",
        text_column="CONTENT",
        label_column="airline_sentiment",
    )
    assert all(explicit.splits[s]["text"] == data.splits[s]["text"] for s in ("train", "validation", "test"))


def test_only_the_missing_split_is_cut_and_only_from_train(tmp_path):
    rows = three_way_folder(tmp_path / "data", names=("train.csv", "valid.csv", "test.csv"))
    (tmp_path / "data" / "valid.csv").unlink()
    data = load_text_classification(tmp_path / "data", text_column="CONTENT", label_column="airline_sentiment")
    assert data.splits["test"]["text"] == [t for t, _ in rows["test.csv"]]
    train_texts = {t for t, _ in rows["train.csv"]}
    assert set(data.splits["validation"]["text"]) <= train_texts and set(data.splits["train"]["text"]) <= train_texts
    assert len(data.splits["validation"]) + len(data.splits["train"]) == 60 and len(data.splits["validation"]) == 7  # 1/8 of train
    assert data.origin["validation"] == "cut from train.csv"


def test_an_unrecognised_file_name_is_an_error_not_a_merge(tmp_path):
    three_way_folder(tmp_path / "data")
    write_csv(tmp_path / "data" / "extra.csv", ("CONTENT", "airline_sentiment"), [("x", "news")])
    with pytest.raises(
        DataError, match=r"cannot tell which split extra.csv is \(files: \['TEST.csv', 'dev.csv', 'extra.csv', 'train.csv'\]\)"
    ):
        load_text_classification(tmp_path / "data", text_column="CONTENT", label_column="airline_sentiment")


def test_a_hub_dataset_keeps_its_splits_and_ignores_unsupervised(tmp_path, caplog):
    """A Hub dataset repository laid out like IMDB (train, test, unsupervised with label -1), read by datasets."""
    repo = tmp_path / "imdb-like"
    (repo / "data").mkdir(parents=True)
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    for split, labels in (("train", [0, 1] * 10), ("test", [1, 0] * 5), ("unsupervised", [-1] * 8)):
        Dataset.from_dict({"text": [f"{split} review {i}" for i in range(len(labels))], "label": labels}, features=features).to_parquet(
            repo / "data" / f"{split}.parquet"
        )
    configs = "".join(f"  - split: {s}\n    path: data/{s}.parquet\n" for s in ("train", "test", "unsupervised"))
    (repo / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n{configs}---\n# an IMDB-like dataset\n")
    with caplog.at_level(logging.WARNING):
        data = load_text_classification(repo)
    assert "ignoring splits ['unsupervised']" in caplog.text
    assert data.splits["train"].features["label"].names == ["neg", "pos"]
    assert data.splits["test"]["text"] == [f"test review {i}" for i in range(10)]
    assert not any(t.startswith("unsupervised") for s in data.splits.values() for t in s["text"])
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 20
    chosen = load_text_classification(repo, splits=["train", "validation=test"])
    assert chosen.splits["validation"]["text"] == data.splits["test"]["text"] and "cut from" in chosen.origin["test"]
    with pytest.raises(DataError, match=r"column 'label' is missing \(-1\)"):
        load_text_classification(repo, splits=["train", "test=unsupervised"])


def test_bad_rows_name_the_file_the_editor_line_and_the_users_column(tmp_path, caplog):
    rows = [(f"message {i}", "spam" if i % 2 else "ham") for i in range(30)]
    rows[3] = ("a text with\na line break inside quotes", "ham")  # lines 5-6: later rows shift by one line
    rows[7] = ("", "spam")  # line 10
    rows[12] = ("no label here", "")  # line 15
    rows[20] = ("   ", "ham")  # line 23
    path = write_csv(tmp_path / "train.csv", ("CONTENT", "CLASS"), rows)
    with pytest.raises(DataError, match=r"^train.csv line 10: column 'CONTENT' is empty .* --invalid_rows drop"):
        load_text_classification(path, text_column="CONTENT", label_column="CLASS")
    with caplog.at_level(logging.WARNING):
        data = load_text_classification(path, text_column="CONTENT", label_column="CLASS", invalid_rows="drop")
    assert data.dropped == {"train": ["line 10", "line 15", "line 23"]}
    assert "dropped 3 rows with an empty text or a missing label (line 10, line 15, line 23)" in caplog.text
    assert sum(len(s) for s in data.splits.values()) == 27


def test_encoding_numeric_texts_and_label_names(tmp_path):
    latin = write_csv(tmp_path / "latin.csv", ("text", "label"), [("café crème", 1), ("naïve", 0)] * 10, encoding="latin-1")
    with pytest.raises(DataError, match=r"latin.csv line 2 \(byte offset 15\): byte 0xe9 is not valid utf-8.*--encoding latin-1"):
        load_text_classification(latin)
    loaded = load_text_classification(latin, encoding="latin-1").splits
    assert {t for s in loaded.values() for t in s["text"]} == {"café crème", "naïve"}

    codes = write_csv(tmp_path / "codes.csv", ("code", "label"), [("007", 0), ("1e5", 1), ("NA", 0), ("0123", 1)] * 5)
    data = load_text_classification(codes, text_column="code", label_names=["ham", "spam"])
    texts = {t for s in data.splits.values() for t in s["text"]}
    assert texts == {"007", "1e5", "NA", "0123"}, "texts that look like numbers or missing values stay text"
    assert data.splits["train"].features["label"].names == ["ham", "spam"]
    with pytest.raises(DataError, match=r"class id 1 but --label_names names only 1 classes"):
        load_text_classification(codes, text_column="code", label_names=["ham"])


def test_balance_touches_the_users_training_split_only(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", ("text", "label"), [(f"a{i}", "a") for i in range(40)] + [(f"b{i}", "b") for i in range(10)])
    write_csv(folder / "validation.csv", ("text", "label"), [(f"va{i}", "a") for i in range(9)] + [("vb", "b")])
    write_csv(folder / "test.csv", ("text", "label"), [(f"ta{i}", "a") for i in range(7)] + [("tb", "b")])
    data = load_text_classification(folder, balance=True)
    assert sorted(data.splits["train"]["label"]) == [0] * 10 + [1] * 10
    assert len(data.splits["validation"]) == 10 and len(data.splits["test"]) == 8


def test_the_sms_path_is_unchanged(sms_file):
    splits = load_sms_spam(sms_file)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [1045, 149, 300]


@pytest.mark.slow
def test_three_classes_end_to_end_with_best_epoch_and_early_stopping(gpt2_bpe, tmp_path):
    """A real 3-class CSV (stdlib docstrings) with the user's column names and split files, through the
    training script's defaults: best epoch kept, early stopping, macro-averaged card, pipeline names."""
    sizes = docstring_corpus.write(tmp_path / "docs")
    out = tmp_path / "out"
    argv = ["--train_file", str(tmp_path / "docs" / "train.csv"), "--validation_file", str(tmp_path / "docs" / "dev.csv")]
    argv += ["--test_file", str(tmp_path / "docs" / "test.csv"), "--text_column", "docstring", "--label_column", "topic"]
    argv += ["--weights", "random", "--config_overrides", "n_layers=1,emb_dim=64,n_heads=2", "--trainable_layers", "all"]
    argv += ["--learning_rate", "1e-3", "--num_train_epochs", "6", "--early_stopping_patience", "1", "--initial_eval_batches", "0"]
    recorder = StateRecorder()
    results = run(*parse(*argv, "--output_dir", str(out)), callbacks=[recorder])
    assert json.loads((out / "all_results.json").read_text())["test_accuracy"] == results["test_accuracy"]
    assert sizes == {"train": 923, "dev": 127, "test": 108} or sys.version_info[:2] != (3, 11)  # the README's figures
    assert results["test_confusion_matrix"] and sum(map(sum, results["test_confusion_matrix"])) == sizes["test"]

    history = [e["eval_validation_accuracy"] for e in recorder.state.log_history if "eval_validation_accuracy" in e]
    assert results["eval_accuracy"] == pytest.approx(max(history)) == pytest.approx(recorder.state.best_metric), "the best epoch is saved"
    if len(history) < 6:  # stopped early: the last epoch did not improve on the best (patience 1)
        assert history[-1] <= max(history[:-1])
    assert not list(out.glob("checkpoint-*")), "checkpoints are removed after a successful run"

    card = (out / "README.md").read_text()
    assert "macro-averaged: the unweighted mean over the 3 classes" in card
    assert "- **Dataset**: train.csv, dev.csv, test.csv\n" in card, "the dataset is named by its files, not by a path"
    with open(tmp_path / "docs" / "dev.csv", newline="", encoding="utf-8") as handle:
        first_dev_text = list(csv.reader(handle))[1][0]
    assert f"classify({json.dumps(first_dev_text)})" in card, "the usage example is a real text of the user's validation split"
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(out), trust_remote_code=True, top_k=None)
    assert {r["label"] for r in classify(["Return the square root of x."])[0]} == {"files", "network", "numbers"}
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "files", "1": "network", "2": "numbers"}


class StateRecorder(TrainerCallback):
    """Keeps Trainer's final state (log history, best metric) for the test to read."""

    def on_train_end(self, args, state, control, **kwargs):
        self.state = state


# ---------------------------------------------------------------------------------------------
# Files that would silently give a wrong model: each is an error or a warning that says what to do


def test_one_class_in_training_is_an_error(tmp_path):
    write_csv(tmp_path / "train.csv", ("text", "label"), [(f"message {i}", "spam") for i in range(30)])
    with pytest.raises(DataError, match=r"train.csv: every training row has the label 'spam' \(column 'label'\).*at least two classes"):
        load_text_classification(tmp_path / "train.csv")


def test_a_tsv_quote_that_swallows_rows_is_reported_not_merged(tmp_path):
    lines = ["text\tlabel", "hello there\tham", '"unbalanced start of a text\tspam', "another line\tham", 'ends with a quote"\tspam']
    lines += [f"message {i}\t{['ham', 'spam'][i % 2]}" for i in range(20)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"train.tsv line 3: a double quote opens a field that closes only on line 5.*24 lines, 22 rows.*--quoting none"
    ):
        load_text_classification(tmp_path / "train.tsv")
    rows = load_text_classification(tmp_path / "train.tsv", quoting="none").splits
    texts = [t for split in rows.values() for t in split["text"]]
    assert len(texts) == 24 and '"unbalanced start of a text' in texts, "with --quoting none every line is one row"
    quoted = ["text\tlabel", '"a text with\na line break\tinside"\tham', "plain\tspam", "plain too\tham"]
    (tmp_path / "quoted.tsv").write_text("\n".join(quoted) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: a double quote opens a field that closes only on line 3"):
        load_text_classification(tmp_path / "quoted.tsv")  # a tab inside a quoted multi-line text: reported all the same


def test_labels_that_differ_in_case_or_spaces_are_warned_about(tmp_path, caplog):
    rows = [(f"message {i}", "spam" if i % 2 else "ham") for i in range(40)] + [("odd one", "spam "), ("odder", "Spam"), ("x", "Spam")]
    write_csv(tmp_path / "train.csv", ("text", "label"), rows)
    with caplog.at_level(logging.WARNING):
        data = load_text_classification(tmp_path / "train.csv")
    assert (
        "labels that differ only in case, width or surrounding spaces: 'spam' (20 rows), 'Spam' (2 rows), 'spam ' (1 rows)" in caplog.text
    )
    assert data.splits["train"].features["label"].names == ["Spam", "ham", "spam", "spam "], "kept as given, as the warning says"


def test_labels_in_two_unicode_forms_are_one_class(tmp_path, caplog):
    """`späm` typed as one character (NFC) and as `a` + a combining diaeresis (NFD) look alike: one class, said so
    with ascii() of each form; NFD only in the test split is not an unseen class. Multi-label lists likewise."""
    composed, decomposed = unicodedata.normalize("NFC", "späm"), unicodedata.normalize("NFD", "späm")
    assert composed != decomposed
    rows = [(f"message {i}", ["ham", composed, decomposed][i % 3]) for i in range(60)]
    write_csv(tmp_path / "train.csv", ("text", "label"), rows)
    with caplog.at_level(logging.WARNING):
        data = load_text_classification(tmp_path / "train.csv")
    assert data.splits["train"].features["label"].names == ["ham", composed]
    assert f"writes the label {ascii(composed)} in 2 Unicode forms ({ascii(composed)} (" in caplog.text and ascii(decomposed) in caplog.text
    (tmp_path / "split").mkdir()
    write_csv(tmp_path / "split" / "train.csv", ("text", "label"), [(f"t{i}", ["ham", composed][i % 2]) for i in range(20)])
    write_csv(tmp_path / "split" / "test.csv", ("text", "label"), [(f"u{i}", ["ham", decomposed][i % 2]) for i in range(6)])
    data = load_text_classification(tmp_path / "split", label_names=["ham", decomposed])
    assert data.label_names == ["ham", composed] and sorted(data.splits["test"]["label"]) == [0, 0, 0, 1, 1, 1]
    lists = [{"text": f"m{i}", "tags": [[composed], [decomposed, "x"], ["x"]][i % 3]} for i in range(30)]
    (tmp_path / "tags.jsonl").write_text("".join(json.dumps(row) + "\n" for row in lists))
    data = load_text_classification(tmp_path / "tags.jsonl", label_column=["tags"])
    assert data.label_names == [composed, "x"]


def test_each_file_gets_its_encoding_and_a_bom_or_utf8_is_never_misread(tmp_path, caplog):
    rows = [("café crème", "a"), ("naïve", "b")] * 10
    write_csv(tmp_path / "train.csv", ("text", "label"), rows, encoding="cp1252")
    write_csv(tmp_path / "test.csv", ("text", "label"), rows, encoding="utf-8")
    files = {"train_file": tmp_path / "train.csv", "test_file": tmp_path / "test.csv"}
    with pytest.raises(
        DataError, match=r"test.csv line 2: the file is valid UTF-8 \('é'\), but --encoding cp1252 would read .*'Ã©'.*train=cp1252"
    ):
        load_text_classification(**files, encoding="cp1252")
    data = load_text_classification(**files, encoding={"train": "cp1252", "test": "utf-8"})
    assert set(data.splits["train"]["text"]) | set(data.splits["test"]["text"]) == {"café crème", "naïve"}
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "test.csv").read_bytes())  # Excel's "CSV UTF-8"
    with caplog.at_level(logging.WARNING):
        bom = load_text_classification(train_file=tmp_path / "bom.csv", encoding="cp1252")
    assert "starts with a utf-8-sig byte-order mark: read as utf-8-sig, not as cp1252" in caplog.text
    assert set(bom.splits["train"]["text"]) == {"café crème", "naïve"}, "the header is 'text', not '\\ufefftext'"
    (tmp_path / "train.jsonl").write_bytes(
        "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in rows).encode("cp1252")
    )
    with pytest.raises(DataError, match=r"train.jsonl line 1 .*not valid utf-8.*--encoding"):
        load_text_classification(tmp_path / "train.jsonl")
    assert set(load_text_classification(tmp_path / "train.jsonl", encoding="cp1252").splits["train"]["text"]) == {"café crème", "naïve"}


def test_empty_header_only_and_wrongly_separated_files_name_split_and_file(tmp_path):
    write_csv(tmp_path / "train.csv", ("text", "label"), [(f"message {i}", i % 2) for i in range(40)])
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n\n")
    (tmp_path / "semicolons.csv").write_text("text;label\nhello;1\nworld;0\n")
    cases = {
        "empty.csv": r"empty.csv \(the validation split\) is empty",
        "header.csv": r"header.csv \(the validation split\) has a header line but no rows",
        "semicolons.csv": r"semicolons.csv \(the validation split\): its header 'text;label' is a single column, so the file is not "
        r"comma-separated \(.csv\); it seems separated by semicolons",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_text_classification(train_file=tmp_path / "train.csv", validation_file=tmp_path / name)


def test_several_files_for_one_split_are_an_option_error(tmp_path, caplog):
    """datasets takes a list of data files; --train_file takes one: the extra value is named in one line, exit 2."""
    argv = ["--train_file", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exited:
        cli_main(["train", *argv])
    assert exited.value.code == 2 and len(caplog.records) == 1
    assert f"values no option takes: {tmp_path / 'b.csv'}." in caplog.text and "take one file each" in caplog.text
