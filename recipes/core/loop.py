"""The outer loop, after orbit's `Controller`: train until the next event, then
checkpoint, end the epoch or report, each a short named phase.

    while step < total:
        n = steps until the next event (end of loop, epoch, checkpoint or run)
        train n steps          (one call of the compiled multi-step function)
        report                 (progress bar, TensorBoard)
        maybe checkpoint
        hooks after the loop   (preemption)
        maybe end the epoch    (validate; hooks: early stopping)

Profiling, early stopping and preemption are `Hook`s: small objects called at
those points, so the loop itself never grows a branch for them.
"""
import contextlib
import dataclasses
import math
import os
import sys
import time

import keras
import tensorflow as tf

from recipes.core import artifacts, fault_tolerance
from recipes.core.errors import Interrupted, RecipeError, first_line


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where the events fall, in optimizer steps."""

    steps_per_epoch: int
    total_steps: int
    checkpoint_steps: int
    steps_per_loop: int

    def __post_init__(self):
        for name in ("steps_per_epoch", "checkpoint_steps", "steps_per_loop"):
            if getattr(self, name) < 1:  # 0 would loop forever, or divide by zero.
                raise ValueError(f"{name} must be a positive int. Received: {getattr(self, name)!r}")
        if self.total_steps < 0:
            raise ValueError(f"total_steps must be an int >= 0. Received: {self.total_steps!r}")

    @property
    def epochs(self):
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def steps_to_next_event(self, step):
        return min(self.steps_per_loop, self.steps_per_epoch - step % self.steps_per_epoch,
                   self.total_steps - step, self.checkpoint_steps - step % self.checkpoint_steps)


class Hook:
    """Called by the `Controller` at fixed points; override the ones you need."""

    def before_train(self, controller, num_steps):
        """Before a call of the compiled loop that will run `num_steps` steps."""

    def after_train(self, controller, num_steps):
        """After it; `controller.step` counts the steps just run."""

    def after_loop(self, controller):
        """After the loop's results are reported and any checkpoint is saved."""

    def on_epoch_end(self, controller, epoch, validation):
        """At the end of epoch `epoch` (0-based); `validation` is its results or None.
        Set `controller.stop_requested` to end the run."""

    def on_end(self, controller):
        """After the last step, before the final evaluation."""

    def results(self):
        """Fields this hook adds to metrics.json."""
        return {}


