"""`python -m recipes.compress` on a run of every classifier recipe the README lists,
in every precision mode, and on an early-stopped run (issue 26): each gets its table,
scored on the run's own test split, and `python -m recipes.predict` serves its
saved_model/ and its int8 LiteRT file, and `python -m recipes.distill` takes it as a
teacher (a binary one too: one sigmoid unit). And a derived result follows its source: a run
trained further is pruned again from its new weights, not resumed from the old ones.

Each case trains a tiny run (a few steps) and compresses it (a short pruning) through
the commands' real entry points in this process (`run_in_process`).
"""

import importlib
import json

import keras
import numpy as np
import pytest

from recipes import compress as compress_recipe
from recipes import distill as distill_recipe
from recipes import predict as predict_recipe
from recipes.core.deploy import compression, runs, serving
from tests.helpers import run_in_process

TINY = ["--train_steps=5", "--seed=0"]
COMPRESS = ["--pruning_steps=3", "--finetune_steps=2"]
# (id, recipe, its flags): a run of each recipe, precision mode and early stopping.
RUNS = [
    ("mnist", "mnist", TINY),
    ("cnn", "cnn", TINY),
    ("mlp", "mlp", TINY),
    ("lstm", "lstm", TINY),  # LiteRT: its LSTM unrolled, the converter has no tensor lists.
    ("bigmodel_mnist", "bigmodel", ["--task=mnist", *TINY]),  # A subclassed model.
    ("bigmodel_breast_cancer", "bigmodel", ["--task=breast_cancer", *TINY]),  # Table rows, sigmoid.
    # The validation split is carved from training: compress scores the same test split.
    ("early_stopped", "mnist", ["--epochs=3", "--early_stopping_patience=1", "--seed=0"]),
    # Keras quantizes no float16 layer and LiteRT converts no bfloat16 or float64 op:
    # compress works on a float32 copy.
    ("mixed_float16", "mlp", ["--mixed_precision=mixed_float16", *TINY]),
    ("mixed_bfloat16", "bigmodel", ["--task=mnist", "--mixed_precision=mixed_bfloat16", *TINY]),
    ("float64", "cnn", ["--mixed_precision=float64", *TINY]),
]
VARIANTS = ["model.keras", "int8.keras", "int4.keras", "pruned.keras"] + [
    f"{variant}.tflite" for variant in serving.LITERT_VARIANTS
]


@pytest.fixture(autouse=True)
def _policy_kept():
    """A recipe run in this process sets the Keras precision policy; later tests get theirs back."""
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


def _train(recipe, model_dir, args, monkeypatch, capfd):
    module = importlib.import_module(f"recipes.{recipe}")
    code, _, err = run_in_process(module, [f"--model_dir={model_dir}", *args], monkeypatch, capfd)
    assert code == 0, err[-3000:]
    return json.loads((model_dir / "metrics.json").read_text())


def _compress(model_dir, monkeypatch, capfd):
    code, out, err = run_in_process(
        compress_recipe, [f"--model_dir={model_dir}", *COMPRESS], monkeypatch, capfd
    )
    assert code == 0, err[-3000:]
    return json.loads((model_dir / "compressed" / "compression.json").read_text()), out


def _predicted(model_dir, model, examples, monkeypatch, capfd):
    """The (class, probability) `predict --model=model` prints for each example of the
    .npy file `examples`."""
    args = [f"--model_dir={model_dir}", f"--model={model}", str(examples)]
    code, out, err = run_in_process(predict_recipe, args, monkeypatch, capfd)
    assert code == 0, out + err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith(f"{examples}[")]
    return [
        (line.split("class ")[1].split(" ")[0].rstrip(","), float(line.split("probability ")[1].rstrip(")")))
        for line in lines
    ]


