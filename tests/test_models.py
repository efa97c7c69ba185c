"""Tier 1: model shapes, exact parameter counts, and save/load round trips."""
import json

import numpy as np
import pytest
import keras

import models


def test_mnist_dense_has_the_articles_shape_and_parameter_count():
    model = models.mnist_dense()
    assert model.count_params() == 1_863_690  # 784*1024+1024 + 1024*1024+1024 + 1024*10+10
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dense", "Dense"]
    assert [layer.units for layer in model.layers[1:]] == [1024, 1024, 10]
    probabilities = model(np.zeros((3, 28, 28), np.float32))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)


def test_mnist_dense_widths_are_arguments():
    model = models.mnist_dense(hidden_units=(64, 32), num_classes=5, input_shape=(8, 8))
    assert model.count_params() == (64 * 64 + 64) + (64 * 32 + 32) + (32 * 5 + 5)
    assert model(np.zeros((2, 8, 8), np.float32)).shape == (2, 5)


@pytest.mark.parametrize("kwargs", [{"hidden_units": ()}, {"hidden_units": (0,)}, {"num_classes": 1}])
def test_mnist_dense_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Received"):
        models.mnist_dense(**kwargs)


def test_the_articles_own_compile_fit_evaluate_runs_unchanged(mnist):
    x, y = mnist.x_train[:512] / 255.0, mnist.y_train[:512]
    model = models.mnist_dense()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, verbose=0)
    loss, accuracy = model.evaluate(mnist.x_test / 255.0, mnist.y_test, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert accuracy > 0.8  # 512 real digits, 5 epochs, scored on 1,000 unseen ones.


def test_mnist_dense_round_trips_through_model_keras(tmp_path):
    model = models.mnist_dense(hidden_units=(32,))
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    as_json = lambda m: json.dumps(m.get_config(), sort_keys=True)  # noqa: E731 (tuples -> lists)
    assert as_json(loaded) == as_json(model)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
