"""Helpers the tests share: strategies, fresh processes, and assertions on the CLI's output."""

import copy
import functools
import importlib
import os
import subprocess
import sys

import strategies
from recipes.core.deploy import serving
from recipes.core.input import data

# What the MNIST recipes' saved_model/ serves: uint8 pixels [N, 28, 28].
PIXELS = serving.Signature((28, 28), "uint8", data.scale_pixels)
NUM_CPU_DEVICES = 2  # Logical CPU devices a mirrored test strategy uses.
# conftest.py splits the host CPU into this many: 4 pipeline stages need 4.
SPLIT_CPU_DEVICES = 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def shared_strategy(name):
    """One strategy object per name for the whole session. Two MirroredStrategy
    objects in one process reuse the same collective keys, so a second one that
    all-reduces tensors of another shape fails with "Shape mismatch in the
    collective instance" (TensorFlow 2.21); a real run makes just one."""
    return strategies.get_strategy(name, num_cpu_devices=NUM_CPU_DEVICES)


def run_module(module, *args, timeout=300):
    """Runs `python -m module args` in a fresh process from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def run_python(code, timeout=300, env=None):
    """Runs Python `code` in a fresh process (environment `env`, default this one's);
    returns its stripped stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def parse_recipe_command(argv):
    """Parses `python -m recipes.NAME FLAGS...` with that recipe's absl flags, as its
    `main` would, without touching the process's own flags; returns the parsed copy.
    Raises on an unknown flag or a bad value."""
    from absl import flags

    assert argv[:2] == ["python", "-m"] and argv[2].startswith("recipes."), argv
    importlib.import_module(argv[2])  # Defines the recipe's flags.
    parser = copy.deepcopy(flags.FLAGS)
    parser.unparse_flags()
    parser([argv[2]] + argv[3:])
    return parser


def assert_one_line_error(done, *fragments):
    """A user's mistake: exit 1, no traceback, and a last line `error: ...` that
    holds every fragment (what was wrong and what to do)."""
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for fragment in fragments:
        assert fragment in last, last


def saved_step(message):
    """N in a `preempted: ... saved a checkpoint at step N. ...` message."""
    return int(message.split("checkpoint at step ")[1].split(".")[0])


def train_mnist_net(config, strategy, dataset):
    """The shared machinery's whole run (`train.train_model`) on the articles' MNIST
    net, called directly rather than through a recipe; returns metrics.json's dict."""
    import keras

    import models
    from recipes.core.training import step, train

    task = train.Task(
        "mnist",
        models.mnist_dense,
        step.Objective(keras.losses.sparse_categorical_crossentropy),
        metrics_fn=lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        preprocess=data.scale_pixels,
        signature=PIXELS,
    )
    results, _ = train.train_model(task, dataset, config=config, strategy=strategy)
    return results


def run_in_process(module, args, monkeypatch, capfd):
    """`python -m recipes.<module> ARGS` through its real entry point (`entry.run(main)`:
    absl's parsing, one-line errors), in this process; returns (exit code, stdout, stderr)."""
    from absl import flags

    from recipes.core.cli import entry

    monkeypatch.setattr(sys, "argv", [module.__file__, *args])
    flags.FLAGS.unparse_flags()
    try:
        entry.run(module.main)
        code = 0
    except SystemExit as e:
        code = e.code or 0  # absl's app.run exits with main's None.
    finally:
        flags.FLAGS.unparse_flags()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, err[-3000:]
    return code, out, err


def assert_one_error_line(code, err, expected):
    """Exit 1, no Python traceback, and exactly one `error:` line, which holds `expected`."""
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and expected in errors[0], (code, err[-2000:])
