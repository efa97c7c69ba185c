r"""Knowledge distillation: a trained classifier run (the teacher) teaches a small
student, which is also trained alone, the same way, as the baseline it must beat.

    python -m recipes.cnn && python -m recipes.distill          # runs/cnn -> runs/distill
    python -m recipes.distill --teacher_dir=runs/mnist --student=bigmodel --strategy=mirrored

The student trains on the teacher's own data and split (recorded in the
teacher's metrics.json). Its loss is (1 - alpha) x cross-entropy on the labels
+ alpha x Keras' LogitsDistillation (KL at --temperature, times T^2), in the
package's compiled step. Writes the distilled student to --model_dir (default
runs/distill) and the baseline to <model_dir>/baseline; metrics.json compares
teacher, baseline and student. README, "Distillation", has the measured table.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses
import os

import keras
import tensorflow as tf
from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import runs
from recipes.core.errors import RecipeError
from recipes.core.input import data
from recipes.core.objectives import distillation
from recipes.core.training import metrics, train

flags.DEFINE_string(
    "teacher_dir",
    os.path.join("runs", "cnn"),
    "The teacher: a finished classifier run (its model.keras, data and split).",
)
flags.DEFINE_enum(
    "student", "mlp", ["mlp", "bigmodel"], "mlp: models.two_layer_mlp; bigmodel: models.BigModel."
)
flags.DEFINE_integer("student_hidden_units", 128, "--student=mlp: width of its hidden layer.", lower_bound=1)
recipe_flags.define_temperature()
flags.DEFINE_float(
    "alpha",
    0.5,
    "Weight of the teacher's term; 1 - alpha weighs the labels.",
    lower_bound=0.0,
    upper_bound=1.0,
)
flags.DEFINE_integer(
    "transfer_shift",
    2,
    "Train on copies of the training images moved by up to this many pixels, which "
    "the teacher labels (the baseline sees the same copies); 0: the images as they are.",
    lower_bound=0,
)
flags.DEFINE_bool("baseline", True, "Also train the student alone, into <model_dir>/baseline.")

FLAGS = flags.FLAGS

RECIPE_DEFAULTS = dict(epochs=20, batch_size=64)


def build_student(name, input_shape, num_classes, hidden_units):
    if name == "bigmodel":
        student = models.BigModel(num_classes=num_classes)
        student.build((None, *input_shape))  # Subclassed: its variables exist once built.
        return student
    return models.two_layer_mlp(input_shape=input_shape, hidden_units=hidden_units, num_classes=num_classes)


def model_input_shape(dataset, preprocess):
    """One example's shape as the model takes it: the data's, preprocessed."""
    return tuple(preprocess(tf.zeros([1, *dataset.x_spec.shape], dataset.x_spec.dtype)).shape[1:])


def load_teacher(strategy, path, dataset, input_shape):
    """The teacher's model, under the strategy's scope; one that does not fit the data is an error."""
    with strategy.scope():
        teacher = keras.saving.load_model(path)
    num_classes = dataset.num_classes
    # A subclassed teacher (models.BigModel) says neither shape until it is called.
    takes = tuple(teacher.input_shape[1:]) if hasattr(teacher, "input_shape") else input_shape
    if takes != input_shape:
        raise RecipeError(
            f"the teacher {path} takes inputs of shape {list(takes)}, not the data's "
            f"{list(input_shape)}; pass a --teacher_dir trained on it"
        )
    try:
        outputs = runs.output_units(teacher, input_shape)
    except ValueError as e:
        raise RecipeError(f"the teacher {path} {e}, the data's; pass a --teacher_dir trained on it") from None
    if outputs != num_classes:
        raise RecipeError(
            f"the teacher {path} has {outputs} outputs for the data's "
            f"{num_classes} classes; distillation needs a softmax teacher over the same "
            "classes"
        )
    try:
        models.output_head(teacher)
    except ValueError as e:
        raise RecipeError(f"the teacher {path} cannot be distilled: {e}") from None
    return teacher


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `run` does beyond the shared flags (the recipe's own flags).

    Args:
      student: `mlp` (models.two_layer_mlp, `hidden_units` wide) or `bigmodel`
        (models.BigModel).
      hidden_units: the width of the mlp student's hidden layer.
      temperature: the softmax temperature of the teacher's term (> 0).
      alpha: the weight of the teacher's term; 1 - alpha weighs the labels.
      transfer_shift: train on copies of the training images moved by up to this many
        pixels (other examples, a table's rows, are taken as they are); 0: as they are.
      baseline: also train the student alone, into <model_dir>/baseline.
    """

    student: str = "mlp"
    hidden_units: int = 128
    temperature: float = 3.0
    alpha: float = 0.5
    transfer_shift: int = 2
    baseline: bool = True


