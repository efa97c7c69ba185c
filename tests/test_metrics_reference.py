"""The classification metrics of `recipes.core.training.metrics`, as `classification` and
`accuracy` build them, against scikit-learn on fixed arrays.

Tolerances:
- accuracy, precision, recall, F1: 1e-5. Keras counts in float32 and adds
  `keras.backend.epsilon()` (1e-7) to each denominator; scikit-learn computes
  exactly in float64.
- AUC-ROC: Keras sums a trapezoid over the package's fixed thresholds
  (`metrics.AUC_THRESHOLDS`, 1998 of them spaced evenly in logit space on
  [-24, 24], plus Keras' own -1e-7 and 1+1e-7). That is exactly scikit-learn's
  AUC of the scores *bucketed* by those thresholds (checked to 1e-5, float32
  sums), and it differs from the exact AUC only through positive-negative pairs
  whose different scores fall in one bucket, each counted as a tie (1/2 instead
  of 0 or 1). So |Keras - exact| <= (1/2) * weight of such pairs / weight of all
  pairs: this bound is computed for each case, and on these arrays it stays
  below `AUC_TOLERANCE` (2e-3: at most 1.5e-3, and the actual
  differences at most 3.3e-4).
  Scores tied exactly are ties to both, whatever the thresholds.
"""

import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as sk

from recipes.core.training import metrics
from tests.helpers import shared_strategy

CLASSIFICATION = 1e-5
AUC_BUCKETED = 1e-5
AUC_TOLERANCE = 2e-3
NAMES = ["accuracy", "precision", "recall", "f1", "auc"]


# Fixed arrays.


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def binary_case(n, positive_rate, seed, scale=1.5):
    """Labels [n, 1] and sigmoid scores [n, 1] that overlap between the classes,
    with a few saturated ones and one exactly at the 0.5 threshold. A larger
    `scale` is a more confident model: most scores within 1e-3 of 0 or 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype("float32")
    logits = scale * (2 * y - 1 + rng.standard_normal(n))
    logits[:6] = [12.0, -12.0, 17.0, -20.0, 9.0, 0.0]  # Saturated, and exactly 0.5.
    return y[:, None], _sigmoid(logits).astype("float32")[:, None]


def tied_binary_case():
    """Scores from a handful of values shared by both classes: AUC ties."""
    rng = np.random.default_rng(3)
    y = (rng.random(120) < 0.35).astype("float32")
    values = np.array([0.05, 0.3, 0.5, 0.7, 0.95], "float32")
    index = np.clip(np.round(2 * y + rng.normal(1.0, 1.0, 120)), 0, 4).astype(int)
    return y[:, None], values[index][:, None]


def multiclass_case(n, class_rates, seed, scale=1.0):
    """Integer labels [n] and softmax outputs [n, C] from noisy logits."""
    rng = np.random.default_rng(seed)
    num_classes = len(class_rates)
    y = rng.choice(num_classes, size=n, p=class_rates)
    y[:num_classes] = np.arange(num_classes)  # Every class occurs, even the rarest.
    logits = scale * (1.5 * np.eye(num_classes)[y] + rng.standard_normal((n, num_classes)))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y.astype("int32"), probabilities.astype("float32")


def sample_weights(n, seed):
    """Weights in [0, 2], a tenth of them 0 (as the padding of `data.eval_dataset`)."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.0, 2.0, n)
    weights[rng.random(n) < 0.1] = 0.0
    return weights.astype("float32")


BINARY = {
    "binary": binary_case(300, 0.4, seed=0),
    "binary_imbalanced": binary_case(600, 0.04, seed=1),
    "binary_confident": binary_case(300, 0.5, seed=5, scale=8.0),
    "binary_ties": tied_binary_case(),
}
MULTICLASS = {
    "multiclass": multiclass_case(400, [0.2] * 5, seed=2),
    "multiclass_imbalanced": multiclass_case(600, [0.7, 0.2, 0.07, 0.02, 0.01], seed=4),
    "multiclass_confident": multiclass_case(400, [0.2] * 5, seed=6, scale=8.0),
}


