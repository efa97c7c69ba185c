"""The training machinery every recipe shares: a custom `tf.GradientTape` loop
that runs unchanged under any `tf.distribute` strategy.

Flow: `set_up_run` (seeds, precision) -> the recipe builds model and optimizer
under `strategy.scope()` -> `train_and_evaluate` (resume, train, checkpoint,
evaluate, write artifacts).
"""
import contextlib
import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time

import keras
import tensorflow as tf

import strategies
from recipes import data as data_lib
from recipes import metrics, optimization
from recipes.errors import Preempted, RecipeError


@dataclasses.dataclass
class TrainConfig:
    """How to train; every field has a shared flag of the same name."""

    model_dir: str
    epochs: int = 5
    train_steps: int = 0  # Overrides epochs when > 0.
    batch_size: int = 32  # Global, over all replicas.
    learning_rate: float = 1e-3
    steps_per_loop: int = 100
    jit_compile: bool = True
    mixed_precision: str = "none"
    seed: int = 0
    checkpoint_steps: int = 0  # 0: at the end of every epoch.
    profile: bool = False  # Trace the second training loop for TensorBoard's profiler.
    # Optimizer and learning rate (see recipes/optimization.py).
    optimizer: str = "adam"
    momentum: float = 0.0
    lr_schedule: str = "constant"
    decay_steps: int = 0
    decay_rate: float = 0.0
    warmup_steps: int = 0
    clipnorm: float = None
    global_clipnorm: float = None
    clipvalue: float = None
    accum_steps: int = 1  # Micro-batches per optimizer update.
    # Against overfitting.
    l2: float = 0.0
    dropout_rate: float = 0.0
    early_stopping_patience: int = 0  # Epochs without a better validation loss; 0: off.


def set_up_run(config):
    """Seeds Python, NumPy and TensorFlow, and sets the Keras precision policy.

    Call it after creating the strategy and before building the model.
    """
    for name in ("epochs", "batch_size", "steps_per_loop", "accum_steps"):
        if getattr(config, name) < 1:
            raise RecipeError(f"--{name} must be at least 1; received {getattr(config, name)}")
    for name in ("train_steps", "checkpoint_steps", "early_stopping_patience", "l2"):
        if getattr(config, name) < 0:
            raise RecipeError(f"--{name} must be 0 or more; received {getattr(config, name)}")
    if not 0 <= config.dropout_rate < 1:
        raise RecipeError(f"--dropout_rate must be in [0, 1); received {config.dropout_rate}")
    keras.utils.set_random_seed(config.seed)
    policy = "float32" if config.mixed_precision == "none" else config.mixed_precision
    keras.mixed_precision.set_global_policy(policy)


def _xla_can_update_variables(strategy):
    """Whether the optimizer update may sit inside the XLA-compiled step.

    Under MirroredStrategy a replica updates mirrored variables through
    merge_call, which TF can leave out of XLA clusters only when every device is
    a GPU. Elsewhere just the forward and backward passes are compiled.
    """
    if isinstance(strategy, (tf.distribute.MirroredStrategy,
                             tf.distribute.MultiWorkerMirroredStrategy)):
        return all("GPU" in device.upper() for device in strategy.extended.worker_devices)
    return True


