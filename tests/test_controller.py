"""The outer loop (`recipes.core.training.loop`) with a fake trainer, as orbit's
controller_test drives its `Controller`: no model is trained and no step is
compiled. `FakeTrainer` has what the `Controller` calls of a `step.Trainer`
(`train_loop`, `train_results`, `reset_train_metrics`, `evaluate`, and the
`model`, `optimizer`, `strategy` and `global_batch_size` it reads) and records
every call. Checkpoints are real (`tf.train.CheckpointManager` over the fake's
step counter and a one-weight Keras model) and so are the TensorBoard writers,
all under `tmp_path`.
"""

import glob
import itertools
import math
import os
import threading
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes.core.errors import Interrupted, Preempted, RecipeError
from recipes.core.rundir import fault_tolerance
from recipes.core.training import hooks, loop

VALIDATION = ("validation-dataset", 3)  # What `data.eval_dataset` returns: (dataset, steps).


class FakeTrainer:
    """The `step.Trainer` protocol the `Controller` uses, recording the calls.

    `train_loss(step)` and `validation_loss(step)` give the losses the trainer
    reports at a step; `weight(step)` is the model's one weight after a loop
    ending at `step` (so restored weights tell which step they come from);
    `error(step, num_steps)` may return an exception for `train_loop` to raise."""

    def __init__(
        self,
        train_loss=lambda step: 1.0 / (1 + step),
        validation_loss=lambda step: 0.5,
        weight=float,
        error=lambda step, num_steps: None,
        global_batch_size=8,
    ):
        self.strategy = tf.distribute.get_strategy()
        self.model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        self.iterations = tf.Variable(0, dtype=tf.int64, name="iterations")
        self.learning_rate = tf.Variable(0.25)
        self.optimizer = types.SimpleNamespace(
            variables=[self.iterations, self.learning_rate], learning_rate=self.learning_rate
        )
        self.global_batch_size = global_batch_size
        self._train_loss, self._validation_loss = train_loss, validation_loss
        self._weight, self._error = weight, error
        self.train_calls = []  # num_steps of each train_loop call.
        self.batches = []  # What train_loop drew from the iterator.
        self.evaluations = []  # (dataset, steps, step) of each evaluate call.
        self.resets = []  # The step at each reset_train_metrics call.

    @property
    def step(self):
        return int(self.iterations.numpy())

    def train_loop(self, iterator, num_steps):
        assert isinstance(num_steps, tf.Tensor)  # As the compiled loop takes it: no retrace per size.
        num_steps = int(num_steps)
        error = self._error(self.step, num_steps)
        if error is not None:
            raise error
        self.train_calls.append(num_steps)
        self.batches += [next(iterator) for _ in range(num_steps)]
        self.iterations.assign_add(num_steps)
        self.model.layers[0].kernel.assign([[self._weight(self.step)]])

    def train_results(self):
        return {"loss": self._train_loss(self.step), "accuracy": 0.75}

    def reset_train_metrics(self):
        self.resets.append(self.step)

    def evaluate(self, dataset, steps):
        self.evaluations.append((dataset, steps, self.step))
        return {"loss": self._validation_loss(self.step), "accuracy": 0.5}

    def weight(self):
        return float(self.model.layers[0].kernel.numpy()[0, 0])


class Recorder(loop.Hook):
    """Records each hook call as (name, controller.step, args...); `stop` is
    `(method name, step)`: `controller.request_stop()` there."""

    def __init__(self, stop=None):
        self.calls = []
        self.stop = stop
        self.latest_at_after_loop = {}

    def _record(self, name, controller, *args):
        self.calls.append((name, controller.step) + args)
        if self.stop == (name, controller.step):
            controller.request_stop()

    def before_train(self, controller, num_steps):
        self._record("before_train", controller, num_steps)

    def after_train(self, controller, num_steps):
        self._record("after_train", controller, num_steps)

    def after_loop(self, controller):
        self.latest_at_after_loop[controller.step] = controller.manager.latest_checkpoint
        self._record("after_loop", controller)

    def on_epoch_end(self, controller, epoch, validation):
        self._record("on_epoch_end", controller, epoch, validation)

    def on_end(self, controller):
        self._record("on_end", controller)

    def named(self, name):
        return [call[1:] for call in self.calls if call[0] == name]