# References.


def reference_binary(y, scores, weights=None):
    y, scores = y.ravel(), scores.ravel()
    predicted = scores > 0.5  # Keras' metrics count a score above the threshold as positive.
    return {
        "accuracy": sk.accuracy_score(y, predicted, sample_weight=weights),
        "precision": sk.precision_score(y, predicted, sample_weight=weights),
        "recall": sk.recall_score(y, predicted, sample_weight=weights),
        "f1": sk.f1_score(y, predicted, sample_weight=weights),
        "auc": sk.roc_auc_score(y, scores, sample_weight=weights),
    }


def reference_multiclass(y, probabilities, weights=None):
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    macro = dict(average="macro", labels=list(range(num_classes)), sample_weight=weights, zero_division=0)
    return {
        "accuracy": sk.accuracy_score(y, predicted, sample_weight=weights),
        "precision": sk.precision_score(y, predicted, **macro),
        "recall": sk.recall_score(y, predicted, **macro),
        "f1": sk.f1_score(y, predicted, **macro),
        "auc": sk.roc_auc_score(
            y,
            probabilities,
            multi_class="ovr",
            average="macro",
            labels=list(range(num_classes)),
            sample_weight=weights,
        ),
    }


def keras_thresholds():
    """The thresholds as the AUC compares float32 scores with them (`score > t`)."""
    return np.sort(np.array([-1e-7] + metrics.AUC_THRESHOLDS + [1 + 1e-7], "float32"))


def bucketed(scores):
    """Scores replaced by how many thresholds lie below them: the only thing the AUC sees."""
    return np.searchsorted(keras_thresholds(), np.asarray(scores, "float32"), side="left")


def one_vs_rest(y, probabilities):
    """(binary labels, scores) of each class against the rest."""
    return [((y == i).astype("float32"), probabilities[:, i]) for i in range(probabilities.shape[1])]


def auc_bound(y, scores, weights=None):
    """The most the bucketed AUC can differ from the exact one: half the weight of
    the positive-negative pairs with different scores in one bucket, over the
    weight of all positive-negative pairs."""
    y, scores = y.ravel(), scores.ravel()
    weights = np.ones_like(scores, dtype="float64") if weights is None else weights.astype("float64")
    buckets = bucketed(scores)
    shared = 0.0
    for bucket in np.unique(buckets):
        inside = buckets == bucket
        positive, negative = inside & (y == 1), inside & (y == 0)
        pairs = np.outer(weights[positive], weights[negative])
        different = scores[positive][:, None] != scores[negative][None, :]
        shared += (pairs * different).sum()
    return 0.5 * shared / (weights[y == 1].sum() * weights[y == 0].sum())


def results(built, y, predictions, weights=None, batches=(None,)):
    """Feeds the metrics in `batches` (slice ends; None: all at once); returns their results."""
    start = 0
    for end in batches:
        part = slice(start, end)
        for metric in built:
            metric.update_state(
                y[part], predictions[part], sample_weight=None if weights is None else weights[part]
            )
        start = end
    return {metric.name: float(metric.result()) for metric in built}


def assert_matches(got, expected):
    assert list(got) == NAMES
    for name in NAMES:
        tolerance = AUC_TOLERANCE if name == "auc" else CLASSIFICATION
        assert got[name] == pytest.approx(expected[name], abs=tolerance), name


# What classification() builds.


def test_classification_builds_the_named_metrics_empty():
    binary, multiclass = metrics.classification(1), metrics.classification(5)
    assert [m.name for m in binary] == NAMES == [m.name for m in multiclass]
    assert [type(m).__name__ for m in multiclass] == [
        "SparseCategoricalAccuracy",
        "MacroPrecision",
        "MacroRecall",
        "MacroF1Score",
        "OneVsRestAUC",
    ]
    # The dummy update that builds the variables is reset: the first real batch is all there is.
    y, scores = BINARY["binary"]
    assert_matches(results(binary, y[:50], scores[:50]), reference_binary(y[:50], scores[:50]))


