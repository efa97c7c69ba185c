"""The process around a run: importing the package changes nothing process-wide,
the entry point sets what a recipe needs (the BFC allocator, quiet logs), and a
run leaves a training-curves plot read back from its logs."""

import os
import re
import struct

import numpy as np
import pytest

from recipes.core.rundir import artifacts
from tests.helpers import run_module, run_python

_IMPORT_SIDE_EFFECTS = """
import logging, os, signal, sys, threading
# The third-party stack first: importing TensorFlow itself sets TF2_BEHAVIOR,
# TPU_ML_PLATFORM, KMP_* and more, which no code of ours can prevent.
import absl.app, absl.flags, keras, numpy, tensorflow, tensorflow_datasets, sklearn, matplotlib
from absl import logging as absl_logging

def state():
    return {"environment": dict(os.environ), "root logger": logging.getLogger().level,
            "tensorflow logger": logging.getLogger("tensorflow").level,
            "absl verbosity": absl_logging.get_verbosity(),
            "precision policy": keras.mixed_precision.global_policy().name,
            "thread excepthook": threading.excepthook, "excepthook": sys.excepthook,
            "SIGTERM": signal.getsignal(signal.SIGTERM), "SIGINT": signal.getsignal(signal.SIGINT)}

before = state()
import models, strategies, recipes
from recipes.core.rundir import artifacts, fault_tolerance
from recipes.core.training import config, loop, metrics, optimization, step, train
from recipes.core.input import data
from recipes.core.cli import entry, flags
from recipes.core import errors
from recipes.core.nlp import text
from recipes import bert, bigmodel, cnn, linreg, lstm, mlp, mnist, neuron
after = state()
print([name for name in before if before[name] != after[name]])
"""


def test_importing_the_package_changes_no_process_wide_state():
    assert (
        run_python(_IMPORT_SIDE_EFFECTS, env=_without("TF_CPU_ALLOCATOR_USE_BFC", "TF_CPP_MIN_LOG_LEVEL"))
        == "[]"
    )


def _without(*names):
    return {k: v for k, v in os.environ.items() if k not in names}


_ALLOCATOR_PROBE = """
import runpy, sys
if "{recipe}":  # A real recipe run first, through its __main__ entry point.
    sys.argv = ["recipes.neuron", "--model_dir={model_dir}"]
    try:
        runpy.run_module("recipes.neuron", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert not e.code, e.code
import tensorflow as tf
before = tf.config.experimental.get_memory_info("CPU:0")["current"]
x = tf.ones((1000, 1000)) + 1
# BFC counts the 4,000,000 bytes asked for; TF's default CPU allocator rounds them up.
print(tf.config.experimental.get_memory_info("CPU:0")["current"] - before)
"""


def _allocated(tmp_path, bfc, recipe):
    env = _without("TF_CPU_ALLOCATOR_USE_BFC")
    if bfc is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = bfc
    probe = _ALLOCATOR_PROBE.format(recipe="yes" if recipe else "", model_dir=tmp_path / str(bfc))
    return int(run_python(probe, env=env).splitlines()[-1])


@pytest.mark.slow
def test_a_recipe_run_uses_the_bfc_allocator_unless_the_user_chose(tmp_path):
    bfc, default = _allocated(tmp_path, "true", False), _allocated(tmp_path, "false", False)
    assert bfc != default  # The probe tells the two allocators apart.
    assert _allocated(tmp_path, None, False) == default  # Importing TensorFlow alone: no BFC.
    assert _allocated(tmp_path, None, True) == bfc  # A recipe's entry point turns it on...
    assert _allocated(tmp_path, "false", True) == default  # ...unless the user exported a choice.


_ABSL_INFO = re.compile(r"^I\d{4} [\d:.]+ +\d+ \S+\.py:\d+\]", re.M)


@pytest.mark.slow
def test_a_default_run_prints_no_absl_info_lines_and_verbosity_brings_them_back(tmp_path):
    args = ["--train_steps=20", "--steps_per_loop=10", "--checkpoint_steps=10"]
    quiet = run_module("recipes.mnist", f"--model_dir={tmp_path / 'quiet'}", *args)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not _ABSL_INFO.search(quiet.stdout + quiet.stderr), (quiet.stdout + quiet.stderr)[-3000:]
    for line in (
        "--strategy=auto chose default",
        "Data: mnist (bundled sample)",
        "Strategy: default with 1 replica(s)",
        "Epoch 1/1",
        "Test: loss=",
    ):
        assert line in quiet.stdout
    assert (tmp_path / "quiet" / "curves.png").exists()

    verbose = run_module("recipes.mnist", f"--model_dir={tmp_path / 'verbose'}", *args, "--verbosity=0")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert _ABSL_INFO.search(verbose.stdout + verbose.stderr)


def _png_size(path):
    header = open(path, "rb").read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_curves_cover_a_resumed_run_and_mark_the_early_stopping_epoch(tmp_path, mnist):
    from recipes.core.training.config import TrainConfig
    from tests.helpers import shared_strategy, train_mnist_net

    base = dict(
        model_dir=str(tmp_path),
        batch_size=450,
        seed=1,
        learning_rate=3e-3,
        steps_per_loop=5,
        early_stopping_patience=1,
    )
    train_mnist_net(TrainConfig(train_steps=9, **base), shared_strategy("default"), mnist)
    results = train_mnist_net(TrainConfig(epochs=30, **base), shared_strategy("default"), mnist)
    scalars = artifacts.read_scalars(tmp_path / "logs" / "train")
    validation = artifacts.read_scalars(tmp_path / "logs" / "validation")
    # 9 steps of 9 per epoch in the first run, then the rest: one curve from step 5.
    assert min(scalars["loss"]) == 5 and max(scalars["loss"]) == results["steps"]
    assert set(validation["loss"]) == {9 * e for e in range(1, results["steps"] // 9 + 1)}
    assert {"loss", "accuracy", "learning_rate"} <= set(scalars)
    assert results["stopped_early"] and results["best_epoch"] < len(validation["loss"])
    figure = artifacts.curves_figure(tmp_path, results, steps_per_epoch=9)
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy"]  # Constant rate: no panel.
    loss_axes = figure.axes[0]
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    np.testing.assert_array_equal(lines["train"].get_xdata(), sorted(scalars["loss"]))
    np.testing.assert_array_equal(lines["validation"].get_xdata(), sorted(validation["loss"]))
    marker = lines[f"stopped early; kept epoch {results['best_epoch']}"]
    assert list(marker.get_xdata()) == [9 * results["best_epoch"]] * 2
    width, height = _png_size(tmp_path / "curves.png")
    assert width >= 800 and height >= 300
