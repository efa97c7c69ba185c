"""The run's hooks (`loop.Hook`): the profiler, early stopping, preemption and Ctrl-C,
each a small object the `loop.Controller` calls at its fixed points. Each ends a run
the one way hooks do, `controller.request_stop` (see `loop.Hook`).
"""

import os

import keras
import tensorflow as tf

from recipes.core.errors import Preempted
from recipes.core.rundir import fault_tolerance
from recipes.core.training import loop


class ProfileHook(loop.Hook):
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
            print(
                f"Wrote a profile of steps {controller.step - num_steps + 1}-{controller.step} "
                f"to {os.path.join(self.log_dir, 'plugins', 'profile')}."
            )


class EarlyStoppingState(tf.Module):
    """What early stopping decided, in the run's checkpoint: the epoch it stopped after
    (-1: it did not stop) and the epoch whose weights were kept (-1: none yet). A
    rerun of a run that stopped trains nothing more and reports the same."""

    def __init__(self):
        super().__init__(name="early_stopping")
        self.stopped_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="stopped_epoch")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")

    @property
    def stopped(self):
        return int(self.stopped_epoch.numpy()) >= 0


class EarlyStoppingHook(loop.Hook):
    """Keras' own `EarlyStopping` callback, driven by hand: stops after `patience`
    epochs without a better validation loss and restores the best epoch's weights,
    then checkpoints them with its decision (`EarlyStoppingState`), so that a rerun
    resumes what the run kept, not its last steps."""

    def __init__(self, model, patience, state=None):
        self.model, self.patience = model, patience
        self.state = state or EarlyStoppingState()
        self.callback = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        )
        self.callback.set_model(model)
        model.stop_training = False  # The callback sets it to stop, as in `fit`.
        self.callback.on_train_begin()
        self._epoch = None

    def on_epoch_end(self, controller, epoch, validation):
        self._epoch = epoch
        self.callback.on_epoch_end(epoch, {"val_loss": validation["loss"]})
        if self.model.stop_training:
            controller.request_stop()

    def on_end(self, controller):
        self.callback.on_train_end()  # Restores the best epoch's weights.
        if self.model.stop_training:
            print(
                f"Early stopping after epoch {self._epoch + 1}: the validation loss has not "
                f"improved for {self.patience} epochs."
            )
            self.state.stopped_epoch.assign(self._epoch + 1)
        if self.callback.best_weights is not None:
            print(
                f"Kept the weights of epoch {self.callback.best_epoch + 1}, the best on the validation split."
            )
            self.state.best_epoch.assign(self.callback.best_epoch + 1)
            controller.manager.save(checkpoint_number=controller.step)  # What was kept, and why.

    def results(self):
        if self.callback.best_weights is None and int(self.state.best_epoch.numpy()) >= 0:
            return {"stopped_early": self.state.stopped, "best_epoch": int(self.state.best_epoch.numpy())}
        kept = self.callback.best_weights is not None
        return {
            "stopped_early": bool(self.model.stop_training),
            "best_epoch": self.callback.best_epoch + 1 if kept else None,
        }


class PreemptionHook(loop.Hook):
    """After every loop, saves and stops if the platform announced a preemption
    (`fault_tolerance.PreemptionWatcher`)."""

    def __init__(self, watcher):
        self.watcher = watcher

    def after_loop(self, controller):
        try:
            self.watcher.check(controller.manager, controller.step)
        except Preempted as error:  # Saved; the watcher says so.
            controller.request_stop(error)


class InterruptHook(loop.Hook):
    """Ctrl-C (`interrupt`, a `threading.Event` that SIGINT sets) stops the run after
    the current loop, with a checkpoint of its last step; a multi-worker run keeps
    its last checkpoint instead, since a save needs every worker."""

    def __init__(self, interrupt, can_save=True):
        self.interrupt, self.can_save = interrupt, can_save

    def after_loop(self, controller):
        if not self.interrupt.is_set():
            return
        kept = (
            fault_tolerance.save_unless_saved(controller.manager, controller.step)
            if self.can_save
            else controller.manager.latest_checkpoint
        )
        controller.request_stop(loop.interrupted(controller.step, kept))
