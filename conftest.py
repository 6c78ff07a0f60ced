"""Test setup: the two data files the tests need, no Hub access, no silent skips where data is promised, and the
documentation's blocks as tests (README.md and docs/*.md; see tests/support/docs.py).

The SMS Spam Collection and GPT-2's BPE files come from the folder ``HF_SPAM_TEST_DATA`` names, laid out
as ``sms_spam/SMSSpamCollection`` and ``tiktoken_cache/`` (tiktoken's cache of ``encoder.json`` and
``vocab.bpe``). Without it they are fetched the way the product fetches them (the UCI zip, checked by
its sha256, into the datasets cache; tiktoken's files into tiktoken's cache), once. Offline and without
the variable, every test that needs them is skipped with one message saying what to set; the rest run.
With ``HF_SPAM_TEST_DATA`` set, a missing file is an error, and ``HF_SPAM_NO_SKIPS=1`` (what ``.ci/run``
sets) turns any skipped test into a failed session; the one exception is a documentation block marked, in the
document, as one that cannot run here (``<!-- skip: next "why" -->``), and the session lists each with its reason.
"""

import collections
import logging
import os
import subprocess
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub or datasets, which read these variables once, at import: set after the
# imports below, the Hub was not offline in this process (a test that looked up a missing repo spent 46 s in retries)
# and datasets' cache, with the prefix caches under it, was the user's ~/.cache.
TEST_DATA = os.environ.get("HF_SPAM_TEST_DATA")
USER_DATASETS_CACHE = os.environ.get("HF_DATASETS_CACHE")  # the user's own, where a download is kept between sessions
USER_OFFLINE = any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
if TEST_DATA:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(TEST_DATA) / "tiktoken_cache"))
# no test reaches the Hub (a failed connection costs ~50 s of retries); the SMS download below is the one exception
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two workers share two cores, and the processes the tests start (commands, documents' blocks, launchers) run
# torch with the machine's default threads beside them: OpenMP's threads then spin-wait on cores another process
# needs, by default. Passive waiting changes no result, only who gets the core (CONTRIBUTING.md: what it saves).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# datasets' cache (and the prefix caches under it) in a throwaway folder, not the user's ~/.cache
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf_spam_tests_datasets_")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the README's test command runs two workers on two cores: one thread each for the tests in the worker's own
    # process; the processes tests start (hf-spam commands, the documents' blocks) keep the machine's default, so
    # a document's quoted figures are computed as they were recorded
    torch.set_num_threads(1)
from sybil.integration.pytest import SybilItem  # noqa: E402

from tests.support.docs import make_sybil, tiktoken_cache_dir  # noqa: E402

NO_DATA = (
    "needs the SMS Spam Collection and GPT-2's BPE files, which could not be downloaded (offline?): set HF_SPAM_TEST_DATA "
    "to a folder holding sms_spam/SMSSpamCollection and tiktoken_cache/ (tiktoken's cached encoder.json and vocab.bpe)"
)


def _given(relative: str) -> Path:
    path = Path(TEST_DATA, relative)
    if not path.exists():
        raise FileNotFoundError(f"HF_SPAM_TEST_DATA={TEST_DATA} has no {relative}; see conftest.py for the layout.")
    return path


@pytest.fixture(scope="session")
def gpt2_bpe() -> None:
    """GPT-2's BPE files, through tiktoken's cache (the product's tokenizer checks them by sha256)."""
    if TEST_DATA:
        _given("tiktoken_cache")
    from hf_spam.tokenizer import tiktoken_gpt2

    try:
        tiktoken_gpt2()
    except RuntimeError as error:
        if TEST_DATA:
            raise
        pytest.skip(f"{NO_DATA} ({error})")


@pytest.fixture(scope="session")
def sms_file(gpt2_bpe, tmp_path_factory) -> Path:
    """The SMS Spam Collection, as the UCI zip holds it."""
    if TEST_DATA:
        return _given("sms_spam/SMSSpamCollection")
    import datasets

    from hf_spam.data import DataError, fetch_sms_spam

    offline, datasets.config.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE, USER_OFFLINE
    try:
        raw, _ = fetch_sms_spam(cache_dir=USER_DATASETS_CACHE)
    except DataError as error:
        if "sha256" in str(error):
            raise  # a download that arrived damaged is not "offline"
        pytest.skip(f"{NO_DATA} ({error})")
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
    path = tmp_path_factory.mktemp("sms_spam") / "SMSSpamCollection"
    path.write_bytes(raw)
    return path


@pytest.fixture(scope="session")
def docs_data(sms_file, gpt2_bpe) -> tuple[Path, Path]:
    """What the documents' ``path/to/SMSSpamCollection`` and ``path/to/tiktoken_cache`` are."""
    return sms_file, tiktoken_cache_dir()


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs")


pytest_collect_file = make_sybil().pytest()


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, SybilItem):  # every document runs whole commands: training runs among them
            item.add_marker(pytest.mark.slow)
    # the files with the most slow tests first, each file's tests in their order: the README's test command hands whole
    # files to two workers in this order (--no-loadscope-reorder), and a long file started last would run alone
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    first_seen = {path: n for n, path in reversed(list(enumerate(item.path for item in items)))}
    items.sort(key=lambda item: (-slow[item.path], first_seen[item.path]))


