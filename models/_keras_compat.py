"""Every place the package relies on Keras beyond its documented API, in one module.

Each function names the Keras internals it uses, and `tests/test_compat.py` holds one
guard test per function that fails when a Keras upgrade changes them: fix the function
(or drop it, when Keras made it unnecessary) and the guard together. Written against
Keras 3.15 on the TensorFlow backend. `models` is the lowest layer of the package, so
`models`, `strategies` and `recipes` can all import this module.
"""

import contextlib
from typing import NamedTuple

import keras
import tensorflow as tf
from keras.src.optimizers.base_optimizer import BaseOptimizer


class AttentionProjections(NamedTuple):
    """A `keras.layers.MultiHeadAttention`'s four `EinsumDense` projections."""

    query: keras.layers.Layer
    key: keras.layers.Layer
    value: keras.layers.Layer
    output: keras.layers.Layer


def attention_projections(attention: keras.layers.MultiHeadAttention) -> AttentionProjections:
    """The query, key, value and output projections of a built `MultiHeadAttention`.

    The properties (`query_dense`, `key_dense`, `value_dense`, `output_dense`) are
    public, but what the package relies on is not documented: their layout. The query,
    key and value projections map [B, T, hidden] to [B, T, heads, head_size] with a
    kernel [hidden, heads, head_size] and a bias [heads, head_size]; the output
    projection maps [B, T, heads, head_size] back to [B, T, hidden] with a kernel
    [heads, head_size, hidden] and a bias [hidden]. `models.GPT` applies them to its
    key/value cache and `strategies.tensor_parallel` splits them by heads.
    """
    return AttentionProjections(
        attention.query_dense, attention.key_dense, attention.value_dense, attention.output_dense
    )


def attend(attention, query, key, value, mask, training=False):
    """`attention`'s attention over projected `query` [B, T, heads, head_size] and
    `key`, `value` [B, S, heads, head_size], `mask` [B, T, S] (True: attend): the heads'
    outputs [B, T, heads, head_size], before the output projection, with the layer's
    own scaling, softmax and dropout.

    Calls the private `MultiHeadAttention._compute_attention(query, key, value,
    attention_mask, training)`, which returns (outputs, scores); its docstring invites
    subclasses to override it, and `models.CausalSelfAttention` calls it on a key/value
    cache, as keras-hub's `CachedMultiHeadAttention` does.
    """
    attended, _ = attention._compute_attention(query, key, value, attention_mask=mask, training=training)
    return attended


def all_layers(model: keras.layers.Layer) -> list:
    """Every layer inside `model`, nested ones included, each once, `model` left out.

    Keras' private `Layer._flatten_layers(include_self=False, recursive=True)`: the
    walk Keras itself uses over the layers a layer tracks (in lists and attributes too).
    """
    return model._flatten_layers(include_self=False, recursive=True)


def move_variable(variable: keras.Variable, device: str) -> None:
    """Moves a Keras variable's value to `device`, keeping the Keras variable itself.

    Keras 3 has no public way to move a variable. On the TensorFlow backend a
    `keras.Variable` keeps its value in the private `_value`, a `tf.Variable`, which
    every read, assignment and the optimizer (creating its slots beside
    `variable.value`) go through; this replaces it by a `tf.Variable` created on
    `device` with the same value, so that the variable's identity and path, which
    checkpoints, `model.keras` and the optimizer know it by, stay as they were.
    """
    with tf.device(device):
        variable._value = tf.Variable(variable.value, trainable=variable.trainable, name=variable.name)


def sum_gradients_before_clipping(optimizer: keras.optimizers.Optimizer) -> None:
    """Turns off `optimizer`'s own cross-replica sum of the gradients, so that the
    caller sums them first and Keras clips the whole batch's gradient, not each
    replica's part.

    Keras 3 (checked up to 3.15) applies `clipnorm` / `global_clipnorm` / `clipvalue`
    in `apply_gradients` *before* its TensorFlow optimizer sums the replicas'
    gradients in the private `_all_reduce_sum_gradients(grads_and_vars)`, so under
    `MirroredStrategy` each replica clips its partial gradient: `global_clipnorm=0.05`
    applied a gradient of norm 0.087 on 2 replicas. `step.Trainer` all-reduces the
    gradients itself and replaces this method by the identity.
    """
    if not callable(getattr(optimizer, "_all_reduce_sum_gradients", None)):
        raise RuntimeError(
            f"this Keras ({keras.__version__}) has no Optimizer._all_reduce_sum_gradients; "
            "models/_keras_compat.py's clipping workaround needs revisiting"
        )
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars


@contextlib.contextmanager
def updates_one_device(optimizer: keras.optimizers.Optimizer):
    """Makes `optimizer.apply` update the variables it is given as they read, with no
    tf.distribute calls of its own, for as long as the block runs.

    Keras' TensorFlow optimizer overrides the private `_backend_update_step` and
    `_apply_weight_decay` to hand each variable to `strategy.extended.update` (one
    merge_call and one update per variable and device). Inside an update for one
    device, where every mirrored variable reads and writes that device's copy, that
    would start another update over every device; the backend-independent versions of
    the two methods (`keras.src.optimizers.base_optimizer.BaseOptimizer`'s) are what
    one device needs, and they are bound to `optimizer` for the block.
    """
    methods = ("_backend_update_step", "_apply_weight_decay")
    for name in methods:
        setattr(optimizer, name, getattr(BaseOptimizer, name).__get__(optimizer))
    try:
        yield
    finally:
        for name in methods:
            delattr(optimizer, name)
