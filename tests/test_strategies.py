"""Strategy construction from plain arguments."""
import pytest
import tensorflow as tf

import strategies


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: auto, default, one_device, mirrored"):
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
