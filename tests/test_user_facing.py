"""What a new user meets (issue 25): --help, output redirected to a file, a rerun of a
finished run, predict's paths and shapes, and stderr free of the runtimes' routine lines."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, assert_one_line_error, run_module

# TensorFlow's and absl's own flags, which --helpfull lists and --help must not.
NOT_OURS = ("--tt_check_filter", "--xla_", "--only_check_args", "--run_with_pdb", "--test_srcdir")
# Routine lines of the runtimes that a run's stderr must not carry.
ROUTINE = ("failed call to cuInit", "dataset_info.json", "fully_quantize:", "XNNPACK delegate")


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, argument, own",
    [
        ("recipes.mnist", "--help", []),
        ("recipes.gpt", "-h", ["--num_layers", "--lora_rank"]),
        ("recipes.predict", "--help", ["--model", "--value"]),
    ],
)
def test_help_lists_the_shared_flags_and_the_recipes_own_and_nothing_of_tensorflows(recipe, argument, own):
    import importlib

    from absl import flags

    done = run_module(recipe, argument)
    assert done.returncode == 0, done.stderr[-3000:]
    for flag in ("--batch_size", "--strategy", "--model_dir", "--learning_rate", "--num_cpu_devices", *own):
        assert re.search(rf"^  {re.escape(flag)}: ", done.stdout, re.MULTILINE), flag
    assert not any(name in done.stdout for name in NOT_OURS), done.stdout
    importlib.import_module(recipe)  # Defines its flags here too.
    ours = {flag.name for flag in flags.FLAGS.get_flags_for_module("recipes.core.cli.flags")}
    ours |= {flag.name for flag in flags.FLAGS.get_flags_for_module(recipe)}
    listed = set(re.findall(r"^  --(?:\[no\])?(\w+): ", done.stdout, re.MULTILINE))
    assert listed and listed <= ours, listed - ours
    assert f"{recipe}'s own flags:" in done.stdout and "Shared flags: where to run:" in done.stdout
    assert "Try --helpfull" not in done.stdout


def _clean(stdout):
    """No terminal control in output that is not a terminal."""
    assert "\x1b[" not in stdout and "\r" not in stdout, repr(stdout[-1500:])


@pytest.mark.slow
def test_a_run_into_a_pipe_a_rerun_of_it_and_predict_on_its_artifacts(tmp_path):
    """Output to a pipe has plain progress lines; stderr has none of the runtimes'
    routine lines; a rerun of the finished run says it trained nothing and keeps the
    measured speed; predict takes --model as a path from here into the run."""
    run = tmp_path / "runs" / "mnist"
    args = ("recipes.mnist", f"--model_dir={run}", "--train_steps=30", "--steps_per_loop=10")
    first = run_module(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    _clean(first.stdout)
    assert re.search(
        r"^step 30/30 - \d+s - loss: \d\.\d{4} - accuracy: \d\.\d{4}$", first.stdout, re.MULTILINE
    )
    assert not any(line in first.stderr for line in ROUTINE), first.stderr[-3000:]
    speed = json.loads((run / "metrics.json").read_text())["examples_per_second"]
    assert speed > 0

    again = run_module(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    _clean(again.stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps_this_run"] == 0 and metrics["examples_per_second"] == speed
    assert (
        f"nothing trained this time: the checkpoint is already at step 30, the last asked for "
        f"(it trained at {speed:,.0f} examples/s)"
    ) in again.stdout
    assert " 0 examples/s" not in again.stdout

    np.save(tmp_path / "digit.npy", np.zeros((28, 28), np.uint8))
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    predicted = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipes.predict",
            "--model_dir=runs/mnist",
            "--model=runs/mnist/saved_model",
            "digit.npy",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "Serving runs/mnist/saved_model with TensorFlow" in predicted.stdout
    assert re.search(r"^digit\.npy: class \d \(probability", predicted.stdout, re.MULTILINE)


@pytest.mark.slow
def test_a_tfds_folder_that_is_not_a_dataset_is_one_error_line_without_tfds_warnings(tmp_path):
    (tmp_path / "tfds" / "mnist" / "3.0.1").mkdir(parents=True)  # A download that never finished.
    done = run_module(
        "recipes.mnist", "--data=mnist", f"--data_dir={tmp_path / 'tfds'}", f"--model_dir={tmp_path / 'run'}"
    )
    assert_one_line_error(done, "mnist is not prepared in")
    assert not any(line in done.stderr for line in ROUTINE), done.stderr[-3000:]


def test_predict_takes_model_relative_to_the_run_or_as_a_path_into_it(tmp_path, monkeypatch):
    from recipes import predict
    from recipes.core.errors import RecipeError

    (tmp_path / "runs" / "mnist" / "compressed").mkdir(parents=True)
    (tmp_path / "runs" / "mnist" / "compressed" / "int8.tflite").write_bytes(b"")
    (tmp_path / "runs" / "cnn").mkdir()
    (tmp_path / "runs" / "cnn" / "model.keras").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    run = os.path.join("runs", "mnist")
    int8 = os.path.join("runs", "mnist", "compressed", "int8.tflite")
    for model in ("compressed/int8.tflite", int8, str(tmp_path / int8)):
        assert os.path.samefile(predict.artifact_path(run, model), int8), model
    monkeypatch.chdir(tmp_path / "runs" / "mnist")
    assert predict.artifact_path(".", "compressed/int8.tflite") == "./compressed/int8.tflite"
    monkeypatch.chdir(tmp_path)
    # Absent: named as in the run, for the error that says so.
    assert predict.artifact_path(run, "saved_model") == os.path.join(run, "saved_model")
    for outside in ("../cnn/model.keras", "runs/cnn/model.keras", str(tmp_path / "runs/cnn/model.keras")):
        with pytest.raises(RecipeError, match=r"outside --model_dir=runs/mnist: .*pass --model_dir= the run"):
            predict.artifact_path(run, outside)


def test_predict_names_the_shape_of_the_file_as_it_is(tmp_path):
    from recipes import predict
    from recipes.core.errors import RecipeError

    np.save(tmp_path / "one.npy", np.zeros((28, 28), np.float64))
    with pytest.raises(
        RecipeError,
        match=r"holds a float64 array of shape \[28, 28\]; the model takes "
        r"\[28, 28\] uint8 \(or a batch of them\)",
    ):
        predict.read_input(str(tmp_path / "one.npy"), (28, 28), "uint8")
    np.save(tmp_path / "batch.npy", np.zeros((3, 28, 27), np.uint8))
    with pytest.raises(RecipeError, match=r"shape \[3, 28, 27\]"):
        predict.read_input(str(tmp_path / "batch.npy"), (28, 28), "uint8")
    assert predict.read_input(str(tmp_path / "batch.npy"), (28, 27), "uint8").shape == (3, 28, 27)


def test_progress_into_a_file_is_plain_lines(capsys):
    from recipes.core.training import progress

    assert isinstance(progress.progress_bar(140), progress.LineProgress)  # pytest's stdout is no terminal.
    line_progress = progress.LineProgress(140, interval=3600)
    line_progress.update(0)
    line_progress.update(10, [("loss", 0.41214), ("accuracy", 0.9)])  # Within the interval: no line.
    line_progress.update(140, [("loss", 0.3), ("accuracy", 0.95), ("tiny", 2e-5)])
    out = capsys.readouterr().out
    assert out == "step 140/140 - 0s - loss: 0.3000 - accuracy: 0.9500 - tiny: 2.0000e-05\n"


def test_native_lines_dropped_drops_only_the_routine_ones(capfd):
    from recipes.core.deploy import serving

    with serving.native_lines_dropped(serving.CONVERTER_NOTES):
        os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32\n")
        os.write(2, b"E0000 something real went wrong\n")
    os.write(2, b"fully_quantize: 0, after the block\n")
    err = capfd.readouterr().err
    assert err == "E0000 something real went wrong\nfully_quantize: 0, after the block\n"
