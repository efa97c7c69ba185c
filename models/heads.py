"""The pre-activation outputs (logits) of the package's classifiers, which end in
a softmax (or a one-unit sigmoid), without changing the models.

    z = models.logits(model, x)      # softmax(z) == model(x)

Distillation softens the teacher's and the student's outputs by a temperature,
which needs logits; taking the log of the probabilities instead loses precision
where they saturate. The head's kernel and bias give the logits exactly.
"""

import weakref
from typing import Any

import keras
from keras import ops

_HEAD_ACTIVATIONS = ("softmax", "sigmoid")
# model -> a view of it up to its head; kept off the model, where Keras would track it as a layer.
_FEATURE_VIEWS = weakref.WeakKeyDictionary()


def output_head(model: keras.Model) -> keras.layers.Dense:
    """The model's output layer: a Dense with a softmax or sigmoid activation (the
    `head` attribute of a subclassed model, else the last layer)."""
    head = getattr(model, "head", None) or model.layers[-1]
    activation = getattr(getattr(head, "activation", None), "__name__", None)
    if not isinstance(head, keras.layers.Dense) or activation not in _HEAD_ACTIVATIONS:
        raise ValueError(
            f"{model.name} does not end in a Dense layer with a softmax or sigmoid "
            f"activation, so it has no logits to take. Received: {head.name} ({activation})"
        )
    return head


def logits(model: keras.Model, inputs: Any, training: bool = False) -> Any:
    """`model`'s logits for `inputs`: its head's kernel and bias applied to the head's
    input, which a subclassed model gives through `features(inputs, training)` and a
    functional or sequential one through a view of its graph up to the head. A model
    that returns logits already (`returns_logits`, as `models.GPT`) is called."""
    if getattr(model, "returns_logits", False):
        return model(inputs, training=training)
    head = output_head(model)
    if hasattr(model, "features"):
        features = model.features(inputs, training=training)
    else:
        if model not in _FEATURE_VIEWS:  # Built once: the same layers, no copies.
            _FEATURE_VIEWS[model] = keras.Model(
                model.inputs[0] if len(model.inputs) == 1 else model.inputs, head.input
            )
        features = _FEATURE_VIEWS[model](inputs, training=training)
    z = ops.matmul(ops.cast(features, head.kernel.dtype), head.kernel)
    return z + head.bias if head.use_bias else z
