"""Strategy construction from plain arguments."""

import json
import os
import socket
import time

import pytest
import tensorflow as tf

import strategies
from tests.helpers import SPLIT_CPU_DEVICES


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(
        ValueError, match="choose one of: auto, default, one_device, mirrored, multi_worker, tpu"
    ):
        strategies.get_strategy("horovod")


def test_default_and_one_device_have_one_replica():
    assert strategies.get_strategy("default") is tf.distribute.get_strategy()
    one = strategies.get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1


def test_mirrored_on_logical_cpus_has_one_replica_per_device():
    strategy = strategies.get_strategy("mirrored", num_cpu_devices=2)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert all("CPU" in d for d in strategy.extended.worker_devices)


def test_auto_picks_default_on_one_cpu_and_mirrored_on_split_cpus_and_says_why():
    choices = []

    def record(name, reason):
        choices.append((name, reason))

    default = strategies.get_strategy("auto", num_cpu_devices=1, on_auto_choice=record)
    assert default is tf.distribute.get_strategy()
    mirrored = strategies.get_strategy("auto", num_cpu_devices=2, on_auto_choice=record)
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2
    assert choices == [
        ("default", "no GPU or TPU found, one CPU device"),
        ("mirrored", "no GPU, CPU split into 2 devices"),
    ]


def test_more_cpu_devices_than_configured_after_start_up_is_a_clear_error():
    tf.constant(0)  # TensorFlow is initialized now.
    with pytest.raises(ValueError, match="before any other TensorFlow op"):
        strategies.get_strategy("mirrored", num_cpu_devices=SPLIT_CPU_DEVICES + 1)


def test_more_gpus_than_visible_is_a_clear_error_worded_as_the_arguments():
    visible = len(tf.config.list_logical_devices("GPU"))
    with pytest.raises(
        ValueError, match=f"num_gpus={visible + 1} but only {visible} GPU.*; pass num_gpus={visible} or fewer"
    ) as error:
        strategies.get_strategy("mirrored", num_gpus=visible + 1)
    assert "--" not in str(error.value)  # No absl here: the caller passed arguments, not flags.


@pytest.mark.parametrize("name", ["default", "one_device", "mirrored"])
def test_name_of_gives_back_the_name(name):
    assert strategies.name_of(strategies.get_strategy(name, num_cpu_devices=2)) == name


def test_cluster_comes_from_worker_hosts_when_tf_config_is_absent(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")  # Unset for the test, and whatever it sets undone after.
    strategies.configure_cluster("127.0.0.1:2001,127.0.0.1:2002", task_index=1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]},
        "task": {"type": "worker", "index": 1},
    }
    strategies.configure_cluster("127.0.0.1:9", task_index=0)  # An existing TF_CONFIG wins.
    assert json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1


@pytest.mark.parametrize(
    "hosts, index, message",
    [
        (None, -1, "needs the cluster"),
        ("127.0.0.1:2001,127.0.0.1:2002", 2, "^task_index=2 is not a worker of worker_hosts"),
    ],
)
def test_multi_worker_without_a_usable_cluster_is_a_clear_error(monkeypatch, hosts, index, message):
    monkeypatch.setenv("TF_CONFIG", "")  # Unset for the test, and whatever it sets undone after.
    with pytest.raises(ValueError, match=message):
        strategies.get_strategy(
            "multi_worker", cluster=strategies.ClusterOptions(worker_hosts=hosts, task_index=index)
        )


def test_a_single_process_is_its_own_chief():
    assert strategies.is_chief(strategies.get_strategy("default"))
    assert strategies.is_chief(strategies.get_strategy("mirrored", num_cpu_devices=2))


def _spy_on_tpu_set_up(monkeypatch, stop_at=None):
    """Records the TPU set-up calls in order while the real TF functions run,
    except `stop_at`, which raises where a remote TPU would be contacted."""
    calls = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            if name == stop_at:
                raise tf.errors.UnavailableError(None, None, f"test stops at {name}")
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        tf.distribute.cluster_resolver,
        "TPUClusterResolver",
        spy("resolver", tf.distribute.cluster_resolver.TPUClusterResolver),
    )
    monkeypatch.setattr(
        tf.config,
        "experimental_connect_to_cluster",
        spy("connect", tf.config.experimental_connect_to_cluster),
    )
    monkeypatch.setattr(
        tf.tpu.experimental,
        "initialize_tpu_system",
        spy("initialize", tf.tpu.experimental.initialize_tpu_system),
    )
    return calls


