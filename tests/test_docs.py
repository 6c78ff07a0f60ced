"""The harness that runs README.md and docs/*.md (tests/support/docs.py): every block is run, checked or skipped with a
reason, and a quoted output that drifts from what its commands print fails."""

import os
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import pytest

from tests.support.docs import DOCUMENTS, LANGUAGES, RECORDED, REPO, Quote, compare, fenced_blocks, make_sybil, recorded_line

# README.md's quote before this round, and what the same commands printed on a fresh clone (issue 32)
STALE = "  eval_accuracy      = 0.9866\n  test_accuracy      = 0.9567\n  train_accuracy     = 0.9962\nspam\t0.9858\tYou are a winner\n"
FRESH = "  eval_accuracy      = 0.9799\n  test_accuracy      = 0.9667\n  train_accuracy     = 0.9837\nspam\t0.9403\tYou are a winner\n"


def test_every_fenced_block_in_the_documents_is_run_or_quoted():
    documents = [path for pattern in DOCUMENTS for path in REPO.glob(pattern)]
    assert len(documents) >= 8
    blocks = {f"{path.relative_to(REPO)}:{line}": language for path in documents for line, language in fenced_blocks(path)}
    assert blocks and all(language in LANGUAGES for language in blocks.values()), {k: v for k, v in blocks.items() if v not in LANGUAGES}


def test_a_drifted_quote_fails_on_its_host_and_a_reproduced_one_passes():
    problems = compare(STALE, FRESH, Quote(), tolerance=0.0)
    assert [p.split(" in ")[0] for p in problems] == [
        "line 1: quoted 0.9866, printed 0.9799",
        "line 2: quoted 0.9567, printed 0.9667",
        "line 3: quoted 0.9962, printed 0.9837",
        "line 4: quoted 0.9858, printed 0.9403",
    ]
    assert compare(FRESH, FRESH, Quote(), tolerance=0.0) == []


def test_integers_and_text_are_exact_whatever_the_tolerance():
    quoted = "train: 1045 rows (ham 528, spam 517), longest 120 tokens\n"
    assert compare(quoted, quoted.replace("528", "529"), Quote(), tolerance=0.5) == [
        "line 1: quoted 528, printed 529 in 'train: 1045 rows (ham 529, spam 517), longest 120 tokens'"
    ]
    assert compare(quoted, quoted.replace("rows", "lines"), Quote(), tolerance=0.5)[0].startswith("line 1: quoted 'train")
    assert compare("a 0.50\n", "a 0.54\n", Quote(), tolerance=0.05) == []
    assert compare("  test_accuracy =   0.96\n", "  test_accuracy = 0.9667\n", Quote(), tolerance=0.01) == []  # Trainer's alignment
    assert compare("a 0.50\n", "a 0.56\n", Quote(), tolerance=0.05) != []
    assert compare("key 4675fa38521d\n", "key 4675fa38521e\n", Quote(), tolerance=0.5) != []  # a hex key is text


def test_a_quote_chooses_its_lines_masks_what_varies_and_drops_progress_bars():
    quote = Quote.parse('lines="^(\\*{5}|  \\w+ )" ignore="\\d+\\.\\d+ s"')
    printed = (
        "log line\n***** final metrics *****\r\n 50%|#####     | 1/2 [00:01<00:01]\r100%|##########| 2/2\n  eval_accuracy = 0.9 (3.2 s)\n"
    )
    assert quote.select(printed) == "***** final metrics *****\n  eval_accuracy = 0.9 (3.2 s)\n"
    assert compare("  x = 0.9 (3.2 s)\n", "  x = 0.9 (4.7 s)\n", quote, tolerance=0.0) == []
    with pytest.raises(ValueError, match="unknown output option"):
        Quote.parse("line=x")


def test_the_recorded_line_names_this_host_and_the_versions():
    line = recorded_line("2026-12-05")
    match = RECORDED.match(line)
    assert match and match["date"] == "2026-12-05" and "torch " in match["versions"] and "transformers " in match["versions"]


def run_document(path: Path, tmp_path: Path, sms_file: Path) -> list[str]:
    """Each block's outcome, in order, as the test session runs them."""
    document = make_sybil().parse(path)
    document.namespace.update(docs_data=(sms_file, tmp_path), docs_folder=tmp_path / "work")
    outcomes = []
    for example in document.examples():
        try:
            example.evaluate()
            outcomes.append("passed")
        except SkipTest as skipped:
            outcomes.append(f"skipped: {skipped}")
        except AssertionError as error:
            outcomes.append(f"failed: {error}")
    return outcomes


def test_blocks_run_in_order_in_one_folder_and_a_wrong_quote_fails(tmp_path, sms_file):
    here = recorded_line("2026-12-05")
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\nwc -l < path/to/SMSSpamCollection > count.txt\n```\n\n"
        "```python\nprint('lines:', open('count.txt').read().strip(), 'ratio:', 0.25)\n```\n\n"
        f"```output\nlines: 5574 ratio: 0.25\n```\n{here}\n\n"
        "```python\nprint('ratio:', 0.26)\n```\n\n"
        f"```output\nratio: 0.25\n```\n{here}\n\n"
        '<!-- skip: next "needs a GPU" -->\n```bash\nnvidia-smi\n```\n\n'
        "```bash\nexit 3\n```\n"
    )
    outcomes = run_document(page, tmp_path, sms_file)
    assert outcomes[:3] == ["passed", "passed", "passed"], outcomes
    assert outcomes[4].startswith("failed: ") and "line 1: quoted 0.25, printed 0.26" in outcomes[4], outcomes[4]
    assert outcomes[5:7] == ["passed", "skipped: needs a GPU"], outcomes  # the directive, then the block it skips
    assert outcomes[-1].startswith("failed: ") and "exit status 3" in outcomes[-1], outcomes


def test_an_output_block_can_bound_how_many_lines_were_printed():
    assert Quote.parse('lines="^x" at_most_lines=40') == Quote(lines="^x", at_most_lines=40)
    assert Quote.parse("elsewhere=0.1").at_most_lines is None


NESTED_CONFTEST = """
import pytest
from pathlib import Path
from tests.support.docs import make_sybil

@pytest.fixture(scope="session")
def docs_data(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "SMSSpamCollection", tmp_path_factory.mktemp("tiktoken_cache")

@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("docs")

pytest_collect_file = make_sybil(Path(__file__).parent, ["page.md"]).pytest()
"""


@pytest.mark.slow
def test_a_document_runs_whole_in_one_worker_under_xdist(tmp_path):
    """The project's pytest options keep a document's blocks in one xdist worker, in order, whatever ``-n`` a developer
    gives: the blocks after the first read the file it wrote, and a ``skip: next`` mark must reach its block (xdist's
    default, ``--dist load``, hands the middle of a file to the other worker, where neither holds)."""
    reads = "".join("```bash\ngrep -q written made.txt\n```\n\n" for _ in range(8))
    page = "```bash\necho written > made.txt\n```\n\n" + reads + '<!-- skip: next "never run" -->\n```bash\nexit 3\n```\n\n' + reads
    (tmp_path / "page.md").write_text(page)
    (tmp_path / "conftest.py").write_text(NESTED_CONFTEST)
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "page.md"]
    session = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert session.returncode == 0 and "18 passed, 1 skipped" in session.stdout, session.stdout[-3000:] + session.stderr[-2000:]