class Trainer:
    """Compiled training and evaluation loops for one model under one strategy.

    Args:
      strategy: the `tf.distribute.Strategy` the model was built under.
      model: a Keras model created under `strategy.scope()`.
      optimizer: a Keras optimizer created under `strategy.scope()`.
      loss_fn: `(y_true, y_pred) -> per-example loss [batch]`.
      metrics_fn: `() -> list of keras.metrics.Metric`, updated with
        `(y_true, y_pred, sample_weight)`, for evaluation.
      global_batch_size: examples per step over all replicas.
      jit_compile: XLA-compile the step.
      accum_steps: split each replica's batch into this many micro-batches and
        sum their gradients before one optimizer update.
      train_metrics_fn: the metrics followed during training; `metrics_fn` if None.
    """

    def __init__(self, strategy, model, optimizer, loss_fn, metrics_fn, global_batch_size,
                 jit_compile=True, accum_steps=1, train_metrics_fn=None):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.global_batch_size = global_batch_size
        self.accum_steps = accum_steps
        per_replica = global_batch_size // strategy.num_replicas_in_sync
        if accum_steps < 1 or per_replica % accum_steps:
            raise RecipeError(
                f"--accum_steps={accum_steps} does not divide the per-replica batch of {per_replica} "
                f"(--batch_size={global_batch_size} over {strategy.num_replicas_in_sync} replicas); "
                "pass a divisor of it")
        with strategy.scope():
            # Keras 3 cannot create optimizer variables inside strategy.run
            # (keras-team/keras#23085), so build them here, before the first trace.
            optimizer.build(model.trainable_variables)
            self.train_loss = keras.metrics.Mean("loss")
            self.train_metrics = (train_metrics_fn or metrics_fn)()
            self.eval_loss = keras.metrics.Mean("loss")
            self.eval_metrics = metrics_fn()
        # Keras 3 clips gradients (clipnorm, global_clipnorm, clipvalue) *before*
        # its own all-reduce, so each replica would clip its partial gradient. The
        # step sums the replicas' gradients itself (`_update_fn`) and the optimizer
        # skips its all-reduce, so clipping sees the whole batch's gradient.
        optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars

        self._update = self._update_fn
        if jit_compile and _xla_can_update_variables(strategy):
            self._update = tf.function(self._update_fn, jit_compile=True)
        elif jit_compile:
            self._gradients = tf.function(self._gradients, jit_compile=True)
        self.train_loop = tf.function(self._train_loop)
        self._eval_loop = tf.function(self._eval_loop)

    # One replica's step.
    def _micro_batch_gradients(self, x, y):
        with tf.GradientTape() as tape:
            predictions = tf.cast(self.model(x, training=True), tf.float32)
            per_example_loss = self.loss_fn(y, predictions)
            # Each replica sees 1/N of the global batch and the replicas' gradients
            # are summed, so dividing by the *global* batch size makes that sum the
            # gradient of the mean loss over the whole batch, whatever N is (and
            # whatever the number of micro-batches summed on each replica).
            loss = tf.nn.compute_average_loss(
                per_example_loss, global_batch_size=self.global_batch_size)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n(self.model.losses)) / self.accum_steps
        gradients = tape.gradient(loss, self.model.trainable_variables)
        return gradients, per_example_loss, predictions

    def _gradients(self, x, y):
        if self.accum_steps == 1:
            return self._micro_batch_gradients(x, y)
        # Gradient accumulation, used to simulate larger batch sizes: the
        # micro-batches run one after another in a loop, so only one is in
        # memory at a time, and their gradients add up to the whole batch's.
        k = self.accum_steps
        xs = tf.reshape(x, [k, -1] + x.shape[1:].as_list())
        ys = tf.reshape(y, [k, -1] + y.shape[1:].as_list())
        gradients = [tf.zeros_like(v) for v in self.model.trainable_variables]
        losses = tf.TensorArray(tf.float32, size=k)
        outputs = tf.TensorArray(tf.float32, size=k)
        for i in tf.range(k):
            micro_gradients, per_example_loss, predictions = self._micro_batch_gradients(xs[i], ys[i])
            gradients = [g + m for g, m in zip(gradients, micro_gradients)]
            losses = losses.write(i, per_example_loss)
            outputs = outputs.write(i, predictions)
        predictions = outputs.stack()
        return (gradients, tf.reshape(losses.stack(), [-1]),
                tf.reshape(predictions, [-1] + predictions.shape[2:].as_list()))

    def _update_fn(self, x, y):
        gradients, per_example_loss, predictions = self._gradients(x, y)
        # Sum over the replicas (the optimizer's own all-reduce is off; see __init__).
        gradients = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, gradients)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return per_example_loss, predictions

    def _train_step(self, x, y):
        per_example_loss, predictions = self._update(x, y)
        self.train_loss.update_state(per_example_loss)
        for metric in self.train_metrics:
            metric.update_state(y, predictions)

    def _train_loop(self, iterator, num_steps):
        # Many steps per call, so the Python host is not the bottleneck.
        for _ in tf.range(num_steps):
            self.strategy.run(self._train_step, args=next(iterator))

    def _eval_step(self, x, y, weight):
        predictions = tf.cast(self.model(x, training=False), tf.float32)
        self.eval_loss.update_state(self.loss_fn(y, predictions), sample_weight=weight)
        for metric in self.eval_metrics:
            metric.update_state(y, predictions, sample_weight=weight)

    def _eval_loop(self, iterator, num_steps):
        for _ in tf.range(num_steps):
            self.strategy.run(self._eval_step, args=next(iterator))

    def train_results(self):
        return _results(self.train_loss, self.train_metrics)

    def reset_train_metrics(self):
        for metric in [self.train_loss] + self.train_metrics:
            metric.reset_state()

    def evaluate(self, dataset, steps):
        """Metrics over a dataset from `data.eval_dataset`, summed over replicas."""
        for metric in [self.eval_loss] + self.eval_metrics:
            metric.reset_state()
        self._eval_loop(iter(dataset), tf.constant(steps))
        return _results(self.eval_loss, self.eval_metrics)


