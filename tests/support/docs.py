"""README.md and docs/*.md as tests, through sybil (https://sybil.readthedocs.io).

Every fenced block is one of three kinds, by its language:

- ``bash``: commands, run with ``bash -euo pipefail`` as a reader with hf_spam installed runs them, in a fresh
  folder per document that holds nothing of the clone (shared by that document's blocks, so ``runs/tiny`` trained in
  one block is classified in the next) where ``path/to/SMSSpamCollection`` and ``path/to/tiktoken_cache`` are the
  tests' data;
  offline (``HF_HUB_OFFLINE=1``), with a datasets cache of its own. A non-zero exit fails the block.
- ``python``: a script, run by ``python`` in the same folder and environment.
- ``output``: what the block before it printed (stdout and stderr together, progress bars dropped), quoted. Its
  info string may choose lines (``lines="REGEX"``: the lines that match, in order; the prose says a selection is
  shown), mask what changes between runs (``ignore="REGEX"``: dates, timings) and give the tolerance used on a host
  of another type than the one the quote was recorded on (``elsewhere=0.08``: absolute, on numbers with a decimal
  point), and bound what the block printed in all (``at_most_lines=40``: lines on a pipe, the log and bars included).
  The line after the block names that host; see :func:`compare`.

A block that cannot run here (it downloads OpenAI's weights, needs several GPUs or the Hub, runs the test suite
itself) is preceded by sybil's ``<!-- skip: next "why" -->``; the session lists those blocks with their reasons.
``python scripts/update_doc_outputs.py`` reruns every document and rewrites its output blocks and their host lines.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer, RawFencedCodeBlockLexer

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "CONTRIBUTING.md", "docs/*.md"]
LANGUAGES = ("bash", "python", "output")
RECORDED = re.compile(r"^<sub>Recorded on (?P<host>.+?), (?P<cores>\d+) cores?, (?P<versions>.+?), (?P<date>\d{4}-\d{2}-\d{2})\.</sub>$")
# a number standing alone (not part of a hex key, a name or a version), with its decimals if it has any
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
PROGRESS = re.compile(r"\d+%\|.*\|")
BLOCK_TIMEOUT_S = 900


def host_type() -> str:
    """The CPU family and vector units: float results are reproducible within a host type, not across them."""
    from hf_spam.benchmark.machine import cpu_flags  # here: the package imports torch, which a block's check needs only here

    name = platform.processor() or platform.machine()
    try:
        name = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE).group(1).strip()
    except (OSError, AttributeError):
        pass
    flags = cpu_flags()
    family = next((f for f in ("AMD EPYC", "Intel Xeon", "AMD Ryzen", "Intel Core", "Apple") if all(w in name for w in f.split())), name)
    units = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{family} ({units})"


def versions() -> str:
    import tokenizers
    import torch
    import transformers

    packages = f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
    return f"Python {platform.python_version()}, {packages}"


def tiktoken_cache_dir() -> Path:
    """Where tiktoken keeps GPT-2's BPE files: ``TIKTOKEN_CACHE_DIR``, else its ``data-gym-cache`` in the temporary folder."""
    default = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or default)


def recorded_line(date: str) -> str:
    return f"<sub>Recorded on {host_type()}, {os.cpu_count()} cores, {versions()}, {date}.</sub>"


@dataclass
class Quote:
    """An output block's options (its info string) and the text it quotes."""

    lines: str | None = None
    ignore: str | None = None
    elsewhere: float = 0.0
    at_most_lines: int | None = None

    @classmethod
    def parse(cls, arguments: str) -> Quote:
        options = dict(item.split("=", 1) for item in shlex.split(arguments))
        unknown = set(options) - {"lines", "ignore", "elsewhere", "at_most_lines"}
        if unknown:
            raise ValueError(f"unknown output option(s) {sorted(unknown)}; known: lines, ignore, elsewhere, at_most_lines")
        at_most = int(options["at_most_lines"]) if "at_most_lines" in options else None
        return cls(options.get("lines"), options.get("ignore"), float(options.get("elsewhere", 0)), at_most)

    def select(self, output: str) -> str:
        """The lines to quote: each line as a terminal leaves it (after the last carriage return), progress bars dropped."""
        lines = [line.rsplit("\r", 1)[-1].rstrip() for line in output.splitlines()]
        lines = [line for line in lines if not PROGRESS.search(line)]
        if self.lines:
            lines = [line for line in lines if re.search(self.lines, line)]
        return "\n".join(lines).strip("\n") + "\n"


def _shape(line: str) -> str:
    """A line without its numbers and with its runs of spaces as one: the padding of aligned columns follows the numbers."""
    return " ".join(NUMBER.sub("#", line).split())


def compare(quoted: str, fresh: str, quote: Quote, tolerance: float) -> list[str]:
    """How ``fresh`` differs from ``quoted``: the text must be equal, and so must every integer (row counts, sizes);
    a number with decimals must be equal to the printed digits when ``tolerance`` is 0, else within it."""
    if quote.ignore:
        quoted, fresh = (re.sub(quote.ignore, "<varies>", text) for text in (quoted, fresh))
    problems = []
    quoted_lines, fresh_lines = quoted.splitlines(), fresh.splitlines()
    if len(quoted_lines) != len(fresh_lines):
        problems.append(f"{len(quoted_lines)} lines quoted, {len(fresh_lines)} printed")
    for number, (old, new) in enumerate(zip(quoted_lines, fresh_lines, strict=False), 1):
        if _shape(old) != _shape(new):
            problems.append(f"line {number}: quoted {old!r}, printed {new!r}")
            continue
        for a, b in zip(NUMBER.findall(old), NUMBER.findall(new), strict=True):
            decimal = "." in a or "." in b
            if a != b and not (decimal and tolerance and abs(float(a) - float(b)) <= tolerance):
                problems.append(f"line {number}: quoted {a}, printed {b} in {new.strip()!r}")
    return problems


