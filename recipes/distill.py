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
import math
import os

import keras
import tensorflow as tf
from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import runs, serving
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
# A student is meant to be small: 1e8 parameters take 1.6 GB with Adam's moments and gradients.
MAX_STUDENT_PARAMETERS = 10**8
flags.DEFINE_integer(
    "student_hidden_units",
    128,
    f"--student=mlp: width of its hidden layer (at most {MAX_STUDENT_PARAMETERS:.0e} parameters in all).",
    lower_bound=1,
)
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


def build_student(name, input_shape, num_classes, hidden_units, l2=0.0, dropout_rate=0.0):
    """The student: bigmodel takes --l2 and --dropout_rate; `Settings.check_fits` refuses
    them for the mlp, which has neither."""
    if name == "bigmodel":
        student = models.BigModel(num_classes=num_classes, dropout_rate=dropout_rate, l2=l2)
        student.build((None, *input_shape))  # Subclassed: its variables exist once built.
        return student
    return models.two_layer_mlp(input_shape=input_shape, hidden_units=hidden_units, num_classes=num_classes)


def output_units(dataset):
    """The head the student takes, as the teacher has it: one unit per class, or one
    sigmoid unit for a binary task's float 0/1 labels (`num_classes` None)."""
    return dataset.num_classes or 1


