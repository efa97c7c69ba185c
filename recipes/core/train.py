"""One run, composed: set-up, input, model and optimizer, the loop, evaluation,
artifacts. Every recipe trains through `train_model` (or `train_classifier`).

    results, model = train.train_model(config, strategy, data.open_data("digits/"), build_model,
                                       loss_fn=keras.losses.sparse_categorical_crossentropy,
                                       metrics_fn=..., recipe="mnist")
"""
import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time

import keras
import tensorflow as tf

import strategies
from recipes.core import (
    artifacts,
    fault_tolerance,
    loop,
    metrics,
    optimization,
    pipeline,
    run_dir,
    serving,
    step,
)
from recipes.core import data as data_lib
from recipes.core.errors import RecipeError, first_line
from strategies import model_parallel, tensor_parallel


def set_up_run(config, strategy=None):
    """Seeds Python, NumPy and TensorFlow, and sets the Keras precision policy
    (`auto`: bfloat16 or float16 where `strategy`'s devices compute it natively).

    Call it after creating the strategy and before building the model.
    """
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision, strategy))


def precision_policy(mixed_precision, strategy=None):
    """The Keras policy a `--mixed_precision` value means under `strategy`."""
    if mixed_precision != "auto":
        return "float32" if mixed_precision == "none" else mixed_precision
    return strategies.fast_mixed_precision(strategy or tf.distribute.get_strategy()) or "float32"


def train_model(config, strategy, dataset, build_model, *, metrics_fn, recipe, preprocess=None,  # noqa: PLR0913
                loss_fn=None, objective=None, train_metrics_fn=None, extra_metrics=None,
                signature=None, augment=None, set_up=True):
    """The recipe preamble and the run: seeds and precision (unless `set_up` is
    False, for a second phase of the same run), `build_model()` and the optimizer
    under the strategy's scope, then `train_and_evaluate`. Returns (results, model).

    `dataset` may be a `data.Data` (from `data.open_data`, any form on disk), a
    `tf.data.Dataset` of (x, y) pairs (written once as TFRecords in a temporary
    directory, so that it streams and resumes like files), (x, y) NumPy arrays, or
    the bundled loaders' `data.ArrayData`; a test split it lacks is carved out of it
    (10%, fixed). `preprocess` (raw batch -> the model's input, inside the exported
    model too) defaults to the data's (`Data.default_preprocessing`)."""
    dataset = data_lib.as_data(dataset)
    if preprocess is None:
        preprocess = dataset.default_preprocessing()
    with run_dir.claim(config.model_dir, strategies.is_chief(strategy)):  # Before the model.
        if set_up:
            set_up_run(config, strategy)
        with strategy.scope():
            model = build(build_model)
            optimizer = optimization.make_optimizer(config)
        _build(model, strategy, dataset)
        parallel = split(config, strategy, model, dataset, objective)
        if parallel is not None:
            model = parallel.model  # Tensor parallelism: the plain model's pairs are gone.
        results = _train_and_evaluate(
            config, strategy, model, optimizer, dataset, loss_fn=loss_fn, objective=objective,
            metrics_fn=metrics_fn, train_metrics_fn=train_metrics_fn, preprocess=preprocess,
            recipe=recipe, extra_metrics=extra_metrics, signature=signature, augment=augment,
            parallel=parallel)
    return results, (model if parallel is None else parallel.gather())


def _build(model, strategy, data):
    if not model.built:  # A subclassed model creates its variables on first use.
        with strategy.scope():
            model.build((None, *data.x_spec.shape))


