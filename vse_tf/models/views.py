"""Two views of each image, its mirror image the second: flip augmentation
that survives cached features, and the same flip averaged at test time.

A frozen backbone whose features are computed once sees each training image
the same way every epoch. With both views among those features, training
draws one of the two for each pair (the horizontal flip of VSE++'s
augmentation, decided per pair and per epoch), and evaluation and serving
embed both and average them, so a served embedding is the one scored
offline:

    features [B, 2, F] -> EachView(head): training, the head on one view;
                          otherwise on both, averaged -> [B, D]
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="vse_tf")
class MirrorViews(keras.layers.Layer):
    """Pixels [B, H, W, C] -> [2B, H, W, C]: the images, then their mirror
    images (left and right swapped), so that a backbone runs once on both."""

    def call(self, pixels):
        return tf.concat([pixels, tf.reverse(pixels, axis=[2])], axis=0)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else 2 * input_shape[0]
        return (batch, *input_shape[1:])


@keras.saving.register_keras_serializable(package="vse_tf")
class StackViews(keras.layers.Layer):
    """Features [2B, F] (as `MirrorViews` ordered them) -> [B, 2, F]."""

    def call(self, features):
        images, mirrored = tf.split(features, 2, axis=0)
        return tf.stack([images, mirrored], axis=1)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // 2
        return (batch, 2, *input_shape[1:])


@keras.saving.register_keras_serializable(package="vse_tf")
class EachView(keras.layers.Layer):
    """Features of the views [B, V, ...] -> one L2-normalized embedding
    [B, D], by `inner` (features [B, ...] -> embeddings [B, D]).

    Training: `inner` on one view of each image, drawn uniformly per image
    and per call (the other view costs nothing). Otherwise: `inner` on
    every view, their mean, L2-normalized again.
    """

    def __init__(self, inner, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, views, training=False):
        shape = tf.shape(views)
        if training:
            drawn = keras.random.randint(
                (shape[0],), 0, shape[1], seed=self.seed_generator
            )
            return self.inner(
                tf.gather(views, drawn, axis=1, batch_dims=1), training=True
            )
        flat = tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0))
        embeddings = self.inner(flat, training=False)
        embeddings = tf.reshape(embeddings, [shape[0], shape[1], -1])
        return tf.math.l2_normalize(
            tf.reduce_mean(tf.cast(embeddings, tf.float32), axis=1), axis=-1
        )

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(
            (input_shape[0], *input_shape[2:])
        )

    def get_config(self):
        return {
            **super().get_config(),
            "seed": self.seed,
            "inner": keras.layers.serialize(self.inner),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner"] = keras.layers.deserialize(config["inner"])
        return cls(**config)
