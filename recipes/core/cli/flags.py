"""The absl flags every recipe shares, defined once here, with the defaults of
`TrainConfig`, and how --help groups them.

Library code never reads flags: `strategy_from_flags` and `train_config` turn
them into plain arguments, and `data_from_flags` and `run_data`
(recipes/core/cli/data_flags.py) into the data.
"""

import dataclasses
import math
import os
import sys

import tensorflow as tf
from absl import flags

import strategies
from recipes.core.cli.data_flags import data_from_flags, no_data_flags, run_data  # noqa: F401 - for recipes.
from recipes.core.errors import RecipeError
from recipes.core.training import config as config_lib
from strategies import model_parallel

DEFAULTS = {
    field.name: field.default
    for field in dataclasses.fields(config_lib.TrainConfig)
    if field.name not in ("model_dir", "recipe_settings")
}

# Where to run.
flags.DEFINE_enum("strategy", "auto", strategies.NAMES, "Distribution strategy.")
flags.DEFINE_integer("num_gpus", -1, "GPUs to use: -1 all visible, 0 none.")
flags.DEFINE_integer(
    "num_cpu_devices",
    1,
    "Split the host CPU into N logical devices, so that --strategy=mirrored "
    "runs N real replicas on a CPU-only machine.",
)
flags.DEFINE_string(
    "worker_hosts",
    None,
    "--strategy=multi_worker: every worker's host:port, comma-separated, the "
    "same list and order on every worker; used when TF_CONFIG is not set.",
)
flags.DEFINE_integer("task_index", -1, "--strategy=multi_worker: this worker's index in --worker_hosts.")
flags.DEFINE_integer(
    "cluster_timeout_seconds",
    strategies.CLUSTER_TIMEOUT_SECONDS,
    "--strategy=multi_worker: how long to wait for every worker to join; the run says "
    f"whom it waits for every {strategies.CLUSTER_PROGRESS_SECONDS} s and then exits with an error.",
)
flags.DEFINE_string(
    "tpu",
    None,
    "--strategy=tpu: local (a TPU VM or Colab TPU runtime), a Cloud TPU name, or "
    "grpc://host:port. Default: $TPU_NAME if set, else local.",
)
flags.DEFINE_enum(
    "all_reduce_alg",
    "auto",
    strategies.ALL_REDUCE_ALGS,
    "How replicas sum gradients: mirrored takes nccl (GPUs) or hierarchical_copy, "
    "multi_worker takes ring or nccl (GPUs); auto lets TensorFlow choose.",
)

# Input and output.
flags.DEFINE_string(
    "model_dir",
    None,
    "Where the run writes checkpoints/, logs/, model.keras, saved_model/, "
    "metrics.json and curves.png; a rerun with the same directory resumes. "
    "Default: runs/<recipe>.",
)
flags.DEFINE_string(
    "data",
    "sample",
    "The training data: sample (the recipe's bundled real data); a folder of class "
    "subfolders of images, or of train/ test/ [validation/] ones; a folder written by "
    "recipes.prepare, or TFRecord files by glob; a .csv file (with --label_column); a "
    "folder of x.npy and y.npy, or an .npz; or any tensorflow-datasets name (with "
    "--data_dir). docs/data.md has every form.",
)
flags.DEFINE_string(
    "test_data",
    None,
    "The test split, in any --data form, where --data has none of its own "
    "(default: 10% of --data, carved out the same way every run).",
)
flags.DEFINE_string(
    "validation_data",
    None,
    "The validation split (early stopping), where --data has none of its own "
    "(default: 10% of the training data, carved out when needed).",
)
flags.DEFINE_string(
    "label_column",
    None,
    "The label column of a CSV file, or the label feature of TFRecords without "
    "a schema.json (default there: label or y).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "tensorflow-datasets' data directory (local path or gs://bucket/path), for a "
    "--data that names a tensorflow-datasets dataset. Default: ~/tensorflow_datasets.",
)
flags.DEFINE_string(
    "data_service",
    DEFAULTS["data_service"],
    "grpc://host:port of a tf.data service dispatcher: the input pipeline runs on its "
    "workers, each record once per epoch (distributed_epoch). docs/data.md says how it resumes.",
)
flags.DEFINE_string("data_source", None, "Replaced by --data (kept to say so).")

