"""Issue 26's classes that the flag checks and distill own: a student that would
overwrite its teacher, NaN, infinite and absurd values, float64 with L2, an empty
test split, and a student tied to the teacher it came from.

The table runs each bad command line through the recipe's real entry point, in this
process: one `error:` line, exit 1, and nothing trained (no checkpoints/ in the
student's --model_dir). The other tests check the right result.
"""

import dataclasses
import importlib
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes import distill as distill_recipe
from recipes import mnist as mnist_recipe
from recipes.core.deploy import runs
from recipes.core.errors import RecipeError
from recipes.core.input import data
from recipes.core.input.splits import Split
from recipes.core.objectives import distillation
from recipes.core.training import step
from recipes.core.training.config import TrainConfig
from tests.helpers import assert_one_error_line, run_in_process, shared_strategy, train_mnist_net


def _train_teacher(model_dir, train_steps):
    mnist_recipe.run(
        TrainConfig(model_dir=str(model_dir), train_steps=train_steps, batch_size=64, seed=0),
        shared_strategy("default"),
        data.open_data("sample"),
    )


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """{teacher}: a finished mnist run; {bare}: its copy without checkpoints/; {link}: a
    symlink to the teacher; {parent}: the folder that holds the teacher."""
    root = tmp_path_factory.mktemp("flag_checks")
    teacher = root / "runs" / "teacher"
    _train_teacher(teacher, 2)
    shutil.copytree(teacher, root / "bare", ignore=shutil.ignore_patterns("checkpoints"))
    os.symlink(teacher, root / "link")
    return {"teacher": teacher, "bare": root / "bare", "link": root / "link", "parent": teacher.parent}


# (recipe, flags, what the error line holds). --model_dir is {tmp}/out unless given.
CASES = [
    # 1. The student's --model_dir is, holds, or lies inside the teacher's run.
    ("distill", ["--teacher_dir={bare}", "--model_dir={bare}"], "is the teacher's run"),
    ("distill", ["--teacher_dir={teacher}", "--model_dir={teacher}"], "is the teacher's run"),
    ("distill", ["--teacher_dir={teacher}", "--model_dir={teacher}/student"], "lies inside the teacher's"),
    ("distill", ["--teacher_dir={teacher}", "--model_dir={parent}"], "holds the teacher's run"),
    ("distill", ["--teacher_dir={teacher}", "--model_dir={link}"], "is the teacher's run"),
    ("distill", ["--teacher_dir={link}", "--model_dir={teacher}/checkpoints"], "lies inside"),
    ("distill", ["--teacher_dir={teacher}", "--model_dir={teacher}/./x/.."], "is the teacher's run"),
    # 2. NaN, infinite and absurd values of distill's own flags.
    ("distill", ["--alpha=nan"], "--alpha must be a number in [0, 1]"),
    ("distill", ["--alpha=-inf"], "flag --alpha=-inf"),
    ("distill", ["--temperature=1e30"], "--temperature must be positive (it softens"),
    ("distill", ["--temperature=100.5"], "at most 100"),
    ("distill", ["--temperature=nan"], "--temperature must be finite"),
    ("distill", ["--temperature=inf"], "--temperature must be finite"),
    ("distill", ["--transfer_shift=100"], "--transfer_shift=100 would move the 28x28 images"),
    ("distill", ["--transfer_shift=14"], "pass at most 13"),
    ("distill", ["--student_hidden_units=100000000"], "parameters, more than the 100,000,000"),
    ("distill", ["--student_hidden_units=200000"], "pass a smaller width (at most 125,786)"),
    ("distill", ["--l2=0.05"], "--l2 and --dropout_rate apply to --student=bigmodel"),
    # 2. The shared float flags: no NaN or infinity reaches training, whatever the recipe.
    ("distill", ["--learning_rate=nan"], "learning_rate must be a finite positive number; received nan"),
    ("distill", ["--l2=inf", "--student=bigmodel"], "l2 must be a finite number, 0 or more; received inf"),
    ("bigmodel", ["--dropout_rate=nan"], "dropout_rate must be in [0, 1); received nan"),
    ("bigmodel", ["--weight_decay=inf"], "weight_decay must be a finite number, 0 or more; received inf"),
    ("mnist", ["--clipnorm=nan"], "clipnorm must be positive; received nan"),
    ("mnist", ["--global_clipnorm=-inf"], "global_clipnorm must be positive; received -inf"),
    ("mnist", ["--beta_1=nan"], "beta_1 must be in [0, 1); received nan"),
    ("mnist", ["--optimizer=sgd", "--momentum=nan"], "momentum=nan applies to"),
    (
        "mnist",
        ["--lr_schedule=cosine", "--decay_steps=5", "--min_learning_rate=nan"],
        "min_learning_rate=nan is where",
    ),
    (
        "mnist",
        ["--lr_schedule=exponential", "--decay_steps=5", "--decay_rate=inf"],
        "decay_rate must be a finite number; received inf",
    ),
    ("generate", ["--prompt=a", "--temperature=nan"], "--temperature must be finite"),
]


