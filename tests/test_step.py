"""The compiled step's extension points (`step.Objective`), each under `default` and
`mirrored`, and the Keras behaviour the step works around."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes.core.input import data
from recipes.core.training import step
from tests.helpers import shared_strategy

BATCH = 64


def _train(strategy, mnist, objective, initial, steps=1, preprocess=data.scale_pixels):
    """`steps` SGD steps (learning rate 1, so an update is the gradient applied) of
    a small MNIST net from the weights `initial`; returns its trainer."""
    with strategy.scope():
        model = models.mnist_dense(hidden_units=(32,))
        optimizer = keras.optimizers.SGD(learning_rate=1.0)
    model.set_weights(initial)
    trainer = step.Trainer(strategy, model, optimizer, objective, global_batch_size=BATCH)
    iterator = iter(
        data.train_dataset(strategy, data.from_array_data(mnist).train, BATCH, preprocess=preprocess, seed=0)
    )
    trainer.train_loop(iterator, tf.constant(steps))
    return trainer


@pytest.fixture(scope="module")
def initial():
    keras.utils.set_random_seed(0)
    return models.mnist_dense(hidden_units=(32,)).get_weights()


def _plain():
    return step.Objective(keras.losses.sparse_categorical_crossentropy)


class _WithPenalty(step.Objective):
    """Adds 0.5 * ||head kernel||^2 to every example's loss: over the batch its
    gradient is the head kernel itself, whatever the number of replicas."""

    def loss(self, model, x, y, training):
        per_example, predictions = super().loss(model, x, y, training)
        kernel = model.layers[-1].kernel
        return per_example + 0.5 * tf.reduce_sum(tf.square(kernel)), predictions


def test_an_added_loss_term_adds_its_gradient_once_over_the_global_batch(strategy, mnist, initial):
    plain = _train(strategy, mnist, _plain(), initial).model.get_weights()
    penalized = _train(
        strategy, mnist, _WithPenalty(keras.losses.sparse_categorical_crossentropy), initial
    ).model.get_weights()
    head = len(initial) - 2  # The head's kernel: moved by exactly its own value more.
    np.testing.assert_allclose(plain[head] - penalized[head], initial[head], atol=1e-5)
    for i in range(len(initial)):
        if i != head:
            np.testing.assert_allclose(penalized[i], plain[i], atol=1e-6)


class _Masked(step.Objective):
    """Zeroes the chosen weights of the first kernel after every update."""

    def __init__(self, loss_fn, mask):
        super().__init__(loss_fn)
        self.mask = tf.constant(mask)

    def after_update(self, model):
        kernel = model.layers[1].kernel
        kernel.assign(kernel * self.mask)


def test_a_post_update_hook_holds_chosen_weights_at_zero_on_every_replica(strategy, mnist, initial):
    mask = (np.random.default_rng(0).random(initial[0].shape) > 0.5).astype(np.float32)
    objective = _Masked(keras.losses.sparse_categorical_crossentropy, mask)
    plain = _train(strategy, mnist, _plain(), initial).model.get_weights()
    masked = _train(strategy, mnist, objective, initial).model.get_weights()
    np.testing.assert_allclose(masked[0], plain[0] * mask, atol=1e-6)  # The step, then the hook.
    for got, expected in zip(masked[1:], plain[1:]):
        np.testing.assert_allclose(got, expected, atol=1e-6)

    kernel = _train(strategy, mnist, objective, initial, steps=5).model.layers[1].kernel
    copies = strategy.experimental_local_results(kernel.value)
    assert len(copies) == strategy.num_replicas_in_sync
    for copy in copies:
        assert np.all(np.asarray(copy)[mask == 0] == 0)
        assert np.count_nonzero(np.asarray(copy)[mask == 1]) > 0.9 * mask.sum()
        np.testing.assert_array_equal(np.asarray(copy), np.asarray(copies[0]))


class _DoubledInput(step.Objective):
    """A forward pass that feeds the model twice the input."""

    def forward(self, model, x, training):
        return model(2.0 * x, training=training)


def test_a_replaced_forward_pass_is_what_the_step_and_evaluation_run(strategy, mnist, initial):
    doubled = _train(
        strategy, mnist, _DoubledInput(keras.losses.sparse_categorical_crossentropy), initial, steps=3
    )
    reference = _train(
        strategy, mnist, _plain(), initial, steps=3, preprocess=lambda images: 2.0 * data.scale_pixels(images)
    )
    for got, expected in zip(doubled.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    test = data.from_arrays(mnist.x_train, mnist.y_train, test=(mnist.x_test[:128], mnist.y_test[:128])).test
    evaluated = doubled.evaluate(*data.eval_dataset(strategy, test, BATCH, preprocess=data.scale_pixels))
    expected = reference.evaluate(
        *data.eval_dataset(strategy, test, BATCH, preprocess=lambda images: 2.0 * data.scale_pixels(images))
    )
    assert evaluated["loss"] == pytest.approx(expected["loss"], abs=1e-6)


def test_keras_still_clips_each_replicas_gradient_before_its_all_reduce():
    """The behaviour `_keras_compat.sum_gradients_before_clipping` works around. If this fails,
    a Keras upgrade changed it: clip after the all-reduce and the workaround (a
    private method) can go; rename it and the workaround must follow."""
    assert callable(getattr(keras.optimizers.SGD(), "_all_reduce_sum_gradients", None))
    strategy, clip = shared_strategy("mirrored"), 0.05
    with strategy.scope():
        weight = keras.Variable(np.zeros(4, np.float32))
        optimizer = keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=clip)
        optimizer.build([weight])
    # Each replica's gradient is its own input row over the global batch of 2.
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([[3.0, 0, 0, 0], [0, 3.0, 0, 0]])[context.replica_id_in_sync_group]
    )

    @tf.function
    def replica_step(x):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(tf.reduce_sum(weight * x, keepdims=True), global_batch_size=2)
        optimizer.apply_gradients([(tape.gradient(loss, weight), weight)])

    strategy.run(replica_step, args=(inputs,))
    applied = float(np.linalg.norm(-np.asarray(weight.numpy())))
    # Clipping the summed gradient would apply `clip`; Keras applies two clipped halves.
    assert applied == pytest.approx(clip * np.sqrt(2), rel=1e-3), applied


def test_the_trainer_takes_an_objective_and_a_global_batch_size_and_nothing_in_their_place():
    strategy, model = tf.distribute.get_strategy(), models.mnist_dense(hidden_units=(4,))
    with pytest.raises(ValueError, match=r"`objective` must be a step.Objective .*Received: <function"):
        step.Trainer(
            strategy,
            model,
            keras.optimizers.SGD(),
            keras.losses.sparse_categorical_crossentropy,
            global_batch_size=BATCH,
        )
    with pytest.raises(TypeError, match="global_batch_size"):  # No default to reject later.
        step.Trainer(strategy, model, keras.optimizers.SGD(), _plain())
    with pytest.raises(ValueError, match="`accum_steps` must be a positive int"):
        step.StepOptions(accum_steps=0)
