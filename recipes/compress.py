r"""Compresses a trained classifier run for deployment: Keras int8 and int4
quantization, magnitude pruning fine-tuned with the shared loop, and LiteRT
files, each measured on the run's test split.

    python -m recipes.mnist && python -m recipes.compress          # runs/mnist/compressed/
    python -m recipes.compress --model_dir=runs/cnn --strategy=mirrored --num_cpu_devices=2

Writes into <model_dir>/compressed/: int8.keras, int4.keras, pruned.keras
(every Dense/Conv kernel --sparsity zeros, a plain Keras model), float32,
dynamic_range, float16, int8 and pruned_int8 .tflite files (raw uint8 pixels
in, `probabilities` and `classes` out, as saved_model/), pruning/ (the pruning
run's checkpoints and logs: an interrupted run resumes), compression.json and
compression.png. About a minute on a 2-core CPU for the offline MNIST run;
README, "Compress and deploy", has the measured table.

Every file is made from a float32 copy of the run's model, so runs trained in
mixed_float16, mixed_bfloat16 or float64 compress too, and recurrent layers are
unrolled for LiteRT. compression.json and pruning/source.json record the source
(the run's step and its weights' SHA-256): a run trained further is pruned again,
not resumed from the old model's pruning.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses
import json
import os
import tempfile

import keras
import tensorflow as tf
from absl import flags

import strategies
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import compression, runs, serving
from recipes.core.errors import RecipeError
from recipes.core.objectives import pruning
from recipes.core.rundir import run_dir
from recipes.core.training import metrics, step, train

flags.DEFINE_float("sparsity", 0.8, "Fraction of every Dense/Conv kernel's weights pruned to zero.")
flags.register_validator(
    "sparsity", lambda value: 0 <= value < 1, message="--sparsity must be at least 0 and below 1"
)
flags.DEFINE_integer(
    "pruning_steps",
    1000,
    "Steps over which the sparsity rises to --sparsity (tfmot's cubic schedule).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "pruning_frequency", 100, "Steps between two updates of the pruning masks.", lower_bound=1
)
flags.DEFINE_integer(
    "finetune_steps", 500, "Steps of fine-tuning after pruning, the masks held fixed.", lower_bound=0
)

FLAGS = flags.FLAGS

# Fine-tuning a trained model: a tenth of Adam's default rate.
RECIPE_DEFAULTS = dict(learning_rate=1e-4)


def prune(config, strategy, run, dataset, signature, *, sparsity, pruning_steps, frequency):
    """Fine-tunes a float32 copy of the run's model with its kernels pruned, into
    `config.model_dir`; returns that run's metrics."""
    model_path = run.path("model.keras")
    shape = signature.model_input_shape()
    units = runs.output_units(keras.saving.load_model(model_path), shape)
    loss_fn = keras.losses.sparse_categorical_crossentropy if units > 1 else keras.losses.binary_crossentropy
    objective = pruning.Pruning(
        step.Objective(loss_fn), final_sparsity=sparsity, pruning_steps=pruning_steps, frequency=frequency
    )
    task = train.Task(
        "compress",
        lambda: compression.float32_copy(keras.saving.load_model(model_path), shape),
        objective,
        metrics_fn=lambda: metrics.classification(units),
        train_metrics_fn=lambda: metrics.accuracy(units),
        preprocess=signature.preprocess,
        signature=signature,
    )
    results, model = train.train_model(task, dataset, config=config, strategy=strategy)
    print(
        f"Pruned: {pruning.sparsity(model):.1%} of the kernels' weights are zero; test accuracy "
        f"{results['test_accuracy']:.2%}."
    )
    return results


def write_keras_quantized(run, signature, out):
    """<out>/int8.keras and int4.keras: a float32 copy of the run's model with Keras'
    quantized kernels. A subclassed model (models.BigModel) makes its layers in its
    constructor, so Keras cannot rebuild them quantized on loading: its functional
    copy (the same layers, traced by one call of `model.call`) is quantized instead,
    and loads anywhere."""
    shape = signature.model_input_shape()
    model = compression.float32_copy(keras.saving.load_model(run.path("model.keras")), shape)
    if not hasattr(model, "output_shape"):  # Functional and Sequential models know theirs.
        inputs = keras.Input(shape)
        model = keras.Model(inputs, model.call(inputs, training=False), name=model.name)
    with tempfile.TemporaryDirectory(prefix="recipes-compress-") as folder:
        path = os.path.join(folder, "float32.keras")
        model.save(path)
        for mode in compression.KERAS_MODES:
            run_dir.write_atomically(
                os.path.join(out, f"{mode}.keras"), None, write=compression.quantize(path, mode).save
            )


