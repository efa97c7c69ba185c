"""One run, composed: set-up, input, model and optimizer, the loop, evaluation,
artifacts. Every recipe trains through `train_model` (or `train_classifier`).

    task = train.Task("mnist", build_model, step.Objective(keras.losses.sparse_categorical_crossentropy),
                      metrics_fn=lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")])
    results, model = train.train_model(task, data.open_data("digits/"), config=config, strategy=strategy)

The run's parts live beside it: `parallelism.py` (a model split over devices),
`resume.py` (the checkpoint restored, the loop and its hooks set up) and
`run_report.py` (metrics.json).
"""

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

import strategies
from recipes.core.deploy import serving
from recipes.core.errors import RecipeError, first_line
from recipes.core.input import data as data_lib
from recipes.core.rundir import artifacts, fault_tolerance, run_dir
from recipes.core.training import metrics, optimization, parallelism, resume, run_report, step
from recipes.core.training.config import TrainConfig

# What `train_model` trains on (`data.as_data` reads each as a `data.Data`).
DataLike = data_lib.Data | data_lib.ArrayData | tf.data.Dataset | tuple


@dataclasses.dataclass(frozen=True)
class Task:
    """What a recipe trains: the model, what each step computes, what is measured,
    and what the exported model serves.

    Args:
      recipe: the recipe's name (metrics.json's `recipe`; a resumed run must match it).
      build_model: `() -> keras.Model`, called once, under the strategy's scope.
      objective: what each step computes, a `step.Objective`;
        `step.Objective(loss_fn)` for a per-example Keras loss.
      metrics_fn: `() -> list of keras.metrics.Metric`, for evaluation.
      train_metrics_fn: the metrics followed during training; None: `metrics_fn`.
      preprocess: raw batch -> the model's input, inside the exported model too;
        None: the data's (`Data.default_preprocessing`).
      augment: `augment(batch, seed)` changes the training batches
        (`data.PipelineOptions`); None: they are taken as they are.
      signature: what saved_model/ takes and returns, a `serving.Signature`; None:
        the raw examples, preprocessed inside, and the classes where the model gives
        one probability per class of the data (else its outputs as they are).
      extra_metrics: fields that go into metrics.json as they are (a recipe's
        baselines, say), read when the run ends.
    """

    recipe: str
    build_model: Callable[[], keras.Model]
    objective: step.Objective
    metrics_fn: step.MetricsFn = list
    train_metrics_fn: step.MetricsFn | None = None
    preprocess: Callable | None = None
    augment: Callable | None = None
    signature: serving.Signature | None = None
    extra_metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.objective, step.Objective):  # A loss function, say: said before the run.
            raise ValueError(
                "`objective` must be a step.Objective (step.Objective(loss_fn) for a per-example loss). "
                f"Received: {self.objective!r}"
            )

    @classmethod
    def classifier(
        cls,
        recipe: str,
        build_model: Callable[[int], keras.Model],
        data: DataLike,
        *,
        preprocess: Callable | None = None,
        extra_metrics: Mapping[str, Any] | None = None,
    ) -> "Task":
        """A softmax classifier of `data`'s classes (integer labels):
        `build_model(num_classes)`, sparse cross-entropy, accuracy while training, and
        accuracy, precision, recall, F1 and AUC-ROC in evaluation; served as
        probabilities and classes."""
        data = data_lib.as_data(data)
        num_classes = data.num_classes
        if preprocess is None:
            preprocess = data.default_preprocessing()
        return cls(
            recipe,
            lambda: build_model(num_classes),
            step.Objective(keras.losses.sparse_categorical_crossentropy),
            metrics_fn=lambda: metrics.classification(num_classes),
            train_metrics_fn=lambda: metrics.accuracy(num_classes),
            preprocess=preprocess,
            signature=serving.Signature.for_spec(data.x_spec, preprocess),
            extra_metrics=extra_metrics or {},
        )


def set_up_run(config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> None:
    """Seeds Python, NumPy and TensorFlow, and sets the Keras precision policy
    (`auto`: bfloat16 or float16 where `strategy`'s devices compute it natively).

    Call it after creating the strategy and before building the model.
    """
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision, strategy))


