"""The SMS data must be the book's, row for row; other data goes through the same procedure."""

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import datasets
import pytest

from hf_spam.data import DataError, describe, load_sms_spam, load_text_classification, tokenize
from hf_spam.tokenizer import tiktoken_gpt2
from tests.helpers import ROOT
from tests.support import book_reference


def test_sms_split_is_row_for_row_the_books(sms_file):
    frame, (train_df, validation_df, test_df) = book_reference.book_splits(sms_file)
    assert (len(frame), (frame["Label"] == "ham").sum(), (frame["Label"] == "spam").sum()) == (5572, 4825, 747)
    splits = load_sms_spam(sms_file)
    assert splits["train"].features["label"].names == ["ham", "spam"]
    for ours, book in ((splits["train"], train_df), (splits["validation"], validation_df), (splits["test"], test_df)):
        assert ours["text"] == book["Text"].tolist()
        assert ours["label"] == book["Label"].tolist()
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [1045, 149, 300]


def test_book_padding_matches_spam_dataset(sms_file):
    _, (train_df, validation_df, test_df) = book_reference.book_splits(sms_file)
    tokenized = tokenize(load_sms_spam(sms_file), "longest_train")
    book_train = book_reference.SpamDataset(train_df, tiktoken_gpt2())
    assert tokenized.max_length == book_train.max_length == 120
    assert tokenized.splits["train"]["input_ids"] == book_train.encoded_texts
    book_test = book_reference.SpamDataset(test_df, tiktoken_gpt2(), max_length=book_train.max_length)
    assert tokenized.splits["test"]["input_ids"] == book_test.encoded_texts
    assert tokenized.truncated["train"] == 0
    report = describe(load_sms_spam(sms_file), tokenized)
    assert "train: 1045 rows" in report and "130 batches of 8" in report and "longest 120 tokens" in report
    assert "validation: 149 rows" in report and "19 batches" in report and "test: 300 rows" in report and "38 batches" in report


@pytest.mark.parametrize(("padding", "width"), [("max_length", 1024), ("dynamic", None), ("none", None)])
def test_other_paddings(sms_file, padding, width):
    splits = load_sms_spam(sms_file)
    tokenized = tokenize(splits, padding, context_length=1024)
    ids = tokenized.splits["train"]["input_ids"]
    if width:
        assert {len(row) for row in ids} == {width}
        assert tokenized.collator is None
    else:
        assert ids == [tiktoken_gpt2().encode(t) for t in splits["train"]["text"]]
        batch = tokenized.collator([{"input_ids": ids[0], "label": 0}, {"input_ids": ids[1], "label": 1}])
        assert batch["input_ids"].shape[1] == max(len(ids[0]), len(ids[1])) and batch["attention_mask"].sum() == len(ids[0]) + len(ids[1])


def test_texts_longer_than_the_context_are_truncated_and_counted(sms_file, caplog):
    tokenized = tokenize(load_sms_spam(sms_file), "dynamic", context_length=32)
    assert max(len(r) for r in tokenized.splits["train"]["input_ids"]) == 32
    assert tokenized.truncated["train"] > 0
    assert f"{tokenized.truncated['train']} train texts are longer than 32 tokens" in caplog.text


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_input_and_bad_files(tmp_path, sms_file):
    zipped = write_zip(tmp_path / "sms.zip", {"SMSSpamCollection": sms_file.read_bytes(), "readme": "x"})
    assert load_sms_spam(zipped)["test"]["text"] == load_sms_spam(sms_file)["test"]["text"]
    cases = {
        b"ham\thello\nspam no tab here\n": r"line 2: no tab",
        b"ham\thello\neggs\tsome text\n": r"line 2: unknown label 'eggs'",
        b"ham\thello\nspam\t   \n": r"line 2: empty message",
        b"ham\thello\nham\tcaf\xe9\n": r"line 2: byte 0xe9 is not UTF-8",
    }
    for content, message in cases.items():
        (tmp_path / "bad").write_bytes(content)
        with pytest.raises(DataError, match=str(tmp_path / "bad") + " " + message):
            load_sms_spam(tmp_path / "bad")
    with pytest.raises(DataError, match="does not exist"):
        load_sms_spam(tmp_path / "missing")
    with pytest.raises(DataError, match=r"has no SMSSpamCollection \(it holds \['other.txt'\]\)"):
        load_sms_spam(write_zip(tmp_path / "wrong.zip", {"other.txt": "ham\thi\n"}))


