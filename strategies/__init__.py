"""Builds a `tf.distribute.Strategy` from plain arguments.

    import strategies
    strategy = strategies.get_strategy("mirrored", num_cpu_devices=2)
    cluster = strategies.ClusterOptions(worker_hosts="host1:2222,host2:2222", task_index=0)
    strategy = strategies.get_strategy("multi_worker", cluster=cluster)

One small function maps a name to a strategy, in the manner of TF Model
Garden's `distribute_utils.get_distribution_strategy`. No absl here: the
recipes turn their flags into these keyword arguments.
"""

import glob
import os
import socket
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from strategies import multi_worker
from strategies.multi_worker import (
    CLUSTER_PROGRESS_SECONDS,
    CLUSTER_TIMEOUT_SECONDS,
    ClusterOptions,
    check_hosts,
    configure_cluster,
)

NAMES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
ALL_REDUCE_ALGS = ("auto", "nccl", "hierarchical_copy", "ring")

# Training steps per tf.function call. A TPU runs each call as one program, and
# the host round trip between calls is its main overhead, so TPUs get more.
STEPS_PER_LOOP = {"tpu": 1000}
DEFAULT_STEPS_PER_LOOP = 100
# Logical CPU devices are for testing multi-replica code; each one is a set of
# thread pools, and TensorFlow hangs creating a thousand of them.
MAX_CPU_DEVICES = 64


def configure_cpu_devices(num_cpu_devices):
    """Makes the host CPU available as at least `num_cpu_devices` logical devices.

    This lets a CPU-only machine run a real multi-replica MirroredStrategy. The
    split must happen before TensorFlow initializes its devices (before the
    first op); after that, asking for no more devices than exist is fine.

    Each logical device then computes with its share of the cores: a kernel (an
    XLA program included) gets `cores // num_cpu_devices` threads, at least one,
    unless the intra-op thread count was set already. The devices' kernels run at
    the same time, and each asking for every core made two replicas' steps on 2
    cores take 41 ms instead of 28 (MNIST net, batch 256).
    """
    if not 1 <= num_cpu_devices <= MAX_CPU_DEVICES:
        raise ValueError(f"num_cpu_devices must be in [1, {MAX_CPU_DEVICES}]; received {num_cpu_devices}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = len(tf.config.get_logical_device_configuration(cpu) or [None])
    if num_cpu_devices <= configured:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
        )
        if not tf.config.threading.get_intra_op_parallelism_threads():
            tf.config.threading.set_intra_op_parallelism_threads(
                max(1, (os.cpu_count() or 1) // num_cpu_devices)
            )
    except RuntimeError:  # TensorFlow is already initialized.
        raise ValueError(
            f"cannot split the CPU into {num_cpu_devices} devices: TensorFlow already "
            f"runs with {configured}; configure devices before any other TensorFlow op"
        ) from None


def _gpus(num_gpus):
    """Visible GPU device names, the first `num_gpus` of them (-1: all)."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_gpus is None or num_gpus < 0:
        return gpus
    if num_gpus > len(gpus):
        raise ValueError(
            f"num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible; "
            f"pass num_gpus={len(gpus)} or fewer."
        )
    return gpus[:num_gpus]


def get_strategy(
    name: str = "auto",
    *,
    num_gpus: int = -1,
    num_cpu_devices: int = 1,
    all_reduce_alg: str = "auto",
    tpu: str | None = None,
    cluster: ClusterOptions | None = None,
    on_auto_choice: Callable[[str, str], None] | None = None,
) -> tf.distribute.Strategy:
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
          TF_CONFIG, or in `cluster`'s `worker_hosts` and `task_index`.
        * `tpu`: TPUStrategy over the TPU named by `tpu`.
      num_gpus: GPUs to use; -1 means all visible, 0 means none.
      num_cpu_devices: logical CPU devices to split the host CPU into.
      all_reduce_alg: how replicas sum gradients, one of `ALL_REDUCE_ALGS`.
        `mirrored` takes nccl (GPUs) or hierarchical_copy; `multi_worker`
        takes ring or nccl (GPUs); auto lets TensorFlow choose.
      tpu: for `tpu`: "local" (a TPU VM, Colab), a Cloud TPU name, or
        "grpc://host:port". None: $TPU_NAME if set, else "local".
      cluster: for `multi_worker`, the workers and how long to wait for them
        (`ClusterOptions`); default: `ClusterOptions()`, the cluster in TF_CONFIG.
      on_auto_choice: for `auto`, called as `on_auto_choice(chosen, reason)` with the
        name of the strategy chosen and why (`auto_choice`); None logs them.

    Raises:
      ValueError: for an unknown name, a device count that cannot be met, an
        all-reduce the strategy cannot use, or a TPU that is not there.
    """
    cluster = cluster or ClusterOptions()
    _check_arguments(name, all_reduce_alg, cluster)
    configure_cpu_devices(num_cpu_devices)
    if name == "multi_worker":
        # Created before anything initializes TensorFlow's runtime, as it must be.
        configure_cluster(cluster.worker_hosts, cluster.task_index)
        options = _collective_options(all_reduce_alg, num_gpus)
        return multi_worker.create_strategy(options, cluster.cluster_timeout_seconds)
    if name == "auto":
        name, why = auto_choice(num_gpus, num_cpu_devices)
        (on_auto_choice or _log_choice)(name, why)
    if name == "tpu":
        _check_all_reduce(all_reduce_alg, "tpu", ())
        return _tpu_strategy(tpu)
    return _one_host_strategy(name, _gpus(num_gpus), num_cpu_devices, all_reduce_alg)


def _check_arguments(name, all_reduce_alg, cluster):
    if name not in NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(NAMES)}")
    if all_reduce_alg not in ALL_REDUCE_ALGS:
        raise ValueError(
            f"unknown all-reduce {all_reduce_alg!r}; choose one of: {', '.join(ALL_REDUCE_ALGS)}"
        )
    if not cluster.cluster_timeout_seconds > 0:
        raise ValueError(
            f"cluster_timeout_seconds must be positive; received {cluster.cluster_timeout_seconds}"
        )


