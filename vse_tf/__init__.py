"""vse_tf: contrastive visual-semantic embeddings in Keras 3 on TensorFlow."""

import os

# TensorFlow's C++ logging (CPU feature notes, retracing chatter) drowns the
# progress bars; errors still show. Marked as this package's default, so
# that a program started from one (a tool's subprocess) still tells it from
# a level the user set, which shows TensorFlow's start-up lines too
# (vse_tf.cli.startup).
if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["VSE_TF_DEFAULT_LOG_LEVEL"] = "1"
USER_TF_CPP_MIN_LOG_LEVEL = (
    None
    if os.environ.get("VSE_TF_DEFAULT_LOG_LEVEL")
    else os.environ.get("TF_CPP_MIN_LOG_LEVEL")
)

__version__ = "0.2.0"


def load(path, version=None):
    """A trained model from a run folder or an export folder, with
    `encode_images` and `encode_texts` (see `vse_tf.embedder`)."""
    # Deferred: `import vse_tf` stays light, and TensorFlow loads on use.
    from vse_tf import embedder

    return embedder.load(path, version)
