"""How to train: one frozen `TrainConfig`, the single source of the shared defaults,
checked once when it is built.

    config = TrainConfig(model_dir="runs/mnist", epochs=5)   # raises RecipeError if unusable
    config.check_fits(strategy, num_train_examples)         # what needs the strategy and data

The shared flags (`recipes/core/cli/flags.py`) take their defaults from this class.
"""

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Optional

from recipes.core.errors import RecipeError
from recipes.core.input.pipeline import check_batch_size
from strategies.model_parallel import BALANCES

if TYPE_CHECKING:  # For the annotations alone: the config itself needs no TensorFlow.
    import tensorflow as tf

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
SCHEDULES = ("constant", "exponential", "cosine", "linear", "step")
PRECISIONS = ("auto", "none", "mixed_bfloat16", "mixed_float16", "float64")
CLIPPING = ("clipnorm", "global_clipnorm", "clipvalue")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train; every field but `model_dir` and `recipe_settings` has a shared
    flag of the same name."""

    model_dir: str
    epochs: int = 5
    train_steps: int = 0  # Overrides epochs when > 0.
    batch_size: int = 32  # Global, over all replicas.
    learning_rate: float = 1e-3
    steps_per_loop: Optional[int] = None  # None: the strategy's default (strategies.steps_per_loop).
    jit_compile: bool = True
    # auto: mixed_bfloat16 where bfloat16 is native (TPUs, Ampere-or-newer GPUs), else none.
    mixed_precision: str = "auto"
    seed: int = 0
    checkpoint_steps: int = 0  # 0: at the end of every epoch.
    profile: bool = False  # Trace the second training loop for TensorBoard's profiler.
    # Optimizer and learning rate (see recipes/core/training/optimization.py).
    optimizer: str = "adam"
    momentum: float = 0.0
    lr_schedule: str = "constant"
    decay_steps: int = 0
    decay_rate: float = 0.0
    warmup_steps: int = 0
    min_learning_rate: float = 0.0  # Where lr_schedule=cosine ends.
    beta_1: float = 0.9  # Adam's and AdamW's moment decays.
    beta_2: float = 0.999
    weight_decay: Optional[float] = None  # Decoupled weight decay; None: the optimizer's own (AdamW: 0.004).
    clipnorm: Optional[float] = None
    global_clipnorm: Optional[float] = None
    clipvalue: Optional[float] = None
    accum_steps: int = 1  # Micro-batches per optimizer update.
    # Against overfitting.
    l2: float = 0.0
    dropout_rate: float = 0.0
    early_stopping_patience: int = 0  # Epochs without a better validation loss; 0: off.
    # Model parallelism (strategies/model_parallel.py), on the devices of one host.
    pipeline_stages: int = 1  # The layer stack in this many stages, one per device.
    num_microbatches: int = 1  # Per batch, through the pipeline (GPipe).
    pipeline_balance: str = "flops"
    tensor_parallel: int = 1  # Dense -> Dense pairs split over this many devices.
    # grpc://host:port of a tf.data service dispatcher that runs the input pipeline; None: in process.
    data_service: Optional[str] = None
    # The recipe's own flags ({"num_heads": 4, ...}): a resumed run must match them too.
    recipe_settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "accum_steps",
            "pipeline_stages",
            "num_microbatches",
            "tensor_parallel",
        ):
            _check(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))
        if self.steps_per_loop is not None:
            _check(self.steps_per_loop >= 1, "steps_per_loop", "must be at least 1", self.steps_per_loop)
        for name in ("train_steps", "checkpoint_steps", "early_stopping_patience"):
            _check(getattr(self, name) >= 0, name, "must be 0 or more", getattr(self, name))
        _check(math.isfinite(self.l2) and self.l2 >= 0, "l2", "must be a finite number, 0 or more", self.l2)
        _check(0 <= self.dropout_rate < 1, "dropout_rate", "must be in [0, 1)", self.dropout_rate)
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)", self.seed)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        check_schedule(
            self.lr_schedule,
            self.learning_rate,
            decay_steps=self.decay_steps,
            decay_rate=self.decay_rate,
            warmup_steps=self.warmup_steps,
            min_learning_rate=self.min_learning_rate,
        )
        for name in ("beta_1", "beta_2"):
            _check(0 <= getattr(self, name) < 1, name, "must be in [0, 1)", getattr(self, name))
        if self.weight_decay is not None:
            _check(
                math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                "weight_decay",
                "must be a finite number, 0 or more",
                self.weight_decay,
            )
        clipping = {name: getattr(self, name) for name in CLIPPING if getattr(self, name) is not None}
        for name, value in clipping.items():
            _check(math.isfinite(value) and value > 0, name, "must be positive", value)
        if len(clipping) > 1:
            received = ", ".join(f"{name}={value}" for name, value in clipping.items())
            raise RecipeError(f"{received} each clip the gradients; pass at most one of them")
        _choice("pipeline_balance", self.pipeline_balance, BALANCES)
        if self.pipeline_stages > 1 and self.tensor_parallel > 1:
            raise RecipeError("pipeline_stages and tensor_parallel do not combine yet; pass one of them")
        if self.num_microbatches > 1 and self.pipeline_stages == 1:
            raise RecipeError(
                f"num_microbatches={self.num_microbatches} splits the batch for a "
                "pipeline; pass pipeline_stages > 1 with it, or accum_steps for "
                "micro-batches on one device"
            )
        if not 0 <= self.momentum < 1 or (self.momentum and self.optimizer not in ("sgd", "rmsprop")):
            raise RecipeError(
                f"momentum={self.momentum} applies to optimizer=sgd or rmsprop, and must be in [0, 1)"
            )
        _check_finite({**dataclasses.asdict(self), **self.recipe_settings})  # What the checks above leave.

    def check_fits(self, strategy: "tf.distribute.Strategy", num_train_examples: int) -> None:
        """The checks that need the strategy and the data: the batch splits over the
        replicas, the micro-batches (of accumulation, then of a pipeline) split each
        replica's batch, and one batch fits in the training set."""
        replicas = strategy.num_replicas_in_sync
        check_batch_size(self.batch_size, replicas)
        per_replica = self.batch_size // replicas
        if per_replica % self.accum_steps:
            raise RecipeError(
                f"accum_steps={self.accum_steps} does not divide the per-replica batch of "
                f"{per_replica} (batch_size={self.batch_size} over {replicas} replicas); "
                "pass a divisor of it"
            )
        micro_batch = per_replica // self.accum_steps
        if micro_batch % self.num_microbatches:
            raise RecipeError(
                f"num_microbatches={self.num_microbatches} does not divide the batch of {micro_batch} "
                f"(batch_size={self.batch_size}"
                + (f" / accum_steps={self.accum_steps}" if self.accum_steps > 1 else "")
                + "); pass a divisor of it"
            )
        if self.batch_size > num_train_examples:
            raise RecipeError(
                f"batch_size={self.batch_size} is larger than the "
                f"{num_train_examples} training examples; pass a smaller one"
            )

    @property
    def model_parallel(self) -> int:
        """How many devices one model is split over (1: none)."""
        return max(self.pipeline_stages, self.tensor_parallel)