# Training.
flags.DEFINE_integer("epochs", DEFAULTS["epochs"], "Passes over the training set.")
flags.DEFINE_integer(
    "train_steps", DEFAULTS["train_steps"], "Optimizer steps in all; overrides --epochs when > 0."
)
flags.DEFINE_integer(
    "batch_size", DEFAULTS["batch_size"], "Global batch size, split evenly over the replicas."
)
flags.DEFINE_float("learning_rate", DEFAULTS["learning_rate"], "Learning rate.")
flags.DEFINE_integer(
    "steps_per_loop",
    DEFAULTS["steps_per_loop"],
    "Training steps per tf.function call; more steps keep the host out of the way. "
    f"Default: {strategies.STEPS_PER_LOOP['tpu']} on a TPU, else {strategies.DEFAULT_STEPS_PER_LOOP}.",
)
flags.DEFINE_bool(
    "jit_compile", DEFAULTS["jit_compile"], "XLA-compile the training step (--nojit_compile: off)."
)
flags.DEFINE_enum(
    "mixed_precision",
    DEFAULTS["mixed_precision"],
    config_lib.PRECISIONS,
    "Keras mixed-precision policy; variables and losses stay float32. auto: mixed_bfloat16 "
    "on TPUs and Ampere-or-newer GPUs, where bfloat16 is native; mixed_float16 (with dynamic "
    "loss scaling) on compute-capability 7.x GPUs such as the T4 and V100; none elsewhere.",
)
flags.DEFINE_bool(
    "profile",
    DEFAULTS["profile"],
    "Write a TensorBoard profiler trace of one training loop (the second, after "
    "compilation) to <model_dir>/logs; view it in TensorBoard's Profile tab.",
)
flags.DEFINE_integer(
    "seed", DEFAULTS["seed"], "Seed for weights, shuffling and dropout; the same seed gives the same run."
)
flags.DEFINE_integer(
    "checkpoint_steps",
    DEFAULTS["checkpoint_steps"],
    "Save a checkpoint every N steps; 0: at the end of every epoch.",
)

# Optimizer and learning rate.
flags.DEFINE_enum("optimizer", DEFAULTS["optimizer"], config_lib.OPTIMIZERS, "Keras optimizer.")
flags.DEFINE_float("momentum", DEFAULTS["momentum"], "Momentum, for --optimizer=sgd or rmsprop.")
flags.DEFINE_enum(
    "lr_schedule",
    DEFAULTS["lr_schedule"],
    config_lib.SCHEDULES,
    "Learning rate over the steps: exponential: lr * decay_rate^(step/decay_steps); step: the "
    "same in whole drops every decay_steps; cosine: to 0 over decay_steps; linear: the "
    "articles' lr * (1 - decay_rate * step), floored at 0.",
)
flags.DEFINE_integer(
    "decay_steps",
    DEFAULTS["decay_steps"],
    "Steps over which the schedule decays (exponential, step, cosine).",
)
flags.DEFINE_float(
    "decay_rate",
    DEFAULTS["decay_rate"],
    "exponential/step: factor per decay_steps; linear: fraction lost per step.",
)
flags.DEFINE_integer(
    "warmup_steps",
    DEFAULTS["warmup_steps"],
    "Linear warm-up from 0 over this many steps, before the schedule.",
)
flags.DEFINE_float(
    "min_learning_rate",
    DEFAULTS["min_learning_rate"],
    "--lr_schedule=cosine: the learning rate it ends at (nanoGPT decays to a tenth).",
)
flags.DEFINE_float("beta_1", DEFAULTS["beta_1"], "Adam's and AdamW's first-moment decay.")
flags.DEFINE_float("beta_2", DEFAULTS["beta_2"], "Adam's and AdamW's second-moment decay (nanoGPT: 0.99).")
flags.DEFINE_float(
    "weight_decay",
    DEFAULTS["weight_decay"],
    "Decoupled weight decay (AdamW's; it skips biases, LayerNorms and embeddings). "
    "Default: the optimizer's own (AdamW: 0.004, others: none).",
)
flags.DEFINE_float("clipnorm", DEFAULTS["clipnorm"], "Clip each variable's gradient to this L2 norm.")
flags.DEFINE_float(
    "global_clipnorm", DEFAULTS["global_clipnorm"], "Clip all gradients together to this global L2 norm."
)
flags.DEFINE_float(
    "clipvalue", DEFAULTS["clipvalue"], "Clip every gradient element to [-clipvalue, clipvalue]."
)
flags.DEFINE_integer(
    "accum_steps",
    DEFAULTS["accum_steps"],
    "Gradient accumulation: split each replica's batch into this many micro-batches "
    "and sum their gradients into one update (same result, less memory).",
)

