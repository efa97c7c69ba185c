"""Builds a `tf.distribute.Strategy` from plain arguments.

    import strategies
    strategy = strategies.get_strategy("mirrored", num_cpu_devices=2)

One small function maps a name to a strategy, in the manner of TF Model
Garden's `distribute_utils.get_distribution_strategy`. No absl here: the
recipes turn their flags into these keyword arguments.
"""
import json
import os

from absl import logging
import tensorflow as tf

NAMES = ("auto", "default", "one_device", "mirrored", "multi_worker")


def configure_cpu_devices(num_cpu_devices):
    """Makes the host CPU available as at least `num_cpu_devices` logical devices.

    This lets a CPU-only machine run a real multi-replica MirroredStrategy. The
    split must happen before TensorFlow initializes its devices (before the
    first op); after that, asking for no more devices than exist is fine.
    """
    if num_cpu_devices < 1:
        raise ValueError(
            f"--num_cpu_devices must be at least 1; received {num_cpu_devices}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = len(tf.config.get_logical_device_configuration(cpu) or [None])
    if num_cpu_devices <= configured:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
    except RuntimeError:  # TensorFlow is already initialized.
        raise ValueError(
            f"cannot split the CPU into {num_cpu_devices} devices: TensorFlow already "
            f"runs with {configured}; configure devices before any other TensorFlow op"
        ) from None


def configure_cluster(worker_hosts=None, task_index=-1):
    """Makes sure TF_CONFIG describes the cluster, as Model Garden's `configure_cluster`.

    An existing TF_CONFIG wins; otherwise it is written from `worker_hosts`
    ("host:port,host:port") and this process's `task_index`.
    """
    if os.environ.get("TF_CONFIG"):
        return
    hosts = [h for h in (worker_hosts or "").split(",") if h]
    if not hosts:
        raise ValueError(
            "--strategy=multi_worker needs the cluster: set TF_CONFIG, or pass "
            "--worker_hosts=host:port,host:port and --task_index=i")
    if not 0 <= task_index < len(hosts):
        raise ValueError(
            f"--task_index={task_index} is not a worker of --worker_hosts ({len(hosts)} "
            f"hosts); pass 0 to {len(hosts) - 1}")
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}})


def _gpus(num_gpus):
    """Visible GPU device names, the first `num_gpus` of them (-1: all)."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_gpus is None or num_gpus < 0:
        return gpus
    if num_gpus > len(gpus):
        raise ValueError(
            f"num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible; "
            f"pass --num_gpus={len(gpus)} or fewer."
        )
    return gpus[:num_gpus]


def get_strategy(name="auto", *, num_gpus=-1, num_cpu_devices=1, worker_hosts=None,
                 task_index=-1):
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
      name: one of `NAMES`.
        * `auto`: MirroredStrategy over all GPUs when there are several, one
          GPU when there is one, else the CPU (MirroredStrategy over logical
          CPUs when `num_cpu_devices > 1`, the default strategy otherwise).
        * `default`: TensorFlow's default (no-op) strategy, one device.
        * `one_device`: OneDeviceStrategy on the first GPU, else the CPU.
        * `mirrored`: synchronous data parallelism over `num_gpus` GPUs, or
          over `num_cpu_devices` logical CPUs when no GPU is used.
        * `multi_worker`: MultiWorkerMirroredStrategy over the cluster in
          TF_CONFIG, or in `worker_hosts` and `task_index`.
      num_gpus: GPUs to use; -1 means all visible, 0 means none.
      num_cpu_devices: logical CPU devices to split the host CPU into.
      worker_hosts: "host:port,..." of every worker, for `multi_worker`.
      task_index: this worker's index in `worker_hosts`.

    Raises:
      ValueError: for an unknown name or a device count that cannot be met.
    """
    if name not in NAMES:
        raise ValueError(
            f"unknown strategy {name!r}; choose one of: {', '.join(NAMES)}"
        )
    configure_cpu_devices(num_cpu_devices)
    if name == "multi_worker":
        # Created before anything initializes TensorFlow's runtime, as it must be.
        configure_cluster(worker_hosts, task_index)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = _gpus(num_gpus)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:num_cpu_devices]

    if name == "auto":
        if len(gpus) > 1:
            name, why = "mirrored", f"{len(gpus)} GPUs are visible"
        elif gpus:
            name, why = "one_device", "one GPU is visible"
        elif len(cpus) > 1:
            name, why = "mirrored", f"no GPU, CPU split into {len(cpus)} devices"
        else:
            name, why = "default", "no GPU or TPU found, one CPU device"
        logging.info("--strategy=auto chose %r: %s.", name, why)

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else cpus[0])
    return tf.distribute.MirroredStrategy(devices=gpus or cpus)


def is_chief(strategy):
    """Whether this process writes the run's outputs: the chief, or worker 0
    when the cluster has no chief, or the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and (
        "chief" not in resolver.cluster_spec().as_dict())


def name_of(strategy):
    """The `get_strategy` name of a strategy object, e.g. "mirrored"."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    if strategy is tf.distribute.get_strategy():
        return "default"
    return type(strategy).__name__
