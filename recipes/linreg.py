r"""The articles' house-price example: y = theta0 + theta1 * x fitted by gradient
descent on the mean squared error.

    python -m recipes.linreg
    python -m recipes.linreg --strategy=mirrored --num_cpu_devices=2

The data is the Boston housing table that mlxtend ships: x = average rooms per
dwelling (the house-size feature), standardized; y = median value in $1000s;
404 train / 102 test tracts. Full-batch gradient descent (learning rate 0.1, 100
epochs, a second or two) reaches the least-squares line; it prints the thetas, in
standardized units and in rooms, and the test MSE (README, "Linear regression").
"""
if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core import entry
    entry.handle_stop_signals()
    entry.set_up_process()

from absl import flags
import keras

import models
from recipes.core import data, serving, train
from recipes.core import flags as recipe_flags

FLAGS = flags.FLAGS

# Full-batch gradient descent, as the article: one step per epoch, so a
# checkpoint per epoch would cost more than the step.
RECIPE_DEFAULTS = dict(optimizer="sgd", learning_rate=0.1, epochs=100, checkpoint_steps=100)


def thetas(model):
    """(theta0, theta1) of the fitted line, in standardized units."""
    kernel, bias = model.get_layer("theta").get_weights()
    return float(bias[0]), float(kernel[0, 0])


def run(config, strategy, dataset, mean, std):
    """Fits the line; `mean` and `std` of the rooms turn the thetas back into rooms."""
    results, model = train.train_model(
        config, strategy, dataset, models.linear_regression,
        loss_fn=keras.losses.mean_squared_error, metrics_fn=list,
        preprocess=lambda x: x, recipe="linreg",
        extra_metrics={"rooms_mean": mean, "rooms_std": std},
        # Served on rooms as they are (python -m recipes.predict --value=6.5): standardized inside.
        signature=serving.Signature((1,), "float32", lambda rooms: (rooms - mean) / std, "predictions"))
    theta0, theta1 = thetas(model)
    print(f"theta0 = {theta0:.4f}, theta1 = {theta1:.4f} (x standardized); in rooms: price = "
          f"{theta0 - theta1 * mean / std:.3f} + {theta1 / std:.3f} * rooms ($1000s)")
    print(f"Test MSE: {results['test_loss']:.3f} ($1000s squared) on {results['num_test_examples']} tracts")
    return {**results, "theta0": theta0, "theta1": theta1}


def main(argv):
    del argv  # Unused.
    recipe_flags.no_data_flags("the Boston housing table (rooms against value)")
    strategy = recipe_flags.strategy_from_flags()
    dataset, mean, std = data.load_boston_rooms()
    # The whole training set in every step (a multiple of the replicas, so they split it).
    full_batch = len(dataset.x_train) // strategy.num_replicas_in_sync * strategy.num_replicas_in_sync
    config = recipe_flags.train_config("linreg", batch_size=full_batch, **RECIPE_DEFAULTS)
    run(config, strategy, dataset, mean, std)


if __name__ == "__main__":
    entry.run(main)
