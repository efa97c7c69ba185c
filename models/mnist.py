"""The articles' MNIST dense net: Flatten -> Dense(1024) -> Dense(1024) -> Dense(10, softmax)."""

from collections.abc import Callable, Sequence

import keras

from models import _checks


def mnist_dense(
    hidden_units: Sequence[int] = (1024, 1024),
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28),
    activation: str | Callable = "relu",
    dropout_rate: float = 0.0,
    l2: float = 0.0,
    name: str = "mnist_dense",
) -> keras.Sequential:
    """Returns the articles' MNIST classifier as a `keras.Sequential`.

    With the defaults it has 1,863,690 parameters
    (784*1024+1024 + 1024*1024+1024 + 1024*10+10) and outputs class
    probabilities, so the articles' own
    `compile(optimizer='adam', loss='sparse_categorical_crossentropy',
    metrics=['accuracy'])` + `fit` works on it unchanged.

    Args:
      hidden_units: widths of the hidden ReLU layers.
      num_classes: size of the softmax output.
      input_shape: shape of one example, without the batch dimension.
      activation: activation of the hidden layers.
      dropout_rate: dropout after each hidden layer while training; 0 for none.
      l2: L2 penalty on every kernel (`keras.regularizers.L2`); 0 for none.
      name: model name.
    """
    hidden_units = _checks.widths("hidden_units", hidden_units)
    num_classes = _checks.count("num_classes", num_classes, minimum=2)
    dropout_rate = _checks.rate("dropout_rate", dropout_rate)
    l2 = _checks.rate("l2", l2, high=float("inf"))
    regularizer = keras.regularizers.L2(l2) if l2 else None
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    for units in hidden_units:
        layers.append(keras.layers.Dense(int(units), activation=activation, kernel_regularizer=regularizer))
        if dropout_rate:
            layers.append(keras.layers.Dropout(dropout_rate))
    layers.append(
        keras.layers.Dense(
            num_classes, activation="softmax", kernel_regularizer=regularizer, dtype=_checks.head_dtype()
        )
    )
    return keras.Sequential(layers, name=name)
