"""Pooling a set of features (image regions, grid cells) into one vector,
and the paper's projection head."""

import math

import keras
import numpy as np
from keras import ops


def positional_encoding(length, dim):
    """The Transformer's sinusoids, [length, dim]: sin at even, cos at odd
    features, wavelengths from 2*pi to 10000*2*pi."""
    if dim % 2:
        raise ValueError(f"A sinusoidal encoding needs an even dim, got {dim}.")
    position = np.arange(length, dtype=np.float32)[:, None]
    frequency = np.exp(
        np.arange(0, dim, 2, dtype=np.float32) * -(math.log(10000.0) / dim)
    )
    encoding = np.zeros((length, dim), np.float32)
    encoding[:, 0::2] = np.sin(position * frequency)
    encoding[:, 1::2] = np.cos(position * frequency)
    return encoding


@keras.saving.register_keras_serializable(package="vse_tf")
class GeneralizedPooling(keras.layers.Layer):
    """VSE-infinity's generalized pooling operator (GPO; Chen et al., 2021).

    Each feature dimension is sorted over the K set elements, largest
    first, and the sorted values are averaged with learned weights theta_k:

        pooled_d = sum_k theta_k * sort_desc(features[:, d])_k

    theta = softmax(score(BiGRU(positional_encoding(K))) / temperature), a
    function of the rank k alone, so GPO learns anything from max pooling
    (theta = e_1) to mean pooling (theta uniform) and the k-max blends in
    between, and the result does not depend on the order of the elements.

    Args:
      encoding_dim: size of the rank encoding (VSE-infinity: 32).
      units: units of each direction of the GRU (32); the two directions
        are averaged.
      temperature: of the softmax over ranks (0.1).

    Input [B, K, D] with a fixed K (every region or grid cell present);
    output [B, D].
    """

    def __init__(self, encoding_dim=32, units=32, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        self.encoding_dim = encoding_dim
        self.units = units
        self.temperature = temperature
        self.gru = keras.layers.Bidirectional(
            keras.layers.GRU(units, return_sequences=True),
            merge_mode="ave",
            name="bigru",
        )
        self.score = keras.layers.Dense(1, use_bias=False, name="score")

    def build(self, input_shape):
        count = input_shape[1]
        self.gru.build((1, count, self.encoding_dim))
        self.score.build((1, count, self.units))

    def pool_weights(self, count):
        """theta, the weight of each rank, [count], summing to one."""
        encoding = ops.convert_to_tensor(
            positional_encoding(count, self.encoding_dim)
        )[None]
        scores = self.score(self.gru(encoding))[0, :, 0]
        return ops.softmax(ops.cast(scores, "float32") / self.temperature)

    def call(self, features):
        weights = ops.cast(self.pool_weights(features.shape[1]), features.dtype)
        ranked = ops.flip(
            ops.sort(ops.moveaxis(features, 1, -1), axis=-1), axis=-1
        )  # [B, D, K], largest first
        return ops.einsum("bdk,k->bd", ranked, weights)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "encoding_dim": self.encoding_dim,
            "units": self.units,
            "temperature": self.temperature,
        }


def convse_head(x, hidden_units, embedding_dim, suffix=""):
    """The paper's head on an embedding (ConVSE modes of the authors' code):
    Dense(hidden_units) -> ReLU -> Dense(embedding_dim); identity when
    hidden_units is None."""
    if not hidden_units:
        return x
    x = keras.layers.Dense(
        hidden_units, activation="relu", name="head_hidden" + suffix
    )(x)
    return keras.layers.Dense(embedding_dim, name="head_output" + suffix)(x)
