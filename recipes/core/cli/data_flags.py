"""From the data flags to the input engine: --data and its companions (defined with
the other shared flags in recipes/core/cli/flags.py, which imports this module, so a
recipe reaches these as `flags.data_from_flags` and so on) read into a
`data.DataSpec` and opened as a `data.Data`, or a finished run's data opened again.
A mistake in them is a one-line `RecipeError`.
"""

from collections.abc import Callable, Mapping

from absl import flags

from recipes.core.errors import RecipeError
from recipes.core.input import data as data_lib

FLAGS = flags.FLAGS
# Every flag that says what data to read, or how.
DATA_FLAGS = (
    "data",
    "test_data",
    "validation_data",
    "label_column",
    "data_dir",
    "data_service",
    "data_source",
)


def spec_from_flags(**options) -> data_lib.DataSpec:
    """The `DataSpec` that --data, --test_data, --validation_data, --label_column and
    --data_dir name; `options` set its other fields (targets=, text_window=)."""
    return data_lib.DataSpec(
        FLAGS.data,
        test_data=FLAGS.test_data,
        validation_data=FLAGS.validation_data,
        label_column=FLAGS.label_column,
        data_dir=FLAGS.data_dir,
        **options,
    )


def data_from_flags(
    samples: Mapping[str, Callable[[], data_lib.ArrayData]] | None = None, **options
) -> data_lib.Data:
    """The `data.Data` that --data, --test_data, --validation_data, --label_column and
    --data_dir name; `samples` ({name: loader}) are the recipe's bundled samples, the
    first the default; `options` are the `DataSpec`'s other fields (targets=,
    text_window=)."""
    _refuse_data_source()
    if FLAGS.data == "sample" and FLAGS.data_dir is not None:
        raise RecipeError(
            f"--data_dir={FLAGS.data_dir} is tensorflow-datasets' directory, and --data is "
            "the bundled sample; pass --data=NAME (a tensorflow-datasets dataset) with it, "
            f"or --data={FLAGS.data_dir} if that is your own data"
        )
    return data_lib.open_data(spec_from_flags(**options), samples=samples)


def run_data(run) -> data_lib.Data:
    """A finished run's data (`runs.Run`): as it recorded it, or what --data and its
    companions name when --data is given."""
    _refuse_data_source()
    return run.load_data(
        FLAGS.data if FLAGS["data"].present else None,
        test_data=FLAGS.test_data,
        validation_data=FLAGS.validation_data,
        label_column=FLAGS.label_column,
        data_dir=FLAGS.data_dir,
    )


def no_data_flags(trains_on: str) -> None:
    """For a recipe that trains only on its own bundled data (`trains_on` says what): a
    data flag given to it is a one-line error, not silently ignored."""
    given = [f"--{name}" for name in DATA_FLAGS if FLAGS[name].present]
    if given:
        raise RecipeError(
            f"{' and '.join(given)} do not apply here: this recipe trains on {trains_on}; "
            "the recipes that take your data are mnist, cnn, mlp, lstm, bigmodel, linreg "
            "and bert"
        )


def _refuse_data_source():
    """--data_source, which --data replaced, as a one-line error naming its replacement."""
    if FLAGS.data_source is not None:
        raise RecipeError(
            f"--data_source is replaced by --data: pass --data=sample for the bundled "
            "sample, --data=NAME for a tensorflow-datasets dataset (with --data_dir), "
            f"or --data=PATH for your own files (received --data_source={FLAGS.data_source})"
        )