def split(config, strategy, model, data, objective=None):
    """`model` split over this host's devices as `config` asks
    (`--pipeline_stages` or `--tensor_parallel`): a `model_parallel.Pipeline` or
    `tensor_parallel.TensorParallel`, or None for one device. Raises a one-line
    `RecipeError` for what cannot be split so."""
    if config.model_parallel == 1:
        return None
    flag, count = (("pipeline_stages", config.pipeline_stages) if config.pipeline_stages > 1
                   else ("tensor_parallel", config.tensor_parallel))
    if strategies.name_of(strategy) != "default":
        raise RecipeError(f"{flag}={count} splits one model under the default strategy; "
                          f"strategy={strategies.name_of(strategy)} with it is not supported yet")
    if objective is not None:
        raise RecipeError(f"{flag} trains with the recipe's plain loss, and this run's step "
                          f"({type(objective).__name__}) does not take it yet; leave {flag} at 1")
    input_shape = None if isinstance(model, keras.Sequential) else tuple(data.x_spec.shape)
    try:
        devices = model_parallel.devices(count)
        if flag == "pipeline_stages":
            parallel = model_parallel.Pipeline(model, devices, config.num_microbatches,
                                               config.pipeline_balance, input_shape, config.jit_compile)
            print(f"Pipeline: {count} stages balancing {config.pipeline_balance}, "
                  f"{config.num_microbatches} micro-batch(es) per batch; " + "; ".join(parallel.describe()))
        else:
            parallel = tensor_parallel.TensorParallel(model, devices, input_shape, config.jit_compile,
                                                      input_dtype=data.x_spec.dtype.name)
            print("Tensor parallel: " + "; ".join(parallel.describe()))
    except ValueError as e:
        raise RecipeError(f"{flag}={count}: {first_line(e)}") from None
    return parallel


def build(build_model, *args, **kwargs):
    """`build_model(*args, **kwargs)`, with a model argument it rejects (a `ValueError`)
    as a one-line `RecipeError`."""
    try:
        return build_model(*args, **kwargs)
    except ValueError as e:
        raise RecipeError(f"cannot build the model: {first_line(e)}") from None


def train_classifier(config, strategy, dataset, build_model, *, recipe, preprocess=None,
                     extra_metrics=None, set_up=True):
    """`train_model` for a softmax classifier on integer labels: `build_model(num_classes)`,
    sparse cross-entropy, accuracy while training, and accuracy, precision,
    recall, F1 and AUC-ROC in evaluation; served as probabilities and classes.
    Returns the results."""
    dataset = data_lib.as_data(dataset)
    num_classes = dataset.num_classes
    if preprocess is None:
        preprocess = dataset.default_preprocessing()
    results, _ = train_model(
        config, strategy, dataset, lambda: build_model(num_classes),
        loss_fn=keras.losses.sparse_categorical_crossentropy,
        metrics_fn=lambda: metrics.classification(num_classes),
        train_metrics_fn=lambda: metrics.accuracy(num_classes),
        preprocess=preprocess, recipe=recipe, extra_metrics=extra_metrics, set_up=set_up,
        signature=serving.Signature.for_spec(dataset.x_spec, preprocess))
    return results


def train_and_evaluate(config, strategy, model, optimizer, data, *, metrics_fn, preprocess, recipe,  # noqa: PLR0913
                       loss_fn=None, objective=None, train_metrics_fn=None, extra_metrics=None,
                       signature=None, augment=None, parallel=None):
    """Trains `model` on `data.train` (a `data.Data`), evaluates on `data.test`, writes the run.

    The step computes `objective` (a `step.Objective`; default: supervised
    training with the per-example `loss_fn`). With a validation split
    (`data.validation`), it is evaluated after every epoch;
    `config.early_stopping_patience` stops on its loss and restores the best
    epoch's weights (a split is carved from the training set if there is none).
    `metrics_fn` gives the metrics for evaluation, `train_metrics_fn` (default:
    the same) those followed during training. `extra_metrics` (a dict) goes into
    metrics.json as it is: a recipe's baselines, say. `signature` (a
    `serving.Signature`) is what saved_model/ takes and returns; default: the raw
    examples, `preprocess`ed inside, and the model's outputs as they are.
    `augment(batch, seed)` changes the training batches (`data.train_dataset`).
    `parallel` (from `split`) is how `model` is split over devices: the step
    calls a pipeline's stages, and a tensor-parallel model is saved gathered.

    Resumes from the latest checkpoint in `config.model_dir`. Writes there:
    checkpoints/, logs/ (TensorBoard), model.keras, saved_model/, metrics.json,
    curves.png. In a multi-worker cluster only the chief writes there; the other
    workers take part in the same saves (they may need collective ops) into a
    temporary directory that is removed afterwards.

    Returns the dict written to metrics.json.
    """
    data = data_lib.as_data(data)
    with run_dir.claim(config.model_dir, strategies.is_chief(strategy)):
        _build(model, strategy, data)
        return _train_and_evaluate(config, strategy, model, optimizer, data, metrics_fn=metrics_fn,
                                   preprocess=preprocess, recipe=recipe, loss_fn=loss_fn, objective=objective,
                                   train_metrics_fn=train_metrics_fn, extra_metrics=extra_metrics,
                                   signature=signature, augment=augment, parallel=parallel)


