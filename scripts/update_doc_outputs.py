"""Rerun README.md and docs/*.md and write what their commands print into their ``output`` blocks, each followed by
the host, core count, versions and date it was recorded on (tests/support/docs.py says how blocks run and how the
test suite checks the quotes).

    HF_SPAM_TEST_DATA=path/to/data python scripts/update_doc_outputs.py [README.md docs/training.md ...]

``HF_SPAM_TEST_DATA`` is a folder holding ``sms_spam/SMSSpamCollection`` and ``tiktoken_cache/`` (see conftest.py);
without it the SMS data and GPT-2's BPE files are downloaded as hf_spam downloads them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path
from unittest import SkipTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.docs import DOCUMENTS, RECORDED, REPO, make_sybil, recorded_line, tiktoken_cache_dir  # noqa: E402


def data() -> tuple[Path, Path]:
    given = os.environ.get("HF_SPAM_TEST_DATA")
    if given:
        return Path(given, "sms_spam", "SMSSpamCollection"), Path(given, "tiktoken_cache")
    from hf_spam.data.sms import fetch_sms_spam
    from hf_spam.tokenizer import tiktoken_gpt2

    tiktoken_gpt2()
    path = Path(tempfile.mkdtemp(prefix="hf_spam_docs_data_")) / "SMSSpamCollection"
    path.write_bytes(fetch_sms_spam()[0])
    return path, tiktoken_cache_dir()


def record(path: Path, docs_data: tuple[Path, Path], folder: Path) -> int:
    """Run one document's blocks in order and rewrite its output blocks; the number of blocks rewritten."""
    document = make_sybil().parse(path)
    recordings: dict = {}
    document.namespace.update(docs_data=docs_data, docs_folder=folder, recordings=recordings)
    for example in document.examples():
        try:
            example.evaluate()
        except SkipTest as skipped:
            print(f"{path.relative_to(REPO)}:{example.line}: not run ({skipped})")
    text, date = document.text, datetime.date.today().isoformat()
    for region in sorted(recordings, key=lambda region: region.start, reverse=True):
        block = f"```output{region.lexemes['arguments']}\n{recordings[region]}```"
        rest = text[region.end :]
        following = rest.lstrip("\n").split("\n", 1)
        if RECORDED.match(following[0]):
            rest = "\n" + (following[1] if len(following) > 1 else "")
        text = text[: region.start] + block + "\n" + recorded_line(date) + rest
    path.write_text(text)
    return len(recordings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("documents", nargs="*", type=Path, help="default: README.md and docs/*.md")
    args = parser.parse_args()
    documents = [path.resolve() for path in args.documents] or [path for pattern in DOCUMENTS for path in sorted(REPO.glob(pattern))]
    docs_data = data()
    with tempfile.TemporaryDirectory(prefix="hf_spam_docs_") as folder:
        for path in documents:
            count = record(path, docs_data, Path(folder))
            print(f"{path.relative_to(REPO)}: {count} output blocks recorded")


if __name__ == "__main__":
    main()
