"""Model parallelism: one model's layers (a pipeline) or one layer's weights (tensor
parallelism) split over the devices of one host, from plain arguments; this module
holds the placement both use, and the pipeline.

    devices = model_parallel.devices(2)                       # 2 GPUs, or the CPU split in 2
    pipeline = model_parallel.Pipeline(model, devices, num_microbatches=4)
    outputs = pipeline(model, x, training=True)               # the model's own outputs

Tensor parallelism (`TensorParallel`) is in `strategies/tensor_parallel.py`.

Why explicit placement: on the TensorFlow backend `keras.distribution.ModelParallel`
does nothing (Keras' TF distribution_lib is a prototype), DTensor shards raw TF
variables but Keras 3 layers reject its inputs, and ParameterServerStrategy's
ShardedVariables break `tape.gradient` on Keras 3 variables (TF 2.21, Keras 3.15).
`tf.device` placement is TensorFlow's own and exact: a variable created or moved
under a device scope stays there, the optimizer creates its slots beside it, and
running each stage's (or shard's) call under the same scope keeps the compute
there, with TensorFlow copying activations between devices.
"""

import math

import keras
import tensorflow as tf

from models import _keras_compat
from strategies import MAX_CPU_DEVICES, configure_cpu_devices

BALANCES = ("flops", "params")


def devices(count, num_cpu_devices=None):
    """The `count` devices a model is split over: the first `count` GPUs when there
    are GPUs, else `count` logical CPU devices (the host CPU is split into that
    many, which must happen before TensorFlow starts; `num_cpu_devices`, when the
    user set it, is the split to use). Raises `ValueError` when there are fewer."""
    # Listing physical devices does not start TensorFlow; the CPU may still be split.
    if tf.config.list_physical_devices("GPU"):
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if count > len(gpus):
            raise ValueError(
                f"{count} devices are needed and only {len(gpus)} GPU(s) are visible; "
                f"pass {len(gpus)} or fewer"
            )
        return gpus[:count]
    if num_cpu_devices is not None and count > num_cpu_devices:
        raise ValueError(
            f"{count} devices are needed and num_cpu_devices={num_cpu_devices} "
            f"makes {num_cpu_devices}; pass num_cpu_devices={count}, or leave it out "
            "and the CPU is split as needed"
        )
    if count > MAX_CPU_DEVICES:
        raise ValueError(
            f"{count} devices are needed and the CPU splits into at most "
            f"{MAX_CPU_DEVICES}; pass {MAX_CPU_DEVICES} or fewer"
        )
    configure_cpu_devices(max(count, num_cpu_devices or 1))
    return [d.name for d in tf.config.list_logical_devices("CPU")][:count]


def layer_stack(model):
    """The layers `model` calls one after another: a `keras.Sequential`'s layers, or
    what a model's `layer_stack()` returns (`models.BigModel` has one)."""
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    if callable(getattr(model, "layer_stack", None)):
        return list(model.layer_stack())
    raise ValueError(
        f"model parallelism splits a stack of layers, and {model.name} "
        f"({type(model).__name__}) is neither a keras.Sequential nor has layer_stack()"
    )


def layer_costs(stack, input_shape, balance="flops"):
    """Each layer's cost, as `balance` says: its parameters, or the multiply-adds
    (x2) of one example's forward pass. Dense and Conv layers are counted from their
    kernels and output shapes; other layers with weights as 2 x parameters, and
    layers without weights (Flatten, Dropout, pooling) as 0."""
    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r}; choose one of: {', '.join(BALANCES)}")
    costs, shape = [], (None,) + tuple(input_shape)
    for layer in stack:
        shape = layer.compute_output_shape(shape)
        params = layer.count_params() if layer.weights else 0
        kernel = getattr(layer, "kernel", None)
        if balance == "params" or not params:
            costs.append(params)
        elif (
            isinstance(
                layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
            )
            and kernel is not None
        ):
            # One multiply-add per kernel element at every output position.
            positions = math.prod(shape[1:-1]) if len(shape) > 2 else 1
            costs.append(2 * math.prod(kernel.shape) * positions)
        else:
            costs.append(2 * params)
    return costs