def _one_host_strategy(name, gpus, num_cpu_devices, all_reduce_alg):
    """The `default`, `one_device` or `mirrored` strategy over `gpus`, else the CPUs."""
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:num_cpu_devices]
    _check_all_reduce(all_reduce_alg, name, gpus)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else cpus[0])
    # Logical CPUs share one memory: adding the replicas' gradients on one of them and
    # copying the sum back beats TF's default there, a collective all-reduce (MNIST
    # net, batch 256, 2 CPUs: 35 against 41 ms a step without the update).
    default = lambda: None if gpus else tf.distribute.ReductionToOneDevice()
    cross_device_ops = {
        "nccl": tf.distribute.NcclAllReduce,
        "hierarchical_copy": tf.distribute.HierarchicalCopyAllReduce,
    }.get(all_reduce_alg, default)()
    return tf.distribute.MirroredStrategy(devices=gpus or cpus, cross_device_ops=cross_device_ops)


def auto_choice(num_gpus=-1, num_cpu_devices=1):
    """What `get_strategy("auto")` picks on this machine, and why: (name, reason)."""
    if tpu_attached():
        return "tpu", "a TPU is attached"
    gpus = _gpus(num_gpus)
    cpus = tf.config.list_logical_devices("CPU")[:num_cpu_devices]
    if len(gpus) > 1:
        return "mirrored", f"{len(gpus)} GPUs are visible"
    if gpus:
        return "one_device", "one GPU is visible"
    if len(cpus) > 1:
        return "mirrored", f"no GPU, CPU split into {len(cpus)} devices"
    return "default", "no GPU or TPU found, one CPU device"


def _log_choice(name, reason):
    logging.info("Strategy auto chose %r: %s.", name, reason)


def _check_all_reduce(all_reduce_alg, name, gpus):
    """Raises a ValueError unless strategy `name` can use `all_reduce_alg`."""
    usable = {"mirrored": ("nccl", "hierarchical_copy"), "multi_worker": ("ring", "nccl")}
    if all_reduce_alg == "auto":
        return
    if all_reduce_alg not in usable.get(name, ()):
        raise ValueError(
            f"all_reduce_alg={all_reduce_alg} does not apply to the {name} strategy; "
            "mirrored takes nccl or hierarchical_copy, multi_worker takes ring or nccl, "
            "the others only auto"
        )
    if all_reduce_alg == "nccl" and not gpus:
        raise ValueError("all_reduce_alg=nccl needs GPUs and none is used; pass all_reduce_alg=auto")