class DocumentRun:
    """The folder and environment one document's blocks run in, and what the last block printed."""

    def __init__(self, folder: Path, sms_file: Path, tiktoken_cache: Path) -> None:
        self.folder = folder
        (folder / "path" / "to").mkdir(parents=True)
        (folder / "path" / "to" / "SMSSpamCollection").symlink_to(sms_file)
        (folder / "path" / "to" / "tiktoken_cache").symlink_to(tiktoken_cache)
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(folder / ".hf"),
            "HF_DATASETS_CACHE": str(folder / ".hf" / "datasets"),
            "TIKTOKEN_CACHE_DIR": str(tiktoken_cache),
            "COLUMNS": "200",
        }
        self.output: str | None = None
        self.blocks = 0

    def run(self, command: list[str], example: Example) -> None:
        done = subprocess.run(
            command, cwd=self.folder, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT_S
        )
        self.output = done.stdout.decode(errors="replace")  # as a pipe has it: a bar's carriage returns are not new lines
        if done.returncode:
            raise AssertionError(f"{example.path}:{example.line}: exit status {done.returncode}; its output ends:\n{done.stdout[-4000:]}")


def run_bash(example: Example) -> None:
    document_run(example).run(["bash", "-euo", "pipefail", "-c", example.parsed], example)


def run_python(example: Example) -> None:
    run = document_run(example)
    run.blocks += 1
    script = run.folder / f".block-{run.blocks}.py"
    script.write_text(example.parsed)
    run.run([sys.executable, script.name], example)


def check_output(example: Example) -> None:
    run = document_run(example)
    if run.output is None:
        raise AssertionError(f"{example.path}:{example.line}: an output block must follow a bash or python block")
    quote: Quote = example.region.lexemes["quote"]
    fresh, printed = quote.select(run.output), run.output.count("\n")
    run.output = None
    if quote.at_most_lines is not None and printed > quote.at_most_lines:
        raise AssertionError(f"{example.path}:{example.line}: the commands printed {printed} lines, more than {quote.at_most_lines}")
    recordings = example.namespace.get("recordings")
    if recordings is not None:  # scripts/update_doc_outputs.py: keep what was printed, check nothing
        recordings[example.region] = fresh
        return
    following = example.document.text[example.region.end :].lstrip("\n").split("\n", 1)[0]
    recorded = RECORDED.match(following)
    if not recorded:
        raise AssertionError(f"{example.path}:{example.line}: the output block has no 'Recorded on ...' line after it")
    same_host = recorded["host"] == host_type() and int(recorded["cores"]) == os.cpu_count()
    problems = compare(example.parsed, fresh, quote, 0.0 if same_host else quote.elsewhere)
    if problems:
        where = "" if same_host else f" (recorded on {recorded['host']}, {recorded['cores']} cores; compared within {quote.elsewhere})"
        raise AssertionError(
            f"{example.path}:{example.line}: the quoted output is not what the commands print{where}; "
            "run python scripts/update_doc_outputs.py to record it again:\n  " + "\n  ".join(problems[:20])
        )


class OutputParser:
    """``output`` fenced blocks, with their options (:class:`Quote`) from the info string."""

    def __init__(self) -> None:
        self.lexer = RawFencedCodeBlockLexer(info_pattern=re.compile(r"output(?P<arguments>[^\n]*)$\n", re.MULTILINE))

    def __call__(self, document: Document):
        for region in self.lexer(document):
            region.lexemes["quote"] = Quote.parse(region.lexemes["arguments"])
            region.parsed = str(region.lexemes["source"])
            region.evaluator = check_output
            yield region


def fenced_blocks(path: Path) -> list[tuple[int, str]]:
    """(line, language) of every fenced block in a Markdown file, as sybil lexes them."""
    document = Document(path.read_text(), str(path))
    regions: list[Region] = list(FencedCodeBlockLexer(language=r"[^\n]*")(document))
    return [(document.text.count("\n", 0, region.start) + 1, region.lexemes["language"].split(" ")[0]) for region in regions]


def document_run(example: Example) -> DocumentRun:
    """The document's :class:`DocumentRun`, made by its first block in a folder under ``docs_folder`` (a fixture)."""
    namespace = example.namespace
    if "run" not in namespace:
        sms_file, tiktoken_cache = namespace["docs_data"]
        path = Path(example.path)
        name = path.relative_to(REPO).as_posix().replace("/", "-") if path.is_relative_to(REPO) else path.name
        folder = namespace["docs_folder"] / name
        namespace["run"] = DocumentRun(folder, sms_file, tiktoken_cache)
    return namespace["run"]


def make_sybil(path: Path = REPO, patterns: list[str] = DOCUMENTS) -> Sybil:
    """README.md and docs/*.md (or ``patterns`` under ``path``), each block an example; ``docs_data`` is (SMS file,
    tiktoken cache folder)."""
    return Sybil(
        parsers=[SkipParser(), CodeBlockParser("bash", run_bash), CodeBlockParser("python", run_python), OutputParser()],
        patterns=patterns,
        path=str(path),
        fixtures=["docs_data", "docs_folder"],
        name="docs",
    )
