"""Offline test setup: the shared data beside the checkout, and no Hub access."""

import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# datasets' cache (and the frozen-prefix caches under it) in a throwaway folder, not the user's ~/.cache
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf_spam_tests_datasets_"))


@pytest.fixture(scope="session")
def sms_file() -> Path:
    path = SHARED_DATA / "sms_spam" / "SMSSpamCollection"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: tests need ../shared/data beside the checkout (see README).")
    return path