def precision_policy(mixed_precision: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """The Keras policy a `--mixed_precision` value means under `strategy`."""
    if mixed_precision != "auto":
        return "float32" if mixed_precision == "none" else mixed_precision
    return strategies.fast_mixed_precision(strategy or tf.distribute.get_strategy()) or "float32"


def train_model(
    task: Task,
    data: DataLike,
    *,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    set_up: bool = True,
) -> tuple[dict, keras.Model]:
    """Trains `task` on `data.train`, evaluates it on `data.test`, and writes the run
    into `config.model_dir`. Returns (results, model): the dict written to
    metrics.json, and the trained model (a split model gathered back into one).

    `data` may be a `data.Data` (from `data.open_data`, any form on disk), a
    `tf.data.Dataset` of (x, y) pairs (written once as TFRecords in a temporary
    directory, so that it streams and resumes like files), (x, y) NumPy arrays, or
    the bundled loaders' `data.ArrayData`; a test split it lacks is carved out of it
    (10%, fixed), and an empty one is a `RecipeError`. `strategy` defaults to the current one
    (`tf.distribute.get_strategy()`).

    In order: the run directory is claimed (one run at a time); seeds and precision
    are set (unless `set_up` is False, for a second phase of the same run);
    `task.build_model()` and the optimizer are built under the strategy's scope and
    split over devices as `config` asks (`parallelism.split`); the loop resumes from
    the latest checkpoint in `config.model_dir`. With a validation split
    (`data.validation`), it is evaluated after every epoch;
    `config.early_stopping_patience` stops on its loss and restores the best epoch's
    weights (a split is carved from the training set if there is none).

    Writes into `config.model_dir`: checkpoints/, logs/ (TensorBoard), model.keras,
    saved_model/, metrics.json, curves.png. In a multi-worker cluster only the chief
    writes there; the other workers take part in the same saves (they may need
    collective ops) into a temporary directory that is removed afterwards.
    """
    strategy = strategy or tf.distribute.get_strategy()
    data = data_lib.as_data(data)
    _check_splits(data)
    if task.preprocess is None:
        task = dataclasses.replace(task, preprocess=data.default_preprocessing())
    with run_dir.claim(config.model_dir, strategies.is_chief(strategy)):  # Before the model.
        if set_up:
            set_up_run(config, strategy)
        with strategy.scope():
            model = build(task.build_model)
            optimizer = optimization.make_optimizer(config)
            if not model.built:  # A subclassed model creates its variables on first use.
                model.build((None, *data.x_spec.shape))
        parallel = parallelism.split(config, strategy, model, data, task.objective)
        if parallel is not None:
            model = parallel.model  # Tensor parallelism: the plain model's pairs are gone.
        results = _train_and_evaluate(task, data, config, strategy, model, optimizer, parallel)
    return results, (model if parallel is None else parallel.gather())


def train_classifier(
    task: Task,
    data: DataLike,
    *,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    set_up: bool = True,
) -> dict:
    """`train_model` for a classifier (`Task.classifier`), for the recipes that report
    its metrics alone: returns the results."""
    results, _ = train_model(task, data, config=config, strategy=strategy, set_up=set_up)
    return results


def _check_splits(data):
    """A split that is there but empty is a one-line error before anything is built:
    metrics.json would report its loss and accuracy as 0.0, as if measured."""
    for name, split in (("test", data.test), ("validation", data.validation)):
        if split is not None and split.num_examples == 0:
            raise RecipeError(
                f"the {name} split of {data.name} has no examples, so nothing could measure the "
                f"run's {name} loss and accuracy; give it a {name} split with examples (--{name}_data)"
            )


def build(build_model: Callable[..., keras.Model], *args, **kwargs) -> keras.Model:
    """`build_model(*args, **kwargs)`, with a model argument it rejects (a `ValueError`)
    as a one-line `RecipeError`."""
    try:
        return build_model(*args, **kwargs)
    except ValueError as e:
        raise RecipeError(f"cannot build the model: {first_line(e)}") from None


def _train_and_evaluate(task, data, config, strategy, model, optimizer, parallel):
    """The run, in its claimed directory, on the model built (and split) for it."""
    start_time = time.time()
    if config.steps_per_loop is None:
        config = dataclasses.replace(config, steps_per_loop=strategies.steps_per_loop(strategy))
    if config.early_stopping_patience:
        data = data.with_validation()
    config.check_fits(strategy, data.train.num_examples)
    chief = strategies.is_chief(strategy)
    with _run_context(config, chief) as (write_dir, signals, enter):
        trainer = _trainer(task, config, strategy, model, optimizer, parallel)
        controller = resume.controller(task, data, config, trainer, write_dir, enter=enter, signals=signals)
        controller.run()
        evaluation = _evaluate(trainer, data, config.batch_size, task.preprocess, controller)
        if not math.isfinite(evaluation["test"]["loss"]):
            raise RecipeError(
                f"the test loss is {evaluation['test']['loss']}: the run diverged; nothing was "
                f"written beyond the checkpoints (the last is {controller.manager.latest_checkpoint}); "
                "lower learning_rate and start over in a new model_dir"
            )
        signature = task.signature or serving.Signature.for_spec(
            data.x_spec, task.preprocess, run_report.default_outputs(model, data)
        )
        results = run_report.results(task, data, config, controller, evaluation, signature, start_time)
        curves = (
            artifacts.curves_png(config.model_dir, results, controller.plan.steps_per_epoch)
            if chief
            else None
        )
        artifacts.write(
            model if parallel is None else parallel.gather(), write_dir, results, signature, curves
        )
    print(
        f"Test: {artifacts.format_results(evaluation['test'])}; {run_report.speed(results)}; "
        + (f"wrote {config.model_dir}" if chief else "the chief writes the outputs")
    )
    return results


def _trainer(task, config, strategy, model, optimizer, parallel):
    """The compiled step of `task` for `model` (split over devices by `parallel`, or None)."""
    # A split model spans devices, and one XLA computation runs on one: the
    # split compiles each stage or shard on its own device instead.
    options = step.StepOptions(
        jit_compile=config.jit_compile and parallel is None, accum_steps=config.accum_steps
    )
    return step.Trainer(
        strategy,
        model,
        optimizer,
        parallelism.objective(task.objective, parallel),
        global_batch_size=config.batch_size,
        metrics_fn=task.metrics_fn,
        train_metrics_fn=task.train_metrics_fn,
        options=options,
    )


@contextlib.contextmanager
def _run_context(config, chief):
    """What the run holds while it trains: where this worker writes (`model_dir`, or
    for another worker a temporary directory that goes away however the run ends,
    errors included), the stop signals, an exit stack, and a full disk as a one-line
    error. Yields (write_dir, signals, enter)."""
    checkpoints = os.path.join(config.model_dir, "checkpoints")
    with (
        (
            contextlib.nullcontext(config.model_dir)
            if chief
            else tempfile.TemporaryDirectory(prefix="recipes-worker-")
        ) as write_dir,
        fault_tolerance.stop_signals() as signals,
        contextlib.ExitStack() as stack,
        run_dir.disk_full_is_an_error(
            config.model_dir, lambda: tf.train.latest_checkpoint(checkpoints), tidy=lambda: _tidy(write_dir)
        ),
    ):
        _tidy(write_dir)
        yield write_dir, signals, stack.enter_context


def _tidy(model_dir):
    """What a run killed or failed at the wrong moment left: a half-renamed set of
    outputs is completed, half-written ones and checkpoints are removed."""
    if artifacts.finish_interrupted_write(model_dir):
        print(
            f"Finished putting in place the outputs in {model_dir} that an earlier run was "
            "interrupted while writing."
        )
    run_dir.remove_partial_checkpoints(model_dir)


def _evaluate(trainer, data, batch_size, preprocess, controller):
    """The test split, and the validation split once more with the weights that are kept."""
    test_ds, test_steps = data_lib.eval_dataset(
        trainer.strategy, data.test, batch_size, preprocess=preprocess
    )
    with controller.unreadable_input_is_an_error():
        test = trainer.evaluate(test_ds, test_steps)
        validation = trainer.evaluate(*controller.validation) if controller.validation else {}
    artifacts.write_scalars(controller.writers["test"], controller.step, test)
    return {"test": test, "validation": validation}