# Model parallelism: one model split over the devices of this host.
flags.DEFINE_integer(
    "pipeline_stages",
    DEFAULTS["pipeline_stages"],
    "Split the model's layers into N stages, one per device (the first N GPUs, or the CPU split "
    "into N), run GPipe-style; the stages balance --pipeline_balance.",
)
flags.DEFINE_integer(
    "num_microbatches",
    DEFAULTS["num_microbatches"],
    "With --pipeline_stages: micro-batches per batch, so the stages work at once.",
)
flags.DEFINE_enum(
    "pipeline_balance",
    DEFAULTS["pipeline_balance"],
    model_parallel.BALANCES,
    "What the pipeline stages balance: flops (time) or params (memory).",
)
flags.DEFINE_integer(
    "tensor_parallel",
    DEFAULTS["tensor_parallel"],
    "Split each Dense -> Dense pair Megatron-style over N devices (the first N GPUs, or the "
    "CPU split into N): the first by columns, the second by rows.",
)

# Against overfitting.
flags.DEFINE_float("l2", DEFAULTS["l2"], "L2 penalty on the models' kernels.")
flags.DEFINE_float(
    "dropout_rate", DEFAULTS["dropout_rate"], "Dropout after each hidden layer while training."
)
flags.DEFINE_integer(
    "early_stopping_patience",
    DEFAULTS["early_stopping_patience"],
    "Stop after this many epochs without a better validation loss, and keep the best "
    "epoch's weights; 0: off.",
)

FLAGS = flags.FLAGS

# --help's topics: the first flag of each above, and the title its group takes.
HELP_TOPICS = {
    "strategy": "Where to run",
    "model_dir": "Input and output",
    "epochs": "Training",
    "optimizer": "Optimizer and learning rate",
    "pipeline_stages": "Model parallelism",
    "l2": "Against overfitting",
}

# The model sizes of the transformer recipes: one set of flags that mean the same in
# each (absl defines a flag once per process), with each recipe's own defaults.
TRANSFORMER_DEFAULTS = {
    "bert": dict(num_layers=2, num_heads=4, hidden_size=128, max_length=64),
    "gpt": dict(num_layers=4, num_heads=4, hidden_size=128, max_length=64),
}
_TRANSFORMER_HELP = {
    "num_layers": "Transformer blocks.",
    "num_heads": "Attention heads per block.",
    "hidden_size": "Width of every token's representation.",
    "max_length": "Tokens per sequence: the context ([CLS] included for bert).",
}


def define_transformer_flags() -> None:
    """--num_layers, --num_heads, --hidden_size and --max_length, once."""
    for name, text in _TRANSFORMER_HELP.items():
        if name not in FLAGS:
            defaults = ", ".join(f"{recipe} {sizes[name]}" for recipe, sizes in TRANSFORMER_DEFAULTS.items())
            flags.DEFINE_integer(name, None, f"{text} Default: the recipe's ({defaults}).")


def transformer_sizes(recipe: str) -> dict[str, int]:
    """The sizes the transformer flags give `recipe`: the flag where given, else its default."""
    return {
        name: FLAGS[name].value if FLAGS[name].value is not None else default
        for name, default in TRANSFORMER_DEFAULTS[recipe].items()
    }


# --temperature means a softmax temperature to both commands that take it; one definition,
# so that both can be imported into one process (the tests, a notebook).
TEMPERATURE_DEFAULTS = {"distill": 3.0, "generate": 1.0}


def define_temperature() -> None:
    """--temperature, once: the distillation's softening, generation's sampling."""
    if "temperature" not in FLAGS:
        flags.DEFINE_float(
            "temperature",
            None,
            "Softmax temperature: distill's softening of the teacher's "
            "term (0 to 100), generate's sampling (0: greedy, the most likely each time). "
            "Default: "
            + ", ".join(f"{name} {value:g}" for name, value in TEMPERATURE_DEFAULTS.items())
            + ".",
        )
        flags.register_validator(
            "temperature", lambda value: value is None or math.isfinite(value), "--temperature must be finite"
        )