def load_teacher(strategy, path, dataset, input_shape):
    """The teacher's model, under the strategy's scope; one that does not fit the data is an error."""
    with strategy.scope():
        teacher = keras.saving.load_model(path)
    units = output_units(dataset)
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
    if outputs != units:
        task = "a binary task (one sigmoid unit)" if units == 1 else f"{units} classes"
        raise RecipeError(
            f"the teacher {path} has {outputs} outputs for the data's {task}; distillation "
            "needs a teacher with the student's head: a softmax over the same classes, or "
            "one sigmoid unit"
        )
    try:
        models.output_head(teacher)
    except ValueError as e:
        raise RecipeError(f"the teacher {path} cannot be distilled: {e}") from None
    return teacher


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `run` does beyond the shared flags (the recipe's own flags), checked when
    built (`check_fits` checks what needs the data).

    Args:
      student: `mlp` (models.two_layer_mlp, `hidden_units` wide) or `bigmodel`
        (models.BigModel).
      hidden_units: the width of the mlp student's hidden layer.
      temperature: the softmax temperature of the teacher's term, in (0, 100].
      alpha: the weight of the teacher's term, in [0, 1]; 1 - alpha weighs the labels.
      transfer_shift: train on copies of the training images moved by up to this many
        pixels, less than half their side (other examples, a table's rows, are taken
        as they are); 0: as they are.
      baseline: also train the student alone, into <model_dir>/baseline.
    """

    student: str = "mlp"
    hidden_units: int = 128
    temperature: float = 3.0
    alpha: float = 0.5
    transfer_shift: int = 2
    baseline: bool = True

    def __post_init__(self):
        if self.student not in ("mlp", "bigmodel"):
            raise RecipeError(f"unknown --student={self.student}; choose one of: mlp, bigmodel")
        if not (isinstance(self.hidden_units, int) and self.hidden_units >= 1):
            raise RecipeError(f"--student_hidden_units must be at least 1; received {self.hidden_units}")
        highest = distillation.MAX_TEMPERATURE
        if not distillation.temperature_ok(self.temperature):
            raise RecipeError(
                f"--temperature must be positive (it softens the teacher's term) and at most {highest:g} "
                f"(beyond, rounding is most of the term); received {self.temperature:g}"
            )
        if not 0 <= self.alpha <= 1:  # NaN fails it too.
            raise RecipeError(
                f"--alpha must be a number in [0, 1] (the teacher's weight); received {self.alpha}"
            )
        if not (isinstance(self.transfer_shift, int) and self.transfer_shift >= 0):
            raise RecipeError(f"--transfer_shift must be 0 or more; received {self.transfer_shift}")

    def check_fits(self, config, dataset, input_shape):
        """What needs the run's config and data: the shift against the image's side,
        the student's size, and the shared regularization flags its model takes.
        Returns the settings to train with (no shift on data that are not pixels)."""
        shape = dataset.x_spec.shape
        if dataset.x_spec.dtype != tf.uint8 or shape.rank not in (2, 3):
            return dataclasses.replace(self, transfer_shift=0)  # Not pixels: nothing to move.
        side = min(shape[0] or math.inf, shape[1] or math.inf)
        if 2 * self.transfer_shift >= side:
            raise RecipeError(
                f"--transfer_shift={self.transfer_shift} would move the {shape[0]}x{shape[1]} images "
                f"half their side or more, off the canvas; pass at most {(side - 1) // 2}, or 0"
            )
        if self.student == "mlp":
            inputs, classes = math.prod(input_shape), output_units(dataset)
            parameters = (inputs + 1) * self.hidden_units + (self.hidden_units + 1) * classes
            if parameters > MAX_STUDENT_PARAMETERS:
                raise RecipeError(
                    f"--student_hidden_units={self.hidden_units} makes a student of {parameters:,} "
                    f"parameters, more than the {MAX_STUDENT_PARAMETERS:,} a student may have; pass a "
                    f"smaller width (at most {MAX_STUDENT_PARAMETERS // (inputs + classes + 1):,})"
                )
            if config.l2 or config.dropout_rate:
                raise RecipeError(
                    "--l2 and --dropout_rate apply to --student=bigmodel; the mlp student has neither"
                )
        return self


def check_directories(model_dir, teacher_dir):
    """A one-line `RecipeError` where the student's --model_dir is, holds or lies inside
    the teacher's run (their real paths compared, symlinks followed): the student's
    outputs would overwrite the teacher's."""
    student, teacher = (d if "://" in d else os.path.realpath(d) for d in (model_dir, teacher_dir))
    if ("://" in student) != ("://" in teacher):
        return  # One local, one remote: apart.
    student, teacher = os.path.normpath(student), os.path.normpath(teacher)
    common = os.path.commonpath([student, teacher])
    if common in (student, teacher):
        where = "is" if student == teacher else "lies inside" if common == teacher else "holds"
        raise RecipeError(
            f"--model_dir={model_dir} {where} the teacher's run --teacher_dir={teacher_dir}, which "
            "the student would overwrite; pass a --model_dir apart from it"
        )


def run(config, strategy, teacher_run, dataset, settings=Settings()):
    """Trains the baseline (unless `settings.baseline` is False), then the distilled
    student; returns the student's metrics.json dict. Everything is checked before
    either trains; the student records its teacher (`distillation.teacher_source`),
    and a student of another teacher is not resumed."""
    check_directories(config.model_dir, teacher_run.model_dir)
    signature = teacher_run.signature()
    # One example's shape as the model takes it: the data's, preprocessed.
    input_shape = serving.Signature.for_spec(dataset.x_spec, signature.preprocess).model_input_shape()
    settings = settings.check_fits(config, dataset, input_shape)
    teacher = load_teacher(strategy, teacher_run.path("model.keras"), dataset, input_shape)
    source = distillation.teacher_source(teacher, teacher_run.metrics.get("steps"))
    distillation.check_same_teacher(config.model_dir, source, teacher_run.model_dir)
    num_classes = output_units(dataset)  # The teacher's outputs: load_teacher checked them.

    def student():
        return build_student(
            settings.student, input_shape, num_classes, settings.hidden_units, config.l2, config.dropout_rate
        )

    def student_run(model_config, objective, extra_metrics):
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
        return train.train_model(task, dataset, config=model_config, strategy=strategy)[0]

    summary = _summary(teacher_run, teacher, student().count_params(), settings, source)
    if settings.baseline:
        alone = student_run(
            dataclasses.replace(config, model_dir=os.path.join(config.model_dir, "baseline")),
            distillation.Distillation(),
            {**summary, "role": "baseline: the student alone"},
        )
        summary["baseline_test_accuracy"] = alone["test_accuracy"]
    objective = distillation.Distillation(teacher, temperature=settings.temperature, alpha=settings.alpha)
    # The teacher's identity among the settings its checkpoints are resumed with.
    student_config = dataclasses.replace(config, recipe_settings={**config.recipe_settings, **source})
    distilled = student_run(student_config, objective, {**summary, "role": "distilled student"})
    _print_comparison(summary, distilled, settings.baseline)
    return distilled


def _summary(teacher_run, teacher, parameters, settings, source):
    """The fields the baseline's and the student's metrics.json share."""
    return {
        "teacher_dir": teacher_run.model_dir,
        "teacher_recipe": teacher_run.recipe,
        "teacher_test_accuracy": teacher_run.metrics.get("test_accuracy"),
        **source,
        "teacher_parameters": teacher.count_params(),
        "student_parameters": parameters,
        "compression_ratio": teacher.count_params() / parameters,
        "temperature": settings.temperature,
        "alpha": settings.alpha,
        "transfer_shift": settings.transfer_shift,
    }


def _print_comparison(summary, distilled, baseline):
    teacher, parameters = summary["teacher_parameters"], summary["student_parameters"]
    ratio = (
        f"{teacher / parameters:.1f}x fewer" if teacher >= parameters else f"{parameters / teacher:.1f}x more"
    )
    print(
        f"Teacher ({summary['teacher_recipe']}, {teacher:,} parameters): "
        f"{summary['teacher_test_accuracy']:.2%}; student ({parameters:,} parameters, "
        f"{ratio}): {distilled['test_accuracy']:.2%} "
        "distilled" + (f", {summary['baseline_test_accuracy']:.2%} alone." if baseline else ".")
    )


def main(argv):
    del argv  # Unused.
    settings = Settings(  # Checked here, before anything is read or trained.
        student=FLAGS.student,
        hidden_units=FLAGS.student_hidden_units,
        temperature=recipe_flags.temperature("distill"),
        alpha=FLAGS.alpha,
        transfer_shift=FLAGS.transfer_shift,
        baseline=FLAGS.baseline,
    )
    config = recipe_flags.train_config("distill", **RECIPE_DEFAULTS)
    teacher_run = runs.read(FLAGS.teacher_dir)  # Only reads: a --teacher_dir that is no run says so.
    check_directories(config.model_dir, teacher_run.model_dir)
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, teacher_run, recipe_flags.run_data(teacher_run), settings)


if __name__ == "__main__":
    entry.run(main)
