"""What keeps a run's work when something goes wrong: restoring the last
checkpoint, saving one when the platform preempts the run, and turning a lost
worker into a one-line error."""

import contextlib
import logging
import os
import re
import signal
import threading

import tensorflow as tf

import strategies
from recipes.core.errors import Preempted, RecipeError, first_line
from recipes.core.rundir import run_dir


def latest_checkpoint(directory, repair=True):
    """The newest checkpoint in `directory`, or None if it holds none.

    TensorFlow finds it through the state file `checkpoint`. When that file is
    missing or unreadable, or names a checkpoint that is gone, while `ckpt-N`
    files are there, this takes the newest one that can be read (and rewrites
    the state file when `repair`), so a run never restarts from step 0 beside
    its own checkpoints; if none can be read, it is a one-line error.
    """
    try:
        with _tensorflow_logs_off():  # It logs a garbled or dangling state file; this says more.
            path = tf.train.latest_checkpoint(directory)
    except Exception:  # noqa: BLE001 - a garbled state file may raise a protobuf ParseError.
        path = None
    if path:
        return path
    numbered = sorted(
        (int(match.group(1)), name[: -len(".index")])
        for name in (tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else [])
        if (match := re.fullmatch(r"ckpt-(\d+)\.index", name))
    )
    readable = [
        os.path.join(directory, prefix)
        for _, prefix in numbered
        if _readable(os.path.join(directory, prefix))
    ]
    if numbered and not readable:
        raise RecipeError(
            f"{directory} holds checkpoints ({', '.join(p for _, p in numbered)}) but none can be "
            "read; delete the directory to start over, or pass another model_dir"
        )
    if not readable:
        return None
    print(
        f"The checkpoint state file in {directory} is missing or names no checkpoint there; "
        f"resuming from the newest readable one, {os.path.basename(readable[-1])}."
    )
    if repair:  # The state file (a text proto), so that the manager keeps only the newest again.
        lines = [f'model_checkpoint_path: "{os.path.basename(readable[-1])}"']
        for path in readable:
            saved = tf.io.gfile.stat(path + ".index").mtime_nsec / 1e9
            lines += [
                f'all_model_checkpoint_paths: "{os.path.basename(path)}"',
                f"all_model_checkpoint_timestamps: {saved}",
            ]
        run_dir.write_atomically(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")
    return readable[-1]


@contextlib.contextmanager
def _tensorflow_logs_off():
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _readable(prefix):
    try:
        tf.train.load_checkpoint(prefix)
        return True
    except Exception:  # noqa: BLE001 - TF raises several types for a damaged file.
        return False


def restore(checkpoint, path, model_dir):
    """Restores `checkpoint` from `path` (None: nothing to restore); a checkpoint
    that does not fit is an error."""
    if not path:
        return
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - TF raises many types (shape, matching, IndexError on a truncated file).
        reason = first_line(e, 200)
        raise RecipeError(
            f"model_dir={model_dir} holds a checkpoint ({path}) that does not fit this "
            f"model or cannot be read ({reason}); pass a new model_dir, or delete "
            "that directory to start over"
        ) from None


class PreemptionWatcher:
    """Saves a checkpoint and stops the run when the platform announces its end.

    Cloud platforms send SIGTERM before they take a machine away. In a
    multi-worker cluster, TensorFlow's `PreemptionCheckpointHandler` makes every
    worker save at the same step when any one of them is signalled. A single
    process (TPU, GPUs, CPU) needs no agreement, so a SIGTERM handler that
    stops after the current loop does the same. The rerun resumes from that
    checkpoint without losing finished steps.
    """

    def __init__(self, strategy, checkpoint, model_dir, terminate):
        self._handler = None
        self._signalled = terminate  # A threading.Event, set on SIGTERM.
        self._step = 0
        self._worker_dir = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _quiet_lost_peer_in_watcher_threads()
            if not strategies.is_chief(strategy):
                # Where the handler has this worker write its copy of a preemption
                # checkpoint; it creates the directory now and removes it only
                # after such a save, so `close` removes it otherwise.
                self._worker_dir = os.path.join(model_dir, f"workertemp_{strategy.cluster_resolver.task_id}")
            # Every worker reads the chief's checkpoints, so their step counters agree.
            self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                strategy.cluster_resolver,
                checkpoint,
                checkpoint_dir=os.path.join(model_dir, "checkpoints"),
                termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=self._stop),
            )

    def check(self, manager, step):
        """Call after each loop: saves and raises `Preempted` once a stop is announced."""
        self._step = step
        if self._handler is not None:
            self._handler.save_checkpoint_if_preempted(checkpoint_number=step)
        elif self._signalled.is_set():
            save_unless_saved(manager, step)
            self._stop()

    def close(self):
        if self._worker_dir and tf.io.gfile.exists(self._worker_dir):
            tf.io.gfile.rmtree(self._worker_dir)

    def _stop(self):
        raise Preempted(
            f"the platform is stopping the run (SIGTERM to this process or to another "
            f"worker); saved a checkpoint at step {self._step}. Run the same command "
            "again (on every worker, for multi_worker) to resume from it"
        )


def save_unless_saved(manager, step):
    """Saves a checkpoint of `step` unless the last one is of it; returns its path."""
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
        manager.save(checkpoint_number=step)
    return manager.latest_checkpoint


def _quiet_lost_peer_in_watcher_threads():
    """The handler's peer-watcher thread dies with a long traceback when a peer
    goes away; the training loop reports that loss in one line, so keep it quiet."""
    hook = threading.excepthook
    if getattr(hook, "quiets_lost_peers", False):
        return

    def excepthook(args):
        if not (
            args.thread.name.startswith("PeerTerminationWatcher")
            and issubclass(args.exc_type, tf.errors.OpError)
        ):
            hook(args)

    excepthook.quiets_lost_peers = True
    threading.excepthook = excepthook


class StopSignals:
    """What the user or the platform asked while the run trains: `terminate`
    (SIGTERM) and `interrupt` (SIGINT, Ctrl-C), two `threading.Event`s."""

    def __init__(self):
        self.terminate = threading.Event()
        self.interrupt = threading.Event()

    def _on_sigint(self, signum, frame):
        if self.interrupt.is_set():
            raise KeyboardInterrupt  # A second Ctrl-C: stop at once.
        self.interrupt.set()
        print(
            "\nCtrl-C: stopping after this loop, with a checkpoint; press it again to stop at once.",
            flush=True,
        )


@contextlib.contextmanager
def stop_signals():
    """`StopSignals` that SIGTERM and SIGINT set while the block runs; the
    process's previous handlers come back afterwards."""
    signals = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield signals  # Signal handlers can only be set from the main thread.
        return
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: signals.terminate.set()),
        signal.SIGINT: signal.signal(signal.SIGINT, signals._on_sigint),
    }
    try:
        yield signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def lost_worker_is_an_error(strategy, step, model_dir):
    """Turns a multi-worker collective that fails because a peer is gone into a
    one-line `RecipeError`; under other strategies errors pass unchanged."""
    try:
        yield
    except (
        tf.errors.UnavailableError,
        tf.errors.DeadlineExceededError,
        tf.errors.CancelledError,
        tf.errors.AbortedError,
        tf.errors.InternalError,
    ) as e:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        kept = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        raise RecipeError(
            f"lost contact with another worker after step {step} ({type(e).__name__}); the last "
            f"checkpoint is kept ({kept or 'none was written yet'}). Restart every worker with "
            "the same command to resume from it"
        ) from None
