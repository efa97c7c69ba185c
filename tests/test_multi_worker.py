"""MultiWorkerMirroredStrategy as two local worker processes on 127.0.0.1 ports."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.helpers import REPO, run_python, saved_step

ARGS = ["--train_steps=20", "--batch_size=64", "--seed=7", "--steps_per_loop=10"]
# Long enough to stop a worker mid-run, after the first checkpoint (step 50).
LONG_STEPS = 150
LONG_ARGS = [
    f"--train_steps={LONG_STEPS}",
    "--checkpoint_steps=50",
    "--batch_size=64",
    "--seed=7",
    "--steps_per_loop=10",
]
TIMEOUT = 240  # Seconds any worker may take: a worker that hangs fails the test.


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_cluster(model_dir, args):
    hosts = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recipes.mnist",
                "--strategy=multi_worker",
                f"--worker_hosts={hosts}",
                f"--task_index={i}",
                f"--model_dir={model_dir}",
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def _finish(workers, timeout=TIMEOUT):
    """Each worker's output, once it exits; a worker still running after `timeout` s fails."""
    try:
        return [w.communicate(timeout=timeout)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()


def _run_cluster(model_dir, args):
    workers = _start_cluster(model_dir, args)
    outputs = _finish(workers)
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    return outputs


def _stop_a_worker_after_the_first_checkpoint(model_dir, victim, stop):
    """Starts a cluster, sends `stop` to worker `victim` once the chief has saved a
    checkpoint, and returns (workers, outputs, seconds the others took to exit)."""
    workers = _start_cluster(model_dir, LONG_ARGS)
    deadline = time.monotonic() + TIMEOUT
    while not (model_dir / "checkpoints" / "checkpoint").exists():
        assert all(w.poll() is None for w in workers) and time.monotonic() < deadline, _finish(workers, 1)
        time.sleep(0.05)
    os.kill(workers[victim].pid, stop)
    start = time.monotonic()
    outputs = _finish(workers)
    return workers, outputs, time.monotonic() - start


def _message(output, label):
    """The worker's one `label:` line. TensorFlow's C++ runtime may still log a
    line or two about the vanished peer after it, as the process exits."""
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(f"{label}: ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


# The mnist recipe in one process on the global batches a 2-worker cluster trains on:
# each worker reads its own half of the records (`Split.plan`) as its own stream, and a
# global batch is worker 0's next 32 examples, then worker 1's.
TWO_WORKERS_IN_ONE_PROCESS = """
import tensorflow as tf
from recipes import mnist
from recipes.core.input import data
from recipes.core.training.config import TrainConfig

def two_workers_batches(strategy, split, global_batch_size, *, preprocess, seed, options):
    assert options.start_step == 0 and strategy.num_replicas_in_sync == 1
    half = global_batch_size // 2
    streams = tuple(data.records(split, seed=seed, pipeline=i, num_pipelines=2).batch(
        half, drop_remainder=True) for i in range(2))

    def decode(first, second):
        (x0, y0), (x1, y1) = first[1], second[1]
        return preprocess(tf.concat([x0, x1], axis=0)), tf.concat([y0, y1], axis=0)

    batches = tf.data.Dataset.zip(streams).map(decode)
    return strategy.distribute_datasets_from_function(lambda context: batches)

data.train_dataset = two_workers_batches  # What train.train_model reads its batches from.
config = TrainConfig(model_dir="{model_dir}", train_steps=20, batch_size=64, seed=7, steps_per_loop=10,
                     mixed_precision="float64")
mnist.run(config, tf.distribute.get_strategy(), data.open_data("sample"))
"""


def _max_weight_diff(dir_a, dir_b):
    a = keras.models.load_model(dir_a / "model.keras").get_weights()
    b = keras.models.load_model(dir_b / "model.keras").get_weights()
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An uninterrupted cluster run of LONG_ARGS: what a stopped and restarted cluster
    must reach. (After 300 Adam steps, 2 replicas and 1 drifted apart by about 1e-2
    through float summation order, so the reference has 2 replicas too.)"""
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    _run_cluster(model_dir, LONG_ARGS)
    return model_dir


@pytest.mark.slow
def test_two_workers_end_with_the_single_process_weights(tmp_path):
    # In float64, as tests/test_train.py's mirrored check: in float32, summing two
    # half-batches' gradients flips one ReLU unit's first tiny gradient (2.6e-4 apart).
    exact = [*ARGS, "--mixed_precision=float64"]
    outputs = _run_cluster(tmp_path / "cluster", exact)
    assert "Strategy: multi_worker with 2 replica(s)" in outputs[0]
    metrics = json.load(open(tmp_path / "cluster" / "metrics.json"))
    assert (metrics["strategy"], metrics["num_replicas"], metrics["steps"]) == ("multi_worker", 2, 20)
    assert sorted(os.listdir(tmp_path / "cluster")) == [  # The chief's outputs, nothing else.
        "checkpoints",
        "curves.png",
        "logs",
        "metrics.json",
        "model.keras",
        "saved_model",
    ]

    # The same training in one process, on the same global batches (ARGS, in TrainConfig's words).
    run_python(TWO_WORKERS_IN_ONE_PROCESS.format(model_dir=tmp_path / "single"))
    assert _max_weight_diff(tmp_path / "cluster", tmp_path / "single") < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["worker", "chief"])
def test_a_lost_worker_stops_the_other_and_a_restarted_cluster_resumes(tmp_path, uninterrupted, victim):
    model_dir = tmp_path / "cluster"
    workers, outputs, seconds = _stop_a_worker_after_the_first_checkpoint(model_dir, victim, signal.SIGKILL)
    survivor = 1 - victim
    assert workers[survivor].returncode == 1, outputs[survivor][-3000:]
    message = _message(outputs[survivor], "error")
    assert message.startswith("error: lost contact with another worker") and "Restart every worker" in message
    assert seconds < 60  # It did not wait on the dead peer.
    assert not (model_dir / "metrics.json").exists()

    outputs = _run_cluster(model_dir, LONG_ARGS)
    assert "Resuming from step" in outputs[0] and "Resuming from step" in outputs[1]
    metrics = json.load(open(model_dir / "metrics.json"))
    assert metrics["steps"] == LONG_STEPS and 0 < metrics["steps_this_run"] < LONG_STEPS
    assert _max_weight_diff(model_dir, uninterrupted) < 1e-4


@pytest.mark.slow
def test_a_preempted_worker_makes_the_cluster_save_and_resume_without_losing_steps(tmp_path, uninterrupted):
    model_dir = tmp_path / "cluster"
    workers, outputs, _ = _stop_a_worker_after_the_first_checkpoint(model_dir, 1, signal.SIGTERM)
    saved_at = set()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 42, output[-3000:]
        message = _message(output, "preempted")
        saved_at.add(saved_step(message))
    assert len(saved_at) == 1  # Both workers saved at the same step.
    step = saved_at.pop()
    assert (
        open(model_dir / "checkpoints" / "checkpoint")
        .read()
        .startswith(f'model_checkpoint_path: "ckpt-{step}"')
    )

    outputs = _run_cluster(model_dir, LONG_ARGS)
    assert f"Resuming from step {step}" in outputs[0]
    metrics = json.load(open(model_dir / "metrics.json"))
    assert metrics["steps_this_run"] == LONG_STEPS - step
    assert _max_weight_diff(model_dir, uninterrupted) < 1e-4