def _results(loss, metrics):
    # Keras metric variables are SUM-on-read: reading them here adds up the replicas.
    return {m.name: float(m.result()) for m in [loss] + metrics}


def _restore(checkpoint, model_dir):
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


class _PreemptionWatcher:
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
def _sigterm_event():
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


def train_and_evaluate(config, strategy, model, optimizer, data, *, loss_fn, metrics_fn,
                       preprocess, recipe, train_metrics_fn=None, extra_metrics=None):
    """Trains `model` on `data.x_train`, evaluates on `data.x_test`, writes the run.

    With a validation split (`data.x_val`), it is evaluated after every epoch;
    `config.early_stopping_patience` stops on its loss and restores the best
    epoch's weights (a split is carved from the training set if there is none).
    `metrics_fn` gives the metrics for evaluation, `train_metrics_fn` (default:
    the same) those followed during training. `extra_metrics` (a dict) goes into
    metrics.json as it is: a recipe's baselines, say.

    Resumes from the latest checkpoint in `config.model_dir`. Writes there:
    checkpoints/, logs/ (TensorBoard), model.keras, saved_model/, metrics.json.
    In a multi-worker cluster only the chief writes there; the other workers
    take part in the same saves (they may need collective ops) into a
    temporary directory that is removed afterwards.

    Returns the dict written to metrics.json.
    """
    chief = strategies.is_chief(strategy)
    # A worker's temporary directory goes away however the run ends, errors included.
    with (contextlib.nullcontext(config.model_dir) if chief
          else tempfile.TemporaryDirectory(prefix="recipes-worker-")) as write_dir, \
            _sigterm_event() as sigterm, contextlib.ExitStack() as stack:
        return _train_and_evaluate(
            config, strategy, model, optimizer, data, loss_fn=loss_fn, metrics_fn=metrics_fn,
            train_metrics_fn=train_metrics_fn, preprocess=preprocess, recipe=recipe,
            extra_metrics=extra_metrics or {}, chief=chief, write_dir=write_dir, sigterm=sigterm, stack=stack)


