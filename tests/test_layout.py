"""The code stays readable: short functions and modules in the package's three parts."""
import ast
import os

from tests.helpers import REPO

PARTS = ("recipes", "models", "strategies")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def _modules():
    for part in PARTS:
        for folder, _, files in os.walk(os.path.join(REPO, part)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def test_no_function_is_longer_than_80_lines_and_no_module_than_400():
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
