"""The articles' MNIST dense net: Flatten -> Dense(1024) -> Dense(1024) -> Dense(10, softmax)."""
import keras


def mnist_dense(
    hidden_units=(1024, 1024),
    num_classes=10,
    input_shape=(28, 28),
    activation="relu",
    dropout_rate=0.0,
    l2=0.0,
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
      dropout_rate: dropout after each hidden layer while training; 0 for none.
      l2: L2 penalty on every kernel (`keras.regularizers.L2`); 0 for none.
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
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1). Received: dropout_rate={dropout_rate}")
    if l2 < 0:
        raise ValueError(f"`l2` must be 0 or more. Received: l2={l2}")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    for units in hidden_units:
        layers.append(keras.layers.Dense(int(units), activation=activation,
                                         kernel_regularizer=regularizer))
        if dropout_rate:
            layers.append(keras.layers.Dropout(dropout_rate))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer))
    return keras.Sequential(layers, name=name)
