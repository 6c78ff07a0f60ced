"""A real, offline, 3-class text-classification dataset: first paragraphs of the Python standard
library's docstrings, labelled by what the module is about (``numbers``, ``files``, ``network``).

Every Python installation carries it, so the worked example of docs/training.md (and a test) can train on
text that is neither SMS nor synthetic, from any folder where hf_spam is installed (no clone needed). The exact rows
depend on the Python version (3.11 gives about 1,300). Rows are split 80/10/10 by a hash of the text, so a text
always lands in the same split.

    python -m hf_spam.data.docstring_corpus OUT_DIR     # writes OUT_DIR/train.csv, dev.csv, test.csv; prints the row counts
"""

import argparse
import csv
import hashlib
import importlib
import inspect
import json
from pathlib import Path

TOPICS = {
    "numbers": ["math", "cmath", "statistics", "decimal", "fractions", "random", "numbers"],
    "files": ["os", "os.path", "shutil", "pathlib", "glob", "tempfile", "io", "zipfile", "tarfile", "filecmp", "fnmatch"],
    "network": [
        "socket",
        "http.client",
        "http.server",
        "http.cookies",
        "urllib.request",
        "urllib.parse",
        "email.message",
        "smtplib",
        "ftplib",
        "ssl",
        "ipaddress",
    ],
}
COLUMNS = ("docstring", "topic")  # the user's own column names, not text/label


def first_paragraph(doc: str | None) -> str:
    return " ".join((inspect.cleandoc(doc or "").split("\n\n") or [""])[0].split())


def collect() -> list[tuple[str, str]]:
    """(text, topic) for every public function, class and method with a docstring; duplicates across topics dropped."""
    seen: dict[str, str] = {}
    for topic, modules in TOPICS.items():
        elsewhere = tuple(m for other, names in TOPICS.items() if other != topic for m in names)
        for name in modules:
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if attr.startswith("_") or not (inspect.isroutine(value) or inspect.isclass(value)):
                    continue
                if str(getattr(value, "__module__", "")).lstrip("_").startswith(elsewhere):
                    continue  # imported from a module of another topic
                members = [value] + (
                    [m for a, m in vars(value).items() if not a.startswith("_") and inspect.isroutine(m)] if inspect.isclass(value) else []
                )
                for member in members:
                    text = first_paragraph(getattr(member, "__doc__", None))
                    if len(text) >= 20:
                        seen[text] = topic if seen.get(text, topic) == topic else "ambiguous"
    return sorted((text, topic) for text, topic in seen.items() if topic != "ambiguous")


def split_of(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def write(folder: str | Path) -> dict[str, int]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "dev": [], "test": []}
    for text, topic in collect():
        rows[split_of(text)].append((text, topic))
    for split, items in rows.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(items)
    return {split: len(items) for split, items in rows.items()}


def main(argv: list[str] | None = None) -> None:
    """Write the three split files into the folder the command line names and print their row counts (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m hf_spam.data.docstring_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="the folder to write train.csv, dev.csv and test.csv into")
    print(json.dumps(write(parser.parse_args(argv).output_dir)))


if __name__ == "__main__":
    main()
