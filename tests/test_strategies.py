"""Strategy construction from plain arguments."""
import json
import os

import pytest
import tensorflow as tf

import strategies


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: auto, default, one_device, mirrored, multi_worker"):
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


def test_auto_picks_default_on_one_cpu_and_mirrored_on_split_cpus():
    assert strategies.get_strategy("auto", num_cpu_devices=1) is tf.distribute.get_strategy()
    mirrored = strategies.get_strategy("auto", num_cpu_devices=2)
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2


def test_more_cpu_devices_than_configured_after_start_up_is_a_clear_error():
    tf.constant(0)  # TensorFlow is initialized now.
    with pytest.raises(ValueError, match="before any other TensorFlow op"):
        strategies.get_strategy("mirrored", num_cpu_devices=3)


def test_more_gpus_than_visible_is_a_clear_error():
    with pytest.raises(ValueError, match="GPU"):
        strategies.get_strategy("mirrored", num_gpus=len(tf.config.list_logical_devices("GPU")) + 1)


@pytest.mark.parametrize("name", ["default", "one_device", "mirrored"])
def test_name_of_gives_back_the_name(name):
    assert strategies.name_of(strategies.get_strategy(name, num_cpu_devices=2)) == name


def test_cluster_comes_from_worker_hosts_when_tf_config_is_absent(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategies.configure_cluster("127.0.0.1:2001,127.0.0.1:2002", task_index=1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]},
        "task": {"type": "worker", "index": 1}}
    strategies.configure_cluster("127.0.0.1:9", task_index=0)  # An existing TF_CONFIG wins.
    assert json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1


@pytest.mark.parametrize("hosts, index, message", [
    (None, -1, "needs the cluster"),
    ("127.0.0.1:2001,127.0.0.1:2002", 2, "--task_index=2 is not a worker"),
])
def test_multi_worker_without_a_usable_cluster_is_a_clear_error(monkeypatch, hosts, index, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=message):
        strategies.get_strategy("multi_worker", worker_hosts=hosts, task_index=index)


def test_a_single_process_is_its_own_chief():
    assert strategies.is_chief(strategies.get_strategy("default"))
    assert strategies.is_chief(strategies.get_strategy("mirrored", num_cpu_devices=2))
