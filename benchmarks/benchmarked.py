"""The two models the benchmarks time: the package's Keras builds, and their PyTorch
twins for the `torch` rows. Imports no TensorFlow (keras_on_gpu.py runs without it)."""
import models

MODELS = {"mnist_dense": models.mnist_dense, "bigmodel": lambda: models.BigModel(num_classes=10)}


def build(model_name):
    """The Keras model, built for 28x28 images."""
    model = MODELS[model_name]()
    model.build((None, 28, 28))
    return model


def torch_twin(model_name):
    """The same Dense stack in PyTorch (ReLU between layers), read off the Keras
    model's kernels; it ends in logits, since PyTorch's cross_entropy applies the
    softmax."""
    import torch

    layers = [torch.nn.Flatten()]
    for kernel in (w for w in build(model_name).trainable_weights if len(w.shape) == 2):
        layers += [torch.nn.Linear(*kernel.shape), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])
