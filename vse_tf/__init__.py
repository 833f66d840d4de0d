"""vse_tf: contrastive visual-semantic embeddings in Keras 3 on TensorFlow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes on CPU machines, CPU feature
# notes) drowns the progress bars; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
