"""Classifying with a saved model (``hf_spam.inference``, ``scripts/classify.py``): one line is one message
whichever way it comes in, and a missing model or an empty input is a sentence, not a traceback."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from hf_spam import GPTForSequenceClassification, save_with_tokenizer
from hf_spam.errors import ModelNotFoundError
from hf_spam.inference import load_classifier, split_lines
from tests.helpers import run_script, tiny_config


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
