r"""The articles' hand-worked sigmoid neuron: one gradient-descent step, every
intermediate printed.

    python -m recipes.neuron
    python -m recipes.neuron --strategy=mirrored --num_cpu_devices=2

W = [0.1, -0.2], b = 0.3, input x = [0.5, 0.6], target t = 0.7, loss
L = (t - y)^2, learning rate 0.1. It prints z = 0.23, y = 0.5572479,
L = 0.0203782, dL/dW = [-0.0352202, -0.0422642], dL/db = -0.0704404,
new W = [0.1035220, -0.1957736], new b = 0.3070440. The step itself is the
shared loop's GradientTape step with plain SGD; each replica gets a copy of the
one example, so every strategy takes exactly the same step. Under a second.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.input import data
from recipes.core.training import step, train

FLAGS = flags.FLAGS

WEIGHTS, BIAS = (0.1, -0.2), 0.3
INPUT = [0.5, 0.6]
TARGET = 0.7
RECIPE_DEFAULTS = dict(optimizer="sgd", learning_rate=0.1, train_steps=1)


def worked_step(weights, bias, x, target):
    """The forward and backward pass written out with a GradientTape: a dict of every
    intermediate, as the article works them."""
    w = tf.Variable(np.reshape(weights, (-1, 1)), dtype=tf.float64)
    b = tf.Variable([bias], dtype=tf.float64)
    with tf.GradientTape() as tape:
        z = tf.matmul(tf.constant([x], tf.float64), w) + b
        y = tf.sigmoid(z)
        loss = (target - y) ** 2
    grad_w, grad_b = tape.gradient(loss, [w, b])
    return {
        "z": float(z[0, 0]),
        "y": float(y[0, 0]),
        "L": float(loss[0, 0]),
        "dL/dW": grad_w[:, 0].numpy().tolist(),
        "dL/db": float(grad_b[0]),
    }


def _print(values):
    for name, value in values.items():
        shown = ", ".join(f"{v:.7f}" for v in np.ravel(value))
        print(f"{name:>6} = " + (f"[{shown}]" if isinstance(value, list) else shown))


def run(config, strategy):
    copies = max(config.batch_size, strategy.num_replicas_in_sync)
    config = dataclasses.replace(config, batch_size=copies)
    x = np.tile(np.float32([INPUT]), (copies, 1))
    y = np.full((copies, 1), TARGET, np.float32)
    example = data.ArrayData("one example", "sample", x, y, x, y)
    worked = worked_step(WEIGHTS, BIAS, INPUT, TARGET)
    _print(worked)
    task = train.Task(
        "neuron",
        lambda: models.sigmoid_neuron(WEIGHTS, BIAS),
        step.Objective(keras.losses.mean_squared_error),
        preprocess=lambda inputs: inputs,
        extra_metrics=worked,
    )
    results, model = train.train_model(task, example, config=config, strategy=strategy)
    kernel, bias = model.get_layer("neuron").get_weights()
    new = {"new W": kernel[:, 0].tolist(), "new b": float(bias[0])}
    _print(new)
    return {**results, **new}


def main(argv):
    del argv  # Unused.
    recipe_flags.no_data_flags("the articles' one worked example")
    config = recipe_flags.train_config("neuron", batch_size=1, **RECIPE_DEFAULTS)
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy)


if __name__ == "__main__":
    entry.run(main)