def test_accuracy_alone_is_the_first_classification_metric():
    y, scores = BINARY["binary"]
    [accuracy] = metrics.accuracy(1)
    accuracy.update_state(y, scores)
    assert float(accuracy.result()) == pytest.approx(
        sk.accuracy_score(y.ravel(), scores.ravel() > 0.5), abs=CLASSIFICATION
    )
    y, probabilities = MULTICLASS["multiclass"]
    [accuracy] = metrics.accuracy(5)
    accuracy.update_state(y, probabilities)
    assert float(accuracy.result()) == pytest.approx(
        sk.accuracy_score(y, probabilities.argmax(1)), abs=CLASSIFICATION
    )


# Against scikit-learn.


@pytest.mark.parametrize("case", sorted(BINARY))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_binary_metrics_match_sklearn(case, weighted):
    y, scores = BINARY[case]
    weights = sample_weights(len(y), seed=10) if weighted else None
    got = results(metrics.classification(1), y, scores, weights)
    assert_matches(got, reference_binary(y, scores, weights))
    # The AUC is exactly that of the bucketed scores, and within the stated bound of the exact one.
    assert got["auc"] == pytest.approx(
        sk.roc_auc_score(y.ravel(), bucketed(scores.ravel()), sample_weight=weights), abs=AUC_BUCKETED
    )
    bound = auc_bound(y, scores, weights)
    assert bound < AUC_TOLERANCE
    assert abs(got["auc"] - reference_binary(y, scores, weights)["auc"]) <= bound + AUC_BUCKETED


def test_tied_scores_count_half_in_the_auc():
    y, scores = BINARY["binary_ties"]
    assert len(np.unique(scores)) == 5 and auc_bound(y, scores) == 0.0  # Only exact ties here.
    got = results(metrics.classification(1), y, scores)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y.ravel(), scores.ravel()), abs=AUC_BUCKETED)


@pytest.mark.parametrize("case", sorted(MULTICLASS))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_multiclass_macro_metrics_match_sklearn(case, weighted):
    y, probabilities = MULTICLASS[case]
    weights = sample_weights(len(y), seed=11) if weighted else None
    got = results(metrics.classification(probabilities.shape[1]), y, probabilities, weights)
    expected = reference_multiclass(y, probabilities, weights)
    assert_matches(got, expected)
    # Macro: each class counts alike, however rare (here the classes' own scores differ).
    per_class_f1 = sk.f1_score(y, probabilities.argmax(1), average=None, sample_weight=weights)
    assert expected["f1"] == pytest.approx(per_class_f1.mean())
    bucketed_auc = np.mean(
        [
            sk.roc_auc_score(labels, bucketed(scores), sample_weight=weights)
            for labels, scores in one_vs_rest(y, probabilities)
        ]
    )
    assert got["auc"] == pytest.approx(bucketed_auc, abs=AUC_BUCKETED)
    bound = np.mean([auc_bound(labels, scores, weights) for labels, scores in one_vs_rest(y, probabilities)])
    assert bound < AUC_TOLERANCE
    assert abs(got["auc"] - expected["auc"]) <= bound + AUC_BUCKETED


def test_a_class_that_never_occurs_is_left_out_of_the_macro_average():
    # As scikit-learn's default: the classes that are a label or a prediction; the
    # AUC over the classes with positive and negative examples.
    y, probabilities = MULTICLASS["multiclass"]
    present = y != 4
    y, probabilities = y[present], probabilities[present]
    probabilities[:, 4] = 0.0  # Class 4 is never the label nor the prediction.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    got = results(metrics.classification(5), y, probabilities)
    predicted = probabilities.argmax(axis=1)
    macro = dict(average="macro", zero_division=0)
    assert got["precision"] == pytest.approx(sk.precision_score(y, predicted, **macro), abs=CLASSIFICATION)
    assert got["recall"] == pytest.approx(sk.recall_score(y, predicted, **macro), abs=CLASSIFICATION)
    assert got["f1"] == pytest.approx(sk.f1_score(y, predicted, **macro), abs=CLASSIFICATION)
    assert got["auc"] == pytest.approx(
        sk.roc_auc_score(
            y, probabilities[:, :4] / probabilities[:, :4].sum(axis=1, keepdims=True), multi_class="ovr"
        ),
        abs=2e-3,
    )


