"""The articles' deep "BigModel" stack: Dense 256-128-64-32-16-8 -> head.

The articles' version stored its layers in `self.layers`, which Keras reserves,
and put a 1-unit sigmoid head on a 10-class problem. Here the layers have their
own names, and the head follows the task: one sigmoid unit for a binary task
(`num_classes=1`), a softmax over `num_classes` otherwise.
"""

from collections.abc import Callable, Sequence

import keras

from models import _checks


@keras.saving.register_keras_serializable(package="models")
class BigModel(keras.Model):
    """Flatten -> Dense(units, relu) [-> Dropout] for each width -> head.

    Args:
      hidden_units: widths of the hidden layers, 256-128-64-32-16-8 by default.
      num_classes: 1 for a binary task (one sigmoid unit, the probability of
        class 1), or the number of classes (a softmax over them).
      dropout_rate: dropout after every hidden layer while training; 0 for none.
      l2: L2 penalty on every kernel (`keras.regularizers.L2`); 0 for none.
      activation: activation of the hidden layers.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (256, 128, 64, 32, 16, 8),
        num_classes: int = 10,
        dropout_rate: float = 0.0,
        l2: float = 0.0,
        activation: str | Callable = "relu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        hidden_units = _checks.widths("hidden_units", hidden_units)
        num_classes = _checks.count("num_classes", num_classes)  # 1: a binary sigmoid head.
        dropout_rate = _checks.rate("dropout_rate", dropout_rate)
        l2 = _checks.rate("l2", l2, high=float("inf"))
        self.hidden_units = hidden_units
        self.num_classes = num_classes
        self.dropout_rate = dropout_rate
        self.l2 = l2
        self.activation = activation

        regularizer = keras.regularizers.L2(l2) if l2 else None
        self.flatten = keras.layers.Flatten()  # Image input [B, 28, 28] works as well as a table.
        self.hidden = [
            keras.layers.Dense(
                units, activation=activation, kernel_regularizer=regularizer, name=f"dense_{i}"
            )
            for i, units in enumerate(hidden_units)
        ]
        self.dropouts = (
            [keras.layers.Dropout(dropout_rate, name=f"dropout_{i}") for i in range(len(hidden_units))]
            if dropout_rate
            else []
        )
        self.head = keras.layers.Dense(
            1 if num_classes == 1 else num_classes,
            activation="sigmoid" if num_classes == 1 else "softmax",
            kernel_regularizer=regularizer,
            name="head",
            dtype=_checks.head_dtype(),
        )

    def build(self, input_shape):
        shape = self.flatten.compute_output_shape(input_shape)
        for dense in self.hidden:
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
        self.head.build(shape)
        self.built = True

    def layer_stack(self) -> list[keras.layers.Layer]:
        """The layers in the order `call` runs them (model parallelism splits this list)."""
        stack = [self.flatten]
        for i, dense in enumerate(self.hidden):
            stack += [dense, self.dropouts[i]] if self.dropouts else [dense]
        return stack + [self.head]

    def features(self, inputs, training=False):
        """What the head reads: the last hidden layer's output."""
        x = inputs
        for layer in self.layer_stack()[:-1]:
            x = layer(x, training=training)
        return x

    def call(self, inputs, training=False):
        return self.head(self.features(inputs, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "num_classes": self.num_classes,
            "dropout_rate": self.dropout_rate,
            "l2": self.l2,
            "activation": self.activation,
        }
