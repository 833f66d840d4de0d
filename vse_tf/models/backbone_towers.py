"""Image towers on ImageNet backbones for raw photos (MS-COCO, Flickr30K).

    pixels [B, S, S, 3] in [0, 255] (S = the loader's image size, 256)
      -> crop: VSE++'s random resized crop and flip when training, the
         centre crop when not (crop_size, 224)
      -> ImageNet normalization of the backbone
      -> backbone, pooled (ResNet-152 as in VSE++; any keras.applications
         ResNet, or a keras-hub preset folder such as a ViT)
      -> projection head into the joint space, L2-normalized

The crop, the normalization and the backbone form the sub-model named
`backbone`, and the head the one named `head`, as in `pretrained_towers`:
a frozen backbone's features can be computed once (`train.cache_features`).
Weights come from a local file or preset folder; nothing is downloaded.
"""

import math
import os

import gin
import keras
import tensorflow as tf

from vse_tf import errors
from vse_tf.errors import WeightsError
from vse_tf.models import towers
from vse_tf.models.pretrained_towers import BACKBONE
from vse_tf.models.pretrained_towers import check_head
from vse_tf.models.pretrained_towers import projection_head

RESNETS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
# The Keras ImageNet weights of each, as keras.applications names them.
RESNET_FILES = {
    name: f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    for name in RESNETS
}
RESNET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
)


def crop_and_resize(images, boxes, size):
    """`tf.image.crop_and_resize` (bilinear, box b of image b, boxes inside
    the image) from gathers: TensorFlow's CropAndResize kernel has no XLA
    version, so a train step with it cannot be compiled
    (train.jit_compile).

    images: [B, H, W, C]; boxes: [B, 4] of (top, left, bottom, right) in
    [0, 1]; returns [B, size, size, C] float32.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    fraction = tf.range(size, dtype=tf.float32) / max(size - 1, 1)

    def sample_points(start, end, extent):
        # As the kernel: start * (extent - 1) + i * (end - start) *
        # (extent - 1) / (size - 1); the box's centre for one pixel.
        extent = tf.cast(extent - 1, tf.float32)
        if size > 1:
            points = (
                start[:, None] + fraction[None] * (end - start)[:, None]
            ) * extent
        else:
            points = 0.5 * (start + end)[:, None] * extent
        low = tf.floor(points)
        return (
            tf.cast(low, tf.int32),
            tf.cast(tf.math.ceil(points), tf.int32),
            points - low,
        )

    top, bottom, y_weight = sample_points(boxes[:, 0], boxes[:, 2], shape[1])
    left, right, x_weight = sample_points(boxes[:, 1], boxes[:, 3], shape[2])
    x_weight = x_weight[:, None, :, None]

    def along_rows(rows):  # [B, size, W, C] -> [B, size, size, C]
        at_left = tf.gather(rows, left, axis=2, batch_dims=1)
        at_right = tf.gather(rows, right, axis=2, batch_dims=1)
        return at_left + (at_right - at_left) * x_weight

    upper = along_rows(tf.gather(images, top, axis=1, batch_dims=1))
    lower = along_rows(tf.gather(images, bottom, axis=1, batch_dims=1))
    return upper + (lower - upper) * y_weight[:, :, None, None]


@keras.saving.register_keras_serializable(package="vse_tf")
class RandomResizedCrop(keras.layers.Layer):
    """VSE++'s training crop (torchvision's RandomResizedCrop) and flip;
    the centre crop when not training.

    Training: a box of a random fraction `scale` of the image's area and a
    random aspect ratio in `ratio` (log-uniform), at a random place, resized
    to size x size, then flipped left-right with probability 1/2. A box
    wider or taller than the image is clipped to it (torchvision retries,
    then falls back to a centre crop).
    """

    def __init__(
        self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            height, width = images.shape[1], images.shape[2]
            top, left = (height - self.size) // 2, (width - self.size) // 2
            return images[:, top : top + self.size, left : left + self.size]
        batch = tf.shape(images)[0]

        def uniform(low, high):
            return keras.random.uniform([batch], low, high, seed=self.generator)

        area = uniform(*self.scale)
        aspect = tf.exp(
            uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))
        )
        box_width = tf.minimum(tf.sqrt(area * aspect), 1.0)
        box_height = tf.minimum(tf.sqrt(area / aspect), 1.0)
        top = uniform(0.0, 1.0) * (1.0 - box_height)
        left = uniform(0.0, 1.0) * (1.0 - box_width)
        boxes = tf.stack(
            [top, left, top + box_height, left + box_width], axis=1
        )
        crops = crop_and_resize(images, boxes, self.size)
        flip = uniform(0.0, 1.0) < 0.5
        crops = tf.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
        return tf.cast(crops, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "scale": self.scale,
            "ratio": self.ratio,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="vse_tf")
class CaffeNormalization(keras.layers.Layer):
    """keras.applications ResNet's input: RGB -> BGR, minus the ImageNet
    mean pixel (its `preprocess_input`, "caffe" mode)."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, pixels):
        return pixels[..., ::-1] - tf.constant(self.MEAN_BGR, pixels.dtype)


