"""Keras model definitions from the "large models" articles.

import models
model = models.mnist_dense()
model = models.BigModel(num_classes=10)
model = models.cnn(input_shape=(32, 32, 3))
classifier = models.BertClassifier(models.BertEncoder(vocab_size=4000, max_length=64), num_classes=5)
gpt = models.GPT(vocab_size=65, max_length=64)
"""

from models.bert import BertClassifier, BertEncoder, BertPretrainer
from models.bigmodel import BigModel
from models.convnet import cnn
from models.gpt import GPT, CausalSelfAttention
from models.heads import logits, output_head
from models.lstm import lstm_classifier
from models.mlp import two_layer_mlp
from models.mnist import mnist_dense
from models.regression import linear_regression, sigmoid_neuron
from models.scratch import NumpyTwoLayerNet

__all__ = [
    "BertClassifier",
    "BertEncoder",
    "BertPretrainer",
    "BigModel",
    "CausalSelfAttention",
    "GPT",
    "NumpyTwoLayerNet",
    "cnn",
    "linear_regression",
    "logits",
    "lstm_classifier",
    "mnist_dense",
    "output_head",
    "sigmoid_neuron",
    "two_layer_mlp",
]
