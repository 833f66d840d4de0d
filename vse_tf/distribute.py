"""Which `tf.distribute` strategy a run uses."""

import gin
import tensorflow as tf


@gin.configurable
def get_strategy(kind="auto"):
    """"auto": MirroredStrategy over all GPUs when there are several, else
    the default strategy. "mirrored" or "default" force one.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if kind in ("auto", "default"):
        return tf.distribute.get_strategy()
    raise ValueError(f"Unknown strategy {kind!r}: use auto, mirrored or "
                     "default.")
