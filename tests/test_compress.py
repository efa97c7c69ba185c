"""Compression and deployment: the pruning schedule and masks, a resumed pruning
run, the LiteRT files against the Keras models they came from, the floors of
issue 13 on the real offline MNIST run, and the predict command.

One module fixture trains the MNIST recipe as `python -m recipes.mnist` does
(defaults, offline digits) and compresses it as `python -m recipes.compress`
does; the tests read what they wrote.
"""

import fcntl
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes import compress as compress_recipe
from recipes import mnist as mnist_recipe
from recipes import neuron as neuron_recipe
from recipes import predict as predict_recipe
from recipes.core.deploy import compression, runs, serving
from recipes.core.input import data
from recipes.core.objectives import pruning
from recipes.core.training import step
from recipes.core.training.config import TrainConfig
from tests.helpers import assert_one_error_line, run_in_process, run_python, shared_strategy


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, worker_id):
    """The offline MNIST run at the recipe's defaults, compressed at the compress recipe's:
    made once per session, even across pytest-xdist workers (they share the parent
    of their temporary directories), and only read by the tests."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent
    run_dir = shared / "compressed_mnist"
    with open(shared / "compressed_mnist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # The other worker waits for the first to finish.
        if not (run_dir / "compressed" / "compression.json").exists():
            _train_and_compress(str(run_dir))
    run = runs.read(str(run_dir))
    report = json.loads(open(run.path("compressed", "compression.json")).read())
    return run, run.load_data(), {row["variant"]: row for row in report["variants"]}


def _train_and_compress(run_dir):
    mnist_recipe.run(TrainConfig(model_dir=run_dir), shared_strategy("default"), data.open_data("sample"))
    run = runs.read(run_dir)
    config = TrainConfig(model_dir=run.path("compressed", "pruning"), learning_rate=1e-4, train_steps=1500)
    compress_recipe.compress(
        config,
        shared_strategy("default"),
        run,
        run.load_data(),
        sparsity=0.8,
        pruning_steps=1000,
        frequency=100,
    )


def test_polynomial_schedule_matches_tfmot_at_known_steps():
    # tfmot's PolynomialDecay: s_f + (s_i - s_f) * (1 - t/T)^3.
    for t, expected in [(0, 0.0), (250, 0.8 - 0.8 * 0.75**3), (500, 0.7), (1000, 0.8), (5000, 0.8)]:
        assert float(pruning.polynomial_sparsity(t, 0.8, 1000)) == pytest.approx(expected, abs=1e-6)
    assert float(pruning.polynomial_sparsity(500, 0.9, 1000, initial_sparsity=0.5)) == pytest.approx(0.85)


def test_size_on_disk_closes_every_file_it_reads(tmp_path, monkeypatch):
    still_open = set()

    class Tracked(tf.io.gfile.GFile):
        def __init__(self, name, mode="r"):
            super().__init__(name, mode)
            still_open.add(name)

        def close(self):
            still_open.discard(self.name)
            super().close()

    (tmp_path / "sub").mkdir()
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b").write_bytes(b"yy")
    monkeypatch.setattr(tf.io.gfile, "GFile", Tracked)
    assert compression.size_on_disk(str(tmp_path))[0] == 12
    assert not still_open


def test_magnitude_mask_zeroes_the_smallest_weights():
    kernel = tf.constant([[0.5, -0.1], [0.05, -2.0], [0.3, 0.0]])
    np.testing.assert_array_equal(pruning.magnitude_mask(kernel, 0.5), [[1, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(pruning.magnitude_mask(kernel, 0.0), np.ones((3, 2)))


def _pruned_steps(strategy, mnist, steps):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = models.mnist_dense(hidden_units=(64, 64))
        optimizer = keras.optimizers.Adam(1e-3)
    objective = pruning.Pruning(
        step.Objective(keras.losses.sparse_categorical_crossentropy), 0.8, pruning_steps=20, frequency=5
    )
    trainer = step.Trainer(strategy, model, optimizer, objective, global_batch_size=64)
    iterator = iter(
        data.train_dataset(
            strategy, data.from_array_data(mnist).train, 64, preprocess=data.scale_pixels, seed=0
        )
    )
    trainer.train_loop(iterator, tf.constant(steps))
    return model, objective


@pytest.mark.slow
def test_masks_hold_after_every_update(mnist, strategy):
    model, objective = _pruned_steps(strategy, mnist, 12)  # Masks last set at step 10, not 12.
    assert pruning.sparsity(model) == pytest.approx(float(pruning.polynomial_sparsity(10, 0.8, 20)), abs=1e-3)
    objective_at_10 = [np.asarray(mask) for mask in objective.state.masks]
    model, objective = _pruned_steps(strategy, mnist, 40)  # 20 Adam steps past the last update.
    assert pruning.sparsity(model) == pytest.approx(0.8, abs=1e-3)
    for kernel, mask in zip(pruning.prunable_kernels(model), objective.state.masks):
        for copy in (
            strategy.experimental_local_results(mask) if strategy.num_replicas_in_sync > 1 else [mask]
        ):
            np.testing.assert_array_equal(copy, mask)  # Every replica holds the same mask...
        assert np.all(np.asarray(kernel)[np.asarray(mask) == 0] == 0)  # ...and it holds.
    assert any((np.asarray(a) != np.asarray(b)).any() for a, b in zip(objective_at_10, objective.state.masks))


@pytest.mark.slow
def test_mirrored_pruning_matches_one_device(mnist):
    one, _ = _pruned_steps(shared_strategy("default"), mnist, 25)
    two, _ = _pruned_steps(shared_strategy("mirrored"), mnist, 25)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_interrupted_pruning_resumes_to_the_uninterrupted_weights(compressed, tmp_path):
    run, dataset, _ = compressed
    signature = run.signature()

    def prune(model_dir, steps):
        config = TrainConfig(
            model_dir=str(model_dir),
            learning_rate=1e-4,
            train_steps=steps,
            checkpoint_steps=20,
            batch_size=32,
            seed=3,
        )
        compress_recipe.prune(
            config,
            shared_strategy("default"),
            run,
            dataset,
            signature,
            sparsity=0.8,
            pruning_steps=40,
            frequency=10,
        )
        return keras.saving.load_model(os.path.join(model_dir, "model.keras")).get_weights()

    straight = prune(tmp_path / "straight", 60)
    prune(tmp_path / "resumed", 20)  # Stopped after its checkpoint at step 20, mid-schedule...
    resumed = prune(tmp_path / "resumed", 60)  # ...and run again to the end.
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_the_offline_mnist_run_meets_the_floors(compressed):
    _, _, rows = compressed
    base = rows["model.keras"]["accuracy"]
    float32 = rows["float32.tflite"]
    assert rows["int8.tflite"]["bytes"] <= 0.30 * float32["bytes"]
    assert rows["int8.tflite"]["accuracy"] >= base - 0.01
    assert rows["pruned.keras"]["kernel_sparsity"] >= 0.79
    assert rows["pruned.keras"]["accuracy"] >= base - 0.015
    assert rows["pruned_int8.tflite"]["gzip_bytes"] <= 0.12 * float32["gzip_bytes"]
    assert rows["int8.keras"]["accuracy"] >= base - 0.01
    assert rows["int4.keras"]["accuracy"] >= base - 0.03


@pytest.mark.slow
def test_each_litert_file_agrees_with_the_keras_model_it_came_from(compressed):
    run, dataset, _ = compressed
    signature = run.signature()
    out = run.path("compressed")
    float_model = keras.saving.load_model(run.path("model.keras"))
    pruned = keras.saving.load_model(os.path.join(out, "pruned.keras"))
    raw, _ = dataset.arrays("test")
    float32 = serving.load(os.path.join(out, "float32.tflite")).predict(raw)
    np.testing.assert_allclose(float32["probabilities"], float_model(raw / np.float32(255)), atol=1e-5)
    for variant in serving.LITERT_VARIANTS[1:]:
        source = pruned if variant.startswith("pruned") else float_model
        classes = serving.load(os.path.join(out, f"{variant}.tflite")).predict(raw)["classes"]
        expected = np.argmax(source(signature.preprocess(raw)), axis=-1)
        assert np.mean(classes == expected) >= 0.98, variant


@pytest.mark.slow
def test_quantized_keras_models_load_in_a_fresh_process(compressed, tmp_path):
    run, dataset, rows = compressed
    x_test, y_test = dataset.arrays("test")  # The split compression.json measured.
    np.save(tmp_path / "x_test.npy", x_test)
    np.save(tmp_path / "y_test.npy", y_test)
    accuracies = json.loads(
        run_python(f"""
