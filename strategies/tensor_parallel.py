"""Tensor parallelism: each Dense -> [Dropout] -> Dense pair of a layer stack, and each
transformer block's attention (by heads) and MLP, split Megatron-style over the
devices of one host.

    sharded = tensor_parallel.TensorParallel(model, devices)   # trains sharded.model
    plain = sharded.gather()                                   # the plain model, for saving

Placement is explicit `tf.device`, as for the pipeline (`strategies/model_parallel.py`
says why).
"""

import keras
import tensorflow as tf

from models import _keras_compat
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
                shape = (input_shape[-1], width)
                self.column_kernels.append(self._zeros(shape, f"column_kernel_{i}", self.regularizers[0]))
                if self.use_bias[0]:
                    self.column_biases.append(self._zeros((width,), f"column_bias_{i}"))
                shape = (width, self.units[1])
                self.row_kernels.append(self._zeros(shape, f"row_kernel_{i}", self.regularizers[1]))
        with tf.device(self.devices[0]):
            self.row_bias = self._zeros((self.units[1],), "row_bias") if self.use_bias[1] else None

    def _zeros(self, shape, name, regularizer=None):
        """A weight, zeros until `split` sets it."""
        return self.add_weight(shape, initializer="zeros", regularizer=regularizer, name=name)

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


def is_transformer_block(layer):
    """Whether `layer` is a pre-LayerNorm transformer block this module splits
    (`models.GPTBlock`): Keras `MultiHeadAttention` as `attention`, a Dense pair
    `intermediate` -> `mlp_output`, LayerNorms `attention_norm` and `mlp_norm`."""
    return isinstance(getattr(layer, "attention", None), keras.layers.MultiHeadAttention) and all(
        hasattr(layer, name)
        for name in ("attention_norm", "mlp_norm", "intermediate", "mlp_output", "dropout")
    )


