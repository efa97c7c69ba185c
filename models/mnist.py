"""The articles' MNIST dense net: Flatten -> Dense(1024) -> Dense(1024) -> Dense(10, softmax)."""
import keras


def mnist_dense(
    hidden_units=(1024, 1024),
    num_classes=10,
    input_shape=(28, 28),
    activation="relu",
    name="mnist_dense",
):
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
      name: model name.
    """
    hidden_units = tuple(hidden_units)
    if not hidden_units or any(int(u) <= 0 for u in hidden_units):
        raise ValueError(
            "`hidden_units` must be a non-empty list of positive widths. "
            f"Received: hidden_units={hidden_units}"
        )
    if num_classes < 2:
        raise ValueError(
            f"`num_classes` must be at least 2. Received: num_classes={num_classes}"
        )
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(int(units), activation=activation) for units in hidden_units]
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(layers, name=name)