def write_litert(sources, signature, calibration, out):
    """The LiteRT files into `out`, each converted from a float32 SavedModel of its Keras
    model (`sources`: the float and the pruned model.keras), recurrent layers unrolled.
    Returns {file: why} for the variants the converter cannot make, each said in one
    line; a file an earlier compress left under such a name is removed."""
    skipped = {}
    with tempfile.TemporaryDirectory(prefix="recipes-compress-") as folder:
        for name, path in sources.items():
            model = keras.saving.load_model(path)
            try:
                model = compression.float32_copy(model, signature.model_input_shape(), unroll=True)
            except ValueError:  # A recurrent layer over an unknown number of steps stays rolled.
                model = compression.float32_copy(model, signature.model_input_shape())
            serving.export_saved_model(model, os.path.join(folder, name), signature)
        for variant in serving.LITERT_VARIANTS:
            target = os.path.join(out, f"{variant}.tflite")
            source = os.path.join(folder, "pruned" if variant.startswith("pruned") else "float")
            try:
                tflite = serving.to_litert(source, variant, representative=calibration)
            except serving.ConversionError as e:
                skipped[os.path.basename(target)] = str(e)
                print(f"Skipped {os.path.basename(target)}: {e}")
                run_dir.remove(target)
                continue
            run_dir.write_atomically(target, tflite)
    return skipped


def source_record(run, *, sparsity, pruning_steps, frequency):
    """What the pruning run derives from: the run's step and a hash of model.keras's
    weights, and the pruning schedule."""
    model = keras.saving.load_model(run.path("model.keras"))
    return {
        "source": {
            "model": "model.keras",
            "step": run.metrics.get("steps"),
            "weights_sha256": compression.weights_fingerprint(model),
        },
        "schedule": {"sparsity": sparsity, "pruning_steps": pruning_steps, "frequency": frequency},
    }


def forget_stale_pruning(pruning_dir, record):
    """Removes the pruning run in `pruning_dir` when it was made from another source or
    schedule than `record` (or records none), so it is redone rather than resumed;
    then records `record` there (source.json)."""
    path = os.path.join(pruning_dir, "source.json")
    recorded = run_dir.read_json_object(path)  # None where missing or damaged: not this source.
    if tf.io.gfile.exists(os.path.join(pruning_dir, "checkpoints")) and recorded != record:
        print(
            f"{pruning_dir} was pruned from another model or schedule than the run's "
            f"model.keras at step {record['source']['step']}: pruning again from the start."
        )
        run_dir.remove(pruning_dir)
    run_dir.write_atomically(path, json.dumps(record, indent=2))


def compress(config, strategy, run, dataset, *, sparsity, pruning_steps, frequency):
    """Every variant into <run>/compressed/, measured; returns compression.json's dict."""
    signature = run.signature()
    out = run.path("compressed")
    outputs = ["pruned.keras", *(f"{mode}.keras" for mode in compression.KERAS_MODES)]
    outputs += [f"{variant}.tflite" for variant in serving.LITERT_VARIANTS]
    if tf.io.gfile.exists(out) and not tf.io.gfile.isdir(out):
        raise RecipeError(f"{out} is a file, not a directory; move it away and run the same command again")
    run_dir.check_output_files(out, [*outputs, "compression.png", "compression.json"])  # Before pruning.
    record = source_record(run, sparsity=sparsity, pruning_steps=pruning_steps, frequency=frequency)
    if strategies.is_chief(strategy):
        forget_stale_pruning(config.model_dir, record)
    prune(
        config,
        strategy,
        run,
        dataset,
        signature,
        sparsity=sparsity,
        pruning_steps=pruning_steps,
        frequency=frequency,
    )
    if not strategies.is_chief(strategy):
        return None  # The other workers helped prune; the chief converts and measures.
    skipped = write_variants(config, run, dataset, signature, out)
    rows = measure_variants(run, dataset, signature, out, skipped)
    report = {
        "run": run.model_dir,
        "recipe": run.recipe,
        "source": record["source"],  # What every file here derives from.
        "data": dataset.describe(),
        "sparsity": sparsity,
        "pruning_steps": pruning_steps,
        "finetune_steps": config.train_steps - pruning_steps,
        "variants": rows,
    }
    run_dir.write_atomically(
        os.path.join(out, "compression.png"),
        compression.figure_png(rows, f"{run.recipe}: size against accuracy ({dataset.describe()})"),
    )
    run_dir.write_atomically(os.path.join(out, "compression.json"), json.dumps(report, indent=2))
    print(compression.table(rows))
    print(f"Wrote {out}")
    return report