def _train_and_evaluate(config, strategy, model, optimizer, data, *, metrics_fn, preprocess, recipe,  # noqa: PLR0913
                        loss_fn, objective, train_metrics_fn, extra_metrics, signature, augment, parallel):
    """`train_and_evaluate` in a run directory already claimed, on a model already built."""
    start_time = time.time()
    if config.steps_per_loop is None:
        config = dataclasses.replace(config, steps_per_loop=strategies.steps_per_loop(strategy))
    if config.early_stopping_patience:
        data = data.with_validation()
    config.check_fits(strategy, data.train.num_examples)
    chief = strategies.is_chief(strategy)
    checkpoints = os.path.join(config.model_dir, "checkpoints")
    # A worker's temporary directory goes away however the run ends, errors included.
    with (contextlib.nullcontext(config.model_dir) if chief
          else tempfile.TemporaryDirectory(prefix="recipes-worker-")) as write_dir, \
            fault_tolerance.stop_signals() as signals, contextlib.ExitStack() as stack, \
            run_dir.disk_full_is_an_error(config.model_dir,
                                          lambda: tf.train.latest_checkpoint(checkpoints),
                                          tidy=lambda: _tidy(write_dir)):
        _tidy(write_dir)
        if config.model_parallel > 1 and parallel is None:
            raise RecipeError("pipeline_stages and tensor_parallel need the model split by "
                              "train.split (train_model does it)")
        if parallel is not None and parallel.forward is not None:
            objective = step.Objective(loss_fn, forward=parallel.forward)
        # A split model spans devices, and one XLA computation runs on one: the
        # split compiles each stage or shard on its own device instead.
        trainer = step.Trainer(strategy, model, optimizer, loss_fn, metrics_fn, config.batch_size,
                               config.jit_compile and parallel is None, config.accum_steps,
                               train_metrics_fn, objective)
        controller = _controller(config, strategy, trainer, data, (preprocess, augment), write_dir, chief,
                                 stack.enter_context, signals, _settings(config, strategy, data, recipe))
        controller.run()
        evaluation = _evaluate(trainer, strategy, data, config.batch_size, preprocess, controller)
        if not math.isfinite(evaluation["test"]["loss"]):
            raise RecipeError(
                f"the test loss is {evaluation['test']['loss']}: the run diverged; nothing was "
                f"written beyond the checkpoints (the last is {controller.manager.latest_checkpoint}); "
                "lower learning_rate and start over in a new model_dir")
        signature = signature or serving.Signature.for_spec(data.x_spec, preprocess, "predictions")
        results = _results(config, strategy, data, recipe, controller, evaluation, preprocess, signature,
                           start_time=start_time, extra_metrics=extra_metrics or {})
        curves = (artifacts.curves_png(config.model_dir, results, controller.plan.steps_per_epoch)
                  if chief else None)
        artifacts.write(model if parallel is None else parallel.gather(), write_dir, results,
                        signature, curves)
    print(f"Test: {artifacts.format_results(evaluation['test'])}; {_speed(results)}; "
          + (f"wrote {config.model_dir}" if chief else "the chief writes the outputs"))
    return results


def _speed(results):
    """The run's speed in words; a rerun of a finished run trained nothing, and says so."""
    speed = results["examples_per_second"]
    if results["steps_this_run"]:
        return f"{speed:,.0f} examples/s" if speed else "too short to measure its speed"
    trained = f"it trained at {speed:,.0f} examples/s" if speed else "its speed is not recorded"
    return (f"nothing trained this time: the checkpoint is already at step {results['steps']}, the last "
            f"asked for ({trained})")


