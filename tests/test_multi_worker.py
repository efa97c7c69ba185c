"""MultiWorkerMirroredStrategy as two local worker processes on 127.0.0.1 ports."""
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO, run_module

ARGS = ["--train_steps=20", "--batch_size=64", "--seed=7", "--steps_per_loop=10"]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_end_with_the_single_process_weights(tmp_path):
    hosts = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "recipes.mnist", "--strategy=multi_worker",
         f"--worker_hosts={hosts}", f"--task_index={i}", f"--model_dir={tmp_path / 'cluster'}", *ARGS],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    try:
        outputs = [w.communicate(timeout=240)[0] for w in workers]  # Bounded: no hang.
    finally:
        for w in workers:
            w.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    assert "Strategy: multi_worker with 2 replica(s)" in outputs[0]
    metrics = json.load(open(tmp_path / "cluster" / "metrics.json"))
    assert (metrics["strategy"], metrics["num_replicas"], metrics["steps"]) == ("multi_worker", 2, 20)

    single = run_module("recipes.mnist", "--strategy=default", f"--model_dir={tmp_path / 'single'}", *ARGS)
    assert single.returncode == 0, single.stderr[-3000:]
    cluster_weights = keras.models.load_model(tmp_path / "cluster" / "model.keras").get_weights()
    single_weights = keras.models.load_model(tmp_path / "single" / "model.keras").get_weights()
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(cluster_weights, single_weights)) < 1e-4
