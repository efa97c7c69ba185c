"""Shared test set-up: offline, and the host CPU split into 2 logical devices.

The split must happen before TensorFlow initializes, so it runs at import,
before any test module builds a tensor.
"""
import functools
import os
import subprocess
import sys

# Tests never touch the network: the data code treats it as down.
os.environ["RECIPES_OFFLINE"] = "1"
# TensorFlow's PreemptionCheckpointHandler asks the GCE metadata server whether it
# runs on Google Cloud; point it at a closed local port so the answer is a quick no.
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"

import pytest  # noqa: E402

import strategies  # noqa: E402

NUM_CPU_DEVICES = 2
strategies.configure_cpu_devices(NUM_CPU_DEVICES)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def mnist():
    from recipes import data
    return data.load_mnist("sample")


@functools.lru_cache(maxsize=None)
def shared_strategy(name):
    """One strategy object per name for the whole session. Two MirroredStrategy
    objects in one process reuse the same collective keys, so a second one that
    all-reduces tensors of another shape fails with "Shape mismatch in the
    collective instance" (TensorFlow 2.21); a real run makes just one."""
    return strategies.get_strategy(name, num_cpu_devices=NUM_CPU_DEVICES)


@pytest.fixture(params=["default", "mirrored"])
def strategy(request):
    """The default strategy, and MirroredStrategy over 2 logical CPUs."""
    return shared_strategy(request.param)


def run_module(module, *args, timeout=300):
    """Runs `python -m module args` in a fresh process from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def run_python(code, timeout=300, env=None):
    """Runs Python `code` in a fresh process (environment `env`, default this one's);
    returns its stripped stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def parse_recipe_command(argv):
    """Parses `python -m recipes.NAME FLAGS...` with that recipe's absl flags, as its
    `main` would, without touching the process's own flags; returns the parsed copy.
    Raises on an unknown flag or a bad value."""
    import copy
    import importlib

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
