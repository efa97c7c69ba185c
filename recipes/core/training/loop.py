"""The outer loop, after orbit's `Controller`: train until the next event, then
checkpoint, end the epoch or report, each a short named phase.

    while step < total:
        n = steps until the next event (end of loop, epoch, checkpoint or run)
        train n steps          (one call of the compiled multi-step function)
        report                 (progress bar, TensorBoard)
        maybe checkpoint
        hooks after the loop   (preemption)
        maybe end the epoch    (validate; hooks: early stopping)

Profiling, early stopping, preemption and Ctrl-C are `Hook`s (`hooks.py`): small
objects called at those points, so the loop itself never grows a branch for them. A
hook ends the run one way, `controller.request_stop` (see `Hook`).
"""

import contextlib
import dataclasses
import math
import re
import struct
import time
from typing import Any

import keras
import tensorflow as tf

from recipes.core.errors import Interrupted, RecipeError, first_line
from recipes.core.rundir import artifacts, fault_tolerance
from recipes.core.training.progress import progress_bar


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
        return min(
            self.steps_per_loop,
            self.steps_per_epoch - step % self.steps_per_epoch,
            self.total_steps - step,
            self.checkpoint_steps - step % self.checkpoint_steps,
        )


class Hook:
    """Called by the `Controller` at fixed points; override the ones you need.

    A hook ends the run one way: `controller.request_stop()`, from any of its calls.
    Without an error, the run ends as if it had reached its last step once the
    current loop's phases are done (checkpoint, epoch's end): `on_end`, the final
    evaluation and the outputs follow, as early stopping ends a run. With an error
    (`controller.request_stop(Preempted(...))`, a `RecipeError`), the controller
    raises it once every hook has had the current call: no `on_end`, no
    evaluation, no outputs, and the checkpoints on disk stay, as preemption and
    Ctrl-C end a run. An exception a hook raises itself is a bug, and passes as it is.
    """

    def before_train(self, controller: "Controller", num_steps: int) -> None:
        """Before a call of the compiled loop that will run `num_steps` steps."""

    def after_train(self, controller: "Controller", num_steps: int) -> None:
        """After it; `controller.step` counts the steps just run."""

    def after_loop(self, controller: "Controller") -> None:
        """After the loop's results are reported and any checkpoint is saved."""

    def on_epoch_end(self, controller: "Controller", epoch: int, validation: dict | None) -> None:
        """At the end of epoch `epoch` (0-based); `validation` is its results or None."""

    def on_end(self, controller: "Controller") -> None:
        """After the last step, before the final evaluation."""

    def results(self) -> dict[str, Any]:
        """Fields this hook adds to metrics.json."""
        return {}


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What the loop reads.

    Args:
      train: the distributed training input, an iterator positioned at the step the
        run resumes from.
      validation: `(dataset, steps)` from `data.eval_dataset`, or None.
      files: the files the input reads, where a record found damaged is looked for.
    """

    train: Any
    validation: tuple | None = None
    files: tuple = ()


class Controller:
    """Runs the training loop of one run, from `start_step` to `plan.total_steps`.

    Args:
      trainer: the `step.Trainer`.
      plan: the `Plan`.
      inputs: the `Inputs`, the training input positioned at `start_step`.
      manager: the `tf.train.CheckpointManager`.
      start_step: the step the run resumes from.
      writers: `{"train": writer, "validation": writer, "test": writer}` (TensorBoard);
        the loop writes the first two, and the final evaluation after it the third.
      hooks: `Hook`s.
      model_dir: the run's directory (for messages).
    """

    def __init__(self, trainer, plan, inputs, manager, *, start_step, writers, hooks=(), model_dir=""):
        self.trainer, self.plan, self.manager = trainer, plan, manager
        self.iterator, self.validation = inputs.train, inputs.validation
        self.input_files = tuple(inputs.files)
        self.start_step = self.step = start_step
        self.writers, self.hooks, self.model_dir = writers, list(hooks), model_dir
        self._stop = None  # What `request_stop` asked for: (error or None,).
        self.loop_times = []  # (steps, seconds) per call of the compiled loop.
        self.train_loss_by_epoch, self.validation_loss_by_epoch = [], []  # This run's epochs.
        self._progbar = None
        variables = [
            v
            for v in trainer.model.variables + trainer.optimizer.variables
            if keras.backend.is_float_dtype(v.dtype)
        ]
        # One compiled check of every weight and optimizer slot.
        self._all_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
        )

    @property
    def stop_requested(self) -> bool:
        """Whether a hook asked the run to end (`request_stop`)."""
        return self._stop is not None

    def request_stop(self, error: RecipeError | None = None) -> None:
        """Ends the run: normally after the current loop's phases, or with `error`
        raised once every hook has had the current call (see `Hook`). The first
        request stands."""
        if self._stop is None:
            self._stop = (error,)

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
            raise interrupted(self.step, self.manager.latest_checkpoint) from None
        for writer in self.writers.values():
            writer.flush()
        self._call_hooks("on_end")

    def train(self, num_steps):
        """One call of the compiled loop: `num_steps` steps. Returns the training
        results since the epoch began."""
        self._begin_epoch_if_needed()
        self._call_hooks("before_train", num_steps)
        tick = time.perf_counter()
        with (
            fault_tolerance.lost_worker_is_an_error(self.trainer.strategy, self.step, self.model_dir),
            self.unreadable_input_is_an_error(),
        ):
            self.trainer.train_loop(self.iterator, tf.constant(num_steps))
            results = self.trainer.train_results()  # Reading the metrics waits for the steps.
        self.loop_times.append((num_steps, time.perf_counter() - tick))
        self.step += num_steps
        self._call_hooks("after_train", num_steps)
        self.check_finite(results)
        return results

    @contextlib.contextmanager
    def unreadable_input_is_an_error(self):
        """A record that cannot be read or decoded mid-stream (a file damaged after the
        checks before training) stops the run with one line: the damaged file and
        record where the input's files tell them (`damaged_record`), else TensorFlow's
        words for it; the last checkpoint is kept."""
        try:
            yield
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            if not isinstance(e, tf.errors.DataLossError) and "IteratorGetNext" not in str(e):
                raise
            words = tensorflow_words(e.message)
            where = damaged_record(self.input_files, words)
            kept = self.manager.latest_checkpoint or "none was written"
            raise RecipeError(
                f"the input could not be read after step {self.step} ({words[:160]})"
                + (f": {where} is damaged" if where else "")
                + f"; the last checkpoint is kept ({kept}): replace the damaged file and run again "
                "to resume"
            ) from None

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
            f"is kept ({kept}); lower learning_rate or check the input data"
        )

    def report(self, results, num_steps):
        """The progress bar, and the loop's scalars for TensorBoard."""
        epoch_start = (self.step - 1) // self.plan.steps_per_epoch * self.plan.steps_per_epoch
        self._progbar.update(self.step - epoch_start, list(results.items()))
        optimizer = self.trainer.optimizer
        artifacts.write_scalars(
            self.writers["train"],
            self.step,
            {
                **results,
                "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                "examples_per_second": num_steps * self.trainer.global_batch_size / self.loop_times[-1][1],
            },
        )

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
            with self.unreadable_input_is_an_error():
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
        epoch_steps = min(
            self.plan.steps_per_epoch, self.plan.total_steps - epoch * self.plan.steps_per_epoch
        )
        self._progbar = progress_bar(epoch_steps)
        self._progbar.update(step_in_epoch)

    def _call_hooks(self, name, *args):
        for hook in self.hooks:
            getattr(hook, name)(self, *args)
        if self._stop is not None and self._stop[0] is not None:
            raise self._stop[0]


