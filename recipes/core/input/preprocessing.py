"""What is done to a raw batch before the model sees it: `Preprocessing`, which the
model runs first (so the exported model takes the raw input too), and `random_shift`,
an augmentation the training pipeline runs on each batch.

    preprocess = dataset.default_preprocessing()   # a `data.Data`'s: scale, standardize or none
    options = data.PipelineOptions(augment=data.random_shift(2))
    train_ds = data.train_dataset(strategy, dataset.train, 64, preprocess=preprocess, seed=0,
                                  options=options)
"""

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf


def random_shift(max_pixels: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """An `augment` for `train_dataset` (`PipelineOptions.augment`): every image moved
    by a whole number of pixels, at most `max_pixels` each way, and zero-filled; images
    [N, H, W] or [N, H, W, C]."""

    def augment(images, seed):
        grey = images.shape.rank == 3
        batch = images[..., None] if grey else images
        count = tf.shape(batch)[0]
        shift = tf.cast(
            tf.random.stateless_uniform([count, 2], seed, -max_pixels, max_pixels + 1, dtype=tf.int32),
            tf.float32,
        )
        ones, zeros = tf.ones([count]), tf.zeros([count])
        # Each row maps an output pixel (x, y) to the input pixel (x + dx, y + dy).
        transforms = tf.stack([ones, zeros, shift[:, 0], zeros, ones, shift[:, 1], zeros, zeros], axis=1)
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=batch,
            transforms=transforms,
            output_shape=tf.shape(batch)[1:3],
            fill_value=tf.constant(0, batch.dtype),
            interpolation="NEAREST",
            fill_mode="CONSTANT",
        )
        return moved[..., 0] if grey else moved

    return augment


def scale_pixels(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the model does to a raw batch first, inside the exported model too:
    `scale_pixels` (uint8 / 255), `standardize` (a Keras Normalization layer with the
    training split's mean and variance) or `none` (as it is: token ids, say)."""

    kind: str
    mean: tuple | None = None
    variance: tuple | None = None
    add_channel: bool = False  # Grey images [N, H, W] -> [N, H, W, 1], for convolutions.

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if self.kind == "scale_pixels":
            x = scale_pixels(x)
        elif self.kind == "standardize":
            x = keras.layers.Normalization(mean=self.mean, variance=self.variance)(tf.cast(x, tf.float32))
        return x[..., None] if self.add_channel else x

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "Preprocessing":
        if not isinstance(value, dict) or value.get("kind") not in ("scale_pixels", "standardize", "none"):
            raise ValueError(f"not a recorded preprocessing: {value!r}")
        return cls(
            value["kind"],
            *(tuple(value[k]) if value.get(k) else None for k in ("mean", "variance")),
            add_channel=bool(value.get("add_channel")),
        )
