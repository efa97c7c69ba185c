"""Model parallelism: a pipeline of stages and Megatron-style tensor parallelism on
logical CPU devices, equal to one device, with every weight on its own device."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import models
import recipes.bigmodel
import recipes.lstm
import recipes.mnist
from strategies import model_parallel, tensor_parallel
from tests.helpers import REPO, assert_one_error_line, run_in_process, run_module

DEVICES = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(4)]
_ISSUE_ARGS = ["--train_steps=20", "--seed=7", "--batch_size=64", "--data=sample"]
# Float64, so that the check is of the arithmetic: in float32, 20 Adam steps amplify
# rounding (a ReLU unit that gets its first gradient in one run and not the other
# moves a full learning-rate step), and the XLA-compiled default run differs from
# the same run uncompiled by 2.6e-4. In float64 (loss included: `step.widened`) every
# way of running the step agrees to 1e-9: compiled or not, split or not.
_EXACT = ["--mixed_precision=float64"]


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _max_abs_diff(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _run(module, model_dir, args, monkeypatch, capfd):
    try:
        code, out, err = run_in_process(module, [f"--model_dir={model_dir}", *args], monkeypatch, capfd)
    finally:  # A run sets the process's precision policy; the next test in this worker expects float32.
        keras.mixed_precision.set_global_policy("float32")
    assert code == 0, err[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, split",
    [
        (recipes.mnist, ["--pipeline_stages=2", "--num_microbatches=4"]),
        (recipes.mnist, ["--tensor_parallel=2"]),
        (recipes.bigmodel, ["--pipeline_stages=4"]),
        (recipes.mnist, ["--nojit_compile"]),
        (recipes.lstm, ["--pipeline_stages=2"]),  # Recurrent: its stages run without XLA.
    ],
    ids=["mnist-pipeline", "mnist-tensor", "bigmodel-pipeline", "mnist-uncompiled", "lstm-pipeline"],
)
def test_split_run_ends_with_the_single_device_weights(tmp_path, monkeypatch, capfd, module, split):
    """Against the default run as it runs by default: one device, the step XLA-compiled."""
    _run(module, tmp_path / "default", _ISSUE_ARGS + _EXACT, monkeypatch, capfd)
    out = _run(module, tmp_path / "split", _ISSUE_ARGS + _EXACT + split, monkeypatch, capfd)
    if split == ["--nojit_compile"]:
        assert _max_abs_diff(_weights(tmp_path / "split"), _weights(tmp_path / "default")) < 1e-9
        return
    assert ("Pipeline: " if "pipeline" in split[0] else "Tensor parallel: ") in out
    assert _max_abs_diff(_weights(tmp_path / "split"), _weights(tmp_path / "default")) < 1e-9
    metrics = json.load(open(tmp_path / "split" / "metrics.json"))
    count = int(split[0].split("=")[1])
    assert sorted(metrics["memory_by_device"]) == [f"CPU:{i}" for i in range(count)]


def _adam(model):
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    return optimizer


def _slots_by_variable(optimizer, model):
    """Each trainable variable's Adam momentum and velocity."""
    return {
        id(v): (optimizer._momentums[i], optimizer._velocities[i])
        for i, v in enumerate(model.trainable_variables)
    }


@pytest.mark.parametrize("build, count", [(models.mnist_dense, 2), (models.BigModel, 4)])
def test_pipeline_puts_each_stages_weights_and_slots_on_its_device_only(build, count):
    model = build()
    model.build((None, 28, 28))
    x = np.random.RandomState(0).rand(8, 28, 28).astype("float32")
    expected = model(x).numpy()
    pipeline = model_parallel.Pipeline(model, DEVICES[:count], num_microbatches=2, input_shape=(28, 28))
    optimizer = _adam(model)
    slots = _slots_by_variable(optimizer, model)
    weights_by_device = {}
    for layers, device in pipeline.stages:
        for layer in layers:
            for variable in layer.trainable_variables:
                assert model_parallel.device_of(variable) == device, (variable.path, device)
                for slot in slots[id(variable)]:
                    assert model_parallel.device_of(slot) == device, (slot.path, device)
                weights_by_device.setdefault(device, 0)
                weights_by_device[device] += int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
    assert len(pipeline.stages) == count and all(layers for layers, _ in pipeline.stages)
    memory = model_parallel.memory_by_device(model, optimizer)
    for device, size in weights_by_device.items():  # No device holds another's weights.
        assert memory[device.rsplit("device:", 1)[1]]["parameter_bytes"] == size
    np.testing.assert_allclose(pipeline(model, x).numpy(), expected, atol=1e-6)


def test_pipeline_stages_balance_flops_and_params():
    stack = model_parallel.layer_stack(models.mnist_dense())
    assert model_parallel.layer_costs(stack, (28, 28)) == [0, 2 * 784 * 1024, 2 * 1024 * 1024, 2 * 1024 * 10]
    assert model_parallel.partition(model_parallel.layer_costs(stack, (28, 28)), 2) == [0, 2]
    cnn = model_parallel.layer_stack(models.cnn())
    flops = model_parallel.layer_costs(cnn, (28, 28, 1))
    assert flops[2] == 2 * 14 * 14 * 3 * 3 * 32 * 64  # The second convolution dominates.
    assert model_parallel.partition(flops, 2) == [0, 5]  # Both convolutions, then the dense layers.
    params = model_parallel.layer_costs(cnn, (28, 28, 1), "params")
    assert model_parallel.partition(params, 2) == [0, 5] and params[5] == 3136 * 128 + 128
    assert model_parallel.partition([5, 0, 5, 5, 5], 3) == [0, 2, 3]
    with pytest.raises(ValueError, match="4 stages are more than the 3 layers with weights"):
        model_parallel.partition(model_parallel.layer_costs(stack, (28, 28)), 4)