def _collective_options(all_reduce_alg, num_gpus):
    """MultiWorkerMirroredStrategy's communication options for `all_reduce_alg`."""
    # Listing physical devices does not start the runtime, so MWMS may still follow.
    gpus = tf.config.list_physical_devices("GPU")[: None if num_gpus < 0 else num_gpus]
    _check_all_reduce(all_reduce_alg, "multi_worker", gpus)
    implementation = tf.distribute.experimental.CommunicationImplementation
    return tf.distribute.experimental.CommunicationOptions(
        implementation={
            "auto": implementation.AUTO,
            "ring": implementation.RING,
            "nccl": implementation.NCCL,
        }[all_reduce_alg]
    )


def tpu_attached():
    """Whether this machine has a TPU: TPU devices, the device files of a TPU VM
    (Colab's TPU runtime is one), or a Cloud TPU named in $TPU_NAME."""
    return bool(
        tf.config.list_physical_devices("TPU") or glob.glob("/dev/accel*") or os.environ.get("TPU_NAME")
    )


def _tpu_strategy(tpu):
    """TPUStrategy, set up in the documented order: resolver, connect (for a
    remote TPU), initialize the TPU system, strategy."""
    tpu = tpu or os.environ.get("TPU_NAME") or "local"
    what_to_pass = (
        "pass tpu=local on a TPU VM or Colab TPU runtime, tpu=NAME for a "
        "Cloud TPU, tpu=grpc://host:port for a TPU worker, or pick another "
        "strategy"
    )
    if tpu.startswith("grpc://"):
        # Connecting to an address where no TPU listens hangs for minutes; a
        # plain TCP probe says within seconds whether anything is there.
        host, _, port = tpu[len("grpc://") :].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError):
            raise ValueError(f"no TPU answers at {tpu}; {what_to_pass}") from None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        reason = str(e).strip().splitlines()[0].split(". ")[0][:160]
        raise ValueError(f"no TPU found for tpu={tpu} ({reason}); {what_to_pass}") from None
    return tf.distribute.TPUStrategy(resolver)


def fast_mixed_precision(strategy):
    """The Keras mixed-precision policy that `strategy`'s devices compute fastest, or
    None for float32: `mixed_bfloat16` on TPUs and on GPUs of compute capability 8.0
    (Ampere) or newer, where bfloat16 is native; `mixed_float16` on 7.x GPUs (V100,
    T4), whose tensor cores take float16 but not bfloat16; None on CPUs, which
    emulate much of both, and on older GPUs."""
    if name_of(strategy) == "tpu":
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # The default strategy: ops go to the first GPU when there is one.
        devices = ["GPU"]
    if not gpus or not all("GPU" in d.upper() for d in devices):
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return mixed_precision_for_capability(tuple(details.get("compute_capability", (0, 0))))


def mixed_precision_for_capability(capability):
    """`fast_mixed_precision` for a GPU of this compute capability, e.g. (7, 5)."""
    if capability >= (8, 0):
        return "mixed_bfloat16"
    return "mixed_float16" if capability >= (7, 0) else None


def steps_per_loop(strategy):
    """A good default for training steps per tf.function call under `strategy`."""
    return STEPS_PER_LOOP.get(name_of(strategy), DEFAULT_STEPS_PER_LOOP)


def num_input_pipelines(strategy):
    """How many input pipelines `distribute_datasets_from_function` builds under
    `strategy`: one per worker of a cluster, one per TPU host, else one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        jobs = resolver.cluster_spec().as_dict()
        return sum(len(jobs.get(job, ())) for job in ("chief", "worker")) or 1
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return strategy.extended.num_hosts
    return 1


def is_chief(strategy):
    """Whether this process writes the run's outputs: the chief, or worker 0
    when the cluster has no chief, or the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and ("chief" not in resolver.cluster_spec().as_dict())
    )


def name_of(strategy):
    """The `get_strategy` name of a strategy object, e.g. "mirrored"."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if strategy is tf.distribute.get_strategy():
        return "default"
    return type(strategy).__name__


__all__ = [
    "ALL_REDUCE_ALGS",
    "CLUSTER_PROGRESS_SECONDS",
    "CLUSTER_TIMEOUT_SECONDS",
    "DEFAULT_STEPS_PER_LOOP",
    "MAX_CPU_DEVICES",
    "NAMES",
    "STEPS_PER_LOOP",
    "ClusterOptions",
    "auto_choice",
    "check_hosts",
    "configure_cluster",
    "configure_cpu_devices",
    "fast_mixed_precision",
    "get_strategy",
    "is_chief",
    "mixed_precision_for_capability",
    "name_of",
    "num_input_pipelines",
    "steps_per_loop",
    "tpu_attached",
]