class MegatronBlock(keras.layers.Layer):
    """A pre-LayerNorm transformer block split Megatron-style over `devices`.

    Device i holds the query, key and value projections of heads [i*h/N, (i+1)*h/N)
    (columns of each) and the same rows of the output projection, and computes those
    heads' attention; then columns [i*w/N, (i+1)*w/N) of the MLP's first Dense and
    the same rows of its second. Each half of the block sums its partial outputs on
    the first device, which holds the LayerNorms, the output biases and the residual
    stream. The block sends its normalized input to every device and gets a partial
    sum back from each, twice; nothing else crosses devices.
    """

    def __init__(self, block, devices, jit_compile=True, **kwargs):
        super().__init__(dtype=block.dtype_policy, **kwargs)
        self.devices = list(devices)
        attention = block.attention
        self.num_heads, self.head_size = attention.num_heads, attention.key_dim
        self.intermediate_size, self.hidden_size = block.intermediate.units, block.mlp_output.units
        self.activation = block.intermediate.activation
        for layer in (block.attention_norm, block.mlp_norm):
            place(layer, self.devices[0])
        self.attention_norm, self.mlp_norm, self.dropout = block.attention_norm, block.mlp_norm, block.dropout
        self.attention_dropout = attention.dropout
        self.attention_dropouts = []
        for device in self.devices:
            with tf.device(device):
                self.attention_dropouts.append(keras.layers.Dropout(attention.dropout))
        self._attend = compiled(self._heads_output, jit_compile)
        self._mlp = compiled(self._mlp_output, jit_compile)

    def build(self, input_shape):
        n, hidden = len(self.devices), input_shape[-1]
        heads, width = self.num_heads // n, self.intermediate_size // n
        self.shards = []
        projection, bias = (hidden, heads, self.head_size), (heads, self.head_size)
        shapes = {}  # In this order: query_kernel, query_bias, key_kernel, ..., mlp_kernel.
        for name in ("query", "key", "value"):
            shapes[f"{name}_kernel"], shapes[f"{name}_bias"] = projection, bias
        shapes["output_kernel"] = (heads, self.head_size, self.hidden_size)
        shapes["intermediate_kernel"], shapes["intermediate_bias"] = (hidden, width), (width,)
        shapes["mlp_kernel"] = (width, self.hidden_size)
        for i, device in enumerate(self.devices):
            with tf.device(device):
                self.shards.append(
                    {
                        name: self.add_weight(shape, initializer="zeros", name=f"{name}_{i}")
                        for name, shape in shapes.items()
                    }
                )
        with tf.device(self.devices[0]):
            self.output_bias = self.add_weight((self.hidden_size,), initializer="zeros", name="output_bias")
            self.mlp_bias = self.add_weight((self.hidden_size,), initializer="zeros", name="mlp_bias")
        self.built = True

    def _heads_output(self, x, i, training):
        ops, shard = keras.ops, self.shards[i]
        q, k, v = (
            ops.einsum("btd,dnh->btnh", x, shard[f"{name}_kernel"]) + shard[f"{name}_bias"]
            for name in ("query", "key", "value")
        )
        positions = ops.arange(ops.shape(x)[1], dtype="int32")
        causal = (positions[:, None] >= positions[None, :])[None, None]
        if self.attention_dropout:  # As Keras' attention with dropout: the weights, explicitly.
            scores = ops.einsum("bsnh,btnh->bnts", k, q * ops.cast(self.head_size**-0.5, q.dtype))
            weights = ops.softmax(ops.where(causal, scores, ops.cast(-1e9, scores.dtype)), axis=-1)
            weights = self.attention_dropouts[i](weights, training=training)
            attended = ops.einsum("bnts,bsnh->btnh", weights, v)
        else:
            attended = ops.dot_product_attention(q, k, v, mask=causal, scale=self.head_size**-0.5)
        return ops.einsum("btnh,nhd->btd", attended, shard["output_kernel"])

    def _mlp_output(self, x, i, training):
        shard = self.shards[i]
        hidden = keras.ops.matmul(x, shard["intermediate_kernel"]) + shard["intermediate_bias"]
        hidden = self.activation(hidden)
        return keras.ops.matmul(hidden, shard["mlp_kernel"])

    def _sum(self, function, x, bias, training):
        partials = []
        for i, device in enumerate(self.devices):
            with tf.device(device):
                partials.append(function(x, i, training))
        with tf.device(self.devices[0]):
            return self.dropout(tf.add_n(partials) + bias, training=training)

    def call(self, x, training=False):
        with tf.device(self.devices[0]):
            x = x + self._sum(self._attend, self.attention_norm(x), self.output_bias, training)
            return x + self._sum(self._mlp, self.mlp_norm(x), self.mlp_bias, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    @staticmethod
    def _parts(block):
        """The whole block's split weights: {name: (variable, axis it splits on)}."""
        projections = _keras_compat.attention_projections(block.attention)
        parts = {
            "output_kernel": (projections.output.kernel, 0),
            "intermediate_kernel": (block.intermediate.kernel, 1),
            "intermediate_bias": (block.intermediate.bias, 0),
            "mlp_kernel": (block.mlp_output.kernel, 0),
        }
        for name in ("query", "key", "value"):
            dense = getattr(projections, name)
            parts[f"{name}_kernel"], parts[f"{name}_bias"] = (dense.kernel, 1), (dense.bias, 0)
        return parts, {"output_bias": projections.output.bias, "mlp_bias": block.mlp_output.bias}

    def split(self, block):
        """Sets the shards from the whole block's weights."""
        parts, whole = self._parts(block)
        for name, (variable, axis) in parts.items():
            for shard, value in zip(self.shards, tf.split(variable.value, len(self.devices), axis=axis)):
                shard[name].assign(value)
        for name, variable in whole.items():
            getattr(self, name).assign(variable.value)

    def copy_to(self, block):
        """Sets a whole (plain) block's weights from the shards."""
        parts, whole = self._parts(block)
        for name, (variable, axis) in parts.items():
            variable.assign(tf.concat([shard[name].value for shard in self.shards], axis=axis))
        for name, variable in whole.items():
            variable.assign(getattr(self, name).value)
        for norm, ours in ((block.attention_norm, self.attention_norm), (block.mlp_norm, self.mlp_norm)):
            norm.set_weights(ours.get_weights())


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
        if (
            isinstance(layer, keras.layers.Dense)
            and j < len(stack)
            and isinstance(stack[j], keras.layers.Dense)
            and _is_elementwise(layer.activation)
        ):
            pairs.append((i, dropout, j))
            i = j + 1
        else:
            i += 1
    return pairs


def _check_shards_divide(stack, pairs, blocks, count):
    """Raises a ValueError unless `count` shards divide every pair's width and every
    block's heads and MLP width."""
    widths = [(stack[column].units, f"units of layer {stack[column].name}") for column, _, _ in pairs]
    for i in blocks:
        widths += [
            (stack[i].attention.num_heads, f"attention heads of {stack[i].name}"),
            (stack[i].intermediate.units, f"MLP units of {stack[i].name}"),
        ]
    for width, what in widths:
        if width % count:
            raise ValueError(f"{count} shards do not divide the {width} {what}; pass a divisor of {width}")


class TensorParallel:
    """A model whose Dense -> Dense pairs (`MegatronDense`) and transformer blocks
    (`MegatronBlock`) are split over `devices`.

    `model` (a built layer stack) is split once: `self.model` is a new
    `keras.Sequential` that reuses its other layers (on the first device) and
    replaces each pair or block by one holding its weights in shards. Train
    `self.model`; `gather()` puts the shards back together into a new plain model of
    `model`'s class and config, for saving. Drop `model` after this, so that only the
    shards hold the split weights.

    Args:
      model: a built Keras model made of a layer stack (`layer_stack`).
      devices: the devices to split over; their number must divide each pair's width
        and each block's heads and MLP width.
      input_shape: one example's shape; default: the model's own.
      jit_compile: XLA-compile each shard's part on its device.
      input_dtype: the input's dtype (int32 for token ids); default: the model's own,
        or float32.
    """

    def __init__(self, model, devices, input_shape=None, jit_compile=True, input_dtype=None):
        stack = layer_stack(model)
        self.pairs = megatron_pairs(stack)
        self.blocks = [i for i, layer in enumerate(stack) if is_transformer_block(layer)]
        if not self.pairs and not self.blocks:
            raise ValueError(f"{model.name} has no Dense -> Dense pair or transformer block to split")
        _check_shards_divide(stack, self.pairs, self.blocks, len(devices))
        self.input_shape = tuple(input_shape or model.input_shape[1:])
        self.config = keras.saving.serialize_keras_object(model)
        self.devices = list(devices)
        layers = self._sharded_stack(stack, jit_compile)
        dtype = model.inputs[0].dtype if isinstance(model, keras.Sequential) else (input_dtype or "float32")
        self.model = keras.Sequential(
            [keras.Input(self.input_shape, dtype=dtype), *layers], name=f"{model.name}_tensor_parallel"
        )
        for layer, (column, _, row) in zip(self._split_layers(MegatronDense), self.pairs):
            layer.split(stack[column].get_weights(), stack[row].get_weights())
        for layer, index in zip(self._split_layers(MegatronBlock), self.blocks):
            layer.split(stack[index])

    forward = None  # `self.model` is called as it is.

    def _sharded_stack(self, stack, jit_compile):
        """`stack` with each pair and block replaced by its sharded layer, and the other
        layers placed on the first device."""
        layers, i = [], 0
        by_column = {column: (dropout, row) for column, dropout, row in self.pairs}
        while i < len(stack):
            if i in by_column:
                dropout, row = by_column[i]
                name = f"{stack[i].name}_{stack[row].name}_sharded"
                layers.append(
                    MegatronDense(stack[i], stack[row], dropout, self.devices, jit_compile, name=name)
                )
                i = row + 1
                continue
            if i in self.blocks:
                name = f"{stack[i].name}_sharded"
                layers.append(MegatronBlock(stack[i], self.devices, jit_compile, name=name))
            else:
                place(stack[i], self.devices[0])  # Unsplit layers live on the first device.
                layers.append(stack[i])
            i += 1
        return layers

    def _split_layers(self, kind):
        return [layer for layer in self.model.layers if isinstance(layer, kind)]

    def gather(self):
        """A new plain model (the class and config of the one split) with the trained
        weights, its variables on the host CPU."""
        with tf.device("/CPU:0"):
            plain = keras.saving.deserialize_keras_object(self.config)
            if not plain.built:
                plain.build((None,) + self.input_shape)
        whole = {}  # Plain-stack index -> the weights gathered from the shards.
        for (column, _, row), layer in zip(self.pairs, self._split_layers(MegatronDense)):
            whole[column], whole[row] = layer.gathered()
        blocks = dict(zip(self.blocks, self._split_layers(MegatronBlock)))
        in_pairs = {i for column, _, row in self.pairs for i in range(column, row + 1)}
        others = iter(
            layer for layer in self.model.layers if not isinstance(layer, (MegatronDense, MegatronBlock))
        )
        for i, layer in enumerate(layer_stack(plain)):
            if i in whole:
                layer.set_weights(whole[i])
            elif i in blocks:
                blocks[i].copy_to(layer)
            elif i not in in_pairs:
                layer.set_weights(next(others).get_weights())
        return plain

    def describe(self):
        """One line per split pair or block."""
        return [
            f"{layer.name}: Dense({layer.units[0]}) split by columns, Dense({layer.units[1]}) by "
            f"rows, over {len(self.devices)} devices"
            for layer in self._split_layers(MegatronDense)
        ] + [
            f"{layer.name}: {layer.num_heads} heads and an MLP of {layer.intermediate_size} split "
            f"over {len(self.devices)} devices"
            for layer in self._split_layers(MegatronBlock)
        ]
