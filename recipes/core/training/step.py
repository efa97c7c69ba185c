"""The inner loop: one compiled training step and the multi-step `tf.function`
around it, the same under every `tf.distribute` strategy.

    objective = Objective(keras.losses.sparse_categorical_crossentropy)
    trainer = Trainer(strategy, model, optimizer, objective, global_batch_size=64)
    trainer.train_loop(iterator, tf.constant(100))   # 100 steps in one call

A recipe changes what the step computes through an `Objective`, whose three
methods are the step's extension points (with `build` and `checkpointed` for
an objective that keeps state of its own):

  * `loss(model, x, y, training)`: the per-example loss (and the predictions
    the metrics see). Distillation adds a teacher's term here.
  * `forward(model, x, training)`: how the model is called. A pipeline places
    its stages on devices here.
  * `after_update(model)`: runs inside the compiled step after every optimizer
    update, in cross-replica context, so assignments reach every replica's
    copy. Pruning re-applies its masks here.

Whatever an `Objective` returns, the step keeps the global-batch loss scaling,
so N replicas take the same step as one device.
"""

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from models import _keras_compat

# `(y_true, y_pred) -> per-example loss [batch]`, a Keras loss function.
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
# `(model, x, training) -> outputs`: how the model is called.
Forward = Callable[[keras.Model, tf.Tensor, bool], tf.Tensor]
# `() -> list of keras.metrics.Metric`, updated with `(y_true, y_pred, sample_weight)`.
MetricsFn = Callable[[], list]


