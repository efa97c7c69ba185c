"""Guards for `models/_keras_compat.py`: one test per workaround, asserting that the Keras
internal it relies on still exists and behaves as relied on. When one fails after a
Keras upgrade, fix (or drop) the workaround beside it."""

import keras
import numpy as np
import tensorflow as tf
from keras.src.optimizers.base_optimizer import BaseOptimizer

from models import _keras_compat
from tests.helpers import shared_strategy

CPU_1 = "/job:localhost/replica:0/task:0/device:CPU:1"


def _attention(dropout=0.0):
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, dropout=dropout)
    attention.build((None, 5, 8), (None, 5, 8))
    return attention


def test_attention_projections_are_einsum_denses_of_the_layout_relied_on():
    attention = _attention(dropout=0.25)
    projections = _keras_compat.attention_projections(attention)
    assert all(isinstance(p, keras.layers.EinsumDense) for p in projections)
    assert (attention.num_heads, attention.key_dim, attention.dropout) == (2, 3, 0.25)
    x = tf.random.normal([4, 5, 8], seed=0)
    for projection in projections[:3]:
        assert tuple(projection.kernel.shape) == (8, 2, 3) and tuple(projection.bias.shape) == (2, 3)
        assert tuple(projection(x).shape) == (4, 5, 2, 3)
        np.testing.assert_allclose(
            projection(x), np.einsum("btd,dnh->btnh", x, projection.kernel) + projection.bias, atol=1e-5
        )
    output = projections.output
    assert tuple(output.kernel.shape) == (2, 3, 8) and tuple(output.bias.shape) == (8,)
    heads = tf.random.normal([4, 5, 2, 3], seed=1)
    np.testing.assert_allclose(
        output(heads), np.einsum("btnh,nhd->btd", heads, output.kernel) + output.bias, atol=1e-5
    )


def test_attend_is_the_attention_the_layer_computes_between_its_projections():
    attention = _attention()
    projections = _keras_compat.attention_projections(attention)
    x = tf.random.normal([4, 5, 8], seed=2)
    positions = tf.range(5)
    mask = (positions[:, None] >= positions[None, :])[None]  # Causal, [1, T, S].
    attended = _keras_compat.attend(
        attention, projections.query(x), projections.key(x), projections.value(x), mask
    )
    assert tuple(attended.shape) == (4, 5, 2, 3)
    np.testing.assert_allclose(projections.output(attended), attention(x, x, attention_mask=mask), atol=1e-5)


class _Holder(keras.layers.Layer):
    def __init__(self, shared, **kwargs):
        super().__init__(**kwargs)
        self.parts = [shared, keras.layers.Dense(3, name="in_a_list")]

    def call(self, x):
        return self.parts[1](self.parts[0](x))


def test_all_layers_walks_every_nested_layer_once_and_leaves_the_model_out():
    shared = keras.layers.Dense(4, name="shared")
    inner = keras.Sequential(
        [keras.Input((4,)), shared, keras.layers.Dense(4, name="inner_dense")], name="inner"
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, name="first"), inner, _Holder(shared)])
    layers = _keras_compat.all_layers(model)
    assert len({id(layer) for layer in layers}) == len(layers)
    names = {layer.name for layer in layers}
    assert {"first", "inner", "shared", "inner_dense", model.layers[-1].name, "in_a_list"} <= names
    assert model.name not in names


def test_move_variable_moves_the_value_and_keeps_the_variable_and_its_slots_follow():
    variable = keras.Variable(np.ones(3, np.float32), name="moved")
    path = variable.path
    _keras_compat.move_variable(variable, CPU_1)
    assert isinstance(variable.value, tf.Variable) and variable.value.device == CPU_1
    assert variable.path == path
    variable.assign([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0, 3.0])
    optimizer = keras.optimizers.Adam()
    optimizer.build([variable])
    slots = [slot for slot in optimizer.variables if tuple(slot.shape) == (3,)]
    assert len(slots) == 2 and all(slot.value.device == CPU_1 for slot in slots)


def _applied_under_mirrored(change_optimizer):
    """What one SGD step (learning rate 1) of gradient 1 on each of 2 replicas applies."""
    strategy = shared_strategy("mirrored")
    with strategy.scope():
        weight = keras.Variable(np.zeros(2, np.float32))
        optimizer = keras.optimizers.SGD(learning_rate=1.0)
        optimizer.build([weight])
    change_optimizer(optimizer)

    @tf.function
    def replica_step():
        optimizer.apply_gradients([(tf.ones(2), weight)])

    strategy.run(replica_step)
    return -weight.numpy()


def test_apply_gradients_sums_the_replicas_in_all_reduce_sum_gradients_which_the_workaround_turns_off():
    calls = []

    def spy(optimizer):
        real = optimizer._all_reduce_sum_gradients
        optimizer._all_reduce_sum_gradients = lambda grads_and_vars: calls.append(1) or real(grads_and_vars)

    np.testing.assert_array_equal(_applied_under_mirrored(spy), [2.0, 2.0])  # Keras sums the replicas'.
    assert calls
    turned_off = _applied_under_mirrored(_keras_compat.sum_gradients_before_clipping)
    np.testing.assert_array_equal(turned_off, [1.0, 1.0])  # The caller sums, not Keras.


def test_updates_one_device_applies_keras_own_update_to_each_devices_copy():
    optimizer_type = type(keras.optimizers.SGD())
    for name in ("_backend_update_step", "_apply_weight_decay"):  # Keras' TF optimizer distributes...
        assert getattr(optimizer_type, name) is not getattr(BaseOptimizer, name), name  # ...its own way.
    reference_weight = keras.Variable(np.ones(2, np.float32))
    reference = keras.optimizers.SGD(learning_rate=0.5, weight_decay=0.1)
    reference.apply([tf.constant([1.0, -2.0])], [reference_weight])
    strategy = shared_strategy("mirrored")
    with strategy.scope():
        weight = keras.Variable(np.ones(2, np.float32))
        optimizer = keras.optimizers.SGD(learning_rate=0.5, weight_decay=0.1)
        optimizer.build([weight])

    def on_one_device(variable, gradients):
        with _keras_compat.updates_one_device(optimizer):
            optimizer.apply(gradients, [weight])

    @tf.function
    def replica_step():
        gradients = [tf.constant([1.0, -2.0])]
        tf.distribute.get_replica_context().merge_call(
            lambda strategy: strategy.extended.update(weight.value, on_one_device, args=(gradients,))
        )

    strategy.run(replica_step)
    for copy in strategy.experimental_local_results(weight.value):
        np.testing.assert_allclose(copy.numpy(), reference_weight.numpy(), rtol=1e-6)
    assert "_backend_update_step" not in vars(optimizer)  # Keras' own methods are back.
