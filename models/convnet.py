"""The articles' CNN: two 3x3 convolutions with max pooling, then two dense layers.

The article wrote it in PyTorch with `nn.Linear(64 * 7 * 7, 128)`, which only fits
28x28 input. Keras' Flatten takes its size from the input, so the same model fits
MNIST (28x28x1, 3,136 features after the convolutions) and CIFAR-10 (32x32x3, 4,096).
"""

from collections.abc import Sequence

import keras

from models import _checks


def cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 128,
    name: str = "cnn",
) -> keras.Sequential:
    """Conv(32, 3x3, same) -> ReLU -> MaxPool(2) -> Conv(64, 3x3, same) -> ReLU ->
    MaxPool(2) -> Flatten -> Dense(128, relu) -> Dense(num_classes, softmax).

    The article's last layer gave logits to PyTorch's `CrossEntropyLoss`, which
    applies the softmax itself; here the softmax is part of the model, so it
    outputs probabilities like the other classifiers. 421,642 parameters on
    28x28x1 input, 545,098 on 32x32x3.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
        )
    num_classes = _checks.count("num_classes", num_classes, minimum=2)
    dense_units = _checks.count("dense_units", dense_units)
    layers = [keras.Input(shape=input_shape)]
    for count in _checks.widths("filters", filters):
        layers += [
            keras.layers.Conv2D(count, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(dense_units, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax", dtype=_checks.head_dtype()),
    ]
    return keras.Sequential(layers, name=name)
