"""Two views of each image, its mirror image the second: flip augmentation
that survives cached features, and the same flip averaged at test time.

A frozen backbone whose features are computed once sees each training image
the same way every epoch. With both views among those features, training
draws one of the two for each pair (the horizontal flip of VSE++'s
augmentation, decided per pair and per epoch), and evaluation and serving
embed both and average them, so a served embedding is the one scored
offline:

    features [B, 2, F] -> head on each view -> [B, 2, D] -> ViewPooling -> [B, D]
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
class ViewPooling(keras.layers.Layer):
    """L2-normalized embeddings of the views [B, V, D] -> [B, D].

    Training: one view of each image, drawn uniformly per image and per
    call. Otherwise: the mean of the views, L2-normalized again.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, views, training=False):
        if training:
            shape = tf.shape(views)
            drawn = keras.random.randint(
                (shape[0],), 0, shape[1], seed=self.seed_generator)
            return tf.gather(views, drawn, axis=1, batch_dims=1)
        return tf.math.l2_normalize(tf.reduce_mean(views, axis=1), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
