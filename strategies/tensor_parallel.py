"""Tensor parallelism: each Dense -> [Dropout] -> Dense pair of a layer stack split
Megatron-style over the devices of one host.

    sharded = tensor_parallel.TensorParallel(model, devices)   # trains sharded.model
    plain = sharded.gather()                                   # the plain model, for saving

Placement is explicit `tf.device`, as for the pipeline (`strategies/model_parallel.py`
says why).
"""
import keras
import tensorflow as tf

from strategies.model_parallel import compiled, layer_stack, place


def _is_elementwise(activation):
    return activation not in (keras.activations.softmax, keras.activations.log_softmax)


class MegatronDense(keras.layers.Layer):
    """A Dense -> [Dropout] -> Dense pair split Megatron-style over `devices`.

    The first layer is column-parallel: device i holds columns
    [i*w/N, (i+1)*w/N) of its kernel and bias, and computes its slice of the
    hidden activation (the activation is elementwise, so the slice needs nothing
    from the other devices). The second is row-parallel: device i holds the same
    rows of its kernel and multiplies its slice by them. The partial outputs are
    summed on the first device, which holds the second bias and applies the second
    activation. The pair moves its input to every device once and its output back
    once; nothing else crosses devices.
    """

    def __init__(self, column, row, dropout_rate, devices, jit_compile=True, **kwargs):
        super().__init__(dtype=column.dtype_policy, **kwargs)
        self.devices = list(devices)
        self.units = (column.units, row.units)
        self.activations = (column.activation, row.activation)
        self.use_bias = (column.use_bias, row.use_bias)
        self.regularizers = (column.kernel_regularizer, row.kernel_regularizer)
        self.dropouts = [None] * len(self.devices)
        if dropout_rate:
            for i, device in enumerate(self.devices):
                with tf.device(device):  # Its seed's state, too.
                    self.dropouts[i] = keras.layers.Dropout(dropout_rate, name=f"dropout_{i}")
        self._shard = compiled(self._shard_output, jit_compile)

    def build(self, input_shape):
        width = self.units[0] // len(self.devices)
        self.column_kernels, self.column_biases, self.row_kernels = [], [], []
        for i, device in enumerate(self.devices):
            with tf.device(device):
                self.column_kernels.append(self.add_weight(
                    (input_shape[-1], width), initializer="zeros", regularizer=self.regularizers[0],
                    name=f"column_kernel_{i}"))
                if self.use_bias[0]:
                    self.column_biases.append(self.add_weight((width,), initializer="zeros",
                                                              name=f"column_bias_{i}"))
                self.row_kernels.append(self.add_weight(
                    (width, self.units[1]), initializer="zeros", regularizer=self.regularizers[1],
                    name=f"row_kernel_{i}"))
        with tf.device(self.devices[0]):
            self.row_bias = (self.add_weight((self.units[1],), initializer="zeros", name="row_bias")
                             if self.use_bias[1] else None)

    def _shard_output(self, x, i, training):
        hidden = keras.ops.matmul(x, self.column_kernels[i])
        if self.use_bias[0]:
            hidden = hidden + self.column_biases[i]
        hidden = self.activations[0](hidden)
        if self.dropouts[i] is not None:
            hidden = self.dropouts[i](hidden, training=training)
        return keras.ops.matmul(hidden, self.row_kernels[i])

    def call(self, x, training=False):
        partials = []
        for i, device in enumerate(self.devices):
            with tf.device(device):
                partials.append(self._shard(x, i, training))
        with tf.device(self.devices[0]):
            y = tf.add_n(partials)
            if self.row_bias is not None:
                y = y + self.row_bias
            return self.activations[1](y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units[1],)

    def split(self, column_weights, row_weights):
        """Sets the shards from the whole pair's weights ([kernel, bias] each)."""
        n = len(self.devices)
        column_kernels = tf.split(column_weights[0], n, axis=1)
        row_kernels = tf.split(row_weights[0], n, axis=0)
        column_biases = tf.split(column_weights[1], n) if self.use_bias[0] else []
        for i in range(n):
            self.column_kernels[i].assign(column_kernels[i])
            self.row_kernels[i].assign(row_kernels[i])
            if column_biases:
                self.column_biases[i].assign(column_biases[i])
        if self.row_bias is not None:
            self.row_bias.assign(row_weights[1])

    def gathered(self):
        """The whole pair's weights, ([kernel, bias], [kernel, bias]), as NumPy arrays."""
        column = [tf.concat([k.value for k in self.column_kernels], axis=1).numpy()]
        if self.use_bias[0]:
            column.append(tf.concat([b.value for b in self.column_biases], axis=0).numpy())
        row = [tf.concat([k.value for k in self.row_kernels], axis=0).numpy()]
        if self.row_bias is not None:
            row.append(self.row_bias.numpy())
        return column, row


