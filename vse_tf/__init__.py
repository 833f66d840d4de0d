"""vse_tf: contrastive visual-semantic embeddings in Keras 3 on TensorFlow."""

import os

# What the user set, before the default below (the programs show
# TensorFlow's start-up lines when it is set: vse_tf.cli.startup).
USER_TF_CPP_MIN_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
# TensorFlow's C++ logging past start-up (CPU feature notes, retracing
# chatter) drowns the progress bars; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
