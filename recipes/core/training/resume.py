"""Where a run starts: its last checkpoint restored (once the run's settings are
checked against those it was written with), and the outer loop (`loop.Controller`)
set up from that step: the plan, the input, the hooks and the summaries."""

import contextlib
import dataclasses
import os

import keras
import tensorflow as tf

import strategies
from recipes.core.errors import RecipeError
from recipes.core.input import data as data_lib
from recipes.core.rundir import artifacts, fault_tolerance, run_dir
from recipes.core.training import hooks as hooks_lib
from recipes.core.training import loop


def controller(task, data, config, trainer, write_dir, *, enter, signals):
    """Restores the last checkpoint (checking the run's settings against it), then
    sets up the input, the summaries and the hooks of the loop. `write_dir` is where
    this worker writes its checkpoints, `enter` enters a context for the whole run
    (an `ExitStack`'s), `signals` are `fault_tolerance.stop_signals()`."""
    strategy, chief = trainer.strategy, strategies.is_chief(trainer.strategy)
    input_state = data_lib.InputState(config.batch_size // strategies.num_input_pipelines(strategy))
    stopping = hooks_lib.EarlyStoppingState() if config.early_stopping_patience else None
    checkpoint = tf.train.Checkpoint(
        model=trainer.model,
        optimizer=trainer.optimizer,
        input=input_state,
        **({"early_stopping": stopping} if stopping else {}),
        **trainer.objective.checkpointed(),
    )
    manager = _restore(checkpoint, config, write_dir, settings(task, data, config, strategy), chief)
    start_step = int(trainer.optimizer.iterations.numpy())
    start_record = input_state.start(start_step)
    if start_step:
        print(
            f"Resuming from step {start_step} (checkpoint in {manager.directory}); "
            "delete the directory or pass another model_dir to start over."
        )
    plan = _plan(config, data, start_step)
    if stopping is not None and stopping.stopped:
        plan = dataclasses.replace(plan, total_steps=start_step)
        print(
            f"The run stopped early after epoch {int(stopping.stopped_epoch.numpy())}, keeping epoch "
            f"{int(stopping.best_epoch.numpy())}'s weights: nothing more to train. Delete the directory "
            "or pass another model_dir to train again."
        )
    replicas = strategy.num_replicas_in_sync
    print(f"Data: {data.describe()}.")
    print(
        f"Strategy: {strategies.name_of(strategy)} with {replicas} replica(s); global batch "
        f"{config.batch_size} ({config.batch_size // replicas} per replica); {plan.total_steps} "
        f"steps of {plan.steps_per_epoch} per epoch."
    )
    inputs = _inputs(task, data, config, strategy, start_step, start_record)
    hooks = _hooks(config, trainer, checkpoint, (input_state, stopping), enter, signals)
    writers = {
        name: artifacts.summary_writer(chief, config.model_dir, name)
        for name in ("train", "validation", "test")
    }
    return loop.Controller(
        trainer,
        plan,
        inputs,
        manager,
        start_step=start_step,
        writers=writers,
        hooks=hooks,
        model_dir=config.model_dir,
    )


def _hooks(config, trainer, checkpoint, states, enter, signals):
    """The run's hooks, in the order they are called: the input's position,
    preemption, Ctrl-C, early stopping and the profiler. `states`: the input's and
    early stopping's (`InputState`, `EarlyStoppingState` or None), checkpointed."""
    strategy = trainer.strategy
    input_state, stopping = states
    watcher = fault_tolerance.PreemptionWatcher(strategy, checkpoint, config.model_dir, signals.terminate)
    hooks = [
        _input_position_hook(input_state),
        hooks_lib.PreemptionHook(enter(contextlib.closing(watcher))),
        hooks_lib.InterruptHook(signals.interrupt, can_save=strategies.name_of(strategy) != "multi_worker"),
    ]
    if config.early_stopping_patience:
        hooks.append(hooks_lib.EarlyStoppingHook(trainer.model, config.early_stopping_patience, stopping))
    if config.profile and strategies.is_chief(strategy):
        hooks.append(hooks_lib.ProfileHook(os.path.join(config.model_dir, "logs")))
    return hooks


def settings(task, data, config, strategy):
    """What the run's checkpoints depend on, as `run_dir.check_settings` compares them."""
    # The run's length is checked as steps; the policy is compared as resolved.
    # Where the input is read (--data_service) leaves the stream as it was.
    not_as_is = ("model_dir", "epochs", "train_steps", "recipe_settings", "mixed_precision", "data_service")
    return {
        "recipe": task.recipe,
        "data": data.describe(),
        # Each input pipeline reads its own share: another count reads another stream.
        "input_pipelines": strategies.num_input_pipelines(strategy),
        "mixed_precision": keras.mixed_precision.global_policy().name,
        "strategy": strategies.name_of(strategy),
        "num_replicas": strategy.num_replicas_in_sync,
        **{name: value for name, value in dataclasses.asdict(config).items() if name not in not_as_is},
        **config.recipe_settings,
    }


def _restore(checkpoint, config, write_dir, settings, chief):
    """The run's `tf.train.CheckpointManager` (writing into `write_dir`), with the
    latest checkpoint of `config.model_dir` restored once the chief has checked
    `settings` against it."""
    model_dir = config.model_dir
    latest = fault_tolerance.latest_checkpoint(os.path.join(model_dir, "checkpoints"), repair=chief)
    if chief and latest:
        run_dir.check_settings(model_dir, settings)
    manager = tf.train.CheckpointManager(
        checkpoint,
        os.path.join(write_dir, "checkpoints"),
        max_to_keep=3,
        step_counter=checkpoint.optimizer.iterations,
    )
    fault_tolerance.restore(checkpoint, latest, model_dir)
    if chief:
        run_dir.record_settings(model_dir, settings)
    return manager


def _plan(config, data, start_step):
    steps_per_epoch = data.train.num_examples // config.batch_size
    plan = loop.Plan(
        steps_per_epoch=steps_per_epoch,
        total_steps=config.train_steps or config.epochs * steps_per_epoch,
        checkpoint_steps=config.checkpoint_steps or steps_per_epoch,
        steps_per_loop=config.steps_per_loop,
    )
    if plan.total_steps < start_step:
        raise RecipeError(
            f"model_dir={config.model_dir} holds a checkpoint at step {start_step}, past the "
            f"{plan.total_steps} steps asked for; pass train_steps of at least that (or more "
            f"epochs) to go on from it, or a new model_dir"
        )
    return plan


def _inputs(task, data, config, strategy, start_step, start_record):
    """The training stream from `start_step`, the validation split, and the files read."""
    train_ds = data_lib.train_dataset(
        strategy,
        data.train,
        config.batch_size,
        preprocess=task.preprocess,
        seed=config.seed,
        options=data_lib.PipelineOptions(
            start_step=start_step,
            start_record=start_record,
            augment=task.augment,
            data_service=config.data_service,
        ),
    )
    validation = (
        None
        if data.validation is None
        else data_lib.eval_dataset(strategy, data.validation, config.batch_size, preprocess=task.preprocess)
    )
    files = [f for part in (data.train, data.validation, data.test) if part for f in part.source.files]
    return loop.Inputs(iter(train_ds), validation, tuple(dict.fromkeys(files)))


def _input_position_hook(input_state):
    """A loop hook that moves `input_state`'s position (`pipeline.InputState`) on with
    every call of the compiled loop, before any checkpoint of its steps is saved."""

    class Advance(loop.Hook):
        def before_train(self, controller, num_steps):
            if int(input_state.position.numpy()) < 0:
                input_state.position.assign(controller.step * input_state.pipeline_batch)

        def after_train(self, controller, num_steps):
            input_state.position.assign_add(num_steps * input_state.pipeline_batch)

    return Advance()
