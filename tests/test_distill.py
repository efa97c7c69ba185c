"""Distillation: the step's loss against Keras' LogitsDistillation by hand, one
step under `mirrored` equal to `default` (Keras' own Distiller doubles it), alpha=0
equal to the student alone, a frozen teacher, the recipe end to end, and its
one-line errors."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes import distill as distill_recipe
from recipes import mnist as mnist_recipe
from recipes.core.deploy import runs, serving
from recipes.core.errors import RecipeError
from recipes.core.input import data
from recipes.core.objectives import distillation
from recipes.core.training import step
from recipes.core.training.config import TrainConfig
from tests.helpers import assert_one_error_line, run_in_process, run_python, shared_strategy


def _teacher(strategy, seed=1):
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        return models.mnist_dense(hidden_units=(48,))


def _steps(strategy, mnist, teacher, alpha, steps=1, temperature=3.0):
    """The student's weights after `steps` SGD steps distilled from `teacher` (None: alone)."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        student = models.two_layer_mlp(hidden_units=16)
        optimizer = keras.optimizers.SGD(0.5)
    objective = distillation.Distillation(teacher, temperature=temperature, alpha=alpha)
    trainer = step.Trainer(
        strategy,
        student,
        optimizer,
        objective,
        global_batch_size=64,
        options=step.StepOptions(jit_compile=False),
    )
    iterator = iter(
        data.train_dataset(
            strategy, data.from_array_data(mnist).train, 64, preprocess=data.scale_pixels, seed=0
        )
    )
    trainer.train_loop(iterator, tf.constant(steps))
    return student.get_weights()


def test_logits_are_what_the_softmax_reads():
    x = np.random.default_rng(0).random((5, 28, 28)).astype(np.float32)
    for model in (
        models.mnist_dense(hidden_units=(8,)),
        models.two_layer_mlp(hidden_units=8),
        models.cnn(filters=(4, 8), dense_units=8),
    ):
        np.testing.assert_allclose(tf.nn.softmax(models.logits(model, x)), model(x), atol=1e-6)
    big = models.BigModel(hidden_units=(8, 4))
    probabilities = big(x)
    np.testing.assert_allclose(tf.nn.softmax(models.logits(big, x)), probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="does not end in a Dense layer with a softmax"):
        models.logits(models.linear_regression(), x[:, 0, :1])


def test_the_loss_is_keras_logits_distillation_by_hand(mnist):
    teacher, student = _teacher(shared_strategy("default")), models.two_layer_mlp(hidden_units=16)
    x, y = mnist.x_train[:32] / np.float32(255), mnist.y_train[:32]
    objective = distillation.Distillation(teacher, temperature=4.0, alpha=0.3)
    per_example, _ = objective.loss(student, tf.constant(x), tf.constant(y), training=True)

    def softmax(z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    t, s = (np.asarray(models.logits(m, x), np.float64) for m in (teacher, student))
    hard = -np.log(softmax(s)[np.arange(32), y])
    p, q = softmax(t / 4.0), softmax(s / 4.0)
    kl = np.mean(np.sum(p * np.log(p / q), axis=-1)) * 4.0**2
    np.testing.assert_allclose(np.mean(per_example), np.mean(0.7 * hard + 0.3 * kl), rtol=1e-5)
    # Keras 3.15's LogitsDistillation with its default loss string takes no softmax
    # (recipes/core/objectives/distillation.py). This fails once Keras fixes it: then drop the workaround.
    default = keras.distillation.LogitsDistillation(temperature=4.0).compute_loss(t, s)
    assert abs(float(default) - kl) > 0.1 * kl


def test_a_binary_teacher_is_the_kl_of_two_bernoullis_by_hand():
    # One sigmoid unit each (the breast-cancer BigModel's head): hard term the binary
    # cross-entropy, teacher's term T^2 KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T))).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 30)).astype(np.float32), rng.integers(0, 2, (16, 1)).astype(np.float32)
    keras.utils.set_random_seed(2)
    teacher = models.BigModel(hidden_units=(8, 4), num_classes=1)
    teacher.build((None, 30))
    student = models.two_layer_mlp(input_shape=(30,), hidden_units=8, num_classes=1)
    objective = distillation.Distillation(teacher, temperature=2.0, alpha=0.4)
    per_example, probabilities = objective.loss(student, tf.constant(x), tf.constant(y), training=True)
    np.testing.assert_allclose(probabilities, student(x), atol=1e-6)

    t, s = (np.asarray(models.logits(m, x), np.float64)[:, 0] for m in (teacher, student))
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    hard = -(y[:, 0] * np.log(sigmoid(s)) + (1 - y[:, 0]) * np.log(1 - sigmoid(s)))
    p, q = sigmoid(t / 2.0), sigmoid(s / 2.0)
    kl = np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))) * 2.0**2
    np.testing.assert_allclose(np.mean(per_example), np.mean(0.6 * hard + 0.4 * kl), rtol=1e-5)
    assert kl > 1e-4  # The two differ: the teacher's term is not zero by accident.


