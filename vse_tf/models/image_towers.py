"""Image towers: pixels in, an L2-normalized embedding out."""

import gin
import keras


@gin.configurable
def build_image_tower(image_size=64,
                      conv_layers=((32, 4, 4), (64, 3, 2)),
                      hidden_units=512,
                      embedding_dim=256,
                      name="image_tower"):
    """A small CNN for the built-in data, ending in a projection.

    Takes float32 pixels in [0, 255], [B, image_size, image_size, 3].

    Args:
      image_size: input height and width.
      conv_layers: (filters, kernel size, stride) of each ReLU convolution;
        the default starts with a 4x4 "patchify" stem, which costs a tenth
        of a stride-1 stem on a CPU.
      hidden_units: width of the dense layer after the convolutions.
      embedding_dim: size of the joint space.

    The last feature map is flattened rather than pooled because captions
    say where objects are.
    """
    pixels = keras.Input((image_size, image_size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(pixels)
    for index, (filters, kernel_size, strides) in enumerate(conv_layers):
        x = keras.layers.Conv2D(filters, kernel_size, strides=strides,
                                padding="same", activation="relu",
                                name=f"conv{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(embedding_dim, name="projection")(x)
    embedding = keras.layers.UnitNormalization(name="l2_normalize")(x)
    return keras.Model(pixels, embedding, name=name)