@pytest.mark.slow
@pytest.mark.parametrize("recipe,args,expected", CASES, ids=[" ".join(c[1])[:60] for c in CASES])
def test_refused_in_one_line_before_anything_trains(
    places, recipe, args, expected, tmp_path, monkeypatch, capfd
):
    names = {**places, "tmp": tmp_path}
    args = [arg.format(**names) for arg in args]
    if not any(arg.startswith("--model_dir=") for arg in args):
        args.append(f"--model_dir={tmp_path / 'out'}")
    if recipe == "distill" and not any(arg.startswith("--teacher_dir=") for arg in args):
        args.append(f"--teacher_dir={places['teacher']}")
    code, out, err = run_in_process(importlib.import_module(f"recipes.{recipe}"), args, monkeypatch, capfd)
    assert_one_error_line(code, err, expected)
    assert "Epoch" not in out and not os.path.exists(tmp_path / "out" / "checkpoints")
    for teacher in (places["teacher"], places["bare"]):  # Untouched: still the teacher's own run.
        assert json.loads((teacher / "metrics.json").read_text())["recipe"] == "mnist"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_float_setting_is_finite_the_recipes_own_too(value):
    with pytest.raises(
        RecipeError, match=f"pretrain_learning_rate must be a finite number; received {value}"
    ):
        TrainConfig(model_dir="unused", recipe_settings={"pretrain_learning_rate": value, "steps": 3})
    with pytest.raises(RecipeError, match="decay_rate must be a finite number"):
        TrainConfig(model_dir="unused", decay_rate=value)


class _Float32Loss(step.Objective):
    """An objective whose loss is float32 whatever the model computes in."""

    def loss(self, model, x, y, training):
        per_example, predictions = super().loss(model, x, y, training)
        return tf.cast(per_example, tf.float32), predictions


def test_float64_with_l2_keeps_float64_and_adds_the_penalties_in_the_losss_dtype(mnist):
    x, y = tf.constant(mnist.x_train[:64] / 255.0), tf.constant(mnist.y_train[:64])
    keras.mixed_precision.set_global_policy("float64")
    try:
        strategy = shared_strategy("default")
        for objective in (
            _Float32Loss(keras.losses.sparse_categorical_crossentropy),
            distillation.Distillation(),
        ):
            with strategy.scope():
                model = models.BigModel(hidden_units=(16, 8), l2=0.05)
                model.build((None, 28, 28))
                optimizer = keras.optimizers.SGD(0.1)
            trainer = step.Trainer(
                strategy,
                model,
                optimizer,
                objective,
                global_batch_size=64,
                options=step.StepOptions(jit_compile=False),
            )
            before = model.get_weights()[0].copy()
            batches = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat())
            trainer.train_loop(iter(batches), tf.constant(2))
            assert (
                model.get_weights()[0].dtype == np.float64
                and np.abs(model.get_weights()[0] - before).max() > 0
            )
        teacher = models.BigModel(hidden_units=(16,))
        teacher.build((None, 28, 28))
        per_example, _ = distillation.Distillation(teacher).loss(model, x, y, training=True)
        assert per_example.dtype == tf.float64  # The teacher's term too: float64 stays float64.
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe,args",
    [("bigmodel", []), ("distill", ["--student=bigmodel", "--nobaseline", "--teacher_dir={teacher}"])],
)
def test_float64_with_l2_trains(places, recipe, args, tmp_path, monkeypatch, capfd):
    args = [a.format(**places) for a in args]
    flags = ["--mixed_precision=float64", "--l2=0.05", "--train_steps=2", f"--model_dir={tmp_path}", *args]
    try:
        code, _, err = run_in_process(importlib.import_module(f"recipes.{recipe}"), flags, monkeypatch, capfd)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2


def test_an_empty_test_split_is_an_error_before_anything_is_built(tmp_path, mnist):
    dataset = data.from_array_data(mnist)
    empty = dataclasses.replace(dataset, test=Split(dataset.test.source, (0, 0)))
    assert empty.test.num_examples == 0
    with pytest.raises(RecipeError, match="the test split of .* has no examples"):
        train_mnist_net(
            TrainConfig(model_dir=str(tmp_path / "run"), train_steps=2), shared_strategy("default"), empty
        )
    assert not os.path.exists(tmp_path / "run")  # Refused before the run directory was claimed.


@pytest.mark.slow
def test_a_student_records_its_teacher_and_is_not_resumed_from_a_changed_one(tmp_path, monkeypatch, capfd):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    _train_teacher(teacher, 2)
    command = [f"--teacher_dir={teacher}", f"--model_dir={student}", "--train_steps=2", "--nobaseline"]
    code, _, err = run_in_process(distill_recipe, command, monkeypatch, capfd)
    assert code == 0, err[-2000:]
    recorded = json.loads((student / "metrics.json").read_text())
    loaded = keras.saving.load_model(teacher / "model.keras")
    assert {name: recorded[name] for name in ("teacher_step", "teacher_weights_sha256")} == (
        distillation.teacher_source(loaded, 2)
    )
    # The same teacher: the finished student is resumed (nothing left to train).
    code, out, err = run_in_process(distill_recipe, command, monkeypatch, capfd)
    assert code == 0 and "nothing trained this time" in out, err[-2000:]
    recorded = json.loads((student / "metrics.json").read_text())
    _train_teacher(teacher, 4)  # The teacher trains further: its weights change.
    code, out, err = run_in_process(distill_recipe, command, monkeypatch, capfd)
    assert_one_error_line(code, err, f"the teacher {teacher} changed since the student in {student}")
    assert "step 2, weights" in err and "step 4, weights" in err and "pass a new --model_dir" in err
    assert json.loads((student / "metrics.json").read_text()) == recorded  # The old student kept as it was.
    with pytest.raises(RecipeError, match="changed since"):  # The Python API refuses it too.
        distill_recipe.run(
            TrainConfig(model_dir=str(student), train_steps=2),
            shared_strategy("default"),
            runs.read(str(teacher)),
            runs.read(str(teacher)).load_data(),
            distill_recipe.Settings(baseline=False),
        )
