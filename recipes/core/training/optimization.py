"""Optimizers and learning-rate schedules from plain arguments, built from Keras' own
pieces: `keras.optimizers`, their `clipnorm` / `global_clipnorm` / `clipvalue`, and
`keras.optimizers.schedules`.

    optimizer = optimization.make_optimizer(config)   # under strategy.scope()
"""

import keras

from recipes.core.training.config import CLIPPING, check_schedule


@keras.saving.register_keras_serializable(package="recipes")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `schedule(warmup_steps)` over the first
    `warmup_steps` steps, then follows `schedule`.

    Written by hand: Keras has warm-up only inside `CosineDecay`, and every
    schedule here takes `--warmup_steps`.
    """

    def __init__(self, schedule, warmup_steps):
        self.schedule = schedule
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        target = self.schedule(self.warmup_steps)
        warm = target * step / self.warmup_steps
        return keras.ops.where(step < self.warmup_steps, warm, self.schedule(step))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["warmup_steps"])


@keras.saving.register_keras_serializable(package="recipes")
class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling for float16, with one change: a step skipped for
    inf or NaN gradients still counts in `iterations`, as it did in Keras 2.

    Keras 3 leaves `iterations` where it was on a skipped step, but the training
    loop counts steps as it runs them and resumes from `iterations`; without this,
    a run resumed after an overflow would repeat a batch and end a step late.
    """

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.iterations.assign_add(1)


def learning_rate_schedule(
    name, learning_rate, *, decay_steps=0, decay_rate=0.0, warmup_steps=0, min_learning_rate=0.0
):
    """The learning rate as a function of the step, or a float for `constant`.

      * constant: `learning_rate`.
      * exponential: `learning_rate * decay_rate ** (step / decay_steps)`.
      * step: the same, with `step // decay_steps`: a drop every `decay_steps`.
      * cosine: from `learning_rate` to `min_learning_rate` along half a cosine over
        `decay_steps`.
      * linear: the articles' `learning_rate * (1 - decay_rate * step)`, floored
        at 0 (a polynomial decay of power 1 reaching 0 at step 1 / decay_rate).

    `warmup_steps > 0` puts a linear warm-up from 0 in front of any of them.
    Raises `RecipeError` for settings that cannot work.
    """
    check_schedule(
        name,
        learning_rate,
        decay_steps=decay_steps,
        decay_rate=decay_rate,
        warmup_steps=warmup_steps,
        min_learning_rate=min_learning_rate,
    )
    schedules = keras.optimizers.schedules
    if name == "constant":
        schedule = learning_rate
    elif name in ("exponential", "step"):
        schedule = schedules.ExponentialDecay(
            learning_rate, decay_steps, decay_rate, staircase=name == "step"
        )
    elif name == "cosine":
        schedule = schedules.CosineDecay(learning_rate, decay_steps, alpha=min_learning_rate / learning_rate)
    else:  # linear
        schedule = schedules.PolynomialDecay(
            learning_rate, 1.0 / decay_rate, end_learning_rate=0.0, power=1.0
        )
    if warmup_steps:
        if name == "constant":
            schedule = schedules.PolynomialDecay(learning_rate, 1, end_learning_rate=learning_rate)
        schedule = WarmUp(schedule, warmup_steps)
    return schedule


def make_optimizer(config):
    """The Keras optimizer a `TrainConfig` asks for, with its schedule and clipping,
    and dynamic loss scaling (`LossScaleOptimizer`) when the Keras policy is
    `mixed_float16`, whose small gradients would otherwise underflow to zero.

    Create it under `strategy.scope()`. Clipping is Keras' own; the training
    loop sums the replicas' gradients before the optimizer sees them, so the
    clip applies to the whole batch's gradient (see `step.Trainer`). The config
    was checked when it was built.
    """
    learning_rate = learning_rate_schedule(
        config.lr_schedule,
        config.learning_rate,
        decay_steps=config.decay_steps,
        decay_rate=config.decay_rate,
        warmup_steps=config.warmup_steps,
        min_learning_rate=config.min_learning_rate,
    )
    options = {
        name: getattr(config, name)
        for name in CLIPPING + ("weight_decay",)
        if getattr(config, name) is not None
    }
    if config.optimizer in ("sgd", "rmsprop"):
        options["momentum"] = config.momentum
    if config.optimizer in ("adam", "adamw"):
        options.update(beta_1=config.beta_1, beta_2=config.beta_2)
    optimizer_class = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adamw": keras.optimizers.AdamW,
    }[config.optimizer]
    optimizer = optimizer_class(learning_rate=learning_rate, **options)
    # As nanoGPT and BERT: biases, LayerNorm scales and offsets, and embeddings are not decayed.
    optimizer.exclude_from_weight_decay(var_names=NOT_DECAYED)
    return with_loss_scaling(optimizer)


NOT_DECAYED = ["bias", "gamma", "beta", "embeddings"]  # Keras' names of those variables.


def with_loss_scaling(optimizer):
    """`optimizer` in a `LossScaleOptimizer` when the Keras policy is `mixed_float16`,
    as it is; create it under `strategy.scope()`."""
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        return LossScaleOptimizer(optimizer)
    return optimizer