def _train_and_evaluate(config, strategy, model, optimizer, data, *, loss_fn, metrics_fn,
                        train_metrics_fn, preprocess, recipe, extra_metrics, chief, write_dir, sigterm,
                        stack):
    start_time = time.time()
    model_dir = config.model_dir
    batch_size = config.batch_size
    num_replicas = strategy.num_replicas_in_sync
    data_lib.check_batch_size(batch_size, num_replicas)
    if config.early_stopping_patience and data.x_val is None:
        data = data.with_validation_split()
    steps_per_epoch = len(data.x_train) // batch_size
    if steps_per_epoch < 1:
        raise RecipeError(f"--batch_size={batch_size} is larger than the "
                          f"{len(data.x_train)} training examples; pass a smaller one")
    total_steps = config.train_steps or config.epochs * steps_per_epoch
    checkpoint_steps = config.checkpoint_steps or steps_per_epoch

    # Model, optimizer and step.
    if not model.built:  # A subclassed model creates its variables on first use.
        with strategy.scope():
            model.build((None,) + data.x_train.shape[1:])
    trainer = Trainer(strategy, model, optimizer, loss_fn, metrics_fn, batch_size,
                      config.jit_compile, config.accum_steps, train_metrics_fn)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(write_dir, "checkpoints"), max_to_keep=3,
        step_counter=optimizer.iterations)
    _restore(checkpoint, model_dir)
    preemption = stack.enter_context(contextlib.closing(
        _PreemptionWatcher(strategy, checkpoint, model_dir, sigterm)))
    start_step = int(optimizer.iterations.numpy())
    if start_step:
        print(f"Resuming from step {start_step} (checkpoint in {manager.directory}); "
              "delete the directory or pass another --model_dir to start over.")

    # Input.
    print(f"Data: {data.describe()}.")
    print(f"Strategy: {strategies.name_of(strategy)} with {num_replicas} replica(s); global batch "
          f"{batch_size} ({batch_size // num_replicas} per replica); {total_steps} steps of "
          f"{steps_per_epoch} per epoch.")
    train_ds = data_lib.train_dataset(strategy, data.x_train, data.y_train, batch_size,
                                      preprocess=preprocess, seed=config.seed,
                                      start_step=start_step)
    iterator = iter(train_ds)
    train_writer = _summary_writer(chief, model_dir, "train")
    validation = None
    if data.x_val is not None:
        validation = data_lib.eval_dataset(strategy, data.x_val, data.y_val, batch_size,
                                           preprocess=preprocess)
        validation_writer = _summary_writer(chief, model_dir, "validation")
    validation_losses, train_losses = [], []
    early_stopping = None
    if config.early_stopping_patience:
        # Keras' own callback, driven by hand: it keeps the best epoch's weights.
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True)
        early_stopping.set_model(model)
        model.stop_training = False  # The callback sets it to stop, as in `fit`.
        early_stopping.on_train_begin()

    # Loop.
    step, loop_times = start_step, []
    progbar = None
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        if progbar is None:
            print(f"Epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}")
            progbar = keras.utils.Progbar(min(steps_per_epoch, total_steps - epoch * steps_per_epoch))
            progbar.update(step_in_epoch)
        num_steps = min(config.steps_per_loop, steps_per_epoch - step_in_epoch,
                        total_steps - step, checkpoint_steps - step % checkpoint_steps)
        profiling = config.profile and chief and len(loop_times) == 1  # Compiled by now.
        if profiling:
            tf.profiler.experimental.start(os.path.join(model_dir, "logs"))
        tick = time.perf_counter()
        with _lost_worker_is_an_error(strategy, step, model_dir):
            trainer.train_loop(iterator, tf.constant(num_steps))
            results = trainer.train_results()  # Reading the metrics waits for the steps.
        loop_times.append((num_steps, time.perf_counter() - tick))
        if profiling:
            tf.profiler.experimental.stop()
            print(f"Wrote a profile of steps {step + 1}-{step + num_steps} to {model_dir}/logs/plugins/profile.")
        step += num_steps
        if not math.isfinite(results["loss"]):
            kept = manager.latest_checkpoint or "none was written"
            raise RecipeError(
                f"the training loss became {results['loss']} by step {step}; stopped without "
                f"saving, the last good checkpoint is kept ({kept}); lower --learning_rate "
                "or check the input data")
        progbar.update(step - epoch * steps_per_epoch, list(results.items()))
        _write_scalars(train_writer, step, {
            **results,
            "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            "examples_per_second": num_steps * batch_size / loop_times[-1][1]})
        if step % checkpoint_steps == 0 or step == total_steps:
            manager.save(checkpoint_number=step)
        preemption.check(manager, step)
        if step % steps_per_epoch == 0:
            train_losses.append(results["loss"])  # This run's epochs; a resumed one starts afresh.
            trainer.reset_train_metrics()
            progbar = None
            if validation is not None:
                results = trainer.evaluate(*validation)
                validation_losses.append(results["loss"])
                print(f"validation: {_format(results)}")
                _write_scalars(validation_writer, step, results)
            if early_stopping is not None:
                early_stopping.on_epoch_end(epoch, {"val_loss": validation_losses[-1]})
                if model.stop_training:
                    break
    train_writer.flush()
    if early_stopping is not None:
        early_stopping.on_train_end()  # Restores the best epoch's weights.
        if model.stop_training:
            print(f"Early stopping after epoch {epoch + 1}: the validation loss has not improved "
                  f"for {config.early_stopping_patience} epochs.")
        if early_stopping.best_weights is not None:
            print(f"Kept the weights of epoch {early_stopping.best_epoch + 1}, the best on the "
                  "validation split.")

    # Evaluation.
    test_ds, test_steps = data_lib.eval_dataset(strategy, data.x_test, data.y_test, batch_size,
                                                preprocess=preprocess)
    test = trainer.evaluate(test_ds, test_steps)
    final_validation = trainer.evaluate(*validation) if validation is not None else {}
    _write_scalars(_summary_writer(chief, model_dir, "test"), step, test)

    # Artifacts.
    metrics = {
        "recipe": recipe,
        **{f"test_{name}": value for name, value in test.items()},
        **{f"validation_{name}": value for name, value in final_validation.items()},
        "train_loss_by_epoch": train_losses,
        "validation_loss_by_epoch": validation_losses,
        "stopped_early": bool(early_stopping is not None and model.stop_training),
        "best_epoch": (early_stopping.best_epoch + 1
                       if early_stopping is not None and early_stopping.best_weights is not None
                       else None),
        "steps": step,
        "steps_this_run": step - start_step,
        "examples_per_second": _steady_state_rate(loop_times, batch_size),
        "global_batch_size": batch_size,
        "strategy": strategies.name_of(strategy),
        "num_replicas": num_replicas,
        "data_source": data.source,
        "num_train_examples": len(data.x_train),
        "num_validation_examples": 0 if data.x_val is None else len(data.x_val),
        "num_test_examples": len(data.x_test),
        "wall_seconds": round(time.time() - start_time, 2),
        "tensorflow_version": tf.__version__,
        **extra_metrics,
    }
    _write_artifacts(model, write_dir, metrics)
    print(f"Test: {_format(test)}; "
          f"{metrics['examples_per_second'] or 0:,.0f} examples/s; "
          + (f"wrote {model_dir}" if chief else "the chief writes the outputs"))
    return metrics


@contextlib.contextmanager
def _lost_worker_is_an_error(strategy, step, model_dir):
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


def _steady_state_rate(loop_times, batch_size):
    """Examples per second, leaving out the first loop (tracing and compilation)."""
    steady = loop_times[1:] or loop_times
    seconds = sum(t for _, t in steady)
    return round(sum(n for n, _ in steady) * batch_size / seconds, 1) if seconds else None


def _format(results):
    return ", ".join(f"{name}={value:.4f}" for name, value in results.items())


def _write_scalars(writer, step, scalars):
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)


def _summary_writer(chief, model_dir, name):
    if not chief:
        return tf.summary.create_noop_writer()
    return tf.summary.create_file_writer(os.path.join(model_dir, "logs", name))


def _write_artifacts(model, model_dir, metrics):
    model.save(os.path.join(model_dir, "model.keras"))
    model.export(os.path.join(model_dir, "saved_model"), verbose=False)
    with tf.io.gfile.GFile(os.path.join(model_dir, "metrics.json"), "w") as f:  # gs:// too.
        json.dump(metrics, f, indent=2)


def train_classifier(config, strategy, dataset, build_model, *, recipe, preprocess,
                     extra_metrics=None):
    """The whole run for a softmax classifier on integer labels: seeds and precision,
    `build_model(num_classes)` and the optimizer under the strategy's scope, then
    `train_and_evaluate` with sparse cross-entropy, accuracy while training, and
    accuracy, precision, recall, F1 and AUC-ROC in evaluation."""
    set_up_run(config)
    num_classes = int(dataset.y_train.max()) + 1
    with strategy.scope():
        model = build_model(num_classes)
        optimizer = optimization.make_optimizer(config)
    return train_and_evaluate(
        config, strategy, model, optimizer, dataset,
        loss_fn=keras.losses.sparse_categorical_crossentropy,
        metrics_fn=lambda: metrics.classification(num_classes),
        train_metrics_fn=lambda: metrics.accuracy(num_classes),
        preprocess=preprocess, recipe=recipe, extra_metrics=extra_metrics)
