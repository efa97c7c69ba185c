r"""The articles' house-price example: y = theta0 + theta1 * x fitted by gradient
descent on the mean squared error.

    python -m recipes.linreg
    python -m recipes.linreg --strategy=mirrored --num_cpu_devices=2

The data is the Boston housing table that mlxtend ships: x = average rooms per
dwelling (the house-size feature), standardized; y = median value in $1000s;
404 train / 102 test tracts. Full-batch gradient descent (learning rate 0.1, 100
epochs, a second or two) reaches the least-squares line; it prints the thetas, in
standardized units and in rooms, and the test MSE (README, "Linear regression").

Your own table fits y = theta0 + theta . x on every feature column, standardized
inside the model, and reports the test MSE against predicting the training mean:

    python -m recipes.linreg --data=diabetes.csv --label_column=target

(a CSV, or x.npy and y.npy / an .npz with y the values; docs/data.md).
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import keras
import numpy as np
from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import serving
from recipes.core.errors import RecipeError
from recipes.core.input import data, pipeline
from recipes.core.training import step, train

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
    task = train.Task(
        "linreg",
        models.linear_regression,
        step.Objective(keras.losses.mean_squared_error),
        preprocess=lambda x: x,
        extra_metrics={"rooms_mean": mean, "rooms_std": std},
        # Served on rooms as they are (python -m recipes.predict --value=6.5): standardized inside.
        signature=serving.Signature((1,), "float32", lambda rooms: (rooms - mean) / std, "predictions"),
    )
    results, model = train.train_model(task, dataset, config=config, strategy=strategy)
    theta0, theta1 = thetas(model)
    print(
        f"theta0 = {theta0:.4f}, theta1 = {theta1:.4f} (x standardized); in rooms: price = "
        f"{theta0 - theta1 * mean / std:.3f} + {theta1 / std:.3f} * rooms ($1000s)"
    )
    print(f"Test MSE: {results['test_loss']:.3f} ($1000s squared) on {results['num_test_examples']} tracts")
    return {**results, "theta0": theta0, "theta1": theta1}


def mean_baseline(dataset):
    """The test MSE of predicting the training split's mean: (mean, MSE), read streaming."""

    def moments(split):
        count, total, squares = 0, 0.0, 0.0
        for y in pipeline.records(split, shuffle=False).batch(4096).map(lambda _, example: example[1]):
            y = np.asarray(y, np.float64)
            count, total, squares = count + y.size, total + y.sum(), squares + (y**2).sum()
        return count, total, squares

    count, total, _ = moments(dataset.train)
    mean = total / count
    count, total, squares = moments(dataset.test)
    return mean, float((squares - 2 * mean * total + count * mean**2) / count)


def run_table(config, strategy, dataset):
    """Fits y = theta0 + theta . x on your own table (`data.Data`, features standardized
    inside the model): the thetas in standardized units, and the test MSE against
    predicting the training mean."""
    if dataset.x_spec.shape.rank != 1 or dataset.y_spec.shape.num_elements() != 1:
        raise RecipeError(
            f"{dataset.name} holds examples of shape {dataset.x_spec.shape.as_list()} and "
            f"values of shape {dataset.y_spec.shape.as_list()}; linear regression fits one "
            "value on a row of features"
        )
    names = dataset.train.source.feature_names
    mean, baseline = mean_baseline(dataset)
    task = train.Task(
        "linreg",
        lambda: models.linear_regression(dataset.x_spec.shape[0]),
        step.Objective(keras.losses.mean_squared_error),
        extra_metrics={"baseline": "the training mean", "baseline_test_mse": baseline},
    )
    results, model = train.train_model(task, dataset, config=config, strategy=strategy)
    kernel, bias = model.get_layer("theta").get_weights()
    print(
        f"theta0 = {float(bias[0]):.4f}; theta (features standardized): "
        + ", ".join(
            f"{name}={float(w):.4f}" for name, w in zip(names or range(1, len(kernel) + 1), kernel[:, 0])
        )
    )
    print(
        f"Test MSE: {results['test_loss']:.4f} on {results['num_test_examples']:,} rows, against "
        f"{baseline:.4f} for predicting the training mean {mean:.4g} "
        f"(R^2 = {1 - results['test_loss'] / baseline:.3f})"
    )
    return {**results, "theta0": float(bias[0]), "theta": kernel[:, 0].tolist()}


def full_batch(num_examples, strategy, limit=4096):
    """Every step on the whole training set, up to `limit` examples (a multiple of the
    replicas, so that they split it)."""
    replicas = strategy.num_replicas_in_sync
    return max(replicas, min(num_examples, limit) // replicas * replicas)


def main(argv):
    del argv  # Unused.
    strategy = recipe_flags.strategy_from_flags()
    if FLAGS.data != "sample":
        dataset = recipe_flags.data_from_flags(targets="values")
        print(dataset.describe())
        config = recipe_flags.train_config(
            "linreg", batch_size=full_batch(dataset.train.num_examples, strategy), **RECIPE_DEFAULTS
        )
        run_table(config, strategy, dataset)
        return
    recipe_flags.no_data_flags("the Boston housing table (rooms against value), or --data")
    dataset, mean, std = data.load_boston_rooms()
    config = recipe_flags.train_config(
        "linreg", batch_size=full_batch(len(dataset.x_train), strategy), **RECIPE_DEFAULTS
    )
    run(config, strategy, dataset, mean, std)


if __name__ == "__main__":
    entry.run(main)
