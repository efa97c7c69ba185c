"""The optimisation toolkit in the shared loop: schedules, clipping, accumulation,
early stopping, and the flags that cannot work together."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes import bigmodel
from recipes.core.input import data
from recipes.core.training import optimization, train
from recipes.core.training.config import TrainConfig
from recipes.core.training.step import Objective, Trainer
from tests.helpers import assert_one_line_error, run_module, shared_strategy, train_mnist_net

LR = 0.1


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("constant", {}, {0: LR, 100: LR, 10_000: LR}),
        ("exponential", {"decay_steps": 100, "decay_rate": 0.5}, {0: LR, 50: LR * 0.5**0.5, 200: LR / 4}),
        ("step", {"decay_steps": 100, "decay_rate": 0.5}, {0: LR, 99: LR, 100: LR / 2, 250: LR / 4}),
        ("cosine", {"decay_steps": 100}, {0: LR, 50: LR / 2, 100: 0.0, 200: 0.0}),
        # The articles' lr * (1 - decay * step), floored at 0.
        ("linear", {"decay_rate": 0.004}, {0: LR, 100: LR * 0.6, 250: 0.0, 1000: 0.0}),
        ("constant", {"warmup_steps": 10}, {0: 0.0, 5: LR / 2, 10: LR, 500: LR}),
        (
            "step",
            {"decay_steps": 100, "decay_rate": 0.5, "warmup_steps": 20},
            {0: 0.0, 10: LR / 2, 20: LR, 150: LR / 2},
        ),
    ],
)
def test_each_schedule_gives_the_expected_rate_at_known_steps(name, options, expected):
    schedule = optimization.learning_rate_schedule(name, LR, **options)
    for step, rate in expected.items():
        got = schedule(step) if callable(schedule) else schedule
        assert float(got) == pytest.approx(rate, abs=1e-7), (name, step)


def _bias_only_trainer(config, strategy):
    """A one-bias model whose loss is its output: the gradient is exactly 1, so
    an SGD step moves the bias by exactly the learning rate in use."""
    with strategy.scope():
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="zeros")])
        optimizer = optimization.make_optimizer(config)
    trainer = Trainer(
        strategy, model, optimizer, Objective(lambda y, p: p[:, 0]), global_batch_size=config.batch_size
    )
    x, y = np.zeros((64, 1), np.float32), np.zeros(64, np.int32)
    dataset = data.train_dataset(
        strategy, data.from_arrays(x, y, test=(x, y)).train, config.batch_size, preprocess=lambda x: x, seed=0
    )
    return trainer, iter(dataset)


def test_the_rate_the_optimizer_used_at_each_step_is_the_schedule_at_that_step(tmp_path):
    config = TrainConfig(
        model_dir=str(tmp_path),
        optimizer="sgd",
        learning_rate=LR,
        lr_schedule="step",
        decay_steps=3,
        decay_rate=0.5,
        warmup_steps=2,
        batch_size=8,
    )
    schedule = optimization.learning_rate_schedule("step", LR, decay_steps=3, decay_rate=0.5, warmup_steps=2)
    trainer, iterator = _bias_only_trainer(config, tf.distribute.get_strategy())
    bias = trainer.model.layers[0].bias
    for step in range(8):
        before = float(bias.numpy()[0])
        trainer.train_loop(iterator, tf.constant(1))
        assert before - float(bias.numpy()[0]) == pytest.approx(float(schedule(step)), rel=1e-5), step


def _one_step_update(tmp_path, strategy, **clipping):
    """The update (weights before - after) of one real SGD step at learning rate 1,
    which is the gradient the optimizer applied."""
    config = TrainConfig(
        model_dir=str(tmp_path), optimizer="sgd", learning_rate=1.0, batch_size=64, **clipping
    )
    train.set_up_run(config)
    mnist_data = data.load_mnist()
    with strategy.scope():
        model = models.mnist_dense(hidden_units=(32,))
        optimizer = optimization.make_optimizer(config)
    trainer = Trainer(
        strategy,
        model,
        optimizer,
        Objective(keras.losses.sparse_categorical_crossentropy),
        global_batch_size=64,
    )
    iterator = iter(
        data.train_dataset(
            strategy, data.from_array_data(mnist_data).train, 64, preprocess=data.scale_pixels, seed=0
        )
    )
    before = [w.copy() for w in model.get_weights()]
    trainer.train_loop(iterator, tf.constant(1))
    return [b - a for b, a in zip(before, model.get_weights())]


def _global_norm(arrays):
    return float(np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in arrays)))


@pytest.mark.parametrize("name", ["default", "mirrored"])
def test_clipping_bounds_the_gradient_the_optimizer_applies(tmp_path, name):
    """Checked inside real steps. Under mirrored the clip must see the whole
    batch's gradient, not each replica's half (Keras alone clips the halves)."""
    strategy = shared_strategy(name)
    unclipped = _one_step_update(tmp_path / "none", strategy)
    c = 0.05
    assert _global_norm(unclipped) > 10 * c  # So each clip below really acts.

    applied = _one_step_update(tmp_path / "global", strategy, global_clipnorm=c)
    assert _global_norm(applied) == pytest.approx(c, rel=1e-4)
    scale = c / _global_norm(unclipped)
    for a, u in zip(applied, unclipped):  # The direction is kept.
        np.testing.assert_allclose(a, u * scale, atol=1e-6)

    applied = _one_step_update(tmp_path / "each", strategy, clipnorm=c)
    for a, u in zip(applied, unclipped):
        assert _global_norm([a]) == pytest.approx(min(c, _global_norm([u])), rel=1e-4)

    applied = _one_step_update(tmp_path / "value", strategy, clipvalue=c / 100)
    for a, u in zip(applied, unclipped):
        np.testing.assert_allclose(a, np.clip(u, -c / 100, c / 100), atol=1e-7)


def _mnist_run(model_dir, strategy_name, **overrides):
    config = TrainConfig(
        model_dir=str(model_dir), batch_size=64, seed=3, train_steps=10, steps_per_loop=5, **overrides
    )
    strategy = shared_strategy(strategy_name)
    train_mnist_net(config, strategy, data.load_mnist())
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


@pytest.mark.parametrize("name", ["default", "mirrored"])
def test_accumulated_micro_batches_end_with_the_whole_batch_weights(tmp_path, name):
    whole = _mnist_run(tmp_path / "whole", name, accum_steps=1)
    accumulated = _mnist_run(tmp_path / "accumulated", name, accum_steps=4)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(whole, accumulated)) < 1e-5


def test_early_stopping_stops_an_overfitting_run_and_keeps_the_best_epoch(tmp_path):
    # A deep net, a high learning rate and 364 training tumours: it overfits fast.
    config = TrainConfig(
        model_dir=str(tmp_path), batch_size=16, epochs=100, learning_rate=3e-3, early_stopping_patience=3
    )
    metrics = bigmodel.run(config, tf.distribute.get_strategy(), data.load_breast_cancer(), "breast_cancer")
    losses = metrics["validation_loss_by_epoch"]
    assert metrics["stopped_early"] and len(losses) < 100
    best = int(np.argmin(losses))
    assert metrics["best_epoch"] == best + 1 and len(losses) == best + 1 + 3
    # The saved model is the best epoch's: its validation loss is that epoch's, on the
    # features standardized as the run recorded (model.keras takes the preprocessed input).
    model = keras.models.load_model(tmp_path / "model.keras")
    cancer = data.load_breast_cancer()
    preprocess = data.Preprocessing.from_json(metrics["input"]["preprocessing"])
    assert preprocess.kind == "standardize"
    loss = np.mean(
        keras.losses.binary_crossentropy(cancer.y_val, model.predict(preprocess(cancer.x_val), verbose=0))
    )
    assert float(loss) == pytest.approx(losses[best], abs=1e-5)
    assert metrics["validation_loss"] == pytest.approx(losses[best], abs=1e-5)
    # The checkpoint holds what the run kept and why: a rerun trains nothing more and
    # reports the same run (it resumed the last steps and trained on, before).
    again = bigmodel.run(config, tf.distribute.get_strategy(), data.load_breast_cancer(), "breast_cancer")
    assert again["steps_this_run"] == 0 and again["steps"] == metrics["steps"]
    assert (again["stopped_early"], again["best_epoch"]) == (True, metrics["best_epoch"])
    assert again["validation_loss"] == pytest.approx(metrics["validation_loss"], abs=1e-6)
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-6)


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (
            ["--batch_size=64", "--strategy=mirrored", "--num_cpu_devices=2", "--accum_steps=3"],
            ["--accum_steps=3 does not divide the per-replica batch of 32"],
        ),
        (["--global_clipnorm=-1"], ["--global_clipnorm must be positive"]),
        (["--clipvalue=0"], ["--clipvalue must be positive"]),
        (["--clipnorm=1", "--clipvalue=1"], ["--clipnorm=1.0, --clipvalue=1.0 each clip the gradients"]),
        (
            ["--lr_schedule=exponential", "--decay_rate=0.9"],
            ["--lr_schedule=exponential needs --decay_steps > 0"],
        ),
        (["--lr_schedule=cosine", "--decay_steps=0"], ["--lr_schedule=cosine needs --decay_steps > 0"]),
        (["--lr_schedule=linear"], ["--lr_schedule=linear needs --decay_rate > 0"]),
        (["--momentum=0.9"], ["--momentum=0.9 applies to --optimizer=sgd or rmsprop"]),
    ],
)
@pytest.mark.slow
def test_flags_that_cannot_work_get_a_one_line_error(tmp_path, flags, fragments):
    done = run_module("recipes.mnist", f"--model_dir={tmp_path}", "--train_steps=2", *flags, timeout=120)
    assert_one_line_error(done, *fragments)


def test_tensorboard_logs_the_learning_rate_in_use_each_loop(tmp_path):
    _mnist_run(tmp_path, "default", lr_schedule="step", decay_steps=5, decay_rate=0.5)
    schedule = optimization.learning_rate_schedule("step", 1e-3, decay_steps=5, decay_rate=0.5)
    logged = {}
    for path in (tmp_path / "logs" / "train").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "learning_rate":
                    logged[event.step] = float(tf.make_ndarray(value.tensor))
    # After the loop that ends at step n, the rate the next step will use.
    assert logged == pytest.approx({n: float(schedule(n)) for n in (5, 10)})
