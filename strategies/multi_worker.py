"""The multi-worker strategy's cluster: TF_CONFIG from plain arguments, checked, and a
`MultiWorkerMirroredStrategy` whose wait for the other workers is bounded and
reported. `strategies.get_strategy("multi_worker", cluster=ClusterOptions(...))` uses it.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading

import tensorflow as tf

# How long a multi-worker run waits for every worker to join, and how often it
# says whom it waits for.
CLUSTER_TIMEOUT_SECONDS = 300
CLUSTER_PROGRESS_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """Where the `multi_worker` strategy finds its workers, and how long it waits for them.

    Args:
      worker_hosts: "host:port,host:port" of every worker; used when TF_CONFIG is not set.
      task_index: this worker's index in `worker_hosts`.
      cluster_timeout_seconds: how long to wait for every worker to join before exiting
        with one line that names the missing ones.
    """

    worker_hosts: str | None = None
    task_index: int = -1
    cluster_timeout_seconds: float = CLUSTER_TIMEOUT_SECONDS


def configure_cluster(worker_hosts: str | None = None, task_index: int = -1) -> None:
    """Makes sure TF_CONFIG describes the cluster, as Model Garden's `configure_cluster`.

    An existing TF_CONFIG wins; otherwise it is written from `worker_hosts`
    ("host:port,host:port") and this process's `task_index`.
    """
    if os.environ.get("TF_CONFIG"):
        for hosts in _tf_config()["cluster"].values():
            check_hosts(hosts, "TF_CONFIG")
        return
    hosts = [h.strip() for h in (worker_hosts or "").split(",") if h.strip()]
    if not hosts:
        raise ValueError(
            "the multi_worker strategy needs the cluster: set TF_CONFIG, or pass "
            "worker_hosts=host:port,host:port and task_index=i"
        )
    check_hosts(hosts, "worker_hosts")
    if not 0 <= task_index < len(hosts):
        raise ValueError(
            f"task_index={task_index} is not a worker of worker_hosts ({len(hosts)} "
            f"hosts); pass 0 to {len(hosts) - 1}"
        )
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}
    )


def check_hosts(hosts: list[str], where: str) -> None:
    """Each of `hosts` must be host:port with the port in [1, 65535], and no two the same."""
    for host in hosts:
        name, colon, port = str(host).rpartition(":")
        if not (colon and name and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(
                f"{where}: {host!r} is not host:port with a port in [1, 65535]; "
                "pass every worker as host:port, say localhost:12345"
            )
    duplicates = sorted({host for host in hosts if hosts.count(host) > 1})
    if duplicates:
        raise ValueError(
            f"{where} names {', '.join(duplicates)} more than once; give every worker its own host:port"
        )


def _tf_config():
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        if not isinstance(config.get("cluster"), dict):
            raise ValueError
        return config
    except ValueError:
        raise ValueError(
            'TF_CONFIG is not JSON with a "cluster" of host:port lists; fix or '
            "unset it, or pass worker_hosts and task_index"
        ) from None


def create_strategy(
    options: tf.distribute.experimental.CommunicationOptions, timeout_seconds: float
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy, created while a watchdog process
    (`_cluster_watchdog.py`) says every `CLUSTER_PROGRESS_SECONDS` which workers
    it still waits for, and after `timeout_seconds` ends this process with one
    line that names them. TensorFlow itself waits an hour without a word, holding
    the GIL, so that neither a thread nor a Python signal handler can run: SIGTERM
    and SIGINT get their default action (exit at once; nothing is written yet)."""
    interval = min(CLUSTER_PROGRESS_SECONDS, timeout_seconds / 2)
    watchdog = subprocess.Popen(
        [
            sys.executable,
            os.path.join(os.path.dirname(__file__), "_cluster_watchdog.py"),
            str(os.getpid()),
            str(timeout_seconds),
            str(interval),
            "cluster_timeout_seconds",
            *_other_hosts(_tf_config()),
        ],
        stdin=subprocess.PIPE,
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        {signum: signal.signal(signum, signal.SIG_DFL) for signum in (signal.SIGTERM, signal.SIGINT)}
        if in_main_thread
        else {}
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        watchdog.stdin.close()
        watchdog.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _other_hosts(config):
    task = config.get("task", {})
    hosts, index = config["cluster"].get(task.get("type"), []), task.get("index", 0)
    me = hosts[index] if 0 <= index < len(hosts) else None
    return [host for hosts in config["cluster"].values() for host in hosts if host != me]