def _speed_when_trained(model_dir):
    """The examples/s in `model_dir`'s metrics.json, measured by the run that trained
    there: a rerun that trains nothing keeps it. None if there is none."""
    try:
        with tf.io.gfile.GFile(os.path.join(model_dir, "metrics.json")) as f:
            speed = json.load(f).get("examples_per_second")
    except (OSError, ValueError, AttributeError, tf.errors.OpError):
        return None
    return speed if isinstance(speed, (int, float)) and not isinstance(speed, bool) else None


def _tidy(model_dir):
    """What a run killed or failed at the wrong moment left: a half-renamed set of
    outputs is completed, half-written ones and checkpoints are removed."""
    if artifacts.finish_interrupted_write(model_dir):
        print(f"Finished putting in place the outputs in {model_dir} that an earlier run was "
              "interrupted while writing.")
    run_dir.remove_partial_checkpoints(model_dir)


def _settings(config, strategy, data, recipe):
    """What the run's checkpoints depend on, as `run_dir.check_settings` compares them."""
    # The run's length is checked as steps; the policy is compared as resolved.
    # Where the input is read (--data_service) leaves the stream as it was.
    not_as_is = ("model_dir", "epochs", "train_steps", "recipe_settings", "mixed_precision", "data_service")
    return {"recipe": recipe, "data": data.describe(),
            # Each input pipeline reads its own share: another count reads another stream.
            "input_pipelines": strategies.num_input_pipelines(strategy),
            "mixed_precision": keras.mixed_precision.global_policy().name,
            "strategy": strategies.name_of(strategy), "num_replicas": strategy.num_replicas_in_sync,
            **{name: value for name, value in dataclasses.asdict(config).items() if name not in not_as_is},
            **config.recipe_settings}


def _controller(config, strategy, trainer, data, preparation, write_dir, chief, enter, signals,  # noqa: PLR0913
                settings):
    """Restores the last checkpoint (checking the run's settings against it), then
    sets up the input, the summaries and the hooks of the loop."""
    model, optimizer, model_dir = trainer.model, trainer.optimizer, config.model_dir
    preprocess, augment = preparation
    pipeline_batch = config.batch_size // strategies.num_input_pipelines(strategy)
    input_state = data_lib.InputState(pipeline_batch)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, input=input_state,
                                     **trainer.objective.checkpointed())
    latest = fault_tolerance.latest_checkpoint(os.path.join(model_dir, "checkpoints"), repair=chief)
    if chief and latest:
        run_dir.check_settings(model_dir, settings)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(write_dir, "checkpoints"), max_to_keep=3,
        step_counter=optimizer.iterations)
    fault_tolerance.restore(checkpoint, latest, model_dir)
    if chief:
        run_dir.record_settings(model_dir, settings)
    start_step = int(optimizer.iterations.numpy())
    start_record = input_state.start(start_step)
    if start_step:
        print(f"Resuming from step {start_step} (checkpoint in {manager.directory}); "
              "delete the directory or pass another model_dir to start over.")
    steps_per_epoch = data.train.num_examples // config.batch_size
    plan = loop.Plan(steps_per_epoch=steps_per_epoch,
                     total_steps=config.train_steps or config.epochs * steps_per_epoch,
                     checkpoint_steps=config.checkpoint_steps or steps_per_epoch,
                     steps_per_loop=config.steps_per_loop)
    if plan.total_steps < start_step:
        raise RecipeError(
            f"model_dir={model_dir} holds a checkpoint at step {start_step}, past the "
            f"{plan.total_steps} steps asked for; pass train_steps of at least that (or more "
            f"epochs) to go on from it, or a new model_dir")
    replicas = strategy.num_replicas_in_sync
    print(f"Data: {data.describe()}.")
    print(f"Strategy: {strategies.name_of(strategy)} with {replicas} replica(s); global batch "
          f"{config.batch_size} ({config.batch_size // replicas} per replica); {plan.total_steps} "
          f"steps of {steps_per_epoch} per epoch.")
    train_ds = data_lib.train_dataset(strategy, data.train, config.batch_size, preprocess=preprocess,
                                      seed=config.seed, start_step=start_step, start_record=start_record,
                                      augment=augment, data_service=config.data_service)
    validation = None if data.validation is None else data_lib.eval_dataset(
        strategy, data.validation, config.batch_size, preprocess=preprocess)
    hooks = [input_state.hook(),
             loop.PreemptionHook(enter(contextlib.closing(fault_tolerance.PreemptionWatcher(
                 strategy, checkpoint, model_dir, signals.terminate)))),
             loop.InterruptHook(signals.interrupt, can_save=strategies.name_of(strategy) != "multi_worker")]
    if config.early_stopping_patience:
        hooks.append(loop.EarlyStoppingHook(model, config.early_stopping_patience))
    if config.profile and chief:
        hooks.append(loop.ProfileHook(os.path.join(model_dir, "logs")))
    writers = {name: artifacts.summary_writer(chief, model_dir, name)
               for name in ("train", "validation", "test")}
    return loop.Controller(trainer, plan, iter(train_ds), manager, start_step, writers,
                           validation=validation, hooks=hooks, model_dir=model_dir)


