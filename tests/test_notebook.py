"""notebooks/colab_tpu.ipynb: valid, its commands parse, and its cells run on CPU."""

import configparser
import json
import os
import re
import shlex
import sys

import pytest

from tests.helpers import REPO, parse_recipe_command

NOTEBOOK = os.path.join(REPO, "notebooks", "colab_tpu.ipynb")
RECIPE_COMMAND = re.compile(r"^\s*(?:#\s*)?!\s*(python -m recipes\.\S+.*)$")


def _notebook():
    with open(NOTEBOOK) as f:
        return json.load(f)


def _code_cells(tag=None, without_tag=None):
    for cell in _notebook()["cells"]:
        tags = cell["metadata"].get("tags", [])
        if cell["cell_type"] == "code" and (tag is None or tag in tags) and without_tag not in tags:
            yield "".join(cell["source"])


def test_notebook_is_valid_nbformat_4_json():
    notebook = _notebook()
    assert notebook["nbformat"] == 4 and notebook["metadata"]["accelerator"] == "TPU"
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell


def test_install_keeps_tensorflow_tpu_and_the_other_dependencies_of_setup_cfg():
    install = "\n".join(_code_cells(tag="install"))
    assert re.search(
        r'pip install "tensorflow-tpu==2\.20\.\*" -f https://storage\.googleapis\.com/'
        r"libtpu-tf-releases/index\.html",
        install,
    )
    assert "pip install --no-deps -e large-model-recipes" in install
    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO, "setup.cfg"))
    required = [
        line.strip()
        for line in setup["options"]["install_requires"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    others = [line for line in install.splitlines() if line.startswith('!pip install "keras')]
    assert len(others) == 1
    # Everything setup.cfg requires except tensorflow itself, which tensorflow-tpu replaces.
    assert shlex.split(others[0])[2:] == [r for r in required if not r.startswith("tensorflow>")]


def _recipe_commands():
    commands = []
    for source in _code_cells():
        for line in source.splitlines():
            match = RECIPE_COMMAND.match(line)
            if match:
                commands.append(shlex.split(match.group(1)))
    return commands


def test_every_recipe_command_is_accepted_by_the_flag_parser():
    commands = _recipe_commands()
    assert len(commands) == 2 and ["--strategy=tpu", "--tpu=local"] == commands[0][3:5]
    for argv in commands:
        parser = parse_recipe_command(argv)
        assert parser["strategy"].value == "tpu" and parser["tpu"].value == "local"


@pytest.mark.slow
def test_cells_run_on_cpu_with_the_strategy_swapped_for_default(tmp_path, monkeypatch, capfd):
    """Runs every cell but the installs (this machine has the package already and no
    TPU) through IPython, as Colab does, with --strategy=tpu --tpu=local -> default."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", REPO)
    # `!python` is this test's Python, as it is the kernel's on Colab.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    shell = InteractiveShell.instance()
    try:
        for source in _code_cells(without_tag="install"):
            source = source.replace("--strategy=tpu --tpu=local", "--strategy=default")
            assert "--strategy=tpu" not in source
            shell.user_ns["_exit_code"] = 0
            result = shell.run_cell(source)
            assert result.success, result.error_in_exec or result.error_before_exec
            assert shell.user_ns["_exit_code"] == 0, capfd.readouterr()
    finally:
        InteractiveShell.clear_instance()
    out = capfd.readouterr().out
    assert "Strategy: default with 1 replica(s)" in out and "Epoch 5/5" in out
    metrics = json.load(open(tmp_path / "runs" / "mnist_tpu" / "metrics.json"))
    assert re.search(r"test_accuracy: 0\.9\d", out) and metrics["test_accuracy"] > 0.9