def test_tied_top_scores_predict_one_class_the_first_as_argmax():
    """Uniform scores predict class 0 for every example (np.argmax), not every class."""
    y = np.array([0, 1, 2, 0, 1, 2])
    got = results(metrics.classification(3), y, np.full((6, 3), 1 / 3, "float32"))
    predicted = np.zeros(6, int)
    assert got["recall"] == pytest.approx(sk.recall_score(y, predicted, average="macro"), abs=CLASSIFICATION)
    assert got["precision"] == pytest.approx(
        sk.precision_score(y, predicted, average="macro", zero_division=0), abs=CLASSIFICATION
    )
    assert got["f1"] == pytest.approx(sk.f1_score(y, predicted, average="macro"), abs=CLASSIFICATION)


def test_weights_of_zero_leave_the_metrics_as_without_those_examples():
    y, probabilities = MULTICLASS["multiclass_imbalanced"]
    weights = np.ones(len(y), "float32")
    weights[::3] = 0.0
    padded = results(metrics.classification(5), y, probabilities, weights)
    kept = results(metrics.classification(5), y[weights > 0], probabilities[weights > 0])
    assert padded == pytest.approx(kept, abs=1e-6)


# State accumulated over batches.


@pytest.mark.parametrize("case", ["binary", "multiclass"])
def test_batches_accumulate_to_one_pass(case):
    y, predictions = {**BINARY, **MULTICLASS}[case]
    num_classes = 1 if case == "binary" else predictions.shape[1]
    weights = sample_weights(len(y), seed=12)
    ends = [37, 100, 101, 250, None]  # Uneven batches, one of a single example.
    in_batches = results(metrics.classification(num_classes), y, predictions, weights, batches=ends)
    in_one = results(metrics.classification(num_classes), y, predictions, weights)
    assert in_batches == pytest.approx(in_one, abs=1e-6)
    reference = reference_binary if case == "binary" else reference_multiclass
    assert_matches(in_batches, reference(y, predictions, weights))


def test_reset_state_starts_over():
    y, probabilities = MULTICLASS["multiclass"]
    built = metrics.classification(5)
    results(built, y[:200], probabilities[:200])
    for metric in built:
        metric.reset_state()
    assert_matches(
        results(built, y[200:], probabilities[200:]), reference_multiclass(y[200:], probabilities[200:])
    )


def test_multiclass_metrics_in_a_compiled_loop_over_replicas():
    """As the trainer's evaluation updates them: in a tf.function, under
    MirroredStrategy on 2 logical CPUs, each replica on half of each batch."""
    strategy = shared_strategy("mirrored")
    y, probabilities = MULTICLASS["multiclass"]
    weights = sample_weights(len(y), seed=13)
    with strategy.scope():
        built = metrics.classification(5)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((y, probabilities, weights)).batch(80, drop_remainder=True)
    )

    @tf.function
    def update(batch):
        def step(labels, predictions, weight):
            for metric in built:
                metric.update_state(labels, predictions, sample_weight=weight)

        strategy.run(step, args=batch)

    for batch in dataset:
        update(batch)
    got = {metric.name: float(metric.result()) for metric in built}  # Summed over the replicas.
    assert_matches(got, reference_multiclass(y, probabilities, weights))


def test_majority_class_accuracy():
    y_train = np.array([0, 2, 0, 1, 2, 0])  # The training set's majority, not the test set's.
    y_test = np.array([2, 2, 1, 0, 2])
    assert metrics.majority_class_accuracy(y_train, y_test) == sk.accuracy_score(y_test, np.zeros(5)) == 0.2