@pytest.mark.parametrize(
    "build, count", [(models.mnist_dense, 2), (models.BigModel, 4), (models.two_layer_mlp, 4)]
)
def test_tensor_parallel_shards_live_on_their_devices_and_gather_to_the_plain_model(build, count):
    model = build()
    model.build((None, 28, 28))
    x = np.random.RandomState(0).rand(8, 28, 28).astype("float32")
    expected = model(x).numpy()
    stack = model_parallel.layer_stack(model)
    whole_pairs = [
        (stack[c].kernel.shape, stack[r].kernel.shape) for c, _, r in tensor_parallel.megatron_pairs(stack)
    ]
    sharded = tensor_parallel.TensorParallel(model, DEVICES[:count], input_shape=(28, 28))
    optimizer = _adam(sharded.model)
    slots = _slots_by_variable(optimizer, sharded.model)
    pairs = [layer for layer in sharded.model.layers if isinstance(layer, tensor_parallel.MegatronDense)]
    assert len(pairs) == len(whole_pairs) >= 1
    for pair, (column_shape, row_shape) in zip(pairs, whole_pairs):
        for i, device in enumerate(DEVICES[:count]):
            for variable, shape in (
                (pair.column_kernels[i], (column_shape[0], column_shape[1] // count)),
                (pair.row_kernels[i], (row_shape[0] // count, row_shape[1])),
            ):
                assert tuple(variable.shape) == shape  # A shard, not the whole kernel.
                assert model_parallel.device_of(variable) == device
                for slot in slots[id(variable)]:
                    assert model_parallel.device_of(slot) == device
    for layer in sharded.model.layers:  # What is not split stays on the first device.
        if not isinstance(layer, tensor_parallel.MegatronDense):
            assert all(model_parallel.device_of(v) == DEVICES[0] for v in layer.weights)
    np.testing.assert_allclose(sharded.model(x).numpy(), expected, atol=1e-6)
    plain = sharded.gather()
    assert type(plain) is type(model) and plain.count_params() == model.count_params()
    np.testing.assert_allclose(plain(x).numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_a_killed_pipeline_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, capfd):
    args = [
        "--pipeline_stages=2",
        "--num_microbatches=2",
        "--train_steps=100",
        "--checkpoint_steps=20",
        "--steps_per_loop=10",
        "--batch_size=64",
        "--seed=5",
        "--data=sample",
    ]
    _run(recipes.mnist, tmp_path / "straight", args, monkeypatch, capfd)
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-m", "recipes.mnist", f"--model_dir={stopped}", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (stopped / "checkpoints" / "checkpoint").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (stopped / "metrics.json").exists()  # It really stopped mid-run.
    resumed = run_module("recipes.mnist", f"--model_dir={stopped}", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from step" in resumed.stdout
    assert 0 < json.load(open(stopped / "metrics.json"))["steps_this_run"] < 100
    assert _max_abs_diff(_weights(stopped), _weights(tmp_path / "straight")) < 1e-5


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--pipeline_stages=4"], "--pipeline_stages=4: 4 stages are more than the 3 layers with weights"),
        (
            ["--pipeline_stages=2", "--num_microbatches=5"],
            "--num_microbatches=5 does not divide the batch of 64",
        ),
        (["--tensor_parallel=3"], "--tensor_parallel=3: 3 shards do not divide the 1024 units"),
        (
            ["--pipeline_stages=2", "--num_cpu_devices=1"],
            "--pipeline_stages=2: 2 devices are needed and --num_cpu_devices=1 makes 1",
        ),
        (
            ["--pipeline_stages=2", "--strategy=mirrored"],
            "--strategy=mirrored with them is not supported yet",
        ),
        (["--pipeline_stages=2", "--tensor_parallel=2"], "do not combine yet"),
        (["--num_microbatches=2"], "pass --pipeline_stages > 1 with it"),
    ],
    ids=["stages>layers", "microbatches", "width", "stages>devices", "mirrored", "both", "no-pipeline"],
)
def test_a_split_that_cannot_work_is_one_line(tmp_path, monkeypatch, capfd, args, expected):
    code, _, err = run_in_process(
        recipes.mnist,
        [f"--model_dir={tmp_path}", "--batch_size=64", "--train_steps=1", "--data=sample", *args],
        monkeypatch,
        capfd,
    )
    assert_one_error_line(code, err, expected)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_a_pipeline_may_resume_a_run_and_a_shard_count_may_not_change(tmp_path, monkeypatch, capfd):
    args = ["--batch_size=64", "--seed=3", "--data=sample", "--steps_per_loop=5"]
    _run(recipes.mnist, tmp_path, args + ["--train_steps=5"], monkeypatch, capfd)
    out = _run(
        recipes.mnist,
        tmp_path,
        args + ["--train_steps=10", "--pipeline_stages=2", "--num_microbatches=2"],
        monkeypatch,
        capfd,
    )
    assert "Resuming from step 5" in out
    assert (
        "Resuming with changes that leave the result as it was: --pipeline_stages 1 -> 2, "
        "--num_microbatches 1 -> 2."
    ) in out
    code, _, err = run_in_process(
        recipes.mnist,
        [f"--model_dir={tmp_path}", *args, "--train_steps=15", "--tensor_parallel=2"],
        monkeypatch,
        capfd,
    )
    assert_one_error_line(code, err, "--tensor_parallel=1 there, 2 now")
