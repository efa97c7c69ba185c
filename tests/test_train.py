"""Tier 3: the shared training loop's behaviour, calling the machinery directly."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes.core.errors import RecipeError
from recipes.core.input import data
from recipes.core.training import step, train
from recipes.core.training.config import TrainConfig
from tests.helpers import PIXELS, shared_strategy, train_mnist_net


def _run(model_dir, dataset, strategy="default", **overrides):
    config = TrainConfig(model_dir=str(model_dir), **{"batch_size": 64, "seed": 7, **overrides})
    if isinstance(strategy, str):
        strategy = shared_strategy(strategy)
    return train_mnist_net(config, strategy, dataset)


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("strategy", ["mirrored", "one_device"])
def test_replicas_end_with_the_single_device_weights(tmp_path, mnist, strategy):
    # In float64, so that summing two half-batches' gradients instead of one batch's
    # cannot flip a ReLU unit's first tiny gradient to zero (in float32 that alone
    # moves a weight by a learning-rate-sized Adam step: 2.6e-4 here).
    try:
        reference = _run(tmp_path / "default", mnist, train_steps=20, mixed_precision="float64")
        other = _run(tmp_path / strategy, mnist, strategy=strategy, train_steps=20, mixed_precision="float64")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert other["num_replicas"] == (2 if strategy == "mirrored" else 1)
    assert (other["strategy"], reference["strategy"]) == (strategy, "default")
    assert other["steps"] == reference["steps"] == 20
    assert _max_abs_diff(_weights(tmp_path / strategy), _weights(tmp_path / "default")) < 1e-9


def test_seed_makes_a_run_reproducible(tmp_path, mnist):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        _run(tmp_path / name, mnist, train_steps=5, seed=seed)
    assert _max_abs_diff(_weights(tmp_path / "a"), _weights(tmp_path / "b")) == 0
    assert _max_abs_diff(_weights(tmp_path / "a"), _weights(tmp_path / "c")) > 1e-3


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, mnist):
    _run(tmp_path / "straight", mnist, train_steps=20, checkpoint_steps=5)
    first = _run(tmp_path / "resumed", mnist, train_steps=10, checkpoint_steps=5)
    second = _run(tmp_path / "resumed", mnist, train_steps=20, checkpoint_steps=5)
    assert (first["steps_this_run"], second["steps_this_run"], second["steps"]) == (10, 10, 20)
    assert _max_abs_diff(_weights(tmp_path / "resumed"), _weights(tmp_path / "straight")) < 1e-5


def test_loss_falls_and_eval_matches_numpy_on_every_test_example(tmp_path, mnist, strategy):
    name = strategy.__class__.__name__
    metrics = _run(tmp_path / name, mnist, strategy=strategy, train_steps=60)
    model = keras.models.load_model(tmp_path / name / "model.keras")
    probabilities = model.predict(mnist.x_test / np.float32(255), verbose=0)
    accuracy = np.mean(np.argmax(probabilities, axis=-1) == mnist.y_test)
    loss = np.mean(keras.losses.sparse_categorical_crossentropy(mnist.y_test, probabilities))
    assert metrics["num_test_examples"] == len(mnist.y_test) == 500  # 500 % 64 != 0
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(float(loss), abs=1e-5)
    assert metrics["test_loss"] < 0.6 < np.log(10)  # Down from ~2.3 for a random guess.
    assert metrics["test_accuracy"] > 0.8


def test_mixed_bfloat16_trains_with_float32_weights(tmp_path, mnist):
    try:
        bf16 = _run(tmp_path / "bf16", mnist, train_steps=60, mixed_precision="mixed_bfloat16")
        model = keras.models.load_model(tmp_path / "bf16" / "model.keras")
        assert model.layers[1].compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    f32 = _run(tmp_path / "f32", mnist, train_steps=60)
    assert all(w.dtype == np.float32 for w in model.get_weights())  # Variables stay float32.
    assert bf16["test_accuracy"] > 0.8 and abs(bf16["test_accuracy"] - f32["test_accuracy"]) < 0.03


def test_run_writes_every_artifact(tmp_path, mnist):
    metrics = _run(tmp_path, mnist, train_steps=3)
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoints",
        "curves.png",
        "logs",
        "metrics.json",
        "model.keras",
        "saved_model",
    ]
    assert json.load(open(tmp_path / "metrics.json")) == metrics
    for key in (
        "test_loss",
        "test_accuracy",
        "steps",
        "examples_per_second",
        "strategy",
        "num_replicas",
        "data",
        "input",
    ):
        assert metrics[key] is not None, key
    assert metrics["data"] == "sample:mnist"
    assert (metrics["input"]["x_shape"], metrics["input"]["x_dtype"]) == ([28, 28], "uint8")
    assert os.listdir(tmp_path / "logs" / "train") and os.listdir(tmp_path / "logs" / "test")


def test_saved_model_serves_raw_pixels_as_the_keras_model_does_scaled_ones(tmp_path, mnist):
    _run(tmp_path, mnist, train_steps=20)
    serving_default = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    raw = mnist.x_test[:100]
    assert raw.dtype == np.uint8
    outputs = serving_default(inputs=tf.constant(raw))
    expected = keras.models.load_model(tmp_path / "model.keras")(raw / np.float32(255))
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], np.argmax(expected, axis=-1))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, mnist):
    _run(tmp_path, mnist, train_steps=10)
    good = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    poisoned = dataclasses.replace(mnist, x_train=np.full(mnist.x_train.shape, np.nan, np.float32))
    with pytest.raises(RecipeError, match=r"loss became nan by step 1\d; .*kept \(.*ckpt-10\)"):
        _run(tmp_path, poisoned, train_steps=20, steps_per_loop=5)
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints") == good
    restored = models.mnist_dense()
    tf.train.Checkpoint(model=restored).restore(good).expect_partial()
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_checkpoint_of_a_different_model_is_a_clear_error(tmp_path, mnist):
    """Same settings, another architecture (which a library caller's settings do not
    name): the restore itself refuses it."""
    _run(tmp_path, mnist, train_steps=2)
    config = TrainConfig(model_dir=str(tmp_path), train_steps=4, batch_size=64, seed=7)
    other = train.Task(
        "mnist",
        lambda: models.mnist_dense(hidden_units=(64,)),
        step.Objective(keras.losses.sparse_categorical_crossentropy),
        preprocess=data.scale_pixels,
    )
    with pytest.raises(RecipeError, match="holds a checkpoint .* that does not fit this model"):
        train.train_model(other, mnist, config=config, set_up=False)


def test_unreadable_checkpoint_is_a_clear_error_and_is_left_alone(tmp_path, mnist):
    _run(tmp_path, mnist, train_steps=2)
    (data_file,) = (tmp_path / "checkpoints").glob("ckpt-2.data-*")
    data_file.write_bytes(b"not a checkpoint")
    with pytest.raises(RecipeError, match="cannot be read"):
        _run(tmp_path, mnist, train_steps=4)
    assert data_file.read_bytes() == b"not a checkpoint"


def test_profile_writes_a_tensorboard_trace_of_one_loop(tmp_path, mnist):
    _run(tmp_path, mnist, train_steps=20, steps_per_loop=10, profile=True)
    traces = list((tmp_path / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


@tf.custom_gradient
def _nan_gradient(x):
    return tf.identity(x), lambda upstream: upstream * float("nan")


class _PoisonedUpdate(step.Objective):
    """A finite loss whose gradient is NaN: the loss the loop reads is fine, and the
    update it just made leaves every weight NaN."""

    def loss(self, model, x, y, training):
        per_example, predictions = super().loss(model, x, y, training)
        return per_example + 0.0 * _nan_gradient(tf.reduce_sum(model.layers[-1].kernel)), predictions


def test_weights_made_nan_by_a_loops_last_update_never_reach_disk(tmp_path, mnist, strategy):
    _run(tmp_path, mnist, strategy, train_steps=10, steps_per_loop=5, checkpoint_steps=5)
    saved = keras.models.load_model(tmp_path / "model.keras").get_weights()
    config = TrainConfig(
        model_dir=str(tmp_path), batch_size=64, seed=7, train_steps=11, steps_per_loop=1, checkpoint_steps=1
    )
    with pytest.raises(
        RecipeError,
        match=r"a weight or an optimizer slot became NaN or infinite by "
        r"step 11; stopped without saving, .*kept \(.*ckpt-10\)",
    ):
        task = train.Task(
            "mnist",
            models.mnist_dense,
            _PoisonedUpdate(keras.losses.sparse_categorical_crossentropy),
            preprocess=data.scale_pixels,
        )
        train.train_model(task, mnist, config=config, strategy=strategy)
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-10")
    restored = models.mnist_dense()
    tf.train.Checkpoint(model=restored).restore(
        tf.train.latest_checkpoint(tmp_path / "checkpoints")
    ).expect_partial()
    assert all(np.isfinite(w).all() for w in restored.get_weights())
    assert _max_abs_diff(keras.models.load_model(tmp_path / "model.keras").get_weights(), saved) == 0


def test_metrics_json_is_strict_json(tmp_path):
    from recipes.core.rundir import artifacts

    artifacts.write(
        models.mnist_dense(hidden_units=(4,)),
        str(tmp_path),
        {"test_auc": float("nan"), "losses": [1.0, float("inf")], "steps": 3},
        PIXELS,
    )

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse) == {
        "test_auc": None,
        "losses": [1.0, None],
        "steps": 3,
    }


def test_a_run_whose_test_loss_diverged_writes_no_artifacts(tmp_path, strategy):
    """One huge SGD step leaves finite weights (about 1e20) whose squared error on the
    test split overflows float32."""
    boston, _, _ = data.load_boston_rooms()
    config = TrainConfig(
        model_dir=str(tmp_path),
        batch_size=64,
        optimizer="sgd",
        learning_rate=1e18,
        train_steps=1,
        steps_per_loop=1,
    )
    with pytest.raises(
        RecipeError,
        match=r"the test loss is (inf|nan): the run diverged; nothing was written "
        r"beyond the checkpoints \(the last is .*ckpt-1\)",
    ):
        task = train.Task(
            "linreg",
            models.linear_regression,
            step.Objective(keras.losses.mean_squared_error),
            preprocess=lambda x: x,
        )
        train.train_model(task, boston, config=config, strategy=strategy)
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "logs"]


def test_a_task_takes_an_objective_not_a_loss_function():
    with pytest.raises(ValueError, match=r"`objective` must be a step.Objective \(step.Objective\(loss_fn\)"):
        train.Task("mnist", models.mnist_dense, keras.losses.sparse_categorical_crossentropy)
