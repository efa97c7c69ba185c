"""The articles' forward and backward propagation, from scratch in NumPy.

A two-layer network for binary classification: h = relu(x W1 + b1),
p = sigmoid(h W2 + b2), with the mean binary cross-entropy as the loss. Written
so that the shapes fit a [batch, features] input, the backward pass carries the
mean's 1/batch, and the sigmoid's derivative is taken where the chain rule needs
it (folded with the cross-entropy's into p - y); tests/test_models.py checks the
gradients against GradientTape's.
"""

import numpy as np

from models import _checks


class NumpyTwoLayerNet:
    """Weights in plain NumPy arrays; `gradients` is the hand-derived backward pass."""

    def __init__(self, num_inputs: int, hidden_units: int, seed: int = 0) -> None:
        num_inputs = _checks.count("num_inputs", num_inputs)
        hidden_units = _checks.count("hidden_units", hidden_units)
        rng = np.random.default_rng(seed)
        self.params = {
            "W1": rng.normal(0.0, np.sqrt(2.0 / num_inputs), (num_inputs, hidden_units)),
            "b1": np.zeros(hidden_units),
            "W2": rng.normal(0.0, np.sqrt(1.0 / hidden_units), (hidden_units, 1)),
            "b2": np.zeros(1),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Probabilities [batch, 1], and what the backward pass needs."""
        p = self.params
        z1 = x @ p["W1"] + p["b1"]
        h = np.maximum(z1, 0.0)
        z2 = h @ p["W2"] + p["b2"]
        probability = 1.0 / (1.0 + np.exp(-z2))
        return probability, (x, z1, h)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        probability, _ = self.forward(x)
        probability = np.clip(probability, 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(probability) + (1 - y) * np.log(1 - probability)))

    def gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """d(mean binary cross-entropy)/d(each parameter), by the chain rule."""
        probability, (x, z1, h) = self.forward(x)
        batch = len(x)
        dz2 = (probability - y) / batch  # Sigmoid and cross-entropy together: p - y.
        dh = dz2 @ self.params["W2"].T
        dz1 = dh * (z1 > 0)
        return {"W2": h.T @ dz2, "b2": dz2.sum(axis=0), "W1": x.T @ dz1, "b1": dz1.sum(axis=0)}

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> None:
        for name, gradient in self.gradients(x, y).items():
            self.params[name] -= learning_rate * gradient
