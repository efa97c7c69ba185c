"""Tier 1: model shapes, exact parameter counts, and save/load round trips."""

import json

import keras
import numpy as np
import pytest

import models
from tests.helpers import run_python


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
    assert accuracy > 0.8  # 512 real digits, 5 epochs, scored on the 500 unseen test ones.


def test_mnist_dense_round_trips_through_model_keras(tmp_path):
    model = models.mnist_dense(hidden_units=(32,))
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    as_json = lambda m: json.dumps(m.get_config(), sort_keys=True)  # noqa: E731 (tuples -> lists)
    assert as_json(loaded) == as_json(model)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def _dense_params(widths):
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


@pytest.mark.parametrize("num_classes, input_shape", [(10, (28, 28)), (1, (30,))])
def test_bigmodel_has_the_articles_stack_and_the_task_head(num_classes, input_shape):
    model = models.BigModel(num_classes=num_classes)
    model.build((None,) + input_shape)
    features = int(np.prod(input_shape))
    assert model.count_params() == _dense_params([features, 256, 128, 64, 32, 16, 8, num_classes])
    assert [layer.units for layer in model.hidden] == [256, 128, 64, 32, 16, 8]
    outputs = np.asarray(model(np.zeros((3,) + input_shape, np.float32)))
    assert outputs.shape == (3, num_classes)
    if num_classes == 1:  # One sigmoid unit: a probability, not a distribution.
        assert model.head.activation.__name__ == "sigmoid" and 0 < outputs.min() <= outputs.max() < 1
    else:
        np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, rtol=1e-5)


def test_bigmodel_dropout_and_l2_act_only_where_they_should():
    model = models.BigModel(hidden_units=(16, 8), num_classes=3, dropout_rate=0.5, l2=0.01)
    x = np.random.default_rng(0).random((64, 5), dtype=np.float32)
    model.build((None, 5))
    np.testing.assert_allclose(model(x), model(x))  # Inference is deterministic...
    assert not np.allclose(model(x, training=True), model(x, training=True))  # ...training drops.
    assert len(model.losses) == 3  # An L2 penalty per kernel, the head's included.
    assert models.BigModel().losses == []


@pytest.mark.parametrize(
    "kwargs", [{"hidden_units": ()}, {"num_classes": 0}, {"dropout_rate": 1.0}, {"l2": -1.0}]
)
def test_bigmodel_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Received"):
        models.BigModel(**kwargs)


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.NumpyTwoLayerNet(0, -1),  # Was a ZeroDivisionError.
        lambda: models.NumpyTwoLayerNet(4, 0),
        lambda: models.sigmoid_neuron(weights=(float("nan"), 1.0)),  # Was accepted.
        lambda: models.sigmoid_neuron(bias=float("inf")),
        lambda: models.sigmoid_neuron(weights=()),
        lambda: models.linear_regression(0),
    ],
    ids=["net(0, -1)", "net(4, 0)", "neuron(nan)", "neuron(bias=inf)", "neuron(no weights)", "regression(0)"],
)
def test_the_articles_small_models_reject_bad_arguments_by_name(build):
    with pytest.raises(ValueError, match="Received"):
        build()


@pytest.mark.slow
def test_bigmodel_round_trips_through_model_keras_in_a_fresh_process(tmp_path):
    model = models.BigModel(hidden_units=(32, 16), num_classes=4, dropout_rate=0.25, l2=1e-3)
    model.build((None, 6))
    x = np.random.default_rng(1).random((5, 6), dtype=np.float32)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    config = json.loads(
        run_python(f"""
import json, keras, numpy as np
import models
model = keras.models.load_model("{tmp_path}/model.keras")
assert isinstance(model, models.BigModel)
np.testing.assert_allclose(model(np.load("{tmp_path}/x.npy")), np.load("{tmp_path}/y.npy"), atol=1e-6)
print(json.dumps(model.get_config()))
""")
    )
    for name in ("hidden_units", "num_classes", "dropout_rate", "l2", "activation"):
        assert config[name] == json.loads(json.dumps(model.get_config()))[name]


def test_no_public_name_of_models_hides_a_module_of_it():
    """`models.cnn` and `models.logits` are the functions, and every module of the
    package stays reachable by its own name."""
    import pkgutil
    import types

    assert callable(models.cnn) and callable(models.logits)
    for info in pkgutil.iter_modules(models.__path__):
        assert isinstance(getattr(models, info.name, types), types.ModuleType), info.name
