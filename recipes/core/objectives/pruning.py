"""Magnitude pruning for Keras 3, inside the shared compiled step.

    objective = pruning.Pruning(step.Objective(loss_fn), final_sparsity=0.8, pruning_steps=1000)
    train.train_model(..., objective=objective)   # then every Dense/Conv kernel is 80% zeros

Written by hand because no maintained library prunes Keras 3 models:
tensorflow-model-optimization supports only Keras 2 (`tf_keras`). It follows
tfmot's `prune_low_magnitude` with its `PolynomialDecay` schedule: every
`frequency` steps until `pruning_steps`, each kernel's smallest-magnitude
weights are masked so that the kernel's sparsity is
`s_f + (s_i - s_f) * (1 - t / T)^3`; after every optimizer update, inside the
compiled step, the masks are applied again (so the optimizer's momentum cannot
bring a pruned weight back); after `pruning_steps` the masks stay fixed while
training goes on (the fine-tune). The masks and the pruning step are part of the
checkpoint. They live beside the model, not in wrapper layers, so the pruned
model saves and loads as the plain model it is.
"""

import keras
import numpy as np
import tensorflow as tf

from models import _keras_compat
from recipes.core.training import step

# The layers whose kernels are pruned: tfmot's prunable Dense and convolution layers.
PRUNABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def polynomial_sparsity(
    step_number, final_sparsity, pruning_steps, initial_sparsity=0.0, begin_step=0, power=3
):
    """tfmot's `PolynomialDecay`: the sparsity at `step_number`, from
    `initial_sparsity` at `begin_step` to `final_sparsity` at `pruning_steps`."""
    progress = tf.clip_by_value(
        (tf.cast(step_number, tf.float32) - begin_step) / float(pruning_steps - begin_step), 0.0, 1.0
    )
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power


def prunable_kernels(model):
    """The kernels of every Dense and convolution layer in `model`, nested ones included."""
    return [layer.kernel for layer in _keras_compat.all_layers(model) if isinstance(layer, PRUNABLE)]


def sparsity(model):
    """The fraction of the prunable kernels' weights that are exactly zero."""
    kernels = [np.asarray(kernel) for kernel in prunable_kernels(model)]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


def magnitude_mask(kernel, target_sparsity):
    """1 for the weights kept, 0 for the `target_sparsity` fraction of smallest magnitude."""
    magnitudes = tf.reshape(tf.abs(kernel), [-1])
    size = tf.size(magnitudes)
    zeros = tf.cast(tf.round(target_sparsity * tf.cast(size, tf.float32)), tf.int32)
    threshold = tf.gather(tf.sort(magnitudes), tf.maximum(zeros - 1, 0))
    keep = tf.logical_or(tf.abs(kernel) > threshold, zeros == 0)
    return tf.cast(keep, kernel.dtype)


class Pruning(step.Objective):
    """`objective` with every prunable kernel of the model pruned by magnitude.

    Args:
      objective: the `step.Objective` to train with (its loss and forward pass).
      final_sparsity: the fraction of each kernel's weights that ends at zero.
      pruning_steps: the steps over which the sparsity rises (the schedule's T).
      frequency: steps between mask updates (tfmot's default, 100).
      initial_sparsity: the sparsity at step 0.
    """

    def __init__(
        self, objective, final_sparsity=0.8, pruning_steps=1000, frequency=100, initial_sparsity=0.0
    ):
        if not 0.0 <= initial_sparsity <= final_sparsity < 1.0:
            raise ValueError(
                "sparsities must satisfy 0 <= initial_sparsity <= final_sparsity < 1. "
                f"Received: {initial_sparsity}, {final_sparsity}"
            )
        if pruning_steps < 1 or frequency < 1:
            raise ValueError(
                f"`pruning_steps` and `frequency` must be >= 1. Received: {pruning_steps}, {frequency}"
            )
        super().__init__(objective.loss_fn)
        self.objective = objective
        self.final_sparsity = final_sparsity
        self.pruning_steps = pruning_steps
        self.frequency = frequency
        self.initial_sparsity = initial_sparsity
        self.state = None

    def build(self, model):
        self.objective.build(model)
        self.kernels = prunable_kernels(model)
        if not self.kernels:
            raise ValueError(f"{model.name} has no Dense or convolution kernel to prune")
        # Set on the first replica's copy in cross-replica context (after_update), then mirrored.
        state = dict(
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            trainable=False,
        )
        self.state = tf.Module()
        self.state.masks = [
            tf.Variable(tf.ones_like(kernel), name="mask", **state) for kernel in self.kernels
        ]
        self.state.step = tf.Variable(0, dtype=tf.int64, name="pruning_step", **state)

    def checkpointed(self):
        return {"pruning": self.state, **self.objective.checkpointed()}

    def forward(self, model, x, training):
        return self.objective.forward(model, x, training)

    def loss(self, model, x, y, training):
        return self.objective.loss(model, x, y, training)

    def after_update(self, model):
        self.objective.after_update(model)
        step_number = self.state.step.assign_add(1)
        # tfmot's update points: every `frequency` steps, and the schedule's last step.
        update = tf.logical_and(
            step_number <= self.pruning_steps,
            tf.logical_or(step_number % self.frequency == 0, step_number == self.pruning_steps),
        )
        target = polynomial_sparsity(
            step_number, self.final_sparsity, self.pruning_steps, self.initial_sparsity
        )
        for kernel, mask in zip(self.kernels, self.state.masks):
            mask.assign(
                tf.cond(update, lambda k=kernel: magnitude_mask(k, target), lambda m=mask: tf.identity(m))
            )
            kernel.assign(kernel * mask)
