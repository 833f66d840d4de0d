"""Image towers: pixels in, an L2-normalized embedding out."""

import math

import gin
import keras
from keras import ops

from vse_tf import errors
from vse_tf.models import pooling as pooling_layers
from vse_tf.models import towers

POOLINGS = ("mean", "gpo")


@keras.saving.register_keras_serializable(package="vse_tf")
class AddCoordinates(keras.layers.Layer):
    """Appends each pixel's (x, y) in [-1, 1] as two channels (CoordConv).

    Pooled convolutional features forget where things are; with coordinates
    as inputs a filter can respond to "red, on the left", so relations
    survive global pooling.
    """

    def call(self, images):
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        ys = ops.linspace(-1.0, 1.0, height)
        xs = ops.linspace(-1.0, 1.0, width)
        grid = ops.stack(ops.meshgrid(xs, ys), axis=-1)  # [H, W, 2]
        grid = ops.broadcast_to(
            ops.cast(grid, images.dtype)[None], (shape[0], height, width, 2)
        )
        return ops.concatenate([images, grid], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


@gin.configurable
def build_image_tower(
    image_size=64,
    conv_layers=((32, 4, 4), (64, 3, 1), (128, 3, 2)),
    hidden_units=512,
    embedding_dim=256,
    name="image_tower",
):
    """A small CNN for the built-in data, ending in a projection.

    Takes float32 pixels in [0, 255], [B, image_size, image_size, 3].

    Args:
      image_size: input height and width.
      conv_layers: (filters, kernel size, stride) of each ReLU convolution;
        the default starts with a 4x4 "patchify" stem, a tenth of the cost
        of a stride-1 stem on a CPU.
      hidden_units: width of the dense layer after pooling.
      embedding_dim: size of the joint space.

    Features are max- and mean-pooled over the image, so one filter learns
    "red circle" wherever it stands; coordinate channels keep "where".
    """
    factory = "build_image_tower"
    errors.check_number(
        f"{factory}.embedding_dim", embedding_dim, minimum=1, integer=True
    )
    errors.check_number(
        f"{factory}.hidden_units", hidden_units, minimum=1, integer=True
    )
    for layer in conv_layers:
        if len(layer) != 3 or not all(
            isinstance(v, int) and v >= 1 for v in layer
        ):
            raise errors.UserError(
                f"{factory}.conv_layers = {conv_layers!r} is not allowed: "
                "each layer is (filters, kernel size, stride), integers "
                ">= 1."
            )
    smallest = math.prod(stride for _, _, stride in conv_layers)
    errors.check_number(
        f"{factory}.image_size", image_size, minimum=smallest, integer=True
    )
    pixels = keras.Input((image_size, image_size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(pixels)
    x = AddCoordinates(name="coordinates")(x)
    for index, (filters, kernel_size, strides) in enumerate(conv_layers):
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            activation="relu",
            name=f"conv{index}",
        )(x)
    x = keras.layers.Concatenate(name="pool")(
        [
            keras.layers.GlobalMaxPooling2D(name="max_pool")(x),
            keras.layers.GlobalAveragePooling2D(name="mean_pool")(x),
        ]
    )
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(embedding_dim, name="projection")(x)
    # float32 under a mixed-precision policy too (see text_towers).
    embedding = keras.layers.UnitNormalization(
        name="l2_normalize", dtype="float32"
    )(x)
    return towers.Tower(pixels, embedding, name=name)


@gin.configurable
def build_precomputed_tower(
    feature_dim=2048,
    regions=None,
    embedding_dim=1024,
    pooling="mean",
    head_units=None,
    name="image_tower",
):
    """Precomputed CNN features (the VSE++ / SCAN "precomp" data) in: each
    feature vector projected linearly (VSE++'s EncoderImagePrecomp), the
    regions pooled, L2-normalized.

    Args:
      feature_dim: size of a feature vector (2048 for ResNet-152 or
        bottom-up-attention regions).
      regions: None for one global vector an image, [B, feature_dim];
        else the region count, [B, regions, feature_dim], each region
        projected and the projections pooled.
      embedding_dim: size of the joint space.
      pooling: over the regions: "mean" (SCAN's and VSE++'s average) or
        "gpo" (VSE-infinity's generalized pooling, see
        `pooling.GeneralizedPooling`).
      head_units: None, or the hidden width of the paper's head after the
        pooled projection (see `pooling.convse_head`).
    """
    factory = "build_precomputed_tower"
    errors.check_number(
        f"{factory}.feature_dim", feature_dim, minimum=1, integer=True
    )
    errors.check_number(
        f"{factory}.regions", regions, minimum=1, integer=True, none=True
    )
    errors.check_number(
        f"{factory}.embedding_dim", embedding_dim, minimum=1, integer=True
    )
    errors.check_number(
        f"{factory}.head_units", head_units, minimum=1, integer=True, none=True
    )
    errors.check_choice(f"{factory}.pooling", pooling, POOLINGS)
    shape = (feature_dim,) if regions is None else (regions, feature_dim)
    features = keras.Input(shape, name="features")
    x = keras.layers.Dense(embedding_dim, name="projection")(features)
    if regions is not None and pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    elif regions is not None:
        x = pooling_layers.GeneralizedPooling(name="gpo")(x)
    x = pooling_layers.convse_head(x, head_units, embedding_dim)
    embedding = keras.layers.UnitNormalization(
        name="l2_normalize", dtype="float32"
    )(x)
    return towers.Tower(features, embedding, name=name)