def write_variants(config, run, dataset, signature, out):
    """<out>/pruned.keras (the pruning run's model), int8.keras and int4.keras, and the
    LiteRT files, the pruned ones from the pruning run in `config.model_dir`; returns
    {file: why} for the LiteRT variants the converter cannot make (`write_litert`)."""
    calibration = dataset.arrays("train", limit=serving.CALIBRATION_EXAMPLES)[0]
    pruned = os.path.join(config.model_dir, "model.keras")
    run_dir.write_atomically(
        os.path.join(out, "pruned.keras"),
        None,
        write=lambda path: tf.io.gfile.copy(pruned, path, overwrite=True),
    )
    write_keras_quantized(run, signature, out)
    return write_litert({"float": run.path("model.keras"), "pruned": pruned}, signature, calibration, out)


def measure_variants(run, dataset, signature, out, skipped):
    """A row per variant (`compression.measure`), the run's own model.keras first: each
    measured on the test split with the runtime that would serve it; a variant in
    `skipped` ({file: why}) has a row that says why."""
    x_test, y_test = dataset.arrays("test")
    reference = serving.load(run.path("model.keras"), signature)
    reference_classes = reference.predict(x_test)["classes"]
    float_sparsity = pruning.sparsity(keras.saving.load_model(run.path("model.keras")))
    pruned_sparsity = pruning.sparsity(keras.saving.load_model(os.path.join(out, "pruned.keras")))
    names = (
        [f"{mode}.keras" for mode in compression.KERAS_MODES]
        + ["pruned.keras"]
        + [f"{variant}.tflite" for variant in serving.LITERT_VARIANTS]
    )
    return [
        {"variant": name, "skipped": skipped[name]}
        if name in skipped
        else compression.measure(
            name,
            serving.load(path, signature),
            x_test,
            y_test,
            reference_classes,
            pruned_sparsity if "pruned" in name else float_sparsity,
        )
        for name, path in [("model.keras", run.path("model.keras"))]
        + [(name, os.path.join(out, name)) for name in names]
    ]


def main(argv):
    del argv  # Unused.
    strategy = recipe_flags.strategy_from_flags()
    for name in ("epochs", "train_steps", "early_stopping_patience"):
        if FLAGS[name].present:
            raise RecipeError(
                f"--{name} does not apply here: compress trains for --pruning_steps plus --finetune_steps"
            )
    run = runs.read(FLAGS.model_dir or os.path.join("runs", "mnist"))
    if run.input["outputs"] != "classes":
        raise RecipeError(f"{run.model_dir} is not a classifier run; compression is measured by accuracy")
    # The run's own data by default, so that the model is scored on its own test split.
    dataset = recipe_flags.run_data(run)
    config = recipe_flags.train_config(
        "compress", **RECIPE_DEFAULTS, batch_size=run.metrics.get("global_batch_size", 32)
    )
    config = dataclasses.replace(
        config,
        model_dir=run.path("compressed", "pruning"),
        train_steps=FLAGS.pruning_steps + FLAGS.finetune_steps,
    )
    with run_dir.claim(run.model_dir, strategies.is_chief(strategy)):  # Nothing trains there meanwhile.
        compress(
            config,
            strategy,
            run,
            dataset,
            sparsity=FLAGS.sparsity,
            pruning_steps=FLAGS.pruning_steps,
            frequency=FLAGS.pruning_frequency,
        )


if __name__ == "__main__":
    entry.run(main)
