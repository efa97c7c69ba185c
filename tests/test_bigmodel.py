"""python -m recipes.bigmodel: both tasks, their metrics, under both strategies."""

import json

import pytest

from recipes import bigmodel
from recipes.core.input import data
from recipes.core.training.config import TrainConfig
from tests.helpers import run_module, run_python, shared_strategy

SKLEARN_SCORES = """
import json, sys
import keras, numpy as np
from sklearn import metrics
import models
from recipes.core.input import data

task, model_dir = sys.argv[1], sys.argv[2]
model = keras.models.load_model(model_dir + "/model.keras")
# model.keras takes the preprocessed input: the raw features standardized as the run recorded.
preprocess = data.Preprocessing.from_json(json.load(open(model_dir + "/metrics.json"))["input"]["preprocessing"])
if task == "breast_cancer":
    split = data.load_breast_cancer()
    assert preprocess.kind == "standardize"
    p = model.predict(preprocess(split.x_test), verbose=0)[:, 0]
    y, predicted = split.y_test[:, 0], (p > 0.5).astype(int)
    scores = dict(accuracy=metrics.accuracy_score(y, predicted),
                  precision=metrics.precision_score(y, predicted),
                  recall=metrics.recall_score(y, predicted), f1=metrics.f1_score(y, predicted),
                  auc=metrics.roc_auc_score(y, p))
else:
    split = data.load_mnist()
    assert preprocess.kind == "scale_pixels"
    p = model.predict(split.x_test / np.float32(255), verbose=0)
    y, predicted = split.y_test, p.argmax(axis=-1)
    scores = dict(accuracy=metrics.accuracy_score(y, predicted),
                  precision=metrics.precision_score(y, predicted, average="macro"),
                  recall=metrics.recall_score(y, predicted, average="macro"),
                  f1=metrics.f1_score(y, predicted, average="macro"),
                  auc=metrics.roc_auc_score(y, p, multi_class="ovr", average="macro"))
print(json.dumps(scores))
"""


@pytest.mark.slow
@pytest.mark.parametrize("task, floor", [("breast_cancer", ("auc", 0.98)), ("mnist", ("accuracy", 0.92))])
def test_readme_command_reaches_its_floor_and_its_metrics_match_sklearn(tmp_path, task, floor):
    """The README's command; then, in a fresh process, scikit-learn scores the
    loaded model.keras on the test split: every metric matches metrics.json."""
    done = run_module("recipes.bigmodel", f"--task={task}", f"--model_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation: loss=" in done.stdout
    written = json.load(open(tmp_path / "metrics.json"))
    scores = json.loads(
        run_python(SKLEARN_SCORES.replace("sys.argv[1], sys.argv[2]", f"{task!r}, {str(tmp_path)!r}"))
    )
    for name, value in scores.items():
        assert written[f"test_{name}"] == pytest.approx(value, abs=1e-3), name
    name, minimum = floor
    assert scores[name] >= minimum
    assert written["num_validation_examples"] > 0 and "validation_auc" in written


@pytest.mark.parametrize("strategy_name", ["default", pytest.param("mirrored", marks=pytest.mark.slow)])
@pytest.mark.parametrize("task", [pytest.param("mnist", marks=pytest.mark.slow), "breast_cancer"])
def test_two_steps_of_each_task_under_each_strategy(tmp_path, strategy_name, task, mnist):
    strategy = shared_strategy(strategy_name)
    dataset = data.as_data(mnist).with_validation() if task == "mnist" else data.load_breast_cancer()
    config = TrainConfig(model_dir=str(tmp_path), batch_size=16, train_steps=2)
    metrics = bigmodel.run(config, strategy, dataset, task)
    assert metrics["steps"] == 2 and metrics["num_replicas"] == strategy.num_replicas_in_sync
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert 0.0 <= metrics[f"test_{name}"] <= 1.0
    assert (tmp_path / "model.keras").exists() and (tmp_path / "saved_model").is_dir()
