"""Classification metrics for the shared loop, all `keras.metrics`: accuracy,
precision, recall, F1 and AUC-ROC.

Binary tasks (one sigmoid output, labels [B, 1]) use Keras' metrics as they
are. Multi-class tasks (softmax outputs, integer labels [B]) report macro
averages: each class scored one-vs-rest, then the classes averaged equally,
as scikit-learn's `average="macro"` does.
"""
import keras
from keras import ops
import numpy as np

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
    return ops.one_hot(ops.cast(ops.reshape(y_true, [-1]), "int32"), y_pred.shape[-1],
                       dtype=y_pred.dtype)


class _SparseLabels:
    """Takes integer labels [B] and scores them as one-hot labels [B, C]."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        return super().update_state(_one_hot(y_true, y_pred), y_pred, sample_weight)


class MacroF1Score(_SparseLabels, keras.metrics.F1Score):
    """Macro F1 of the arg-max class."""

    def __init__(self, name="f1", **kwargs):
        super().__init__(average="macro", name=name, **kwargs)


class MacroPrecision(MacroF1Score):
    """Macro precision of the arg-max class, from the same per-class counts as F1."""

    def result(self):
        return ops.mean(self.true_positives / (self.true_positives + self.false_positives
                                               + keras.backend.epsilon()))


class MacroRecall(MacroF1Score):
    """Macro recall of the arg-max class, from the same per-class counts as F1."""

    def result(self):
        return ops.mean(self.true_positives / (self.true_positives + self.false_negatives
                                               + keras.backend.epsilon()))


class OneVsRestAUC(keras.metrics.Metric):
    """ROC AUC of each class against the rest, averaged over the classes.

    One binary `keras.metrics.AUC` per class: Keras' `multi_label=True` fails in
    graph mode with explicit thresholds and static shapes (Keras 3.15).
    """

    def __init__(self, num_classes, name="auc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.per_class = [keras.metrics.AUC(thresholds=AUC_THRESHOLDS, name=f"auc_{i}")
                          for i in range(num_classes)]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = _one_hot(y_true, y_pred)
        for i, auc in enumerate(self.per_class):
            auc.update_state(y_true[:, i], y_pred[:, i], sample_weight)

    def result(self):
        return ops.mean(ops.stack([auc.result() for auc in self.per_class]))

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
            keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall"),
            keras.metrics.F1Score(average="micro", threshold=0.5, name="f1"),  # One column: class 1.
            keras.metrics.AUC(thresholds=AUC_THRESHOLDS, name="auc")]
        y_true, y_pred = ops.zeros((1, 1)), ops.zeros((1, 1))
    else:
        metrics = accuracy(num_classes) + [
            MacroPrecision(name="precision"), MacroRecall(name="recall"), MacroF1Score(),
            OneVsRestAUC(num_classes)]
        y_true, y_pred = ops.zeros((1,), "int32"), ops.zeros((1, num_classes))
    for metric in metrics:  # Builds every variable now; see the docstring.
        metric.update_state(y_true, y_pred)
        metric.reset_state()
    return metrics


def majority_class_accuracy(y_train, y_test):
    """The baseline a classifier must beat: test accuracy of always answering the
    most common training label (integer labels)."""
    return float(np.mean(y_test == np.bincount(y_train).argmax()))
