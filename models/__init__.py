"""Keras model definitions from the "large models" articles.

    import models
    model = models.mnist_dense()
"""
from models.mnist import mnist_dense

__all__ = ["mnist_dense"]
