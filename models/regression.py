"""The articles' smallest models: linear regression and the hand-worked sigmoid neuron."""
import keras


def linear_regression(num_features=1, name="linear_regression"):
    """y = theta0 + theta1 * x (one Dense unit: bias theta0, kernel theta1).

    Trained by gradient descent on the mean squared error, it reaches the
    least-squares line. 2 parameters for one feature.
    """
    if num_features < 1:
        raise ValueError(f"`num_features` must be positive. Received: num_features={num_features}")
    return keras.Sequential([keras.Input(shape=(num_features,)),
                             keras.layers.Dense(1, name="theta")], name=name)


def sigmoid_neuron(weights=(0.1, -0.2), bias=0.3, name="sigmoid_neuron"):
    """One neuron y = sigmoid(x . W + b), starting from the article's weights and bias.

    It computes in float64, so one step reproduces the article's seven-decimal
    figures exactly (float32 rounds the new bias 0.30704404 up to 0.3070441).
    """
    weights = [float(w) for w in weights]
    if not weights:
        raise ValueError(f"`weights` must hold one weight per input. Received: weights={weights}")
    return keras.Sequential([
        keras.Input(shape=(len(weights),)),
        keras.layers.Dense(1, activation="sigmoid", name="neuron", dtype="float64",
                           kernel_initializer=keras.initializers.Constant([[w] for w in weights]),
                           bias_initializer=keras.initializers.Constant(float(bias))),
    ], name=name)
