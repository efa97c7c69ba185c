"""TrainConfig: one frozen source of the defaults, checked once when it is built."""

import dataclasses

import pytest

from recipes.core.cli import flags as recipe_flags
from recipes.core.errors import RecipeError
from recipes.core.training.config import TrainConfig


def test_every_shared_flag_takes_its_default_from_train_config():
    for field in dataclasses.fields(TrainConfig):
        if field.name not in ("model_dir", "recipe_settings"):
            assert recipe_flags.FLAGS[field.name].default == field.default, field.name


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig(model_dir="x").batch_size = 64


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": -1}, "seed must be in [0, 2**32); received -1"),
        ({"seed": 2**32}, "seed must be in [0, 2**32)"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite positive number; received nan"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite positive number; received inf"),
        ({"l2": float("nan")}, "l2 must be a finite number, 0 or more; received nan"),
        ({"l2": float("inf")}, "l2 must be a finite number, 0 or more; received inf"),
        (
            {"optimizer": "sgd", "momentum": 2.0},
            "momentum=2.0 applies to optimizer=sgd or rmsprop, and must be in [0, 1)",
        ),
        ({"optimizer": "rmsprop", "momentum": 5.0}, "must be in [0, 1)"),
        ({"clipnorm": float("nan")}, "clipnorm must be positive; received nan"),
        ({"global_clipnorm": float("inf")}, "global_clipnorm must be positive; received inf"),
        ({"lr_schedule": "linear", "decay_rate": float("nan")}, "decay_rate must be a finite number"),
        ({"dropout_rate": 1.0}, "dropout_rate must be in [0, 1)"),
        ({"epochs": 0}, "epochs must be at least 1; received 0"),
        ({"steps_per_loop": 0}, "steps_per_loop must be at least 1"),
        ({"clipnorm": 1.0, "clipvalue": 1.0}, "clipnorm=1.0, clipvalue=1.0 each clip the gradients"),
        (
            {"num_microbatches": 2},
            "num_microbatches=2 splits the batch for a pipeline; pass pipeline_stages > 1",
        ),
        ({"pipeline_balance": "time"}, "unknown pipeline_balance=time; choose one of: flops, params"),
        (
            {"mixed_precision": "float16"},
            "unknown mixed_precision=float16; choose one of: auto, none, mixed_bfloat16, mixed_float16",
        ),
    ],
)
def test_a_value_that_cannot_work_is_refused_when_the_config_is_built(values, message):
    with pytest.raises(RecipeError) as error:
        TrainConfig(model_dir="x", **values)
    # The Python API names settings (a flag of the same name sets each on the command line).
    assert message in str(error.value) and "\n" not in str(error.value) and "--" not in str(error.value)