def temperature(command: str) -> float:
    """--temperature where given, else `command`'s default."""
    return TEMPERATURE_DEFAULTS[command] if FLAGS.temperature is None else FLAGS.temperature


def help_groups(recipe_module: str) -> list[tuple[str, list[flags.Flag]]]:
    """--help's groups, `[(title, [flag])]` in the order they are defined: the recipe's own
    flags (those `recipe_module` defines, and those it asked of this module: the
    transformer sizes, --temperature), titled `RECIPE's own flags`, then the shared ones
    by topic. The first group may be empty; --data_source, kept only to say what
    replaced it, is left out."""
    asked = set(_TRANSFORMER_HELP) | {"temperature"}
    here = [flag for flag in FLAGS.get_flags_for_module(__name__) if flag.name != "data_source"]
    groups = [
        (
            "RECIPE's own flags",
            FLAGS.get_flags_for_module(recipe_module) + [flag for flag in here if flag.name in asked],
        )
    ]
    for flag in here:
        if flag.name in HELP_TOPICS:
            groups.append((f"Shared flags: {HELP_TOPICS[flag.name].lower()}", []))
        if flag.name not in asked:
            groups[-1][1].append(flag)
    return groups


def strategy_from_flags() -> tf.distribute.Strategy:
    """The strategy the flags ask for, or a one-line `RecipeError`; says what
    `--strategy=auto` chose and why."""
    try:
        if max(FLAGS.pipeline_stages, FLAGS.tensor_parallel) > 1:
            return _model_parallel_strategy()
        cluster = strategies.ClusterOptions(
            worker_hosts=FLAGS.worker_hosts,
            task_index=FLAGS.task_index,
            cluster_timeout_seconds=FLAGS.cluster_timeout_seconds,
        )
        return strategies.get_strategy(
            FLAGS.strategy,
            num_gpus=FLAGS.num_gpus,
            num_cpu_devices=FLAGS.num_cpu_devices,
            all_reduce_alg=FLAGS.all_reduce_alg,
            tpu=FLAGS.tpu,
            cluster=cluster,
            on_auto_choice=lambda name, why: print(f"--strategy=auto chose {name}: {why}."),
        )
    except ValueError as e:
        raise RecipeError(e) from None


def _model_parallel_strategy():
    """The default strategy, with the devices a split model needs (checked, and the
    CPU split into them, before TensorFlow starts)."""
    if FLAGS.strategy not in ("auto", "default"):
        raise ValueError(
            f"--pipeline_stages and --tensor_parallel split one model over this host's devices, "
            f"under --strategy=default; --strategy={FLAGS.strategy} with them is not supported yet "
            "(README: Model parallelism)"
        )
    flag = "pipeline_stages" if FLAGS.pipeline_stages > 1 else "tensor_parallel"
    try:
        model_parallel.devices(
            FLAGS[flag].value, FLAGS.num_cpu_devices if FLAGS["num_cpu_devices"].present else None
        )
    except ValueError as e:
        raise ValueError(f"--{flag}={FLAGS[flag].value}: {e}") from None
    return strategies.get_strategy("default")


def train_config(recipe: str, **recipe_defaults) -> config_lib.TrainConfig:
    """A `TrainConfig` from the shared flags. `recipe` names the default model_dir;
    `recipe_defaults` (say, `epochs=30`) replace the shared defaults of the flags
    the command line leaves unset."""
    values = {
        name: (
            recipe_defaults[name]
            if name in recipe_defaults and not FLAGS[name].present
            else FLAGS[name].value
        )
        for name in DEFAULTS
    }
    unknown = set(recipe_defaults) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"not TrainConfig fields: {sorted(unknown)}")
    # The flags the running recipe defines itself (absl files a program's flags under sys.argv[0]).
    own = {flag.name: flag.value for flag in FLAGS.get_flags_for_module(sys.argv[0])}
    return config_lib.TrainConfig(
        model_dir=FLAGS.model_dir or os.path.join("runs", recipe), recipe_settings=own, **values
    )