def test_local_tpu_sets_up_in_order_and_fails_fast_without_one(monkeypatch):
    calls = _spy_on_tpu_set_up(monkeypatch)
    start = time.monotonic()
    with pytest.raises(ValueError, match="no TPU found for tpu=local") as error:
        strategies.get_strategy("tpu", tpu="local")
    assert time.monotonic() - start < 120  # A guard against a hang, not a timing.
    assert calls == ["resolver", "initialize"]  # A local TPU needs no connect.
    assert "\n" not in str(error.value) and "pass tpu=local on a TPU VM" in str(error.value)


def test_remote_tpu_connects_after_the_resolver_and_before_initializing(monkeypatch):
    calls = _spy_on_tpu_set_up(monkeypatch, stop_at="connect")
    with socket.socket() as listener:  # Something answers at the address, as a TPU worker would.
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = "grpc://127.0.0.1:%d" % listener.getsockname()[1]
        with pytest.raises(ValueError, match=f"no TPU found for tpu={address}"):
            strategies.get_strategy("tpu", tpu=address)
    assert calls == ["resolver", "connect"]


def test_tpu_address_where_nothing_answers_fails_within_seconds(monkeypatch):
    calls = _spy_on_tpu_set_up(monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"no TPU answers at grpc://127.0.0.1:{closed_port}"):
        strategies.get_strategy("tpu", tpu=f"grpc://127.0.0.1:{closed_port}")
    assert time.monotonic() - start < 120 and calls == []  # A guard against a hang.


def test_auto_tries_the_tpu_first_when_one_is_attached(monkeypatch):
    assert not strategies.tpu_attached()  # This CPU machine has none...
    monkeypatch.setattr(strategies, "tpu_attached", lambda: True)
    calls = _spy_on_tpu_set_up(monkeypatch)
    with pytest.raises(ValueError, match="no TPU found"):  # ...so the real set-up fails.
        strategies.get_strategy("auto")
    assert calls == ["resolver", "initialize"]


def test_steps_per_loop_default_suits_the_strategy():
    assert strategies.steps_per_loop(strategies.get_strategy("default")) == 100
    assert strategies.STEPS_PER_LOOP["tpu"] == 1000


def test_mirrored_takes_hierarchical_copy_and_still_sums_over_replicas():
    strategy = strategies.get_strategy("mirrored", num_cpu_devices=2, all_reduce_alg="hierarchical_copy")
    assert isinstance(strategy.extended._cross_device_ops, tf.distribute.HierarchicalCopyAllReduce)
    summed = strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0)))
    assert [float(v) for v in strategy.experimental_local_results(summed)] == [2.0, 2.0]


@pytest.mark.parametrize(
    "name, alg, message",
    [
        ("mirrored", "nccl", "nccl needs GPUs"),
        ("mirrored", "ring", "all_reduce_alg=ring does not apply to the mirrored strategy"),
        ("default", "hierarchical_copy", "does not apply to the default strategy"),
        ("tpu", "ring", "does not apply to the tpu strategy"),
        ("mirrored", "butterfly", "unknown all-reduce"),
    ],
)
def test_all_reduce_a_strategy_cannot_use_is_a_clear_error(name, alg, message):
    with pytest.raises(ValueError, match=message):
        strategies.get_strategy(name, num_cpu_devices=2, all_reduce_alg=alg)


def test_multi_worker_all_reduce_maps_to_collective_implementations():
    implementation = tf.distribute.experimental.CommunicationImplementation
    assert strategies._collective_options("ring", -1).implementation == implementation.RING
    assert strategies._collective_options("auto", -1).implementation == implementation.AUTO
    with pytest.raises(ValueError, match="does not apply to the multi_worker strategy"):
        strategies._collective_options("hierarchical_copy", -1)


def test_mixed_precision_is_picked_by_what_the_devices_compute_natively():
    assert strategies.fast_mixed_precision(strategies.get_strategy("default")) is None  # This CPU.
    assert strategies.mixed_precision_for_capability((9, 0)) == "mixed_bfloat16"  # H100
    assert strategies.mixed_precision_for_capability((8, 0)) == "mixed_bfloat16"  # A100
    assert strategies.mixed_precision_for_capability((7, 5)) == "mixed_float16"  # T4
    assert strategies.mixed_precision_for_capability((7, 0)) == "mixed_float16"  # V100
    assert strategies.mixed_precision_for_capability((6, 0)) is None  # P100