class Objective:
    """What one training step computes. Subclass it and override a method to change
    the step; the defaults are supervised training with a per-example Keras loss.

    Args:
      loss_fn: `(y_true, y_pred) -> per-example loss [batch]`, a Keras loss function.
      forward: `(model, x, training) -> outputs`, how the model is called; default:
        `model(x, training=training)`. A `strategies.model_parallel.Pipeline` is one.
    """

    def __init__(self, loss_fn: LossFn, forward: Forward | None = None) -> None:
        self.loss_fn = loss_fn
        self._forward = forward

    def forward(self, model: keras.Model, x: tf.Tensor, training: bool) -> tf.Tensor:
        """The model's outputs for a batch."""
        if self._forward is not None:
            return self._forward(model, x, training)
        return model(x, training=training)

    def loss(
        self, model: keras.Model, x: tf.Tensor, y: tf.Tensor, training: bool
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`(per-example loss [batch], predictions)` for a batch. The step averages
        it over the global batch; do not average it here."""
        predictions = widened(self.forward(model, x, training))
        return self.loss_fn(y, predictions), predictions

    def after_update(self, model: keras.Model) -> None:
        """Runs after each optimizer update, inside the compiled step."""
        del model  # Nothing by default.

    def build(self, model: keras.Model) -> None:
        """Creates the objective's own variables (say, pruning masks); `Trainer` calls
        it once, under the strategy's scope, before the first step."""

    def checkpointed(self) -> dict:
        """The objective's state that checkpoints must hold, as `{name: trackable}`,
        so that a resumed run continues it exactly."""
        return {}


def widened(outputs):
    """The outputs the loss sees: float16 and bfloat16 as float32 (a softmax's log in
    half precision loses the small probabilities); float32 as they are; float64 as
    they are, through one more op.

    Keras' crossentropy takes the logits behind a `Softmax` op when it sees one
    (keras/src/backend/tensorflow/nn.py, `_get_logits`), which a split model's
    compiled stage or shard hides. In float64, the mode that proves a split or
    distributed run equal to one device, the loss takes one form however the model
    runs (1e-15 after 20 Adam steps, against 4e-7 when only the unsplit model's loss
    took the logits); in float32 the unsplit model keeps Keras' logits."""
    if outputs.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(outputs, tf.float32)
    return tf.identity(outputs) if outputs.dtype == tf.float64 else outputs


def _xla_can_update_variables(strategy):
    """Whether the optimizer update may sit inside the XLA-compiled step.

    Under MirroredStrategy a replica updates mirrored variables through
    merge_call, which TF can leave out of XLA clusters only when every device is
    a GPU. Elsewhere the forward and backward passes are one compiled program and
    the update, run per device (`Trainer._update_one_device`), another.
    """
    if isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        return all("GPU" in device.upper() for device in strategy.extended.worker_devices)
    return True


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """How the step runs; either way it takes the same step, to float rounding.

    Args:
      jit_compile: XLA-compile the step.
      accum_steps: split each replica's batch into this many micro-batches and
        sum their gradients before one optimizer update (it must divide it).
    """

    jit_compile: bool = True
    accum_steps: int = 1

    def __post_init__(self):
        if not isinstance(self.accum_steps, int) or self.accum_steps < 1:
            raise ValueError(f"`accum_steps` must be a positive int. Received: {self.accum_steps!r}")


class Trainer:
    """Compiled training and evaluation loops for one model under one strategy.

    Args:
      strategy: the `tf.distribute.Strategy` the model was built under.
      model: a Keras model created under `strategy.scope()`.
      optimizer: a Keras optimizer created under `strategy.scope()`.
      objective: an `Objective`: the step's loss, forward pass and post-update
        hook (`Objective(loss_fn)` for a per-example Keras loss).
      global_batch_size: examples per step over all replicas.
      metrics_fn: `() -> list of keras.metrics.Metric`, updated with
        `(y_true, y_pred, sample_weight)`, for evaluation.
      train_metrics_fn: the metrics followed during training; `metrics_fn` if None.
      options: `StepOptions`: XLA, gradient accumulation.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        objective: Objective,
        *,
        global_batch_size: int,
        metrics_fn: MetricsFn = list,
        train_metrics_fn: MetricsFn | None = None,
        options: StepOptions = StepOptions(),
    ) -> None:
        if not isinstance(objective, Objective):
            raise ValueError(
                "`objective` must be a step.Objective (Objective(loss_fn) for a per-example loss). "
                f"Received: {objective!r}"
            )
        if not isinstance(global_batch_size, int) or global_batch_size < 1:
            raise ValueError(f"`global_batch_size` must be a positive int. Received: {global_batch_size}")
        self.strategy, self.model, self.optimizer, self.objective = strategy, model, optimizer, objective
        self.global_batch_size = global_batch_size
        self.accum_steps = options.accum_steps
        with strategy.scope():
            # Keras 3 cannot create optimizer variables inside strategy.run
            # (keras-team/keras#23085), so build them here, before the first trace.
            optimizer.build(model.trainable_variables)
            objective.build(model)
            self.train_loss = keras.metrics.Mean("loss")
            self.train_metrics = (train_metrics_fn or metrics_fn)()
            self.eval_loss = keras.metrics.Mean("loss")
            self.eval_metrics = metrics_fn()
        # A LossScaleOptimizer's inner optimizer is the one that clips and sums.
        _keras_compat.sum_gradients_before_clipping(getattr(optimizer, "inner_optimizer", optimizer))
        self._after_update = type(objective).after_update is not Objective.after_update
        self._device_updates = {}  # One compiled update per device, for `_apply_per_device`.
        self._update = self._choose_update(options.jit_compile)
        self.train_loop = tf.function(self._train_loop)
        self._eval_loop = tf.function(self._eval_loop)

    def _choose_update(self, jit_compile):
        """The update path, chosen once: how the gradients are taken (one batch, or
        accumulated micro-batches) and applied (Keras' update of the mirrored
        variables, or one compiled update per device), and what XLA compiles."""
        self._gradients = self._batch_gradients if self.accum_steps == 1 else self._accumulated_gradients
        self._apply = self._apply_together
        if not jit_compile:
            return self._update_fn
        if _xla_can_update_variables(self.strategy):
            return tf.function(self._update_fn, jit_compile=True)  # One program, the update included.
        # The forward and backward passes compiled; the update a second program per device
        # (a LossScaleOptimizer's update, which may skip a step, stays Keras' own).
        self._gradients = tf.function(self._gradients, jit_compile=True)
        if not hasattr(self.optimizer, "inner_optimizer"):
            self._apply = self._apply_per_device
        return self._update_fn

    # One replica's step.
    def _batch_gradients(self, x, y):
        with tf.GradientTape() as tape:
            per_example_loss, predictions = self.objective.loss(self.model, x, y, training=True)
            # Each replica sees 1/N of the global batch and the replicas' gradients
            # are summed, so dividing by the *global* batch size makes that sum the
            # gradient of the mean loss over the whole batch, whatever N is (and
            # whatever the number of micro-batches summed on each replica).
            loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=self.global_batch_size)
            if self.model.losses:
                # In the loss's dtype: a float64 model's penalties are float64, and an
                # objective's loss or a layer's penalty may come in another.
                penalty = tf.add_n([tf.cast(term, loss.dtype) for term in self.model.losses])
                loss += tf.nn.scale_regularization_loss(penalty) / self.accum_steps
            # A LossScaleOptimizer multiplies the loss so that float16 gradients do not
            # underflow; its apply_gradients divides them back (others return it as is).
            loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        return gradients, per_example_loss, predictions

    def _accumulated_gradients(self, x, y):
        # Gradient accumulation, used to simulate larger batch sizes: the
        # micro-batches run one after another in a loop, so only one is in
        # memory at a time, and their gradients add up to the whole batch's.
        k = self.accum_steps
        xs = tf.reshape(x, [k, -1] + x.shape[1:].as_list())
        ys = tf.reshape(y, [k, -1] + y.shape[1:].as_list())
        # The first micro-batch outside the loop: the arrays take its dtypes (float64 stays float64).
        gradients, per_example_loss, predictions = self._batch_gradients(xs[0], ys[0])
        gradients = [tf.convert_to_tensor(g) for g in gradients]  # Dense: IndexedSlices do not add up.
        losses = tf.TensorArray(per_example_loss.dtype, size=k).write(0, per_example_loss)
        outputs = tf.TensorArray(predictions.dtype, size=k).write(0, predictions)
        for i in tf.range(1, k):
            micro_gradients, per_example_loss, predictions = self._batch_gradients(xs[i], ys[i])
            gradients = [g + m for g, m in zip(gradients, micro_gradients)]
            losses = losses.write(i, per_example_loss)
            outputs = outputs.write(i, predictions)
        predictions = outputs.stack()
        return (
            gradients,
            tf.reshape(losses.stack(), [-1]),
            tf.reshape(predictions, [-1] + predictions.shape[2:].as_list()),
        )

    def _update_fn(self, x, y):
        gradients, per_example_loss, predictions = self._gradients(x, y)
        # An embedding's gradient comes as IndexedSlices, a row per lookup, repeated rows
        # not yet summed: their norm is not the gradient's, so global clipping would
        # scale by the wrong factor (and differ with the replicas' split). Dense, it is
        # the gradient itself.
        gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        context = tf.distribute.get_replica_context()
        # Sum over the replicas (the optimizer's own all-reduce is off; see
        # _keras_compat.sum_gradients_before_clipping).
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        self._apply(context, gradients)
        if self._after_update:
            # In cross-replica context, so that an assignment reaches every replica.
            context.merge_call(lambda _: self.objective.after_update(self.model))
        return per_example_loss, predictions

    def _apply_together(self, context, gradients):
        del context  # Keras' update makes its own merge_call.
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))

    def _apply_per_device(self, context, gradients):
        # Every replica holds the same summed gradients: one update call runs the
        # whole optimizer step on each device, XLA-compiled, on that device's copies,
        # instead of a merge_call and a few element-wise kernels per variable.
        context.merge_call(
            lambda strategy: strategy.extended.update(
                self.model.trainable_variables[0].value, self._update_one_device, args=(gradients,)
            )
        )

    def _update_one_device(self, variable, gradients):
        if variable.device not in self._device_updates:  # Traced with this device's copies.
            self._device_updates[variable.device] = tf.function(self._apply_on_device, jit_compile=True)
        self._device_updates[variable.device](gradients)

    def _apply_on_device(self, gradients):
        with _keras_compat.updates_one_device(self.optimizer):
            self.optimizer.apply(gradients, self.model.trainable_variables)

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
        per_example_loss, predictions = self.objective.loss(self.model, x, y, training=False)
        self.eval_loss.update_state(per_example_loss, sample_weight=weight)
        for metric in self.eval_metrics:
            metric.update_state(y, predictions, sample_weight=weight)

    def _eval_loop(self, iterator, num_steps):
        for _ in tf.range(num_steps):
            self.strategy.run(self._eval_step, args=next(iterator))

    def train_results(self) -> dict[str, float]:
        """The training loss and metrics since the last reset, over all replicas."""
        return _results(self.train_loss, self.train_metrics)

    def reset_train_metrics(self) -> None:
        for metric in [self.train_loss] + self.train_metrics:
            metric.reset_state()

    def evaluate(self, dataset: tf.distribute.DistributedDataset, steps: int) -> dict[str, float]:
        """Metrics over a dataset from `data.eval_dataset`, summed over replicas."""
        for metric in [self.eval_loss] + self.eval_metrics:
            metric.reset_state()
        self._eval_loop(iter(dataset), tf.constant(steps))
        return _results(self.eval_loss, self.eval_metrics)


def _results(loss, metrics):
    # Keras metric variables are SUM-on-read: reading them here adds up the replicas.
    return {m.name: float(m.result()) for m in [loss] + metrics}
