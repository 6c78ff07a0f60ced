"""Does the fast tier catch what it must? Each bug below is put, alone, into a copy of the working tree, and
``python -m pytest -q -x -m "not slow"`` runs there; a bug it does not fail on is a hole in the fast tier.

    HF_SPAM_TEST_DATA=path/to/data python -m tests.support.injected_bugs [NAME ...]

Each bug is one exact replacement in one file (the run stops if the text is no longer there, so the set cannot
rot unseen). Prints one line per bug: caught (by which test, after how long) or missed; exits 1 if any was missed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# name -> (file, text, replacement): what the fast tier must catch (issue: a broken saved config, pooling position,
# checksum check, output-folder guard or data split)
BUGS = {
    "saved config drops a field": (
        "hf_spam/models/gpt/configuration_gpt.py",
        "self.truncation_length = truncation_length",
        "self.truncation_length = None",
    ),
    "pooled position ignores left padding": (
        "hf_spam/models/gpt/pooled_position.py",
        "return (positions * real).argmax(-1)  # rightmost real token",
        "return real.sum(-1) - 1",
    ),
    "checksums compare sizes only": (
        "hf_spam/models/gpt/model_checksums.py",
        "if file_checksums(Path(path), (algorithm,))[algorithm] != recorded[algorithm]:",
        "if False:",
    ),
    "a used output folder is taken over": (
        "hf_spam/training/checkpoints.py",
        "if entries and not overwrite and resume is None:",
        "if False:",
    ),
    "the data split moves one example": (
        "hf_spam/data/sms.py",
        "train_end = int(len(shuffled) * train_frac)",
        "train_end = int(len(shuffled) * train_frac) + 1",
    ),
}


def _copy_of_the_tree(into: Path) -> Path:
    tree = into / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache"))
    return tree


def try_bug(name: str) -> str:
    relative, text, replacement = BUGS[name]
    with tempfile.TemporaryDirectory(prefix="hf_spam_bug_") as folder:
        tree = _copy_of_the_tree(Path(folder))
        source = tree / relative
        content = source.read_text()
        if content.count(text) != 1:
            raise SystemExit(f"{name}: {relative} no longer holds {text!r} exactly once; update BUGS")
        source.write_text(content.replace(text, replacement))
        env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy's hf_spam, not the installed one
        started = time.monotonic()
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider"]
        result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
    failed = re.search(r"^FAILED (\S+)", result.stdout, re.MULTILINE)
    if result.returncode == 0:
        return f"MISSED  {name} ({seconds:.0f} s: the fast tier passed)"
    return f"caught  {name} after {seconds:.0f} s by {failed.group(1) if failed else result.stdout.strip().splitlines()[-1]}"


def main(names: list[str]) -> None:
    lines = [try_bug(name) for name in names or BUGS]
    print("\n".join(lines))
    sys.exit(1 if any(line.startswith("MISSED") for line in lines) else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
