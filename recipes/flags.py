"""The absl flags every recipe shares, defined once here.

Library code never reads flags: `strategy_from_flags` and `train_config` turn
them into plain arguments.
"""
import os

from absl import flags

import strategies
from recipes import data, optimization
from recipes.errors import RecipeError
from recipes.train import TrainConfig

# Where to run.
flags.DEFINE_enum("strategy", "auto", strategies.NAMES, "Distribution strategy.")
flags.DEFINE_integer("num_gpus", -1, "GPUs to use: -1 all visible, 0 none.")
flags.DEFINE_integer(
    "num_cpu_devices", 1,
    "Split the host CPU into N logical devices, so that --strategy=mirrored "
    "runs N real replicas on a CPU-only machine.")
flags.DEFINE_string(
    "worker_hosts", None,
    "--strategy=multi_worker: every worker's host:port, comma-separated, the "
    "same list and order on every worker; used when TF_CONFIG is not set.")
flags.DEFINE_integer("task_index", -1, "--strategy=multi_worker: this worker's index in --worker_hosts.")
flags.DEFINE_string(
    "tpu", None,
    "--strategy=tpu: local (a TPU VM or Colab TPU runtime), a Cloud TPU name, or "
    "grpc://host:port. Default: $TPU_NAME if set, else local.")
flags.DEFINE_enum(
    "all_reduce_alg", "auto", strategies.ALL_REDUCE_ALGS,
    "How replicas sum gradients: mirrored takes nccl (GPUs) or hierarchical_copy, "
    "multi_worker takes ring or nccl (GPUs); auto lets TensorFlow choose.")

# Input and output.
flags.DEFINE_string(
    "model_dir", None,
    "Where the run writes checkpoints/, logs/, model.keras, saved_model/ and "
    "metrics.json; a rerun with the same directory resumes. "
    "Default: runs/<recipe>.")
flags.DEFINE_string(
    "data_dir", None,
    "tensorflow-datasets data directory (local path or gs://bucket/path). "
    "Default: tensorflow-datasets' own (~/tensorflow_datasets).")
flags.DEFINE_enum(
    "data_source", "auto", data.SOURCES,
    "auto: tensorflow-datasets when the data is prepared or the network is up, "
    "else the embedded sample; tfds: tensorflow-datasets only; sample: the "
    "real data embedded in installed packages, no network.")

# Training.
flags.DEFINE_integer("epochs", 5, "Passes over the training set.")
flags.DEFINE_integer("train_steps", 0, "Optimizer steps in all; overrides --epochs when > 0.")
flags.DEFINE_integer("batch_size", 32, "Global batch size, split evenly over the replicas.")
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.")
flags.DEFINE_integer(
    "steps_per_loop", None,
    "Training steps per tf.function call; more steps keep the host out of the way. "
    f"Default: {strategies.STEPS_PER_LOOP['tpu']} on a TPU, else {strategies.DEFAULT_STEPS_PER_LOOP}.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training step (--nojit_compile: off).")
flags.DEFINE_enum(
    "mixed_precision", "auto", ["auto", "none", "mixed_bfloat16"],
    "Keras mixed-precision policy; variables and losses stay float32. auto: mixed_bfloat16 "
    "on TPUs and Ampere-or-newer GPUs, where bfloat16 is native; none elsewhere.")
flags.DEFINE_bool(
    "profile", False,
    "Write a TensorBoard profiler trace of one training loop (the second, after "
    "compilation) to <model_dir>/logs; view it in TensorBoard's Profile tab.")
flags.DEFINE_integer("seed", 0, "Seed for weights, shuffling and dropout; the same seed gives the same run.")
flags.DEFINE_integer(
    "checkpoint_steps", 0,
    "Save a checkpoint every N steps; 0: at the end of every epoch.")

# Optimizer and learning rate.
flags.DEFINE_enum("optimizer", "adam", optimization.OPTIMIZERS, "Keras optimizer.")
flags.DEFINE_float("momentum", 0.0, "Momentum, for --optimizer=sgd or rmsprop.")
flags.DEFINE_enum(
    "lr_schedule", "constant", optimization.SCHEDULES,
    "Learning rate over the steps: exponential: lr * decay_rate^(step/decay_steps); step: the "
    "same in whole drops every decay_steps; cosine: to 0 over decay_steps; linear: the "
    "articles' lr * (1 - decay_rate * step), floored at 0.")
flags.DEFINE_integer("decay_steps", 0, "Steps over which the schedule decays (exponential, step, cosine).")
flags.DEFINE_float("decay_rate", 0.0, "exponential/step: factor per decay_steps; linear: fraction lost per step.")
flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up from 0 over this many steps, before the schedule.")
flags.DEFINE_float("clipnorm", None, "Clip each variable's gradient to this L2 norm.")
flags.DEFINE_float("global_clipnorm", None, "Clip all gradients together to this global L2 norm.")
flags.DEFINE_float("clipvalue", None, "Clip every gradient element to [-clipvalue, clipvalue].")
flags.DEFINE_integer(
    "accum_steps", 1,
    "Gradient accumulation: split each replica's batch into this many micro-batches "
    "and sum their gradients into one update (same result, less memory).")

# Against overfitting.
flags.DEFINE_float("l2", 0.0, "L2 penalty on the models' kernels.")
flags.DEFINE_float("dropout_rate", 0.0, "Dropout after each hidden layer while training.")
flags.DEFINE_integer(
    "early_stopping_patience", 0,
    "Stop after this many epochs without a better validation loss, and keep the best "
    "epoch's weights; 0: off.")

FLAGS = flags.FLAGS


def strategy_from_flags():
    """The strategy the flags ask for, or a one-line `RecipeError`."""
    try:
        return strategies.get_strategy(
            FLAGS.strategy, num_gpus=FLAGS.num_gpus, num_cpu_devices=FLAGS.num_cpu_devices,
            worker_hosts=FLAGS.worker_hosts, task_index=FLAGS.task_index, tpu=FLAGS.tpu,
            all_reduce_alg=FLAGS.all_reduce_alg)
    except ValueError as e:
        raise RecipeError(e) from None


def train_config(recipe, strategy, **recipe_defaults):
    """A `TrainConfig` from the shared flags; `recipe` names the default model_dir,
    `strategy` picks the default steps per loop, and `recipe_defaults` (say,
    `epochs=30`) replace the shared defaults of flags the command line leaves unset."""
    config = TrainConfig(
        model_dir=FLAGS.model_dir or os.path.join("runs", recipe),
        epochs=FLAGS.epochs,
        train_steps=FLAGS.train_steps,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        steps_per_loop=(strategies.steps_per_loop(strategy) if FLAGS.steps_per_loop is None
                        else FLAGS.steps_per_loop),
        jit_compile=FLAGS.jit_compile,
        mixed_precision=(FLAGS.mixed_precision if FLAGS.mixed_precision != "auto" else
                         "mixed_bfloat16" if strategies.bfloat16_is_fast(strategy) else "none"),
        profile=FLAGS.profile,
        seed=FLAGS.seed,
        checkpoint_steps=FLAGS.checkpoint_steps,
        **{name: getattr(FLAGS, name) for name in (
            "optimizer", "momentum", "lr_schedule", "decay_steps", "decay_rate", "warmup_steps",
            "clipnorm", "global_clipnorm", "clipvalue", "accum_steps", "l2", "dropout_rate",
            "early_stopping_patience")},
    )
    for name, value in recipe_defaults.items():
        if not FLAGS[name].present:
            setattr(config, name, value)
    return config