def make_controller(
    tmp_path,
    trainer,
    *,
    steps_per_epoch,
    total_steps,
    steps_per_loop,
    checkpoint_steps=None,
    start_step=0,
    validation=VALIDATION,
    hooks=(),
):
    plan = loop.Plan(
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        checkpoint_steps=checkpoint_steps or steps_per_epoch,
        steps_per_loop=steps_per_loop,
    )
    checkpoint = tf.train.Checkpoint(step=trainer.iterations, model=trainer.model)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "checkpoints"), max_to_keep=None)
    writers = {
        name: tf.summary.create_file_writer(str(tmp_path / "logs" / name))
        for name in ("train", "validation", "test")
    }
    # The input, positioned at start_step as train.py positions it: batch i is the number i.
    return loop.Controller(
        trainer,
        plan,
        loop.Inputs(itertools.count(start_step), validation),
        manager,
        start_step=start_step,
        writers=writers,
        hooks=hooks,
        model_dir=str(tmp_path),
    )


def saved_steps(controller):
    """The steps of the checkpoints on disk, oldest first."""
    return [int(path.rsplit("-", 1)[1]) for path in controller.manager.checkpoints]


def checkpointed_step(path):
    return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def read_scalars(log_dir):
    """{tag: [(step, value), ...]} from the event files in `log_dir`."""
    scalars = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


def resume(tmp_path, first, **plan):
    """A second run in the same directory, as train.py starts one: fresh state,
    restored from the last checkpoint, the input positioned at the restored step."""
    trainer = FakeTrainer(weight=lambda step: -1.0)
    latest = fault_tolerance.latest_checkpoint(first.manager.directory)
    tf.train.Checkpoint(step=trainer.iterations, model=trainer.model).restore(
        latest
    ).assert_existing_objects_matched()
    hook = Recorder()
    controller = make_controller(tmp_path, trainer, start_step=trainer.step, hooks=[hook], **plan)
    return trainer, controller, hook


# The plan.


@pytest.mark.parametrize(
    "plan, sizes",
    [
        # Loops of 4 cut at each epoch's end (every 10 steps), the run ending mid-loop.
        (
            dict(steps_per_epoch=10, total_steps=25, checkpoint_steps=10, steps_per_loop=4),
            [4, 4, 2, 4, 4, 2, 4, 1],
        ),
        # Checkpoints every 3 steps cut the loops too, and the epoch's end (10) in between.
        (dict(steps_per_epoch=10, total_steps=12, checkpoint_steps=3, steps_per_loop=5), [3, 3, 3, 1, 2]),
        # A loop longer than an epoch is cut at every epoch's end; the last epoch is partial.
        (dict(steps_per_epoch=5, total_steps=12, checkpoint_steps=5, steps_per_loop=100), [5, 5, 2]),
        # One step a loop.
        (dict(steps_per_epoch=3, total_steps=4, checkpoint_steps=3, steps_per_loop=1), [1, 1, 1, 1]),
    ],
)
def test_plan_cuts_loops_at_every_event(plan, sizes):
    plan = loop.Plan(**plan)
    step, loops = 0, []
    while step < plan.total_steps:
        loops.append(plan.steps_to_next_event(step))
        step += loops[-1]
    assert loops == sizes
    assert plan.epochs == math.ceil(plan.total_steps / plan.steps_per_epoch)


def test_plan_from_a_resumed_step_goes_to_the_next_event():
    plan = loop.Plan(steps_per_epoch=10, total_steps=25, checkpoint_steps=10, steps_per_loop=4)
    assert [plan.steps_to_next_event(step) for step in (7, 9, 10, 23)] == [3, 1, 4, 2]


# Train calls.


