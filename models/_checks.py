"""Argument checks the models share: a bad argument is a `ValueError` that names it,
never a bare TypeError from deep inside Keras or a silently rounded width."""

import numbers

import keras


def widths(name, values):
    """A non-empty list of positive whole numbers, as a tuple of ints."""
    try:
        values = tuple(values)
    except TypeError:
        values = None
    if not values or not all(_positive_int(v) for v in values):
        raise ValueError(
            f"`{name}` must be a non-empty list of positive whole numbers. Received: {name}={values!r}"
        )
    return tuple(int(v) for v in values)


def count(name, value, minimum=1):
    """A whole number of at least `minimum`, as an int."""
    if not (_whole(value) and value >= minimum):
        raise ValueError(f"`{name}` must be a whole number of at least {minimum}. Received: {name}={value!r}")
    return int(value)


def rate(name, value, low=0.0, high=1.0):
    """A number in [low, high)."""
    if not (isinstance(value, numbers.Real) and low <= value < high):
        raise ValueError(f"`{name}` must be in [{low:g}, {high:g}). Received: {name}={value!r}")
    return float(value)


def _whole(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value):
    return _whole(value) and value > 0


def head_dtype():
    """The dtype of an output layer (softmax or sigmoid): the Keras policy's variable
    dtype, so float32 under a mixed policy, as Keras' mixed-precision guide advises.
    A float16 softmax rounds probabilities near 1 to 11 bits, and the loss's
    gradient with them; the head is a small share of the work."""
    return keras.mixed_precision.global_policy().variable_dtype