def _evaluate(trainer, strategy, data, batch_size, preprocess, controller):
    """The test split, and the validation split once more with the weights that are kept."""
    test_ds, test_steps = data_lib.eval_dataset(strategy, data.test, batch_size, preprocess=preprocess)
    test = trainer.evaluate(test_ds, test_steps)
    validation = trainer.evaluate(*controller.validation) if controller.validation else {}
    artifacts.write_scalars(controller.writers["test"], controller.step, test)
    return {"test": test, "validation": validation}


def input_record(data, preprocess, outputs):
    """What the commands that start from a finished run need of its input
    (metrics.json's `input`): how to open the data again, one raw example's shape
    and dtype, the class names and the preprocessing."""
    return {"spec": {k: v for k, v in (data.spec or {}).items() if v is not None},
            "x_shape": data.x_spec.shape.as_list(), "x_dtype": data.x_spec.dtype.name,
            "class_names": list(data.class_names) if data.class_names else None,
            "carved": list(data.carved),
            "carve_fingerprint": (pipeline.carve_fingerprint(data.train.source.num_records)
                                  if data.carved else None),
            "preprocessing": preprocess.to_json() if isinstance(preprocess, data_lib.Preprocessing) else None,
            "outputs": outputs}


def _results(config, strategy, data, recipe, controller, evaluation, preprocess, signature, *, start_time,  # noqa: PLR0913
             extra_metrics):
    """What metrics.json holds."""
    stopping = {"stopped_early": False, "best_epoch": None}
    for hook in controller.hooks:
        stopping.update(hook.results())
    return {
        "recipe": recipe,
        **{f"test_{name}": value for name, value in evaluation["test"].items()},
        **{f"validation_{name}": value for name, value in evaluation["validation"].items()},
        "train_loss_by_epoch": controller.train_loss_by_epoch,
        "validation_loss_by_epoch": controller.validation_loss_by_epoch,
        **stopping,
        "steps": controller.step,
        "steps_this_run": controller.step - controller.start_step,
        "examples_per_second": (controller.examples_per_second() if controller.step > controller.start_step
                                else _speed_when_trained(config.model_dir)),
        "global_batch_size": config.batch_size,
        "strategy": strategies.name_of(strategy),
        "num_replicas": strategy.num_replicas_in_sync,
        "data": data.spec.get("data"),
        "input": input_record(data, preprocess, signature.outputs),
        "num_train_examples": data.train.num_examples,
        "num_validation_examples": 0 if data.validation is None else data.validation.num_examples,
        "num_test_examples": data.test.num_examples,
        "wall_seconds": round(time.time() - start_time, 2),
        "memory_by_device": model_parallel.memory_by_device(controller.trainer.model,
                                                            controller.trainer.optimizer),
        "tensorflow_version": tf.__version__,
        **extra_metrics,
    }