@pytest.mark.parametrize("steps_per_loop, sizes", [(4, [4, 4, 2, 4, 4, 2, 4, 1]), (25, [10, 10, 5])])
def test_train_calls_follow_the_plan_to_the_last_partial_loop(tmp_path, steps_per_loop, sizes):
    trainer = FakeTrainer()
    hook = Recorder()
    controller = make_controller(
        tmp_path, trainer, steps_per_epoch=10, total_steps=25, steps_per_loop=steps_per_loop, hooks=[hook]
    )
    controller.run()
    assert trainer.train_calls == sizes
    assert controller.step == trainer.step == 25
    assert trainer.batches == list(range(25))  # Each step draws one batch, in order.
    assert [n for n, _ in controller.loop_times] == sizes
    assert hook.named("before_train") == [
        (step, n) for step, n in zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes)
    ]
    assert hook.named("after_train") == [(step, n) for step, n in zip(np.cumsum(sizes).tolist(), sizes)]
    assert hook.named("on_end") == [(25,)]


def test_hooks_are_called_in_the_documented_order(tmp_path):
    hook = Recorder()
    controller = make_controller(
        tmp_path, FakeTrainer(), steps_per_epoch=4, total_steps=6, steps_per_loop=3, hooks=[hook]
    )
    controller.run()
    assert [call[:2] for call in hook.calls] == [
        ("before_train", 0),
        ("after_train", 3),
        ("after_loop", 3),
        ("before_train", 3),
        ("after_train", 4),
        ("after_loop", 4),
        ("on_epoch_end", 4),
        ("before_train", 4),
        ("after_train", 6),
        ("after_loop", 6),
        ("on_end", 6),
    ]
    # after_loop comes after the loop's checkpoint is saved.
    assert hook.latest_at_after_loop[4].endswith("ckpt-4")
    assert hook.latest_at_after_loop[6].endswith("ckpt-6")


def test_examples_per_second_leaves_out_the_first_loop(tmp_path):
    controller = make_controller(
        tmp_path, FakeTrainer(global_batch_size=4), steps_per_epoch=5, total_steps=10, steps_per_loop=5
    )
    controller.loop_times = [(5, 10.0), (5, 1.0), (3, 0.5)]  # The first one compiled.
    assert controller.examples_per_second() == round(8 * 4 / 1.5, 1)
    controller.loop_times = [(5, 2.0)]  # A single loop is all there is.
    assert controller.examples_per_second() == 10.0


# Checkpoints.


@pytest.mark.parametrize(
    "total_steps, checkpoint_steps, steps_per_loop, saved",
    [
        (22, 4, 3, [4, 8, 12, 16, 20, 22]),  # Every 4 steps, and the run's last step.
        (20, 5, 3, [5, 10, 15, 20]),  # The last step is a checkpoint step: saved once.
        (7, 10, 2, [7]),  # Fewer steps than checkpoint_steps: only the end.
    ],
)
def test_checkpoints_every_checkpoint_steps_and_at_the_end(
    tmp_path, total_steps, checkpoint_steps, steps_per_loop, saved
):
    trainer = FakeTrainer()
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=10,
        total_steps=total_steps,
        checkpoint_steps=checkpoint_steps,
        steps_per_loop=steps_per_loop,
    )
    controller.run()
    assert saved_steps(controller) == saved
    # Each checkpoint holds the state of the step it is named after.
    assert [checkpointed_step(path) for path in controller.manager.checkpoints] == saved
    reader = tf.train.load_checkpoint(controller.manager.checkpoints[0])
    kernel = [name for name in reader.get_variable_to_shape_map() if name.startswith("model/")]
    assert [reader.get_tensor(name).item() for name in kernel] == [float(saved[0])]


# Validation and the end of each epoch.


def test_validation_and_epoch_end_at_each_whole_epoch(tmp_path):
    trainer = FakeTrainer(train_loss=lambda step: step / 100, validation_loss=lambda step: step / 10)
    hook = Recorder()
    controller = make_controller(
        tmp_path, trainer, steps_per_epoch=5, total_steps=17, steps_per_loop=2, hooks=[hook]
    )
    controller.run()
    # After steps 5, 10 and 15, with the dataset and step count given; the partial
    # last epoch (steps 16-17) ends no epoch: the final evaluation after the loop covers it.
    assert trainer.evaluations == [
        ("validation-dataset", 3, 5),
        ("validation-dataset", 3, 10),
        ("validation-dataset", 3, 15),
    ]
    assert hook.named("on_epoch_end") == [
        (5, 0, {"loss": 0.5, "accuracy": 0.5}),
        (10, 1, {"loss": 1.0, "accuracy": 0.5}),
        (15, 2, {"loss": 1.5, "accuracy": 0.5}),
    ]
    assert controller.validation_loss_by_epoch == [0.5, 1.0, 1.5]
    # The training loss of each epoch is read at its end, then the metrics start over.
    assert controller.train_loss_by_epoch == [0.05, 0.10, 0.15]
    assert trainer.resets == [5, 10, 15]


