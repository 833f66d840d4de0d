"""Shared test set-up.

The CPU is split into two logical devices before TensorFlow starts, so that
a MirroredStrategy over them runs real two-replica steps on a laptop.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A TFDS data dir holding the tiny built-in dataset, made once."""
    import tensorflow_datasets as tfds

    import vse_tf.data.shapes  # noqa: F401  (registers the builder)

    path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    tfds.builder("shapes/tiny", data_dir=path).download_and_prepare()
    return path


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Separate strategies in one process reuse collective keys and can cross
    their all-gathers, so tests share this one.
    """
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs the two logical CPUs configured above")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
