"""GPT-2's tokenizer twice over: tiktoken for data preparation (as the book) and a transformers
tokenizer saved with every model (for ``AutoTokenizer`` and ``pipeline``).

Both are built from the same two files, OpenAI's ``encoder.json`` and ``vocab.bpe``, fetched through
tiktoken's own cache (``TIKTOKEN_CACHE_DIR``) and checked against tiktoken's sha256, so no Hub
access is needed and the ids agree (a test checks every SMS message).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks, read_file_cached
from tiktoken_ext.openai_public import r50k_pat_str
from transformers import GPT2TokenizerFast, PreTrainedModel, PreTrainedTokenizerBase

from .errors import DownloadError

END_OF_TEXT = "<|endoftext|>"
# Where tiktoken_ext.openai_public.gpt2() downloads OpenAI's two files from, and their sha256.
GPT2_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
GPT2_BPE_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def gpt2_bpe_files() -> dict[str, tuple[str, str]]:
    """transformers' name of each BPE file (``vocab.json``, ``merges.txt``) -> (URL, sha256).

    The URLs are tiktoken's, unless ``HF_SPAM_GPT2_BPE_URL`` names another folder holding
    ``encoder.json`` and ``vocab.bpe`` (a mirror, or a test's loopback server); the hashes are checked
    either way."""
    base = os.environ.get("HF_SPAM_GPT2_BPE_URL") or GPT2_BPE_URL
    base = base if base.endswith("/") else base + "/"
    return {name: (base + file, GPT2_BPE_SHA256[file]) for name, file in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe"))}


def _read_bpe_file(url: str, sha256: str) -> bytes:
    try:
        return read_file_cached(url, sha256)
    except Exception as error:  # requests' connection errors, tiktoken's hash ValueError
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
        reason = " ".join(str(error).split())
        raise DownloadError(
            f"Could not get GPT-2's BPE file {url} ({reason}). Offline, point TIKTOKEN_CACHE_DIR (now {cache}) "
            "at a folder with tiktoken's cached copies of encoder.json and vocab.bpe."
        ) from error


@functools.cache
def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding, the book's tokenizer: what ``tiktoken.get_encoding("gpt2")`` builds
    (a test checks the ids agree), from the files :func:`gpt2_bpe_files` names."""
    files = gpt2_bpe_files()
    for url, sha256 in files.values():
        _read_bpe_file(url, sha256)  # fetched into tiktoken's cache, or the error that says what to do
    (encoder_json, encoder_hash), (vocab_bpe, vocab_hash) = files["vocab.json"], files["merges.txt"]
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe, encoder_json, vocab_bpe_hash=vocab_hash, encoder_json_hash=encoder_hash)
    return tiktoken.Encoding(
        name="gpt2", explicit_n_vocab=50257, pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={END_OF_TEXT: 50256}
    )


def gpt2_tokenizer(model_max_length: int = 1024) -> PreTrainedTokenizerBase:
    """A transformers GPT-2 tokenizer with ``<|endoftext|>`` (50256) as pad token, as chapter 6 pads.

    Built with ``from_pretrained`` on a folder holding ``vocab.json``/``merges.txt``: the direct
    ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` call silently builds an empty tokenizer.
    """
    with tempfile.TemporaryDirectory() as folder:
        for name, (url, sha256) in gpt2_bpe_files().items():
            Path(folder, name).write_bytes(_read_bpe_file(url, sha256))
        tokenizer = GPT2TokenizerFast.from_pretrained(folder, model_max_length=model_max_length)
    tokenizer.pad_token = END_OF_TEXT
    if len(tokenizer) != tiktoken_gpt2().n_vocab:
        raise RuntimeError(f"GPT-2 tokenizer has {len(tokenizer)} tokens instead of {tiktoken_gpt2().n_vocab}.")
    return tokenizer


def save_with_tokenizer(
    model: PreTrainedModel, directory: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None, **kwargs
) -> None:
    """``model.save_pretrained`` plus the GPT-2 tokenizer, so the folder works with ``AutoTokenizer`` and ``pipeline``;
    an hf_spam model's ``model_checksums.json`` is rewritten to cover the tokenizer too."""
    from .models.gpt.model_checksums import CHECKSUMS_NAME, write_checksums

    model.save_pretrained(directory, **kwargs)
    tokenizer = tokenizer or gpt2_tokenizer(model.config.context_length)
    tokenizer.save_pretrained(directory)
    if Path(directory, CHECKSUMS_NAME).is_file():
        write_checksums(directory)
    json.loads(Path(directory, "config.json").read_text())  # the folder must be loadable: fail here, not later
