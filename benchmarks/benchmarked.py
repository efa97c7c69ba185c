"""What the benchmark scripts share: the two models they time (the package's Keras
builds, and their PyTorch twins for the `torch` rows), the recipe runs they start,
and how they take arguments and write results. Imports no TensorFlow
(keras_on_gpu.py runs without it)."""

import argparse
import json
import os
import subprocess
import sys

import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"mnist_dense": models.mnist_dense, "bigmodel": lambda: models.BigModel(num_classes=10)}


def build(model_name):
    """The Keras model, built for 28x28 images."""
    model = MODELS[model_name]()
    model.build((None, 28, 28))
    return model


def torch_twin(model_name):
    """The same Dense stack in PyTorch (ReLU between layers), read off the Keras
    model's kernels; it ends in logits, since PyTorch's cross_entropy applies the
    softmax."""
    import torch

    layers = [torch.nn.Flatten()]
    for kernel in (w for w in build(model_name).trainable_weights if len(w.shape) == 2):
        layers += [torch.nn.Linear(*kernel.shape), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def positive(kind):
    """An argparse type: a `kind` (int or float) above zero, else argparse's one-line error."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}; received {text!r}")
        return value

    return parse


def run_recipe(*flags, env=None):
    """`python -m recipes.mnist FLAGS` in a child process; if it fails, exits with
    the recipe's own last line (its one-line error), not a traceback of this script."""
    done = subprocess.run(
        [sys.executable, "-m", "recipes.mnist", *flags], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        sys.exit(
            f"python -m recipes.mnist {' '.join(flags)} failed: "
            + (lines[-1] if lines else f"exit status {done.returncode}")
        )


def write_json(path, data):
    """Writes `data` to `path` whole or not at all: a run killed while writing leaves
    the previous results file as it was."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".partial", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".partial", path)
