"""The articles' two-layer MLP (their PyTorch `LargeModel`): fc1 -> ReLU -> fc2."""

from collections.abc import Sequence

import keras

from models import _checks


def two_layer_mlp(
    input_shape: Sequence[int] = (28, 28),
    hidden_units: int = 512,
    num_classes: int = 10,
    name: str = "two_layer_mlp",
) -> keras.Sequential:
    """Flatten -> Dense(hidden_units, relu) (fc1) -> Dense(num_classes, softmax) (fc2);
    `num_classes=1`: one sigmoid unit (the probability of class 1), for a binary task.

    The article's fc2 gave logits to `CrossEntropyLoss`, which applies the
    softmax itself; here the softmax is in the model. 407,050 parameters with the
    defaults: 784 * 512 + 512 + 512 * 10 + 10.
    """
    hidden_units = _checks.count("hidden_units", hidden_units)
    num_classes = _checks.count("num_classes", num_classes)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden_units, activation="relu", name="fc1"),
            keras.layers.Dense(num_classes, activation=activation, name="fc2", dtype=_checks.head_dtype()),
        ],
        name=name,
    )