def run(config, strategy, teacher_run, dataset, settings=Settings()):
    """Trains the baseline (unless `settings.baseline` is False), then the distilled
    student; returns the student's metrics.json dict."""
    if dataset.x_spec.dtype != tf.uint8 or dataset.x_spec.shape.rank not in (2, 3):
        settings = dataclasses.replace(settings, transfer_shift=0)  # Not pixels: nothing to move.
    signature = teacher_run.signature()
    input_shape = model_input_shape(dataset, signature.preprocess)
    teacher = load_teacher(strategy, teacher_run.path("model.keras"), dataset, input_shape)
    num_classes = dataset.num_classes  # The teacher's outputs: load_teacher checked them.
    student = lambda: build_student(settings.student, input_shape, num_classes, settings.hidden_units)  # noqa: E731

    def student_run(model_dir, objective, extra_metrics):
        shift = settings.transfer_shift
        task = train.Task(
            "distill",
            student,
            objective,
            metrics_fn=lambda: metrics.classification(num_classes),
            train_metrics_fn=lambda: metrics.accuracy(num_classes),
            preprocess=signature.preprocess,
            augment=data.random_shift(shift) if shift else None,
            signature=signature,
            extra_metrics=extra_metrics,
        )
        results, _ = train.train_model(
            task, dataset, config=dataclasses.replace(config, model_dir=model_dir), strategy=strategy
        )
        return results

    parameters = student().count_params()
    summary = {
        "teacher_dir": teacher_run.model_dir,
        "teacher_recipe": teacher_run.recipe,
        "teacher_test_accuracy": teacher_run.metrics.get("test_accuracy"),
        "teacher_parameters": teacher.count_params(),
        "student_parameters": parameters,
        "compression_ratio": teacher.count_params() / parameters,
        "temperature": settings.temperature,
        "alpha": settings.alpha,
        "transfer_shift": settings.transfer_shift,
    }
    if settings.baseline:
        alone = student_run(
            os.path.join(config.model_dir, "baseline"),
            distillation.Distillation(),
            {**summary, "role": "baseline: the student alone"},
        )
        summary["baseline_test_accuracy"] = alone["test_accuracy"]
    objective = distillation.Distillation(teacher, temperature=settings.temperature, alpha=settings.alpha)
    distilled = student_run(config.model_dir, objective, {**summary, "role": "distilled student"})
    print(
        f"Teacher ({teacher_run.recipe}, {summary['teacher_parameters']:,} parameters): "
        f"{summary['teacher_test_accuracy']:.2%}; student ({parameters:,} parameters, "
        f"{summary['teacher_parameters'] / parameters:.1f}x fewer): {distilled['test_accuracy']:.2%} "
        "distilled" + (f", {summary['baseline_test_accuracy']:.2%} alone." if settings.baseline else ".")
    )
    return distilled


def main(argv):
    del argv  # Unused.
    temperature = recipe_flags.temperature("distill")
    if temperature <= 0:  # Checked here: generate, which shares the flag, takes 0.
        raise RecipeError(
            f"--temperature must be positive (it softens the teacher's term); got {temperature:g}"
        )
    strategy = recipe_flags.strategy_from_flags()
    teacher_run = runs.read(FLAGS.teacher_dir)
    dataset = recipe_flags.run_data(teacher_run)
    config = recipe_flags.train_config("distill", **RECIPE_DEFAULTS)
    run(
        config,
        strategy,
        teacher_run,
        dataset,
        Settings(
            student=FLAGS.student,
            hidden_units=FLAGS.student_hidden_units,
            temperature=temperature,
            alpha=FLAGS.alpha,
            transfer_shift=FLAGS.transfer_shift,
            baseline=FLAGS.baseline,
        ),
    )


if __name__ == "__main__":
    entry.run(main)