_skipped: list[str] = []
_documented_skips: list[str] = []
_seconds_per_file: collections.Counter = collections.Counter()


def pytest_runtest_logreport(report):
    _seconds_per_file[report.nodeid.split("::")[0]] += report.duration
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if ".md::" in report.nodeid and NO_DATA not in reason:  # a block its document marks as not runnable here
            _documented_skips.append(f"{report.nodeid.split('::')[0]} {report.nodeid.split(',')[-2]}: {reason.removeprefix('Skipped: ')}")
        else:
            _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if len(_seconds_per_file) > 1:  # which files the full tier's time goes to (setup, call and teardown, in the worker)
        terminalreporter.write_line("seconds per test file (setup + call + teardown, in the worker that ran it):")
        for path, seconds in _seconds_per_file.most_common(20):
            terminalreporter.write_line(f"  {seconds:7.1f} s  {path}")
    if _documented_skips:
        terminalreporter.write_line(f"{len(_documented_skips)} documentation blocks are marked as not runnable here:")
        for line in _documented_skips:
            terminalreporter.write_line(f"  {line}")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("HF_SPAM_NO_SKIPS") == "1" and _skipped:
        session.config.get_terminal_writer().line(f"HF_SPAM_NO_SKIPS=1, but {len(_skipped)} tests were skipped: {_skipped[:10]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _library_log_levels():
    """`hf-spam` commands run in-process set transformers' verbosity, its and datasets' progress bars and hf_spam's log
    level for their process (as a command should); a test must not pass that on to the tests after it (whose log
    assertions would then see transformers' INFO lines)."""
    import datasets
    import transformers

    level, bars = transformers.utils.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled()
    data_bars, own_level = datasets.is_progress_bar_enabled(), logging.getLogger("hf_spam").level
    yield
    transformers.utils.logging.set_verbosity(level)
    (transformers.utils.logging.enable_progress_bar if bars else transformers.utils.logging.disable_progress_bar)()
    (datasets.enable_progress_bars if data_bars else datasets.disable_progress_bars)()
    logging.getLogger("hf_spam").setLevel(own_level)


@pytest.fixture
def small_or_read_only(tmp_path):
    """Real filesystems: a read-only one and a 1 MiB one (tmpfs mounts where the tests run as root;
    elsewhere a folder without write permission, and no small disk)."""
    made = {}
    if os.geteuid() == 0:
        for name, options in (("read_only", "ro,size=1m"), ("small", "size=1m")):
            made[name] = tmp_path / name
            made[name].mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(made[name])], check=True)
    else:
        made["read_only"] = tmp_path / "read_only"
        made["read_only"].mkdir(mode=0o555)
    yield made
    for folder in made.values():
        if os.geteuid() == 0:  # lazily: a writer the full disk stopped may hold its file until it is collected
            subprocess.run(["umount", "--lazy", str(folder)], check=True)