def test_without_validation_the_epoch_ends_with_none(tmp_path):
    trainer = FakeTrainer()
    hook = Recorder()
    controller = make_controller(
        tmp_path, trainer, steps_per_epoch=3, total_steps=6, steps_per_loop=3, validation=None, hooks=[hook]
    )
    controller.run()
    assert trainer.evaluations == []
    assert hook.named("on_epoch_end") == [(3, 0, None), (6, 1, None)]
    assert controller.validation_loss_by_epoch == []
    assert len(controller.train_loss_by_epoch) == 2


# TensorBoard.


def test_summaries_get_each_loop_and_each_validation(tmp_path):
    trainer = FakeTrainer(train_loss=lambda step: step / 100, validation_loss=lambda step: step / 10)
    controller = make_controller(tmp_path, trainer, steps_per_epoch=4, total_steps=10, steps_per_loop=3)
    controller.run()
    for writer in controller.writers.values():
        writer.flush()  # The controller flushes the train writer; the others flush at exit.
    train = read_scalars(str(tmp_path / "logs" / "train"))
    loop_ends = [3, 4, 7, 8, 10]
    assert set(train) == {"loss", "accuracy", "learning_rate", "examples_per_second"}
    assert [step for step, _ in train["loss"]] == loop_ends
    assert [value for _, value in train["loss"]] == pytest.approx([step / 100 for step in loop_ends])
    assert train["accuracy"] == [(step, 0.75) for step in loop_ends]
    assert train["learning_rate"] == [(step, 0.25) for step in loop_ends]
    assert [step for step, _ in train["examples_per_second"]] == loop_ends
    assert all(value > 0 for _, value in train["examples_per_second"])
    validation = read_scalars(str(tmp_path / "logs" / "validation"))
    assert set(validation) == {"loss", "accuracy"}
    assert [step for step, _ in validation["loss"]] == [4, 8]
    assert [value for _, value in validation["loss"]] == pytest.approx([0.4, 0.8])
    assert validation["accuracy"] == [(4, 0.5), (8, 0.5)]
    assert read_scalars(str(tmp_path / "logs" / "test")) == {}  # The final evaluation writes it.


# Resuming.


def test_resume_runs_only_the_remaining_steps(tmp_path):
    interrupt = threading.Event()
    first_trainer = FakeTrainer()
    stop_at_7 = Recorder()
    first = make_controller(
        tmp_path,
        first_trainer,
        steps_per_epoch=5,
        total_steps=12,
        steps_per_loop=2,
        hooks=[stop_at_7, hooks.InterruptHook(interrupt)],
    )
    stop_at_7.after_train = lambda controller, n: interrupt.set() if controller.step == 7 else None
    with pytest.raises(Interrupted):
        first.run()
    assert first_trainer.train_calls == [2, 2, 1, 2]
    assert saved_steps(first) == [5, 7]

    trainer, controller, hook = resume(tmp_path, first, steps_per_epoch=5, total_steps=12, steps_per_loop=2)
    assert controller.step == controller.start_step == 7
    assert trainer.weight() == 7.0  # The weights of step 7, not the fresh ones.
    controller.run()
    # Loops cut at the same absolute events as an uninterrupted run; no step is run twice.
    assert trainer.train_calls == [2, 1, 2]
    assert trainer.batches == list(range(7, 12))
    assert controller.step == trainer.step == 12
    assert saved_steps(controller) == [5, 7, 10, 12]
    assert [evaluated for _, _, evaluated in trainer.evaluations] == [10]
    assert hook.named("on_epoch_end")[0][:2] == (10, 1)  # The epoch counts from the start of training.


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    first = make_controller(tmp_path, FakeTrainer(), steps_per_epoch=5, total_steps=10, steps_per_loop=5)
    first.run()
    trainer, controller, hook = resume(tmp_path, first, steps_per_epoch=5, total_steps=10, steps_per_loop=5)
    controller.run()
    assert trainer.train_calls == [] and trainer.evaluations == []
    assert saved_steps(controller) == [5, 10]
    assert hook.calls == [("on_end", 10)]


