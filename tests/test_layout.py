"""The code stays readable: short functions and modules in the package's three parts."""

import ast
import os

from tests.helpers import REPO

PARTS = ("recipes", "models", "strategies")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_ARGUMENTS = 8  # Not counting self or cls; ruff's PLR0913 checks the same, unless silenced.


def _modules():
    for part in PARTS:
        for folder, _, files in os.walk(os.path.join(REPO, part)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def test_no_function_is_longer_than_60_lines_or_takes_more_than_8_arguments_and_no_module_than_400():
    too_long = []
    for path in _modules():
        source = open(path).read()
        where = os.path.relpath(path, REPO)
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{where}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                count = len([a for a in arguments if a.arg not in ("self", "cls")])
                if count > MAX_ARGUMENTS:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {count} arguments")
    assert not too_long, too_long


def test_every_command_imports_into_one_process():
    """Flags shared by two commands are defined once (absl refuses a second definition),
    so a notebook or a test session can import any of them together."""
    import importlib
    import pkgutil

    import recipes

    names = [info.name for info in pkgutil.iter_modules(recipes.__path__) if not info.ispkg]
    assert {"mnist", "gpt", "generate", "distill"} <= set(names), names
    for name in names:
        importlib.import_module(f"recipes.{name}")


# recipes/core's subpackages, lowest first: each imports only from those before it
# (and from errors.py, below them all). recipes/core/__init__.py says what each holds.
LAYERS = ("input", "deploy", "rundir", "training", "objectives", "nlp", "cli")
RANKS = {"errors": -1, **{name: rank for rank, name in enumerate(LAYERS)}}
RANKS["nlp"] = RANKS["objectives"]  # Side by side: neither imports the other.


def _core_imports(path):
    """The recipes.core subpackages (or errors) that the module at `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recipes.core"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["recipes", "core"] and len(parts) > 2 and parts[2] in RANKS:
                found.add(parts[2])
    return found


def test_recipes_core_imports_only_downwards_and_models_and_strategies_never_import_recipes():
    wrong = []
    core = os.path.join(REPO, "recipes", "core")
    assert sorted(
        n for n in os.listdir(core) if os.path.isdir(os.path.join(core, n)) and n != "__pycache__"
    ) == sorted(LAYERS)
    for path in _modules():
        where = os.path.relpath(path, REPO)
        parts = where.split(os.sep)
        if parts[0] in ("models", "strategies"):
            source = open(path).read()
            if "from recipes" in source or "import recipes" in source:
                wrong.append(f"{where} imports recipes")
            continue
        if parts[:2] != ["recipes", "core"] or len(parts) < 4:
            continue
        own = RANKS[parts[2]]
        for layer in _core_imports(path):
            if layer != parts[2] and RANKS[layer] >= own:
                wrong.append(f"{where} imports recipes.core.{layer}")
    assert not wrong, wrong
