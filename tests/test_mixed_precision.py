"""Tier 3: float16 with dynamic loss scaling (`--mixed_precision=mixed_float16`), and
the mirrored step's per-device fused update, under `default` and `mirrored`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes.core.input import data
from recipes.core.training import optimization
from recipes.core.training.step import Objective, StepOptions, Trainer
from tests.helpers import shared_strategy

BATCH = 64


def _trainer(strategy, optimizer_fn, policy, jit_compile=True):
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = models.mnist_dense(hidden_units=(256, 256))
            model.build((None, 28, 28))
            optimizer = optimizer_fn()
        return Trainer(
            strategy,
            model,
            optimizer,
            Objective(keras.losses.sparse_categorical_crossentropy),
            global_batch_size=BATCH,
            options=StepOptions(jit_compile=jit_compile),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _loop(trainer, iterator, steps):
    """Runs `steps` steps; returns their mean training loss."""
    trainer.reset_train_metrics()
    trainer.train_loop(iterator, tf.constant(steps))
    return trainer.train_results()["loss"]


def _batches(strategy, mnist):
    return iter(
        data.train_dataset(
            strategy, data.from_array_data(mnist).train, BATCH, preprocess=data.scale_pixels, seed=0
        )
    )


def test_float16_trains_and_a_step_whose_gradients_overflow_changes_nothing(strategy, mnist):
    trainer = _trainer(
        strategy,
        lambda: optimization.LossScaleOptimizer(keras.optimizers.Adam(1e-3), dynamic_growth_steps=10),
        "mixed_float16",
    )
    optimizer, weights = trainer.optimizer, trainer.model.weights
    assert trainer.model.layers[1].compute_dtype == "float16"
    assert trainer.model.layers[-1].compute_dtype == "float32"  # The softmax head.
    batches = _batches(strategy, mnist)
    first = _loop(trainer, batches, 10)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**16  # 10 finite steps: doubled once.

    # An overflow, injected: at this scale the float16 backward pass reaches inf.
    optimizer.dynamic_scale.assign(2.0**40)
    before = [w.numpy() for w in weights]
    _loop(trainer, batches, 1)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**39  # Halved,
    assert int(optimizer.iterations.numpy()) == 11  # the step counted,
    for old, new in zip(before, weights):  # and nothing applied.
        np.testing.assert_array_equal(new.numpy(), old)

    # The scale halves until the gradients fit, then training goes on.
    last = _loop(trainer, batches, 60)
    assert 2.0**10 <= float(optimizer.dynamic_scale.numpy()) <= 2.0**30
    assert int(optimizer.iterations.numpy()) == 71
    assert all(np.isfinite(w.numpy()).all() for w in weights)
    assert last < first < np.log(10) + 0.2


def test_the_run_wraps_adam_in_loss_scaling_only_for_float16():
    from recipes.core.training.config import TrainConfig

    config = TrainConfig(model_dir="unused")
    for policy, wrapped in (("mixed_float16", True), ("mixed_bfloat16", False), ("float32", False)):
        keras.mixed_precision.set_global_policy(policy)
        try:
            optimizer = optimization.make_optimizer(config)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert isinstance(optimizer, optimization.LossScaleOptimizer) == wrapped, policy


@pytest.mark.slow
def test_mirrored_fused_update_matches_the_single_device_step(mnist):
    """The mirrored step on CPUs runs the whole optimizer step once per device, XLA-
    compiled, on that device's copies (`Trainer._update_one_device`), in place of
    Keras' per-variable tf.distribute updates. AdamW's weight decay, global
    clipping and a schedule exercise every part of Keras' `apply`. In float64, so
    that two half-batches' gradients summed cannot flip a ReLU against one batch's."""

    def optimizer():
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 5, 0.5)
        return keras.optimizers.AdamW(schedule, weight_decay=0.1, global_clipnorm=0.5)

    runs = {}
    for name in ("default", "mirrored"):
        strategy = shared_strategy(name)
        runs[name] = _trainer(strategy, optimizer, "float64")
        _loop(runs[name], _batches(strategy, mnist), 12)
    assert len(runs["mirrored"]._device_updates) == 2  # One compiled update per device.
    for fused, single in zip(runs["mirrored"].model.weights, runs["default"].model.weights):
        copies = shared_strategy("mirrored").experimental_local_results(fused.value)
        np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy())  # Replicas agree.
        np.testing.assert_allclose(fused.numpy(), single.numpy(), rtol=0, atol=1e-12)
    assert int(runs["mirrored"].optimizer.iterations.numpy()) == 12