# Ways a hook stops the run.


@pytest.mark.parametrize(
    "where, stop_step, sizes",
    [
        ("on_epoch_end", 10, [4, 4, 2]),  # The documented way: at an epoch's end.
        ("after_loop", 9, [4, 1, 4]),  # Mid-epoch, after any loop.
        ("after_train", 4, [4]),
    ],
)
def test_a_hook_stops_the_run_with_request_stop(tmp_path, where, stop_step, sizes):
    trainer = FakeTrainer()
    hook = Recorder(stop=(where, stop_step))
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=5 if where != "on_epoch_end" else 10,
        total_steps=30,
        steps_per_loop=4,
        hooks=[hook],
    )
    controller.run()
    assert trainer.train_calls == sizes
    assert controller.step == stop_step
    assert hook.named("on_end") == [(stop_step,)]  # A requested stop is a normal end.
    assert controller.stop_requested


@pytest.mark.parametrize("where, stop_step, sizes", [("after_train", 4, [4]), ("after_loop", 8, [4, 4])])
def test_a_hook_stops_the_run_with_an_error_once_every_hook_has_had_the_call(
    tmp_path, where, stop_step, sizes
):
    """The same one way, with an error: the controller raises it (the first request's)
    after the other hooks' same call, and the run does not end normally."""

    def stopper(name):
        def stop(controller, *args):
            calls.append((name, controller.step))
            if controller.step == stop_step:
                controller.request_stop(RecipeError(name))

        return stop

    calls, first, second, recorder = [], loop.Hook(), loop.Hook(), Recorder()
    setattr(first, where, stopper("first"))
    setattr(second, where, stopper("second"))
    trainer = FakeTrainer()
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=10,
        total_steps=30,
        steps_per_loop=4,
        hooks=[first, second, recorder],
    )
    with pytest.raises(RecipeError, match="^first$"):
        controller.run()
    assert trainer.train_calls == sizes
    assert calls[-2:] == [("first", stop_step), ("second", stop_step)]  # Both had the call.
    assert recorder.named(where)[-1][0] == stop_step and recorder.named("on_end") == []


def test_interrupt_hook_saves_and_raises_after_the_loop(tmp_path):
    interrupt = threading.Event()
    trainer = FakeTrainer()
    recorder = Recorder()
    recorder.after_train = lambda controller, n: interrupt.set() if controller.step == 8 else None
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=5,
        total_steps=20,
        steps_per_loop=3,
        hooks=[recorder, hooks.InterruptHook(interrupt)],
    )
    with pytest.raises(Interrupted, match=r"at step 8; checkpoint kept \(.*ckpt-8\)") as raised:
        controller.run()
    assert raised.value.exit_code == 130
    assert trainer.train_calls == [3, 2, 3]
    assert saved_steps(controller) == [5, 8]  # The interrupted step is saved.
    assert checkpointed_step(controller.manager.latest_checkpoint) == 8
    assert recorder.named("on_end") == []  # An exception is not a normal end.


def test_interrupt_on_a_checkpoint_step_saves_it_once(tmp_path):
    interrupt = threading.Event()
    interrupt.set()
    controller = make_controller(
        tmp_path,
        FakeTrainer(),
        steps_per_epoch=5,
        total_steps=20,
        steps_per_loop=5,
        hooks=[hooks.InterruptHook(interrupt)],
    )
    with pytest.raises(Interrupted, match=r"at step 5; checkpoint kept \(.*ckpt-5\)"):
        controller.run()
    assert saved_steps(controller) == [5]
    # The interrupt comes before the epoch's end: that epoch is not validated.
    assert controller.trainer.evaluations == []


def test_interrupt_hook_that_cannot_save_keeps_the_last_checkpoint(tmp_path):
    interrupt = threading.Event()
    recorder = Recorder()
    recorder.after_train = lambda controller, n: interrupt.set() if controller.step == 7 else None
    controller = make_controller(
        tmp_path,
        FakeTrainer(),
        steps_per_epoch=5,
        total_steps=20,
        steps_per_loop=2,
        hooks=[recorder, hooks.InterruptHook(interrupt, False)],
    )
    with pytest.raises(Interrupted, match=r"at step 7; checkpoint kept \(.*ckpt-5\)"):
        controller.run()
    assert saved_steps(controller) == [5]


