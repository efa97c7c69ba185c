"""What a finished run reports: metrics.json's dict, and the speed its last line states.

metrics.json holds the test (and validation) results, the loss of each epoch, the
steps and speed, the strategy, the input (`runs.input_record`: what later commands
need to open the data and serve the model), memory, and the recipe's own fields.
"""

import os
import time

import tensorflow as tf

import strategies
from recipes.core.deploy import runs
from recipes.core.rundir import run_dir
from strategies import model_parallel


def results(task, data, config, controller, evaluation, signature, start_time):
    """What metrics.json holds, for `task` (a `train.Task`) trained on `data` by
    `controller`; `evaluation` is `{"test": ..., "validation": ...}`."""
    stopping = {"stopped_early": False, "best_epoch": None}
    for hook in controller.hooks:
        stopping.update(hook.results())
    strategy = controller.trainer.strategy
    return {
        "recipe": task.recipe,
        **{f"test_{name}": value for name, value in evaluation["test"].items()},
        **{f"validation_{name}": value for name, value in evaluation["validation"].items()},
        "train_loss_by_epoch": controller.train_loss_by_epoch,
        "validation_loss_by_epoch": controller.validation_loss_by_epoch,
        **stopping,
        "steps": controller.step,
        "steps_this_run": controller.step - controller.start_step,
        "examples_per_second": (
            controller.examples_per_second()
            if controller.step > controller.start_step
            else _speed_when_trained(config.model_dir)
        ),
        "global_batch_size": config.batch_size,
        "strategy": strategies.name_of(strategy),
        "num_replicas": strategy.num_replicas_in_sync,
        "data": data.spec.get("data"),
        "input": runs.input_record(data, task.preprocess, signature.outputs),
        "num_train_examples": data.train.num_examples,
        "num_validation_examples": 0 if data.validation is None else data.validation.num_examples,
        "num_test_examples": data.test.num_examples,
        "wall_seconds": round(time.time() - start_time, 2),
        "memory_by_device": model_parallel.memory_by_device(
            controller.trainer.model, controller.trainer.optimizer
        ),
        "model_modules": runs.model_modules(controller.trainer.model),
        "tensorflow_version": tf.__version__,
        **task.extra_metrics,
    }


def default_outputs(model, data):
    """What saved_model/ returns where the recipe does not say (a model trained through
    the API): the classes, for one probability per class of the data; else the output."""
    try:
        shape = tuple(model.output_shape)
    except (AttributeError, ValueError, TypeError):  # A subclassed model may not know it.
        return "predictions"
    classes = data.num_classes or 0
    return "classes" if classes > 1 and len(shape) == 2 and shape[-1] == classes else "predictions"


def speed(results):
    """The run's speed in words; a rerun of a finished run trained nothing, and says so."""
    speed = results["examples_per_second"]
    if results["steps_this_run"]:
        return f"{speed:,.0f} examples/s" if speed else "too short to measure its speed"
    trained = f"it trained at {speed:,.0f} examples/s" if speed else "its speed is not recorded"
    return (
        f"nothing trained this time: the checkpoint is already at step {results['steps']}, the last "
        f"asked for ({trained})"
    )


def _speed_when_trained(model_dir):
    """The examples/s in `model_dir`'s metrics.json, measured by the run that trained
    there: a rerun that trains nothing keeps it. None if there is none."""
    speed = (run_dir.read_json_object(os.path.join(model_dir, "metrics.json")) or {}).get(
        "examples_per_second"
    )
    return speed if isinstance(speed, (int, float)) and not isinstance(speed, bool) else None
