"""The package's layers, read from its import statements: no module imports itself back through others, the
files saved next to a model import nothing a fresh environment lacks, and the command line's dataclasses
reach no further down than the run that reads them."""

import ast
import sys
from pathlib import Path

import hf_spam

PACKAGE = Path(hf_spam.__file__).parent
# copied next to every saved model (trust_remote_code): the standard library, torch, transformers and each other
SHIPPED = {"configuration_gpt", "modeling_gpt", "gpt_blocks", "pooled_position", "convert_gpt2", "model_checksums"}
# the modules that take the command line's ModelArguments / DataArguments
COMMAND_LINE_READERS = {"hf_spam.training", "hf_spam.experiments"}


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
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(name, ast.Name) and name.id in ("ImportError", "ModuleNotFoundError") for name in names)


def package_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "metrics" not in p.relative_to(PACKAGE).parts}
    return {name: {m for m in imports(path) if m in files and m != name and m != "hf_spam"} for name, path in files.items()}


def test_no_module_imports_itself_back():
    graph = package_graph()
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert "hf_spam.modeling_gpt" in graph and graph["hf_spam.spam_trainer"], "the graph was read"
    assert not cycles, cycles


def test_saved_model_code_imports_only_what_a_fresh_environment_has():
    for name in SHIPPED:
        outside = {
            module
            for module in imports(PACKAGE / f"{name}.py", required_only=True)
            if module.startswith("hf_spam") and module.removeprefix("hf_spam.").split(".")[0] not in SHIPPED and module != "hf_spam"
        }
        # safetensors comes with transformers
        third_party = {m.split(".")[0] for m in imports(PACKAGE / f"{name}.py", required_only=True)} - set(sys.stdlib_module_names) - {"hf_spam"}
        assert not outside, (name, outside)
        assert third_party <= {"torch", "transformers", "safetensors"}, (name, third_party)


def test_only_the_run_reads_the_command_line_dataclasses():
    readers = {name for name, targets in package_graph().items() if "hf_spam.arguments" in targets}
    assert readers == COMMAND_LINE_READERS, readers