def partition(costs, num_stages):
    """Splits layers of `costs` into `num_stages` contiguous stages so that the
    costliest stage costs as little as possible, each stage holding a layer with a
    cost; returns the stages' first indices. Raises `ValueError` when there are
    fewer layers with a cost than stages."""
    weighted = [i for i, cost in enumerate(costs) if cost]
    if num_stages > len(weighted):
        raise ValueError(
            f"{num_stages} stages are more than the {len(weighted)} layers with weights "
            f"the model has; pass at most {len(weighted)}"
        )
    # Cuts go just before a weighted layer (not the first), so every stage has one;
    # a layer without weights goes with the weighted layer before it.
    cuts = weighted[1:]
    n = len(weighted)
    prefix = [0]
    for i in weighted:
        prefix.append(prefix[-1] + costs[i])
    # best[k][j]: the least max-stage cost of weighted layers [0, j) in k stages.
    best = [[math.inf] * (n + 1) for _ in range(num_stages + 1)]
    choice = [[0] * (n + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0
    for k in range(1, num_stages + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                cost = max(best[k - 1][i], prefix[j] - prefix[i])
                if cost < best[k][j]:
                    best[k][j], choice[k][j] = cost, i
    starts, j = [], n
    for k in range(num_stages, 0, -1):
        j = choice[k][j]
        starts.append(0 if j == 0 else cuts[j - 1])
    return starts[::-1]


def place(layer, device):
    """Moves `layer`'s variables to `device`.

    Keras 3 has no public way to move a variable, so each Keras variable is given a
    new `tf.Variable` on `device` holding its value (`_keras_compat.move_variable`).
    The Keras variable keeps its identity and path: checkpoints, `model.keras` and the
    optimizer (which creates its slots beside the variable's value) see the same
    variables as before."""
    for variable in layer.variables:
        _keras_compat.move_variable(variable, device)


def device_of(variable):
    """A variable's device, in full: "/job:localhost/replica:0/task:0/device:CPU:1" (a
    Keras variable's is that of the `tf.Variable` holding its value)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).device


def compiled(function, jit_compile):
    """`function`, XLA-compiled when `jit_compile` (on the device its caller places it)."""
    return tf.function(function, jit_compile=True) if jit_compile else function


class Pipeline:
    """The model's layer stack in contiguous stages, one per device, run GPipe-style.

    Each stage's variables (and so the optimizer's slots for them) are moved to its
    device when the pipeline is made. A call splits the batch into
    `num_microbatches` and sends each through the stages; all of it is in one
    graph, so TensorFlow's executor runs stage s of micro-batch m+1 while stage
    s+1 runs micro-batch m, and the backward pass the same way in reverse. The loss
    is over the concatenated outputs, so the gradients of the micro-batches add up
    to the whole batch's: one optimizer update per batch.

    Args:
      model: a built Keras model made of a layer stack (`layer_stack`).
      devices: one device name per stage.
      num_microbatches: micro-batches per batch; it must divide the batch.
      balance: what the stages balance, "flops" (time) or "params" (memory).
      input_shape: one example's shape; default: the model's own.
      jit_compile: XLA-compile each stage on its device (with its gradient).
    """

    def __init__(
        self, model, devices, num_microbatches=1, balance="flops", input_shape=None, jit_compile=True
    ):
        if num_microbatches < 1:
            raise ValueError(f"num_microbatches must be at least 1. Received: {num_microbatches}")
        stack = layer_stack(model)
        input_shape = input_shape or model.input_shape[1:]
        self.costs = layer_costs(stack, input_shape, balance)
        starts = partition(self.costs, len(devices)) + [len(stack)]
        self.model = model
        self.stages = [(stack[a:b], device) for a, b, device in zip(starts, starts[1:], devices)]
        self.num_microbatches = num_microbatches
        placed, shares = set(), []  # A variable two stages use (a tied embedding) stays with the first.
        for layers, device in self.stages:
            variables = [v for layer in layers for v in layer.variables]
            shares.append(any(id(v) in placed for v in variables))
            for variable in variables:
                if id(variable) not in placed:
                    _keras_compat.move_variable(variable, device)
                    placed.add(id(variable))
        # XLA cannot read a variable on another device: a stage that shares one runs as a graph.
        self._calls = [
            compiled(self._stage_function(layers), jit_compile and not shared)
            for (layers, _), shared in zip(self.stages, shares)
        ]

    @staticmethod
    def _stage_function(layers):
        def stage(x, training):
            for layer in layers:
                x = layer(x, training=training)
            return x

        return stage

    @property
    def forward(self):
        """The step's forward pass (`step.Objective(forward=...)`)."""
        return self

    def gather(self):
        """The model to save: the same one (its variables are whole, just placed)."""
        return self.model

    def __call__(self, model, x, training=False):
        """`model(x)`, computed by the stages (the `step.Objective` forward pass)."""
        del model  # Its layers are the stages'.
        outputs = []
        for micro_batch in tf.split(x, self.num_microbatches) if self.num_microbatches > 1 else [x]:
            for call, (_, device) in zip(self._calls, self.stages):
                with tf.device(device):
                    micro_batch = call(micro_batch, training)
            outputs.append(micro_batch)
        with tf.device(self.stages[-1][1]):
            return tf.concat(outputs, 0) if len(outputs) > 1 else outputs[0]

    def describe(self):
        """One line per stage: its device, layers and cost."""
        lines, index = [], 0
        for layers, device in self.stages:
            cost = sum(self.costs[index : index + len(layers)])
            index += len(layers)
            lines.append(f"{short_name(device)}: {', '.join(layer.name for layer in layers)} ({cost:,})")
        return lines


def short_name(device):
    """ "/job:localhost/replica:0/task:0/device:CPU:1" -> "CPU:1"."""
    return device.rsplit("device:", 1)[-1]


def memory_by_device(model, optimizer):
    """Bytes of parameters and of optimizer state on each device, as
    `{"CPU:0": {"parameter_bytes": ..., "optimizer_bytes": ...}}`. A mirrored
    variable counts on every device that holds a copy. A GPU also reports its
    allocator's peak (`tf.config.experimental.get_memory_info`): activations and
    workspace included."""
    usage = {}
    for key, variables in (("parameter_bytes", model.weights), ("optimizer_bytes", optimizer.variables)):
        for variable in variables:
            value = variable.value
            for component in getattr(value, "values", None) or (value,):
                entry = usage.setdefault(
                    short_name(device_of(component)), {"parameter_bytes": 0, "optimizer_bytes": 0}
                )
                entry[key] += math.prod(component.shape) * component.dtype.size
    for device, entry in usage.items():
        if device.startswith("GPU"):
            entry["allocator_peak_bytes"] = tf.config.experimental.get_memory_info(device)["peak"]
    return dict(sorted(usage.items()))