class Controller:
    """Runs the training loop of one run, from `start_step` to `plan.total_steps`.

    Args:
      trainer: the `step.Trainer`.
      plan: the `Plan`.
      iterator: the distributed training input, positioned at `start_step`.
      manager: the `tf.train.CheckpointManager`.
      start_step: the step the run resumes from.
      writers: `{"train": writer, "validation": writer, "test": writer}` (TensorBoard);
        the loop writes the first two, and the final evaluation after it the third.
      validation: `(dataset, steps)` from `data.eval_dataset`, or None.
      hooks: `Hook`s.
      model_dir: the run's directory (for messages).
    """

    def __init__(self, trainer, plan, iterator, manager, start_step, writers, validation=None,  # noqa: PLR0913
                 hooks=(), model_dir=""):
        self.trainer, self.plan, self.iterator, self.manager = trainer, plan, iterator, manager
        self.start_step = self.step = start_step
        self.writers, self.validation, self.hooks = writers, validation, list(hooks)
        self.model_dir = model_dir
        self.stop_requested = False
        self.loop_times = []  # (steps, seconds) per call of the compiled loop.
        self.train_loss_by_epoch, self.validation_loss_by_epoch = [], []  # This run's epochs.
        self._progbar = None
        variables = [v for v in trainer.model.variables + trainer.optimizer.variables
                     if keras.backend.is_float_dtype(v.dtype)]
        # One compiled check of every weight and optimizer slot.
        self._all_finite = tf.function(lambda: tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in variables]))

    def run(self):
        """Trains until `plan.total_steps`, or until a hook asks to stop."""
        try:
            while self.step < self.plan.total_steps and not self.stop_requested:
                num_steps = self.plan.steps_to_next_event(self.step)
                results = self.train(num_steps)
                self.report(results, num_steps)
                self.maybe_checkpoint()
                self._call_hooks("after_loop")
                self.maybe_end_epoch(results)
        except KeyboardInterrupt:  # A second Ctrl-C (see `InterruptHook`).
            raise _interrupted(self.step, self.manager.latest_checkpoint) from None
        for writer in self.writers.values():
            writer.flush()
        self._call_hooks("on_end")

    def train(self, num_steps):
        """One call of the compiled loop: `num_steps` steps. Returns the training
        results since the epoch began."""
        self._begin_epoch_if_needed()
        self._call_hooks("before_train", num_steps)
        tick = time.perf_counter()
        with fault_tolerance.lost_worker_is_an_error(self.trainer.strategy, self.step, self.model_dir), \
                self._unreadable_input_is_an_error():
            self.trainer.train_loop(self.iterator, tf.constant(num_steps))
            results = self.trainer.train_results()  # Reading the metrics waits for the steps.
        self.loop_times.append((num_steps, time.perf_counter() - tick))
        self.step += num_steps
        self._call_hooks("after_train", num_steps)
        self.check_finite(results)
        return results

    @contextlib.contextmanager
    def _unreadable_input_is_an_error(self):
        """A record that cannot be read or decoded mid-stream (a file damaged after the
        checks before training) stops the run with TensorFlow's words for it, and the
        last checkpoint is kept."""
        try:
            yield
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            if not isinstance(e, tf.errors.DataLossError) and "IteratorGetNext" not in str(e):
                raise
            kept = self.manager.latest_checkpoint or "none was written"
            raise RecipeError(
                f"the input could not be read after step {self.step} ({first_line(e.message, 160)}); "
                f"the last checkpoint is kept ({kept}): replace the damaged file and run again "
                "to resume") from None

    def check_finite(self, results):
        """Stops the run before anything is saved once the loss, a weight or an optimizer
        slot is not finite: the checkpoints on disk are all finite by construction."""
        if not math.isfinite(results["loss"]):
            problem = f"the training loss became {results['loss']}"
        elif not bool(self._all_finite()):  # The loop's last update comes after its mean loss.
            problem = "a weight or an optimizer slot became NaN or infinite"
        else:
            return
        kept = self.manager.latest_checkpoint or "none was written"
        raise RecipeError(
            f"{problem} by step {self.step}; stopped without saving, the last good checkpoint "
            f"is kept ({kept}); lower learning_rate or check the input data")

    def report(self, results, num_steps):
        """The progress bar, and the loop's scalars for TensorBoard."""
        epoch_start = (self.step - 1) // self.plan.steps_per_epoch * self.plan.steps_per_epoch
        self._progbar.update(self.step - epoch_start, list(results.items()))
        optimizer = self.trainer.optimizer
        artifacts.write_scalars(self.writers["train"], self.step, {
            **results,
            "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            "examples_per_second": num_steps * self.trainer.global_batch_size / self.loop_times[-1][1]})

    def maybe_checkpoint(self):
        if self.step % self.plan.checkpoint_steps == 0 or self.step == self.plan.total_steps:
            self.manager.save(checkpoint_number=self.step)

    def maybe_end_epoch(self, results):
        """At an epoch's end: record its loss, validate, and let the hooks decide."""
        if self.step % self.plan.steps_per_epoch:
            return
        epoch = self.step // self.plan.steps_per_epoch - 1
        self.train_loss_by_epoch.append(results["loss"])
        self.trainer.reset_train_metrics()
        self._progbar = None
        validation = None
        if self.validation is not None:
            validation = self.trainer.evaluate(*self.validation)
            self.validation_loss_by_epoch.append(validation["loss"])
            print(f"validation: {artifacts.format_results(validation)}")
            artifacts.write_scalars(self.writers["validation"], self.step, validation)
        self._call_hooks("on_epoch_end", epoch, validation)

    def examples_per_second(self):
        """Steady-state throughput, leaving out the first loop (tracing and compilation)."""
        steady = self.loop_times[1:] or self.loop_times
        seconds = sum(t for _, t in steady)
        steps = sum(n for n, _ in steady)
        return round(steps * self.trainer.global_batch_size / seconds, 1) if seconds else None

    def _begin_epoch_if_needed(self):
        if self._progbar is not None:
            return
        epoch, step_in_epoch = divmod(self.step, self.plan.steps_per_epoch)
        print(f"Epoch {epoch + 1}/{self.plan.epochs}")
        epoch_steps = min(self.plan.steps_per_epoch,
                          self.plan.total_steps - epoch * self.plan.steps_per_epoch)
        self._progbar = progress_bar(epoch_steps)
        self._progbar.update(step_in_epoch)

    def _call_hooks(self, name, *args):
        for hook in self.hooks:
            getattr(hook, name)(self, *args)


def progress_bar(target):
    """Keras' `Progbar` on a terminal or in a notebook. Elsewhere (output redirected to a
    file or a pipe) a `LineProgress`: Progbar takes every Linux process for a terminal,
    so it would fill the file with its `\\r` redraws and colour codes."""
    if (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()) or "ipykernel" in sys.modules:
        return keras.utils.Progbar(target)
    return LineProgress(target)


class LineProgress:
    """An epoch's progress as plain lines, `step 70/140 - 12s - loss: 0.4121 - ...`: one
    at most every `interval` seconds, and one at the epoch's end. Written by hand:
    Keras' Progbar has no plain mode."""

    def __init__(self, target, interval=10.0):
        self.target, self.interval = target, interval
        self._start = self._last = time.monotonic()

    def update(self, current, values=None):
        """`values`: (name, value) pairs, shown as they are (the loop's are the epoch's means)."""
        now = time.monotonic()
        if not values or (current < self.target and now - self._last < self.interval):
            return
        self._last = now
        shown = " - ".join(f"{name}: {value:.4f}" if abs(value) >= 1e-3 or value == 0
                           else f"{name}: {value:.4e}" for name, value in values)
        print(f"step {current}/{self.target} - {now - self._start:.0f}s - {shown}", flush=True)


class ProfileHook(Hook):
    """Traces the second call of the compiled loop (the first compiles) for
    TensorBoard's profiler, into `<log_dir>/plugins/profile`."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._calls = 0
        self._tracing = False

    def before_train(self, controller, num_steps):
        self._calls += 1
        self._tracing = self._calls == 2
        if self._tracing:
            tf.profiler.experimental.start(self.log_dir)

    def after_train(self, controller, num_steps):
        if self._tracing:
            tf.profiler.experimental.stop()
            self._tracing = False
            print(f"Wrote a profile of steps {controller.step - num_steps + 1}-{controller.step} "
                  f"to {os.path.join(self.log_dir, 'plugins', 'profile')}.")


class EarlyStoppingHook(Hook):
    """Keras' own `EarlyStopping` callback, driven by hand: stops after `patience`
    epochs without a better validation loss and restores the best epoch's weights."""

    def __init__(self, model, patience):
        self.model, self.patience = model, patience
        self.callback = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True)
        self.callback.set_model(model)
        model.stop_training = False  # The callback sets it to stop, as in `fit`.
        self.callback.on_train_begin()
        self._epoch = None

    def on_epoch_end(self, controller, epoch, validation):
        self._epoch = epoch
        self.callback.on_epoch_end(epoch, {"val_loss": validation["loss"]})
        controller.stop_requested = self.model.stop_training

    def on_end(self, controller):
        self.callback.on_train_end()  # Restores the best epoch's weights.
        if self.model.stop_training:
            print(f"Early stopping after epoch {self._epoch + 1}: the validation loss has not "
                  f"improved for {self.patience} epochs.")
        if self.callback.best_weights is not None:
            print(f"Kept the weights of epoch {self.callback.best_epoch + 1}, the best on the "
                  "validation split.")

    def results(self):
        kept = self.callback.best_weights is not None
        return {"stopped_early": bool(self.model.stop_training),
                "best_epoch": self.callback.best_epoch + 1 if kept else None}


class PreemptionHook(Hook):
    """After every loop, saves and stops if the platform announced a preemption
    (`fault_tolerance.PreemptionWatcher`)."""

    def __init__(self, watcher):
        self.watcher = watcher

    def after_loop(self, controller):
        self.watcher.check(controller.manager, controller.step)


class InterruptHook(Hook):
    """Ctrl-C (`interrupt`, a `threading.Event` that SIGINT sets) stops the run after
    the current loop, with a checkpoint of its last step; a multi-worker run keeps
    its last checkpoint instead, since a save needs every worker."""

    def __init__(self, interrupt, can_save=True):
        self.interrupt, self.can_save = interrupt, can_save

    def after_loop(self, controller):
        if not self.interrupt.is_set():
            return
        kept = (fault_tolerance.save_unless_saved(controller.manager, controller.step)
                if self.can_save else controller.manager.latest_checkpoint)
        raise _interrupted(controller.step, kept)


def _interrupted(step, kept):
    kept = kept or "none was written yet"
    return Interrupted(f"at step {step}; checkpoint kept ({kept}); run the same command again "
                       "to resume")