def tensorflow_words(message):
    """What went wrong, from a TensorFlow error's `message`: a compiled function's
    starts `Graph execution error:` and a stack of where its op was defined."""
    for line in str(message).splitlines():
        line = re.sub(r"\{\{[^}]*\}\}|\[\[.*|\[Op:.*", "", line).strip()
        if line and not line.startswith(("Graph execution error", "Detected at node", "File ")):
            return line
    return first_line(message) if str(message).strip() else "no message"


def damaged_record(files, words):
    """`record N of FILE` (counting from 0) for TensorFlow's `corrupted record at
    BYTE` (or `truncated`), which names no file: the one of `files` (TFRecords) with a
    record framed at that byte (its 12-byte header, or the data after it) that does
    not read back. None where no file does. Written by hand: tf.data says no more."""
    found = re.search(r"(?:corrupted|truncated) record at (\d+)", words)
    if not found:
        return None
    at = int(found.group(1))
    for path in files:
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                size, position, count = f.size(), 0, 0
                while position < min(at - 12, size):  # On to the record framed at `at`.
                    f.seek(position)
                    position += 16 + struct.unpack("<Q", f.read(8))[0]
                    count += 1
                if position not in (at, at - 12) or position >= size:
                    continue
            tf.data.TFRecordDataset(path).skip(count).take(1).reduce(0, lambda n, _: n)  # Reads it.
        except tf.errors.DataLossError:
            return f"record {count} of {path}"
        except (tf.errors.OpError, OSError, struct.error):
            continue
    return None


def interrupted(step, kept):
    """The `Interrupted` error of a run stopped by Ctrl-C at `step`, `kept` its last checkpoint."""
    kept = kept or "none was written yet"
    return Interrupted(f"at step {step}; checkpoint kept ({kept}); run the same command again to resume")
