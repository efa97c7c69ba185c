"""An LSTM sequence classifier, the gate equations of the article in Keras' LSTM.

For each step t, with input x_t, previous output h and cell state c (Keras keeps
the four gates' weights side by side in one kernel, in the order i, f, c~, o):

    i = sigmoid(x_t W_i + h U_i + b_i)     input gate
    f = sigmoid(x_t W_f + h U_f + b_f)     forget gate
    c~ = tanh(x_t W_c + h U_c + b_c)       candidate cell state
    o = sigmoid(x_t W_o + h U_o + b_o)     output gate
    c = f * c + i * c~
    h = o * tanh(c)
"""

from collections.abc import Sequence

import keras

from models import _checks


def lstm_classifier(
    input_shape: Sequence[int] = (28, 28),
    units: int = 128,
    num_classes: int = 10,
    name: str = "lstm_classifier",
) -> keras.Sequential:
    """LSTM(units) over a [steps, features] sequence -> Dense(num_classes, softmax).

    On MNIST read row by row (28 steps of 28 pixels) with the defaults it has
    81,674 parameters: 4 * (128 * (28 + 128) + 128) + 128 * 10 + 10.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 2:
        raise ValueError(f"`input_shape` must be (steps, features). Received: input_shape={input_shape}")
    num_classes = _checks.count("num_classes", num_classes, minimum=2)
    units = _checks.count("units", units)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.LSTM(units),
            keras.layers.Dense(num_classes, activation="softmax", dtype=_checks.head_dtype()),
        ],
        name=name,
    )