def _resnet(backbone, weights, crop_size):
    if weights == "random":
        weights = None
    elif not weights or not os.path.exists(weights):
        raise WeightsError(
            f"The {backbone} ImageNet weights are "
            + (f"not at {weights!r}" if weights else "not set")
            + f". Download {RESNET_FILES[backbone]} from {RESNET_URL} and set "
            f"build_backbone_tower.weights to its path, or set it to "
            "'random' to train from scratch (nothing is downloaded at run "
            "time)."
        )
    try:
        model = RESNETS[backbone](
            include_top=False,
            weights=weights,
            input_shape=(crop_size, crop_size, 3),
            pooling="avg",
        )
    except (OSError, ValueError) as error:
        raise WeightsError(
            f"Cannot read the {backbone} weights {weights!r} "
            f"(build_backbone_tower.weights): {str(error).splitlines()[0]} "
            f"Download {RESNET_FILES[backbone]} again from {RESNET_URL}."
        ) from error
    return CaffeNormalization(name="normalize"), model


def _keras_hub(folder, weights):
    import keras_hub

    if not os.path.exists(os.path.join(folder, "config.json")):
        raise WeightsError(
            f"{folder!r} is not a keras-hub preset folder (it has no "
            "config.json). Save one with `Backbone.save_to_preset(folder)`, "
            "or download a preset's files (e.g. from Kaggle Models) there."
        )
    if weights not in ("pretrained", "random"):
        raise errors.UserError(
            f"With a preset folder, build_backbone_tower."
            f"weights must be 'pretrained' or 'random', got "
            f"{weights!r}."
        )
    model = keras_hub.models.Backbone.from_preset(
        folder, load_weights=weights == "pretrained"
    )
    converter = keras_hub.layers.ImageConverter.from_preset(folder)
    converter.image_size = None  # the crop has made the size already
    return converter, model


@gin.configurable
def build_backbone_tower(
    backbone="resnet152",
    weights=None,
    input_size=256,
    crop_size=224,
    hidden_units=None,
    embedding_dim=1024,
    dropout=0.0,
    trainable_backbone=False,
    head_units=None,
    name="image_tower",
):
    """An ImageNet backbone on raw pixels, then a projection head.

    Args:
      backbone: "resnet152" (VSE++), "resnet101", "resnet50" (Keras
        applications), or the path of a keras-hub preset folder (a ViT, an
        EfficientNet, ...); token features are pooled by their first token,
        feature maps on average.
      weights: for a ResNet, the path of Keras's ImageNet weights file
        (see RESNET_FILES); for a preset folder, "pretrained" (its own
        weights). "random" trains from scratch; None is an error that says
        where the weights go.
      input_size: height and width of the pixels the tower takes (the
        loader's image_size).
      crop_size: of VSE++'s crops (224).
      hidden_units: width of the head's hidden layer; None is a linear head
        (VSE++).
      embedding_dim: size of the joint space.
      dropout: on the backbone features.
      trainable_backbone: fine-tune the backbone; False freezes it.
      head_units: None, or the hidden width of the paper's head after the
        projection (`pooling.convse_head`), as the precomputed and text
        towers have it.
    """
    check_head(
        "build_backbone_tower",
        hidden_units,
        embedding_dim,
        dropout,
        1,
        none=True,
    )
    errors.check_number(
        "build_backbone_tower.head_units",
        head_units,
        minimum=1,
        integer=True,
        none=True,
    )
    errors.check_number(
        "build_backbone_tower.crop_size", crop_size, minimum=32, integer=True
    )
    errors.check_number(
        "build_backbone_tower.input_size",
        input_size,
        minimum=crop_size,
        integer=True,
    )
    if backbone in RESNETS:
        normalize, model = _resnet(backbone, weights, crop_size)
    else:
        normalize, model = _keras_hub(os.path.expanduser(backbone), weights)
    pixels = keras.Input((input_size, input_size, 3), name="pixels")
    x = RandomResizedCrop(crop_size, name="crop")(pixels)
    x = normalize(x)
    x = model(x)
    if len(x.shape) == 4:  # a feature map
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif len(x.shape) == 3:  # tokens: the class token
        x = x[:, 0]
    features = keras.Model(pixels, x, name=BACKBONE)
    features.trainable = trainable_backbone
    head = projection_head(
        x.shape[-1], hidden_units, embedding_dim, dropout, head_units=head_units
    )
    return towers.Tower(
        pixels, head(features(pixels)), name=name, backbone=features, head=head
    )
