"""The package's shape, read from its folders and import statements: one folder per concern, no module imports
itself back through others, the files saved next to a model import nothing a fresh environment lacks, and the
command line's dataclasses reach no further than the run and the commands that read them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hf_spam
from hf_spam.models.gpt import SHIPPED_FILES

PACKAGE = Path(hf_spam.__file__).parent
MODEL = PACKAGE / "models" / "gpt"
# the modules that take the command line's ModelArguments / DataArguments
COMMAND_LINE_READERS = {"hf_spam.training.recipe", "hf_spam.training.experiments", "hf_spam.cli.train"}
# beside the folders, only what every concern uses (errors, the tokenizer, lazy imports) and the demo (a Space's app)
TOP_LEVEL = {"__init__", "errors", "lazy", "tokenizer", "demo"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, required_only: bool = False) -> set[str]:
    """Every module ``path`` imports, relative imports resolved (``from . import x`` gives ``package.x``).
    ``required_only`` leaves out imports inside a ``try`` that catches ``ImportError``: optional, and skipped by
    transformers' check of remote code (``get_imports``) as well."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    optional = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports are for type checkers, not run
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            optional |= {id(child) for statement in node.body for child in ast.walk(statement)}
    if required_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(_catches_import_error(handler) for handler in node.handlers):
                optional |= {id(child) for statement in node.body for child in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            if node.module or not node.level:  # `from . import store` imports the module store, not its package
                found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(name, ast.Name) and name.id in ("ImportError", "ModuleNotFoundError") for name in names)


def package_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "metrics" not in p.relative_to(PACKAGE).parts}
    return {name: {m for m in imports(path) if m in files and m != name and m != "hf_spam"} for name, path in files.items()}


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every loop a depth-first walk of ``graph`` closes, as the path around it."""
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_module_imports_itself_back():
    graph = package_graph()
    assert "hf_spam.models.gpt.modeling_gpt" in graph and graph["hf_spam.training.trainer"], "the graph was read"
    assert not cycles_in(graph), cycles_in(graph)


def test_no_concern_imports_itself_back_even_within_one_rank():
    """Concerns of one rank may import each other (the ranks allow it), but not both ways: two concerns that need each
    other are one concern (``inference`` and ``serving`` were, until a finished model's use moved into ``serving``)."""
    graph: dict[str, set[str]] = {}
    for module, targets in package_graph().items():
        graph.setdefault(concern(module), set()).update(concern(t) for t in targets if concern(t) != concern(module))
    assert graph["serving"] and graph["training"], "the graph was read"
    assert not cycles_in(graph), cycles_in(graph)


def test_one_folder_per_concern():
    folders = {str(path.parent.relative_to(PACKAGE)) for path in PACKAGE.rglob("__init__.py")}
    assert folders == {".", "models", "models/gpt", "cache", "training", "data", "benchmark", "serving", "cli"}, folders
    assert {path.stem for path in PACKAGE.glob("*.py")} == TOP_LEVEL
    assert {path.name for path in MODEL.glob("*.py")} == {*SHIPPED_FILES, "__init__.py"}


def test_saved_model_code_imports_only_what_a_fresh_environment_has():
    shipped = {name.removesuffix(".py") for name in SHIPPED_FILES}
    assert {"configuration_gpt", "modeling_gpt", "gpt_blocks", "pooled_position", "model_checksums"} == shipped
    for name in shipped:
        found = imports(MODEL / f"{name}.py", required_only=True)
        # the saved folder holds these files and nothing of hf_spam around them: siblings only
        outside = {m for m in found if m.startswith("hf_spam") and m.removeprefix("hf_spam.models.gpt.").split(".")[0] not in shipped}
        # safetensors comes with transformers
        third_party = {m.split(".")[0] for m in found} - set(sys.stdlib_module_names) - {"hf_spam"}
        assert not outside, (name, outside)
        assert third_party <= {"torch", "transformers", "safetensors"}, (name, third_party)


def test_only_the_run_reads_the_command_line_dataclasses():
    readers = {name for name, targets in package_graph().items() if "hf_spam.training.arguments" in targets}
    assert readers == COMMAND_LINE_READERS, readers


# each concern may import those of a lower rank and its own, never a higher one: the model knows nothing of data,
# cache or training; the cache and the data nothing of training; only the command line knows every other
RANKS = {
    "models": 0,
    "errors": 0,
    "lazy": 0,
    "tokenizer": 1,
    "data": 2,
    "cache": 2,
    "serving": 3,  # a finished model used: loaded, classified, streamed, exported and run by other runtimes
    "training": 3,
    "demo": 4,
    "benchmark": 4,
}
RANKS |= {"cli": 5, "": 5}  # "": the package's __init__, which re-exports


def concern(module: str) -> str:
    return module.removeprefix("hf_spam").lstrip(".").split(".")[0]


def test_concerns_import_only_their_own_rank_or_lower():
    upward = {
        (module, target)
        for module, targets in package_graph().items()
        for target in targets
        if RANKS[concern(target)] > RANKS[concern(module)]
    }
    assert not upward, sorted(upward)


@pytest.mark.slow
def test_the_public_names_import_on_first_use():
    """``import hf_spam`` registers the model and stops there; ``from hf_spam import SpamTrainer`` (as ``from trl
    import SFTTrainer``) and the other public names then import their modules."""
    probe = (
        "import sys, hf_spam\n"
        "assert 'hf_spam.training.trainer' not in sys.modules and 'hf_spam.data' not in sys.modules, sorted(sys.modules)\n"
        "from hf_spam import SpamTrainer, SpamTrainingArguments, ModelArguments, DataArguments, load_sms_spam, tokenize\n"
        "from hf_spam import load_text_classification, classify, load_classifier\n"
        "from hf_spam.training.trainer import SpamTrainer as defined\n"
        "assert SpamTrainer is defined and set(hf_spam.__all__) <= set(dir(hf_spam))\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=PACKAGE.parent, capture_output=True, timeout=300)