def test_interrupt_before_any_checkpoint_says_none_was_written(tmp_path):
    interrupt = threading.Event()
    interrupt.set()
    controller = make_controller(
        tmp_path,
        FakeTrainer(),
        steps_per_epoch=5,
        total_steps=20,
        steps_per_loop=2,
        hooks=[hooks.InterruptHook(interrupt, can_save=False)],
    )
    with pytest.raises(Interrupted, match="at step 2; checkpoint kept \\(none was written yet\\)"):
        controller.run()


def test_second_ctrl_c_inside_the_loop_stops_at_once(tmp_path):
    # A second Ctrl-C raises KeyboardInterrupt wherever the process is: here, in the compiled loop.
    trainer = FakeTrainer(error=lambda step, n: KeyboardInterrupt() if step == 8 else None)
    hook = Recorder()
    controller = make_controller(
        tmp_path, trainer, steps_per_epoch=4, total_steps=20, steps_per_loop=4, hooks=[hook]
    )
    with pytest.raises(Interrupted, match=r"at step 8; checkpoint kept \(.*ckpt-8\)"):
        controller.run()
    assert trainer.train_calls == [4, 4]
    assert saved_steps(controller) == [4, 8]  # Nothing more is saved.
    assert hook.named("on_end") == []


def test_preemption_hook_saves_and_raises(tmp_path):
    terminate = threading.Event()
    trainer = FakeTrainer()
    checkpoint = tf.train.Checkpoint(step=trainer.iterations, model=trainer.model)
    watcher = fault_tolerance.PreemptionWatcher(trainer.strategy, checkpoint, str(tmp_path), terminate)
    recorder = Recorder()
    recorder.after_train = lambda controller, n: terminate.set() if controller.step == 8 else None
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=5,
        total_steps=20,
        steps_per_loop=3,
        hooks=[recorder, hooks.PreemptionHook(watcher)],
    )
    with pytest.raises(Preempted, match="saved a checkpoint at step 8") as raised:
        controller.run()
    assert raised.value.exit_code == Preempted.exit_code != 0
    assert trainer.train_calls == [3, 2, 3]
    assert saved_steps(controller) == [5, 8]
    assert checkpointed_step(controller.manager.latest_checkpoint) == 8


def test_preemption_hook_without_a_signal_changes_nothing(tmp_path):
    trainer = FakeTrainer()
    checkpoint = tf.train.Checkpoint(step=trainer.iterations, model=trainer.model)
    watcher = fault_tolerance.PreemptionWatcher(
        trainer.strategy, checkpoint, str(tmp_path), threading.Event()
    )
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=5,
        total_steps=10,
        steps_per_loop=3,
        hooks=[hooks.PreemptionHook(watcher)],
    )
    controller.run()
    assert controller.step == 10 and saved_steps(controller) == [5, 10]


# Errors that stop the run before anything is saved.


def test_a_non_finite_loss_stops_before_the_checkpoint(tmp_path):
    trainer = FakeTrainer(train_loss=lambda step: math.nan if step >= 8 else 1.0)
    controller = make_controller(tmp_path, trainer, steps_per_epoch=4, total_steps=20, steps_per_loop=4)
    with pytest.raises(RecipeError, match=r"training loss became nan by step 8; .*\(.*ckpt-4\)"):
        controller.run()
    assert saved_steps(controller) == [4]  # Step 8 is a checkpoint step, not saved.


def test_a_non_finite_weight_stops_before_the_checkpoint(tmp_path):
    trainer = FakeTrainer(weight=lambda step: math.inf if step >= 8 else 0.0)
    controller = make_controller(tmp_path, trainer, steps_per_epoch=4, total_steps=20, steps_per_loop=4)
    with pytest.raises(RecipeError, match="a weight or an optimizer slot became NaN or infinite by step 8"):
        controller.run()
    assert saved_steps(controller) == [4]


