"""The articles' smallest models: linear regression and the hand-worked sigmoid neuron."""

import math
from collections.abc import Sequence

import keras

from models import _checks


def linear_regression(num_features: int = 1, name: str = "linear_regression") -> keras.Sequential:
    """y = theta0 + theta1 * x (one Dense unit: bias theta0, kernel theta1).

    Trained by gradient descent on the mean squared error, it reaches the
    least-squares line. 2 parameters for one feature.
    """
    num_features = _checks.count("num_features", num_features)
    return keras.Sequential(
        [keras.Input(shape=(num_features,)), keras.layers.Dense(1, name="theta")], name=name
    )


def sigmoid_neuron(
    weights: Sequence[float] = (0.1, -0.2), bias: float = 0.3, name: str = "sigmoid_neuron"
) -> keras.Sequential:
    """One neuron y = sigmoid(x . W + b), starting from the article's weights and bias.

    It computes in float64, so one step reproduces the article's seven-decimal
    figures exactly (float32 rounds the new bias 0.30704404 up to 0.3070441).
    """
    weights = [float(w) for w in weights]
    if not weights or not all(math.isfinite(w) for w in [*weights, float(bias)]):
        raise ValueError(
            "`weights` must hold one finite weight per input, and `bias` be finite. "
            f"Received: weights={weights}, bias={bias}"
        )
    return keras.Sequential(
        [
            keras.Input(shape=(len(weights),)),
            keras.layers.Dense(
                1,
                activation="sigmoid",
                name="neuron",
                dtype="float64",
                kernel_initializer=keras.initializers.Constant([[w] for w in weights]),
                bias_initializer=keras.initializers.Constant(float(bias)),
            ),
        ],
        name=name,
    )