def megatron_pairs(stack):
    """The Dense -> [Dropout] -> Dense pairs of a layer stack that split Megatron-style,
    as (column index, dropout rate, row index): the first Dense's activation must be
    elementwise (not a softmax). Pairs do not overlap; they are taken from the input on."""
    pairs, i = [], 0
    while i < len(stack) - 1:
        layer, following = stack[i], stack[i + 1]
        dropout = 0.0
        j = i + 1
        if isinstance(following, keras.layers.Dropout):
            dropout, j = following.rate, i + 2
        if (isinstance(layer, keras.layers.Dense) and j < len(stack)
                and isinstance(stack[j], keras.layers.Dense) and _is_elementwise(layer.activation)):
            pairs.append((i, dropout, j))
            i = j + 1
        else:
            i += 1
    return pairs


class TensorParallel:
    """A model whose Dense -> Dense pairs are split over `devices` (`MegatronDense`).

    `model` (a built layer stack) is split once: `self.model` is a new
    `keras.Sequential` that reuses its other layers (on the first device) and
    replaces each pair by a `MegatronDense` holding the pair's weights in shards.
    Train `self.model`; `gather()` puts the shards back together into a new plain
    model of `model`'s class and config, for saving. Drop `model` after this, so
    that only the shards hold the pairs' weights.

    Args:
      model: a built Keras model made of a layer stack (`layer_stack`).
      devices: the devices to split over; their number must divide each pair's width.
      input_shape: one example's shape; default: the model's own.
      jit_compile: XLA-compile each shard's part on its device.
    """

    def __init__(self, model, devices, input_shape=None, jit_compile=True):
        stack = layer_stack(model)
        self.pairs = megatron_pairs(stack)
        if not self.pairs:
            raise ValueError(f"{model.name} has no Dense -> Dense pair to split")
        for column_index, _, row_index in self.pairs:
            width = stack[column_index].units
            if width % len(devices):
                raise ValueError(f"{len(devices)} shards do not divide the {width} units of layer "
                                 f"{stack[column_index].name}; pass a divisor of {width}")
        self.input_shape = tuple(input_shape or model.input_shape[1:])
        self.config = keras.saving.serialize_keras_object(model)
        self.devices = list(devices)
        layers, i = [], 0
        by_column = {column: (dropout, row) for column, dropout, row in self.pairs}
        while i < len(stack):
            if i in by_column:
                dropout, row = by_column[i]
                pair = MegatronDense(stack[i], stack[row], dropout, devices, jit_compile=jit_compile,
                                     name=f"{stack[i].name}_{stack[row].name}_sharded")
                layers.append(pair)
                i = row + 1
            else:
                place(stack[i], devices[0])  # Unsplit layers live on the first device.
                layers.append(stack[i])
                i += 1
        dtype = model.inputs[0].dtype if isinstance(model, keras.Sequential) else "float32"
        self.model = keras.Sequential([keras.Input(self.input_shape, dtype=dtype), *layers],
                                      name=f"{model.name}_tensor_parallel")
        for layer, (column, _, row) in zip(self._pair_layers(), self.pairs):
            layer.split(stack[column].get_weights(), stack[row].get_weights())

    forward = None  # `self.model` is called as it is.

    def _pair_layers(self):
        return [layer for layer in self.model.layers if isinstance(layer, MegatronDense)]

    def gather(self):
        """A new plain model (the class and config of the one split) with the trained
        weights, its variables on the host CPU."""
        with tf.device("/CPU:0"):
            plain = keras.saving.deserialize_keras_object(self.config)
            if not plain.built:
                plain.build((None,) + self.input_shape)
        whole = {}  # Plain-stack index -> the weights gathered from the shards.
        for (column, _, row), layer in zip(self.pairs, self._pair_layers()):
            whole[column], whole[row] = layer.gathered()
        in_pairs = {i for column, _, row in self.pairs for i in range(column, row + 1)}
        others = iter(layer for layer in self.model.layers if not isinstance(layer, MegatronDense))
        for i, layer in enumerate(layer_stack(plain)):
            if i in whole:
                layer.set_weights(whole[i])
            elif i not in in_pairs:
                layer.set_weights(next(others).get_weights())
        return plain

    def describe(self):
        """One line per split pair."""
        return [f"{layer.name}: Dense({layer.units[0]}) split by columns, Dense({layer.units[1]}) by "
                f"rows, over {len(self.devices)} devices" for layer in self._pair_layers()]
