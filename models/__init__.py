"""Keras model definitions from the "large models" articles.

    import models
    model = models.mnist_dense()
    model = models.BigModel(num_classes=10)
"""
from models.bigmodel import BigModel
from models.mnist import mnist_dense

__all__ = ["BigModel", "mnist_dense"]
