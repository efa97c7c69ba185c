"""What keeps a run's work when something goes wrong: restoring the last
checkpoint, saving one when the platform preempts the run, and turning a lost
worker into a one-line error."""
import contextlib
import os
import signal
import threading

import tensorflow as tf

import strategies
from recipes.core.errors import Preempted, RecipeError


def restore(checkpoint, model_dir):
    """Restores the latest checkpoint, if any; a checkpoint that does not fit is an error."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if not path:
        return
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - TF raises many types (shape, matching, IndexError on a truncated file).
        reason = str(e).strip().splitlines()[0][:200]
        raise RecipeError(
            f"--model_dir={model_dir} holds a checkpoint ({path}) that does not fit this "
            f"model or cannot be read ({reason}); pass a new --model_dir, or delete "
            "that directory to start over") from None


class PreemptionWatcher:
    """Saves a checkpoint and stops the run when the platform announces its end.

    Cloud platforms send SIGTERM before they take a machine away. In a
    multi-worker cluster, TensorFlow's `PreemptionCheckpointHandler` makes every
    worker save at the same step when any one of them is signalled. A single
    process (TPU, GPUs, CPU) needs no agreement, so a SIGTERM handler that
    stops after the current loop does the same. The rerun resumes from that
    checkpoint without losing finished steps.
    """

    def __init__(self, strategy, checkpoint, model_dir, sigterm):
        self._handler = None
        self._signalled = sigterm  # A threading.Event, set on SIGTERM.
        self._step = 0
        self._worker_dir = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _quiet_lost_peer_in_watcher_threads()
            if not strategies.is_chief(strategy):
                # Where the handler has this worker write its copy of a preemption
                # checkpoint; it creates the directory now and removes it only
                # after such a save, so `close` removes it otherwise.
                self._worker_dir = os.path.join(
                    model_dir, f"workertemp_{strategy.cluster_resolver.task_id}")
            # Every worker reads the chief's checkpoints, so their step counters agree.
            self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                strategy.cluster_resolver, checkpoint,
                checkpoint_dir=os.path.join(model_dir, "checkpoints"),
                termination_config=tf.distribute.experimental.TerminationConfig(
                    exit_fn=self._stop))

    def check(self, manager, step):
        """Call after each loop: saves and raises `Preempted` once a stop is announced."""
        self._step = step
        if self._handler is not None:
            self._handler.save_checkpoint_if_preempted(checkpoint_number=step)
        elif self._signalled.is_set():
            if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
                manager.save(checkpoint_number=step)
            self._stop()

    def close(self):
        if self._worker_dir and tf.io.gfile.exists(self._worker_dir):
            tf.io.gfile.rmtree(self._worker_dir)

    def _stop(self):
        raise Preempted(f"the platform is stopping the run (SIGTERM to this process or to another "
                        f"worker); saved a checkpoint at step {self._step}. Run the same command "
                        "again (on every worker, for multi_worker) to resume from it")


def _quiet_lost_peer_in_watcher_threads():
    """The handler's peer-watcher thread dies with a long traceback when a peer
    goes away; the training loop reports that loss in one line, so keep it quiet."""
    hook = threading.excepthook
    if getattr(hook, "quiets_lost_peers", False):
        return

    def excepthook(args):
        if not (args.thread.name.startswith("PeerTerminationWatcher")
                and issubclass(args.exc_type, tf.errors.OpError)):
            hook(args)

    excepthook.quiets_lost_peers = True
    threading.excepthook = excepthook


@contextlib.contextmanager
def sigterm_event():
    """A `threading.Event` that SIGTERM sets while the block runs; the process's
    previous SIGTERM handler comes back afterwards."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event  # Signal handlers can only be set from the main thread.
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def lost_worker_is_an_error(strategy, step, model_dir):
    """Turns a multi-worker collective that fails because a peer is gone into a
    one-line `RecipeError`; under other strategies errors pass unchanged."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError, tf.errors.InternalError) as e:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        kept = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        raise RecipeError(
            f"lost contact with another worker after step {step} ({type(e).__name__}); the last "
            f"checkpoint is kept ({kept or 'none was written yet'}). Restart every worker with "
            "the same command to resume from it") from None
