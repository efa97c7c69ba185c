"""Classification metrics for the shared loop, all `keras.metrics`: accuracy,
precision, recall, F1 and AUC-ROC.

Binary tasks (one sigmoid output, labels [B, 1]) use Keras' metrics as they
are. Multi-class tasks (softmax outputs, integer labels [B]) report macro
averages: each class scored one-vs-rest, then the classes averaged equally,
as scikit-learn's `average="macro"` does: precision, recall and F1 of the
arg-max class (the first of tied scores, as `np.argmax`), over the classes that
are a label or a prediction; the AUC over the classes that are a label of some
examples and not of others (scikit-learn refuses the AUC of the others).
`tests/test_metrics_reference.py` checks them against scikit-learn.
"""

import keras
import numpy as np
from keras import ops

# AUC thresholds spaced evenly in logit space, so that saturated sigmoid and
# softmax outputs (0.999...) still fall between thresholds and the AUC is close
# to the exact one (scikit-learn's) rather than a coarse 200-bucket estimate.
# Logits down to -24: a confident softmax puts most of its classes' scores below
# sigmoid(-16) (59% of BigModel's on the MNIST sample), where -16 lumped them together.
NUM_AUC_THRESHOLDS = 2000
# NumPy, not TensorFlow: an op at import time would fix the devices before
# --num_cpu_devices can split the CPU.
AUC_THRESHOLDS = (1 / (1 + np.exp(-np.linspace(-24.0, 24.0, NUM_AUC_THRESHOLDS - 2)))).tolist()


def _one_hot(y_true, y_pred):
    return ops.one_hot(ops.cast(ops.reshape(y_true, [-1]), "int32"), y_pred.shape[-1], dtype=y_pred.dtype)


class MacroF1Score(keras.metrics.F1Score):
    """Macro F1 of the arg-max class, from integer labels [B] and scores [B, C]."""

    def __init__(self, name="f1", **kwargs):
        kwargs.pop("average", None)  # From `get_config`: the average is this class's own.
        super().__init__(average=None, name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # One-hot of the arg-max: Keras' F1Score(threshold=None) marks every class
        # tied for the top score, so uniform scores would "predict" every class.
        y_pred = ops.convert_to_tensor(y_pred)
        predicted = ops.one_hot(ops.argmax(y_pred, axis=-1), y_pred.shape[-1], dtype=y_pred.dtype)
        return super().update_state(_one_hot(y_true, y_pred), predicted, sample_weight)

    def per_class(self):
        return (
            2
            * self.true_positives
            / (
                2 * self.true_positives
                + self.false_positives
                + self.false_negatives
                + keras.backend.epsilon()
            )
        )

    def result(self):
        # The classes that are a label or a prediction (scikit-learn's labels by default).
        seen = ops.cast(
            self.true_positives + self.false_positives + self.false_negatives > 0, self.true_positives.dtype
        )
        return ops.sum(self.per_class() * seen) / ops.maximum(ops.sum(seen), 1.0)


class MacroPrecision(MacroF1Score):
    """Macro precision of the arg-max class, from the same per-class counts as F1."""

    def per_class(self):
        return self.true_positives / (self.true_positives + self.false_positives + keras.backend.epsilon())


class MacroRecall(MacroF1Score):
    """Macro recall of the arg-max class, from the same per-class counts as F1."""

    def per_class(self):
        return self.true_positives / (self.true_positives + self.false_negatives + keras.backend.epsilon())


class OneVsRestAUC(keras.metrics.Metric):
    """ROC AUC of each class against the rest, averaged over the classes.

    One binary `keras.metrics.AUC` per class: Keras' `multi_label=True` fails in
    graph mode with explicit thresholds and static shapes (Keras 3.15).
    """

    def __init__(self, num_classes, name="auc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.per_class = [
            keras.metrics.AUC(thresholds=AUC_THRESHOLDS, name=f"auc_{i}") for i in range(num_classes)
        ]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = _one_hot(y_true, y_pred)
        for i, auc in enumerate(self.per_class):
            auc.update_state(y_true[:, i], y_pred[:, i], sample_weight)

    def result(self):
        # A class with no positive or no negative example has no AUC: left out.
        scored = [
            ops.cast(
                (auc.true_positives[0] + auc.false_negatives[0] > 0)
                & (auc.false_positives[0] + auc.true_negatives[0] > 0),
                auc.dtype,
            )
            for auc in self.per_class
        ]
        total = ops.sum(ops.stack([auc.result() * s for auc, s in zip(self.per_class, scored)]))
        return total / ops.maximum(ops.sum(ops.stack(scored)), 1.0)

    def reset_state(self):
        for auc in self.per_class:
            auc.reset_state()


def accuracy(num_classes):
    """Just the accuracy, cheap enough to follow every training step."""
    if num_classes == 1:
        return [keras.metrics.BinaryAccuracy("accuracy")]
    return [keras.metrics.SparseCategoricalAccuracy("accuracy")]


def classification(num_classes):
    """Accuracy, precision, recall, F1 and AUC-ROC, as Keras metrics.

    `num_classes=1` is a binary task (the probability of class 1). Call it
    under `strategy.scope()`: the metrics' variables are created here, not in
    the first replica step, where a distribution strategy cannot create them.
    """
    if num_classes == 1:
        metrics = accuracy(1) + [
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.F1Score(average="micro", threshold=0.5, name="f1"),  # One column: class 1.
            keras.metrics.AUC(thresholds=AUC_THRESHOLDS, name="auc"),
        ]
        y_true, y_pred = ops.zeros((1, 1)), ops.zeros((1, 1))
    else:
        metrics = accuracy(num_classes) + [
            MacroPrecision(name="precision"),
            MacroRecall(name="recall"),
            MacroF1Score(),
            OneVsRestAUC(num_classes),
        ]
        y_true, y_pred = ops.zeros((1,), "int32"), ops.zeros((1, num_classes))
    for metric in metrics:  # Builds every variable now; see the docstring.
        metric.update_state(y_true, y_pred)
        metric.reset_state()
    return metrics


def majority_class_accuracy(y_train, y_test):
    """The baseline a classifier must beat: test accuracy of always answering the
    most common training label (integer labels)."""
    return float(np.mean(y_test == np.bincount(y_train).argmax()))
