"""The rest of the articles' models: shapes, exact parameter counts, config round
trips, and the equations the articles write out, checked by hand."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes import neuron
from tests.helpers import run_python

BERT_SIZE = dict(
    vocab_size=100, max_length=16, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64
)
# Per block: attention 3 * (32*32 + 32) + (32*32 + 32) = 4,224, two layer norms 128,
# feed-forward 32*64 + 64 + 64*32 + 32 = 4,192; embeddings 100*32 + 16*32 + 64.
BERT_ENCODER_PARAMS = 100 * 32 + 16 * 32 + 64 + 2 * (4224 + 128 + 4192)


def _bert_encoder():
    encoder = models.BertEncoder(**BERT_SIZE)
    encoder.build((None, 16))
    return encoder


@pytest.mark.parametrize(
    "build, input_shape, output_shape, params",
    [
        (lambda: models.cnn(), (28, 28, 1), (10,), 421_642),  # Flatten 7*7*64 = 3,136.
        (lambda: models.cnn(input_shape=(32, 32, 3)), (32, 32, 3), (10,), 545_098),  # 8*8*64 = 4,096.
        (lambda: models.lstm_classifier(), (28, 28), (10,), 81_674),
        (lambda: models.two_layer_mlp(), (28, 28), (10,), 407_050),
        (lambda: models.linear_regression(), (1,), (1,), 2),
        (lambda: models.sigmoid_neuron(), (2,), (1,), 3),
    ],
    ids=["cnn_mnist", "cnn_cifar10", "lstm", "mlp", "linear_regression", "sigmoid_neuron"],
)
def test_functional_models_shape_parameter_count_and_config_round_trip(
    build, input_shape, output_shape, params
):
    model = build()
    assert model.count_params() == params
    x = np.random.default_rng(0).random((3,) + input_shape, dtype=np.float32)
    assert tuple(model(x).shape) == (3,) + output_shape
    clone = model.__class__.from_config(model.get_config())
    assert clone.count_params() == params
    assert json.dumps(clone.get_config(), default=str) == json.dumps(model.get_config(), default=str)


@pytest.mark.parametrize(
    "head, params, output_shape",
    [
        (None, BERT_ENCODER_PARAMS, (16, 32)),
        ("pretrainer", BERT_ENCODER_PARAMS + (32 * 32 + 32) + 64 + (32 * 100 + 100), (16, 100)),
        ("classifier", BERT_ENCODER_PARAMS + 32 * 3 + 3, (3,)),
    ],
)
def test_bert_models_shape_parameter_count_and_config_round_trip(head, params, output_shape):
    model = {
        None: lambda e: e,
        "pretrainer": models.BertPretrainer,
        "classifier": lambda e: models.BertClassifier(e, num_classes=3),
    }[head](_bert_encoder())
    model.build((None, 16))
    assert model.count_params() == params
    ids = np.random.default_rng(0).integers(1, 100, (2, 16))
    assert tuple(model(ids).shape) == (2,) + output_shape
    clone = model.__class__.from_config(model.get_config())
    clone.build((None, 16))
    assert clone.count_params() == params
    assert clone.get_config() == model.get_config()


@pytest.mark.slow
def test_bert_classifier_round_trips_through_model_keras_in_a_fresh_process(tmp_path):
    model = models.BertClassifier(_bert_encoder(), num_classes=3)
    ids = np.random.default_rng(0).integers(0, 100, (4, 16)).astype(np.int32)
    expected = np.asarray(model(ids))
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "expected.npy", expected)
    assert (
        run_python(f"""