import json, keras, numpy as np
x, y = np.load("{tmp_path}/x_test.npy") / np.float32(255), np.load("{tmp_path}/y_test.npy")
print(json.dumps({{mode: float(np.mean(np.argmax(keras.saving.load_model(
    "{run.model_dir}/compressed/" + mode + ".keras")(x), axis=-1) == y)) for mode in ("int8", "int4")}}))
""")
    )
    for mode in ("int8", "int4"):
        assert accuracies[mode] == pytest.approx(rows[f"{mode}.keras"]["accuracy"], abs=1e-9), mode


@pytest.mark.slow
def test_compression_report_has_a_row_per_variant(compressed):
    run, _, rows = compressed
    assert list(rows) == ["model.keras", "int8.keras", "int4.keras", "pruned.keras"] + [
        f"{variant}.tflite" for variant in serving.LITERT_VARIANTS
    ]
    report = json.loads(open(run.path("compressed", "compression.json")).read())
    assert [row["variant"] for row in report["variants"]] == list(rows)
    for row in rows.values():
        assert row["bytes"] > row["gzip_bytes"] > 0 and 0 < row["latency_ms"] < 1000
        assert 0.9 <= row["agreement"] <= 1.0
    assert open(run.path("compressed", "compression.png"), "rb").read(4) == b"\x89PNG"


@pytest.mark.slow
def test_predict_prints_the_classes_of_png_digits_and_one_line_per_bad_file(
    compressed, tmp_path, monkeypatch, capfd
):
    run, dataset, _ = compressed
    x_test, y_test = dataset.arrays("test", limit=10)
    pngs = []
    for index in range(10):
        pngs.append(str(tmp_path / f"digit{index}.png"))
        tf.io.write_file(pngs[-1], tf.io.encode_png(x_test[index][..., None]))
    (tmp_path / "text.png").write_text("not an image")
    np.save(tmp_path / "wrong.npy", np.zeros((3, 3), np.uint8))
    bad = [str(tmp_path / "missing.png"), str(tmp_path / "text.png"), str(tmp_path / "wrong.npy")]
    for model, reference in [
        ("saved_model", run.path("model.keras")),
        ("compressed/int8.tflite", run.path("compressed", "int8.tflite")),
    ]:
        expected = serving.load(reference, run.signature()).predict(x_test)["classes"]
        assert np.mean(expected == y_test) >= 0.8
        code, out, err = run_in_process(
            predict_recipe,
            [f"--model_dir={run.model_dir}", f"--model={model}", *pngs, *bad],
            monkeypatch,
            capfd,
        )
        printed = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
        assert [line.split(" (probability")[0] for line in printed] == [
            f"{png}: class {label}" for png, label in zip(pngs, expected)
        ], out
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 3, err[-2000:]
        assert "missing.png does not exist" in errors[0]
        assert "text.png cannot be decoded as an image" in errors[1]
        assert "wrong.npy holds a uint8 array of shape [3, 3]; the model takes [28, 28] uint8" in errors[2]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command,args,expected",
    [
        ("predict", ["--model=metrics.json", "x.png"], "metrics.json is not a model this package writes"),
        ("predict", ["--model=compressed/none.tflite", "x.png"], "none.tflite does not exist"),
        ("predict", [], "pass FILEs to predict on, or --value"),
        ("predict", ["--value=6.5"], "--value needs a one-feature model"),
        ("compress", ["--train_steps=5"], "--train_steps does not apply here"),
        ("compress", ["--sparsity=1.5"], "--sparsity must be at least 0 and below 1"),
        ("compress", ["--pruning_steps=0"], "flag --pruning_steps=0"),
        ("compress", ["--data=mnist"], "not prepared"),
    ],
)
def test_bad_arguments_are_one_line(compressed, command, args, expected, monkeypatch, capfd):
    run, _, _ = compressed
    module = predict_recipe if command == "predict" else compress_recipe
    assert_one_error_line(
        *run_in_process(module, [f"--model_dir={run.model_dir}", *args], monkeypatch, capfd)[::2], expected
    )


@pytest.mark.slow
def test_predict_value_is_the_fitted_line_at_that_many_rooms(tmp_path, monkeypatch, capfd):
    from recipes import linreg

    dataset, mean, std = data.load_boston_rooms()
    config = TrainConfig(model_dir=str(tmp_path), batch_size=len(dataset.x_train), **linreg.RECIPE_DEFAULTS)
    results = linreg.run(config, shared_strategy("default"), dataset, mean, std)
    capfd.readouterr()
    code, out, _ = run_in_process(
        predict_recipe, [f"--model_dir={tmp_path}", "--value=6.5"], monkeypatch, capfd
    )
    price = results["theta0"] + results["theta1"] * (6.5 - mean) / std
    line = next(line for line in out.splitlines() if line.startswith("--value=6.5: "))
    assert code == 0 and "($1000s" in line, out
    assert float(line.split()[1]) == pytest.approx(price, abs=1e-3)


def test_compress_needs_a_finished_classifier_run(tmp_path, monkeypatch, capfd):
    assert_one_error_line(
        *run_in_process(compress_recipe, [f"--model_dir={tmp_path}"], monkeypatch, capfd)[::2],
        "holds no finished run (no metrics.json)",
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": "neuron"}))
    assert_one_error_line(
        *run_in_process(compress_recipe, [f"--model_dir={tmp_path}"], monkeypatch, capfd)[::2],
        "does not record the run's input",
    )
    # A finished run that is not a classifier: the neuron's (one sigmoid unit's prediction).
    neuron_recipe.run(TrainConfig(model_dir=str(tmp_path / "neuron")), shared_strategy("default"))
    capfd.readouterr()
    assert_one_error_line(
        *run_in_process(compress_recipe, [f"--model_dir={tmp_path / 'neuron'}"], monkeypatch, capfd)[::2],
        "is not a classifier run",
    )