def test_one_mirrored_step_moves_the_student_as_one_device_does(mnist):
    # Keras' Distiller.compute_loss doubles the loss on 2 replicas (its step went 1.83-1.93x as far).
    one = _steps(shared_strategy("default"), mnist, _teacher(shared_strategy("default")), alpha=0.7)
    two = _steps(shared_strategy("mirrored"), mnist, _teacher(shared_strategy("mirrored")), alpha=0.7)
    start = _steps(shared_strategy("default"), mnist, None, alpha=0.0, steps=0)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, start)) > 1e-3  # It moved.
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_alpha_zero_is_the_student_alone_and_the_teacher_stays_frozen(mnist):
    teacher = _teacher(shared_strategy("default"))
    before = teacher.get_weights()
    distilled = _steps(shared_strategy("default"), mnist, teacher, alpha=0.0, steps=5)
    alone = _steps(shared_strategy("default"), mnist, None, alpha=0.0, steps=5)
    for a, b in zip(distilled, alone):
        np.testing.assert_allclose(a, b, atol=1e-6)
    _steps(shared_strategy("default"), mnist, teacher, alpha=0.9, steps=5)
    for a, b in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("teacher"))
    mnist_recipe.run(
        TrainConfig(model_dir=model_dir, train_steps=30, seed=0),
        shared_strategy("default"),
        data.open_data("sample"),
    )
    return runs.read(model_dir)


@pytest.mark.slow
def test_two_steps_under_each_strategy_and_the_student_loads_fresh(teacher_run, strategy, tmp_path):
    dataset = teacher_run.load_data()
    one_device = strategy.num_replicas_in_sync == 1  # The baseline and a fresh process once.
    results = distill_recipe.run(
        TrainConfig(model_dir=str(tmp_path), train_steps=2, batch_size=64),
        strategy,
        teacher_run,
        dataset,
        distill_recipe.Settings(hidden_units=32, baseline=one_device),
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == results and saved["student_parameters"] * 4 <= saved["teacher_parameters"]
    if not one_device:
        return
    assert saved["baseline_test_accuracy"] is not None
    assert os.path.exists(tmp_path / "baseline" / "model.keras")
    x_test, _ = dataset.arrays("test", limit=8)
    np.save(tmp_path / "x.npy", x_test / np.float32(255))
    np.save(tmp_path / "y.npy", keras.saving.load_model(tmp_path / "model.keras")(x_test / 255.0))
    run_python(f"""
import keras, numpy as np
model = keras.saving.load_model("{tmp_path}/model.keras")
np.testing.assert_allclose(model(np.load("{tmp_path}/x.npy")), np.load("{tmp_path}/y.npy"), atol=1e-6)
""")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (["--teacher_dir={tmp}"], "holds no finished run (no metrics.json)"),
        (["--temperature=-1"], "--temperature must be positive"),
        (["--alpha=1.5"], "flag --alpha=1.5"),
    ],
)
def test_bad_input_is_one_line(teacher_run, args, expected, tmp_path, monkeypatch, capfd):
    args = [a.format(tmp=tmp_path, teacher=teacher_run.model_dir) for a in args]
    assert_one_error_line(
        *run_in_process(distill_recipe, [f"--model_dir={tmp_path}/out", *args], monkeypatch, capfd)[::2],
        expected,
    )


def test_a_teacher_that_does_not_fit_the_data_is_one_line(mnist, tmp_path):
    dataset = data.from_array_data(mnist)
    signature = serving.Signature.for_spec(dataset.x_spec, dataset.default_preprocessing())
    input_shape = signature.model_input_shape()
    assert input_shape == (28, 28)
    for teacher, expected in [
        (models.mnist_dense(num_classes=3), "has 3 outputs for the data's 10 classes"),
        (models.cnn(input_shape=(32, 32, 3)), "takes inputs of shape [32, 32, 3], not the data's [28, 28]"),
    ]:
        path = str(tmp_path / f"{teacher.name}.keras")
        teacher.save(path)
        with pytest.raises(RecipeError) as error:
            distill_recipe.load_teacher(shared_strategy("default"), path, dataset, input_shape)
        assert expected in str(error.value)


def test_both_students_are_built_and_counted_before_training():
    assert distill_recipe.build_student("mlp", (28, 28), 10, 128).count_params() == 101_770
    big = distill_recipe.build_student("bigmodel", (28, 28), 10, 128)
    assert big.built and big.count_params() == 244_946  # BigModel's 256-128-64-32-16-8 on 784 pixels.