class ZipServer(http.server.BaseHTTPRequestHandler):
    """Serves one zip on loopback and counts GETs (stands in for archive.ics.uci.edu)."""

    payload = b""
    requests = 0

    def do_GET(self):  # noqa: N802
        type(self).requests += 1
        if self.path != "/sms.zip":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def do_HEAD(self):  # noqa: N802
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def zip_server(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ZipServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_once_then_from_cache(tmp_path, sms_file, zip_server):
    buffer = io.BytesIO()
    write_zip(buffer, {"sms+spam+collection/SMSSpamCollection": sms_file.read_bytes()})
    ZipServer.payload, ZipServer.requests = buffer.getvalue(), 0
    first = load_sms_spam(url=f"{zip_server}/sms.zip", cache_dir=str(tmp_path / "cache"))
    assert ZipServer.requests >= 1
    requests_after_first = ZipServer.requests
    second = load_sms_spam(url=f"{zip_server}/sms.zip", cache_dir=str(tmp_path / "cache"))
    assert ZipServer.requests == requests_after_first, "the second call must not touch the network"
    assert first["train"]["text"] == second["train"]["text"] == load_sms_spam(sms_file)["train"]["text"]

    with pytest.raises(DataError, match=r"Could not download the SMS Spam Collection from .*/missing.zip.*data_file="):
        load_sms_spam(url=f"{zip_server}/missing.zip", cache_dir=str(tmp_path / "cache"))

    corrupt = io.BytesIO()
    write_zip(corrupt, {"SMSSpamCollection": sms_file.read_bytes().replace(b"Free", b"Fr3e")})
    ZipServer.payload = corrupt.getvalue()
    expected = hashlib.sha256(sms_file.read_bytes()).hexdigest()
    with pytest.raises(DataError, match=f"expected {expected}: the download is corrupt"):
        load_sms_spam(url=f"{zip_server}/sms.zip", cache_dir=str(tmp_path / "other-cache"))


def test_any_csv_with_string_labels_and_custom_columns(tmp_path):
    rows = ["message,category"] + [f"text number {i},{['sports', 'news', 'weather'][i % 3]}" for i in range(60)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    splits = load_text_classification(tmp_path / "data.csv", text_column="message", label_column="category", balance=True).splits
    assert splits["train"].features["label"].names == ["news", "sports", "weather"]
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [42, 6, 12]
    assert set(splits["train"].column_names) == {"text", "label"}

    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "train.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "", "label": 0}\n')
    with pytest.raises(DataError, match=r"train.jsonl line 2: column 'text' is empty"):
        load_text_classification(tmp_path / "jsonl")
    with pytest.raises(DataError, match=r"data.csv has no column 'body'; its columns are \['message', 'category'\]"):
        load_text_classification(tmp_path / "data.csv", text_column="body")


class FilesServer(http.server.BaseHTTPRequestHandler):
    """Serves fixed files on loopback (stands in for archive.ics.uci.edu and openaipublic.blob.core.windows.net)."""

    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_clone_without_test_data_downloads_once_then_runs_offline(tmp_path, sms_file):
    """The test suite on a machine with nothing beside the checkout: without HF_SPAM_TEST_DATA the data tests
    fetch the SMS zip and GPT-2's BPE files through the product's download code (here from a loopback server
    at the overridable URLs) into fresh caches; a second session runs offline from those caches; and with
    neither the data nor a network they are skipped with one message saying what to set."""
    from hf_spam.tokenizer import _read_bpe_file, gpt2_bpe_files

    archive = io.BytesIO()
    write_zip(archive, {"sms+spam+collection/SMSSpamCollection": sms_file.read_bytes()})
    FilesServer.files = {"/sms.zip": archive.getvalue()}
    for url, sha256 in gpt2_bpe_files().values():
        FilesServer.files["/gpt2/" + url.rsplit("/", 1)[1]] = _read_bpe_file(url, sha256)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FilesServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    unset = ("HF_SPAM_TEST_DATA", "TIKTOKEN_CACHE_DIR", "HF_SPAM_NO_SKIPS", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # ours, not a user's
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"HF_DATASETS_CACHE": str(tmp_path / "datasets"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")}
    env |= {"HF_SPAM_SMS_SPAM_URL": f"{base}/sms.zip", "HF_SPAM_GPT2_BPE_URL": f"{base}/gpt2/", "COLUMNS": "2000"}
    test = "tests/test_data.py::test_book_padding_matches_spam_dataset"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test]
    timeout = 300
    online = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert online.returncode == 0 and "1 passed" in online.stdout, online.stdout[-3000:]
    assert len(list((tmp_path / "tiktoken").iterdir())) == 2 and any((tmp_path / "datasets").rglob("*"))
    server.shutdown()
    server.server_close()  # connections are refused from now on, as with no network
    offline = subprocess.run(command, cwd=ROOT, env=env | {"HF_DATASETS_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert offline.returncode == 0 and "1 passed" in offline.stdout, offline.stdout[-3000:]
    nothing = env | {"HF_DATASETS_CACHE": str(tmp_path / "empty"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-tiktoken")}
    # one session for both: the skip and its message (-rs), and HF_SPAM_NO_SKIPS=1 failing the session for it
    strict = subprocess.run(command, cwd=ROOT, env=nothing | {"HF_SPAM_NO_SKIPS": "1"}, capture_output=True, text=True, timeout=600)
    assert (
        "1 skipped" in strict.stdout
        and "set HF_SPAM_TEST_DATA to a folder holding sms_spam/SMSSpamCollection and tiktoken_cache/" in strict.stdout
    )
    assert strict.returncode == 1 and "HF_SPAM_NO_SKIPS=1, but 1 tests were skipped" in strict.stdout, strict.stdout[-3000:]


def test_the_test_session_is_offline_and_keeps_datasets_cache_to_itself():
    """conftest.py sets these before huggingface_hub and datasets are imported (they read them once): set later, the Hub
    was online in this process (46 s of retries for a missing repo) and the prefix caches landed in the user's ~/.cache."""
    import huggingface_hub

    if os.environ.get("HF_HUB_OFFLINE", "1").upper() in ("1", "ON", "YES", "TRUE"):
        assert huggingface_hub.constants.HF_HUB_OFFLINE
    assert Path(datasets.config.HF_DATASETS_CACHE).name.startswith("hf_spam_tests_datasets_")
