"""The transformers tokenizer saved with models must give tiktoken's ids (the book's tokenizer)."""

import pytest
import tiktoken
from transformers import AutoTokenizer

from hf_spam import gpt2_tokenizer, tiktoken_gpt2

ODD_TEXTS = [
    "",
    "   ",
    "Hello, world!",
    "naïve café ½ µ 2024",
    "日本語のテキスト",
    "👩‍👩‍👧 emoji",
    "tabs\tand\nnewlines",
    "it's we'll they're",
    "<|endoftext|>",
]


def test_tokenizer_ids_equal_tiktoken_on_every_sms_message(sms_file, tmp_path):
    tokenizer = gpt2_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    encoding = tiktoken_gpt2()
    messages = [line.split("\t", 1)[1] for line in sms_file.read_text(encoding="utf-8").splitlines()] + ODD_TEXTS
    expected = [encoding.encode(m, allowed_special={"<|endoftext|>"}) for m in messages]
    assert [tiktoken.get_encoding("gpt2").encode(m, allowed_special={"<|endoftext|>"}) for m in messages] == expected
    assert tokenizer(messages)["input_ids"] == expected
    assert reloaded(messages)["input_ids"] == expected
    assert len(messages) == 5574 + len(ODD_TEXTS)


def test_tokenizer_pads_with_endoftext_and_knows_the_context_length(gpt2_bpe):
    tokenizer = gpt2_tokenizer(model_max_length=1024)
    assert tokenizer.pad_token_id == 50256 and tokenizer.eos_token_id == 50256
    batch = tokenizer(["a b c", "a"], padding=True)
    assert batch["input_ids"][1][1:] == [50256, 50256] and batch["attention_mask"][1] == [1, 0, 0]
    assert len(tokenizer("x " * 2000, truncation=True)["input_ids"]) == 1024


def test_missing_bpe_files_name_the_url_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache, and no network here
    monkeypatch.setattr("tiktoken.load.read_file", lambda url: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(RuntimeError, match="encoder.json.*TIKTOKEN_CACHE_DIR"):
        gpt2_tokenizer()