@pytest.mark.slow
@pytest.mark.parametrize("recipe,args", [case[1:] for case in RUNS], ids=[case[0] for case in RUNS])
def test_compress_and_predict_work_on_the_run(recipe, args, tmp_path, monkeypatch, capfd):
    run_path = tmp_path / "run"
    metrics = _train(recipe, run_path, args, monkeypatch, capfd)
    report, out = _compress(run_path, monkeypatch, capfd)
    rows = {row["variant"]: row for row in report["variants"]}
    assert list(rows) == VARIANTS and not [row for row in rows.values() if "skipped" in row], out
    # Scored on the run's own test split, opened again as the run split it. A mixed run
    # was tested in 16 bits; its model.keras is scored as it loads here (a BigModel's
    # layers in float32), and near-ties of a 5-step model may turn: a few digits.
    mixed = any(arg.startswith("--mixed_precision=mixed_") for arg in args)
    assert rows["model.keras"]["accuracy"] == pytest.approx(
        metrics["test_accuracy"], abs=(5.5 if mixed else 1.5) / metrics["num_test_examples"]
    )
    assert report["source"]["step"] == metrics["steps"]
    if "--early_stopping_patience=1" in args:  # It stopped, on a split carved from training.
        assert metrics["stopped_early"] and metrics["input"]["carved"] == ["validation"], metrics
        assert metrics["num_train_examples"] == 4050
    run = runs.read(str(run_path))
    x_test, _ = run.load_data().arrays("test", limit=20)
    np.save(tmp_path / "examples.npy", x_test[:3])
    num_classes = max(2, len(run.class_names or ()))
    for variant in serving.LITERT_VARIANTS:  # Each LiteRT file returns probabilities.
        probabilities = serving.load(str(run_path / "compressed" / f"{variant}.tflite"))(x_test)[
            "probabilities"
        ]
        assert probabilities.shape == (len(x_test), num_classes), variant
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=0.05, err_msg=variant)
    for model in ("saved_model", "compressed/int8.tflite"):
        printed = _predicted(run_path, model, tmp_path / "examples.npy", monkeypatch, capfd)
        assert len(printed) == 3 and all(0 <= p <= 1 for _, p in printed), (model, printed)
    _check_distills(run_path, metrics, report["source"], tmp_path / "student", monkeypatch, capfd)


def _check_distills(teacher_dir, teacher_metrics, source, model_dir, monkeypatch, capfd):
    """`python -m recipes.distill` with the run as its teacher: the student (2 steps)
    records the teacher's weights, as compress recorded them, and is scored."""
    args = [f"--teacher_dir={teacher_dir}", f"--model_dir={model_dir}", "--train_steps=2", "--nobaseline"]
    code, _, err = run_in_process(distill_recipe, args, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    student = json.loads((model_dir / "metrics.json").read_text())
    assert student["teacher_recipe"] == teacher_metrics["recipe"]
    assert student["teacher_weights_sha256"] == source["weights_sha256"]
    assert student["steps"] == 2 and 0 <= student["test_accuracy"] <= 1


def _kernels(path):
    return [np.asarray(w) for w in keras.saving.load_model(str(path)).get_weights() if np.ndim(w) == 2]


@pytest.mark.slow
def test_a_run_trained_further_is_pruned_again_from_its_new_weights(tmp_path, monkeypatch, capfd):
    run_path = tmp_path / "run"
    args = ["--task=breast_cancer", "--seed=0"]
    _train("bigmodel", run_path, [*args, "--train_steps=3"], monkeypatch, capfd)
    old = _kernels(run_path / "model.keras")
    first, _ = _compress(run_path, monkeypatch, capfd)
    assert first["source"]["step"] == 3
    metrics = _train("bigmodel", run_path, [*args, "--train_steps=6"], monkeypatch, capfd)
    assert metrics["steps"] == 6 and metrics["steps_this_run"] == 3
    report, out = _compress(run_path, monkeypatch, capfd)
    assert "pruning again from the start" in out, out
    new_model = keras.saving.load_model(str(run_path / "model.keras"))
    assert report["source"] == {
        "model": "model.keras",
        "step": 6,
        "weights_sha256": compression.weights_fingerprint(new_model),
    }
    recorded = json.loads((run_path / "compressed" / "pruning" / "source.json").read_text())
    assert recorded["source"] == report["source"]
    pruning_metrics = json.loads((run_path / "compressed" / "pruning" / "metrics.json").read_text())
    assert pruning_metrics["steps_this_run"] == 5  # Pruned again, not resumed at its end.
    # 5 steps at 1e-4 move the kept weights far less than 3 steps at 1e-3 moved the run's.
    pruned = _kernels(run_path / "compressed" / "pruned.keras")
    new = _kernels(run_path / "model.keras")
    kept = [p != 0 for p in pruned]
    to_new = np.mean(np.concatenate([np.abs(p - n)[k] for p, n, k in zip(pruned, new, kept)]))
    to_old = np.mean(np.concatenate([np.abs(p - o)[k] for p, o, k in zip(pruned, old, kept)]))
    assert to_new < 0.5 * to_old, (to_new, to_old)
    # The same source and schedule again: the pruning run is kept, to resume.
    compress_recipe.forget_stale_pruning(str(run_path / "compressed" / "pruning"), recorded)
    assert "pruning again" not in capfd.readouterr().out
    assert (run_path / "compressed" / "pruning" / "checkpoints").is_dir()
    # Another schedule: pruned again.
    compress_recipe.forget_stale_pruning(
        str(run_path / "compressed" / "pruning"),
        {**recorded, "schedule": {**recorded["schedule"], "sparsity": 0.5}},
    )
    assert "pruning again" in capfd.readouterr().out
    assert not (run_path / "compressed" / "pruning" / "checkpoints").exists()