import keras, numpy as np
import models
model = keras.models.load_model("{tmp_path}/model.keras")
assert isinstance(model, models.BertClassifier) and isinstance(model.encoder, models.BertEncoder)
np.testing.assert_allclose(model(np.load("{tmp_path}/ids.npy")), np.load("{tmp_path}/expected.npy"), atol=1e-5)
print("ok")
""")
        == "ok"
    )


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_one_lstm_cell_step_follows_the_articles_gate_equations():
    units, features = 3, 4
    cell = keras.layers.LSTMCell(units)
    cell.build((None, features))
    rng = np.random.default_rng(0)
    x, h, c = (rng.normal(size=(2, n)).astype(np.float32) for n in (features, units, units))
    cell.bias.assign(rng.normal(size=4 * units).astype(np.float32))  # Not the zeros/ones it starts at.
    output, (h_next, c_next) = cell(x, [h, c])

    W, U, b = (np.asarray(v) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
    gate = lambda k: (
        x @ W[:, k * units : (k + 1) * units]
        + h @ U[:, k * units : (k + 1) * units]
        + b[k * units : (k + 1) * units]
    )  # noqa: E731 - Keras' order: i, f, c~, o.
    i, f, candidate, o = _sigmoid(gate(0)), _sigmoid(gate(1)), np.tanh(gate(2)), _sigmoid(gate(3))
    c_expected = f * c + i * candidate
    h_expected = o * np.tanh(c_expected)
    np.testing.assert_allclose(c_next, c_expected, atol=1e-5)
    np.testing.assert_allclose(h_next, h_expected, atol=1e-5)
    np.testing.assert_allclose(output, h_expected, atol=1e-5)


def test_bert_attention_is_softmax_of_q_k_over_sqrt_dk_times_v():
    encoder = _bert_encoder()
    attention = encoder.attention[0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 32)).astype(np.float32)
    mask = np.ones((2, 5, 5), bool)
    mask[1, :, 3:] = False  # The second sequence's last two tokens are padding.
    got = np.asarray(attention(x, x, attention_mask=mask))

    weights = {w.path.split("/")[-2] + "/" + w.path.split("/")[-1]: np.asarray(w) for w in attention.weights}
    project = lambda name: np.einsum("bld,dhk->blhk", x, weights[f"{name}/kernel"]) + weights[f"{name}/bias"]  # noqa: E731
    q, k, v = project("query"), project("key"), project("value")  # [B, L, heads, d_k]
    d_k = q.shape[-1]
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d_k)
    scores = np.where(mask[:, None], scores, -np.inf)
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    heads = np.einsum("bhqk,bkhd->bqhd", probabilities, v)
    expected = (
        np.einsum("bqhd,hdo->bqo", heads, weights["attention_output/kernel"])
        + weights["attention_output/bias"]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_numpy_two_layer_net_gradients_match_gradient_tape():
    net = models.NumpyTwoLayerNet(num_inputs=5, hidden_units=4, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 5))
    y = rng.integers(0, 2, (8, 1)).astype(np.float64)
    variables = {name: tf.Variable(value) for name, value in net.params.items()}
    with tf.GradientTape() as tape:
        h = tf.nn.relu(x @ variables["W1"] + variables["b1"])
        p = tf.sigmoid(h @ variables["W2"] + variables["b2"])
        loss = -tf.reduce_mean(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    expected = dict(zip(variables, tape.gradient(loss, list(variables.values()))))
    assert net.loss(x, y) == pytest.approx(float(loss), abs=1e-9)
    for name, gradient in net.gradients(x, y).items():
        np.testing.assert_allclose(gradient, expected[name], atol=1e-6, err_msg=name)
    before = net.loss(x, y)
    net.train_step(x, y, learning_rate=0.1)
    assert net.loss(x, y) < before


def test_the_hand_worked_neuron_step_gives_the_articles_figures():
    worked = neuron.worked_step([0.1, -0.2], 0.3, neuron.INPUT, neuron.TARGET)
    expected = {
        "z": 0.23,
        "y": 0.5572479,
        "L": 0.0203782,
        "dL/dW": [-0.0352202, -0.0422642],
        "dL/db": -0.0704404,
    }
    for name, value in expected.items():
        np.testing.assert_allclose(worked[name], value, atol=1e-6, err_msg=name)