def check_schedule(
    name: str,
    learning_rate: float,
    *,
    decay_steps: int = 0,
    decay_rate: float = 0.0,
    warmup_steps: int = 0,
    min_learning_rate: float = 0.0,
) -> None:
    """Raises `RecipeError` for learning-rate settings that cannot work."""
    _choice("lr_schedule", name, SCHEDULES)
    _check(
        math.isfinite(learning_rate) and learning_rate > 0,
        "learning_rate",
        "must be a finite positive number",
        learning_rate,
    )
    if min_learning_rate and (name != "cosine" or not 0 <= min_learning_rate <= learning_rate):
        raise RecipeError(
            f"min_learning_rate={min_learning_rate} is where lr_schedule=cosine ends: "
            f"pass it with cosine, between 0 and learning_rate={learning_rate}"
        )
    _check(warmup_steps >= 0, "warmup_steps", "must be 0 or more", warmup_steps)
    if name in ("exponential", "step", "cosine") and decay_steps <= 0:
        raise RecipeError(f"lr_schedule={name} needs decay_steps > 0; received {decay_steps}")
    _check(math.isfinite(decay_rate), "decay_rate", "must be a finite number", decay_rate)
    if name in ("exponential", "step") and not 0 < decay_rate <= 1:
        raise RecipeError(
            f"lr_schedule={name} needs 0 < decay_rate <= 1 (the factor per "
            f"decay_steps); received {decay_rate}"
        )
    if name == "linear" and not decay_rate > 0:
        raise RecipeError(
            "lr_schedule=linear needs decay_rate > 0 (the fraction of the "
            f"learning rate lost per step); received {decay_rate}"
        )


def _check_finite(values):
    """Every float among `values` (the fields, the recipe's own flags) a finite number:
    NaN passes every `<` and `>` check, and inf overflows whatever it multiplies."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{name} must be a finite number; received {value}")


def _check(ok, name, requirement, value):
    if not ok:
        raise RecipeError(f"{name} {requirement}; received {value}")


def _choice(name, value, choices):
    if value not in choices:
        raise RecipeError(f"unknown {name}={value}; choose one of: {', '.join(choices)}")