def test_unreadable_input_stops_with_the_kept_checkpoint(tmp_path):
    trainer = FakeTrainer(
        error=lambda step, n: (
            tf.errors.DataLossError(None, None, "corrupted record at 12") if step == 4 else None
        )
    )
    controller = make_controller(tmp_path, trainer, steps_per_epoch=4, total_steps=20, steps_per_loop=4)
    with pytest.raises(
        RecipeError, match=r"could not be read after step 4 \(corrupted record at 12\).*ckpt-4"
    ):
        controller.run()


def test_other_errors_in_the_loop_pass_unchanged(tmp_path):
    error = tf.errors.InvalidArgumentError(None, None, "incompatible shapes")
    trainer = FakeTrainer(error=lambda step, n: error)
    controller = make_controller(tmp_path, trainer, steps_per_epoch=4, total_steps=20, steps_per_loop=4)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        controller.run()
    assert raised.value is error


# Early stopping.


def epoch_losses(losses, steps_per_epoch):
    """A validation loss for each epoch's end: losses[epoch]."""
    return lambda step: losses[step // steps_per_epoch - 1]


@pytest.mark.parametrize(
    "losses, patience, epochs_run, best_epoch",
    [
        # Best at epoch 2 (1-based), then 2 epochs without improvement: stops after epoch 4.
        ([1.0, 0.5, 0.6, 0.7, 0.1, 0.1], 2, 4, 2),
        # An improvement in between starts the count over.
        ([1.0, 1.1, 0.9, 1.0, 1.1, 0.1, 0.1], 2, 5, 3),
        # Patience 1: the first epoch without improvement stops the run.
        ([1.0, 0.5, 0.5, 0.1], 1, 3, 2),
    ],
)
def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best_weights(
    tmp_path, losses, patience, epochs_run, best_epoch
):
    steps_per_epoch = 3
    trainer = FakeTrainer(validation_loss=epoch_losses(losses, steps_per_epoch))
    early_stopping = hooks.EarlyStoppingHook(trainer.model, patience)
    recorder = Recorder()
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * len(losses),
        steps_per_loop=2,
        hooks=[early_stopping, recorder],
    )
    controller.run()
    assert controller.step == trainer.step == steps_per_epoch * epochs_run
    assert len(trainer.evaluations) == epochs_run
    assert controller.validation_loss_by_epoch == losses[:epochs_run]
    assert early_stopping.results() == {"stopped_early": True, "best_epoch": best_epoch}
    # The weights of the best epoch's last step are back in the model.
    assert trainer.weight() == float(steps_per_epoch * best_epoch)
    # The checkpoints keep the steps actually run (their last one holds the last weights).
    assert saved_steps(controller)[-1] == controller.step
    assert recorder.named("on_end") == [(controller.step,)]


@pytest.mark.parametrize(
    "losses, total_steps, best_epoch",
    [
        ([1.0, 0.9, 0.95, 0.8], 8, 4),  # Never triggers: every step runs, the last epoch is best.
        ([1.0, 0.5, 0.7], 6, 2),  # Epoch 3 is worse; patience 2 is not yet exhausted when the run ends.
    ],
    ids=["never_triggers", "run_ends_first"],
)
def test_early_stopping_that_does_not_stop_runs_every_step_and_keeps_the_best_weights(
    tmp_path, losses, total_steps, best_epoch
):
    trainer = FakeTrainer(validation_loss=epoch_losses(losses, 2))
    early_stopping = hooks.EarlyStoppingHook(trainer.model, patience=2)
    controller = make_controller(
        tmp_path,
        trainer,
        steps_per_epoch=2,
        total_steps=total_steps,
        steps_per_loop=2,
        hooks=[early_stopping],
    )
    controller.run()
    assert controller.step == total_steps
    assert early_stopping.results() == {"stopped_early": False, "best_epoch": best_epoch}
    assert trainer.weight() == float(2 * best_epoch)  # The best epoch's last step's weights.


@pytest.mark.parametrize("field", ["steps_per_epoch", "checkpoint_steps", "steps_per_loop"])
def test_a_plan_refuses_zero_steps_where_it_would_loop_forever(field):
    settings = dict(steps_per_epoch=10, total_steps=25, checkpoint_steps=10, steps_per_loop=4)
    with pytest.raises(ValueError, match=f"{field} must be a positive int"):
        loop.Plan(**{**settings, field: 0})
